"""Per-pixel confidence of a mask, from the same class scores its labels came from.

Nav2's semantic_segmentation_layer reads an optional ``mono8`` confidence image next to the
class mask: 0-255 for the network's confidence in each pixel's class. Here that is the top
class's softmax probability (binary models: the sigmoid of the winning side, ``p`` where the
label is 1 and ``1 - p`` where it is 0) scaled to 0-255. It is computed from the scores the
backend already returned for the labels, so the network runs once per frame.

The scores are those the labels come from at the network resolution: a low-resolution
export's are first upsampled by its head's rule (``processing.scores_from_output``), because
the softmax of interpolated logits is not the interpolation of their softmax. The network-size
confidence is then resized (bilinear) to the mask's size, as the labels are (nearest).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ArtifactError
from ..spec import ModelSpec
from . import processing


def top_probability(output: np.ndarray, spec: ModelSpec) -> np.ndarray:
    """(N, C, h, w) logits -> (N, h, w) float32: the winning class's probability."""
    if spec.output_kind != "logits" or output.ndim != 4:
        raise ArtifactError("a confidence image needs class scores, but this model returns labels (exported with "
                            "--argmax, or OpenVINO's in-graph postprocessing): use a logits model or host "
                            "postprocessing")
    scores = processing.scores_from_output(output, spec)
    if spec.scores_are_probabilities:
        return scores.max(axis=1)  # the head interpolates probabilities (TorchSeg's speed heads)
    if spec.is_binary:
        p = processing.sigmoid(scores[:, 0])
        return np.where(scores[:, 0] > spec.binary_threshold, p, 1.0 - p).astype(np.float32)
    # plane by plane: the channel axis has a large stride (see processing.argmax_channels)
    best = scores[:, 0].copy()
    for k in range(1, scores.shape[1]):
        np.maximum(best, scores[:, k], out=best)
    total = np.zeros_like(best)
    for k in range(scores.shape[1]):
        total += np.exp(scores[:, k] - best)
    return 1.0 / total  # exp(max - max) / sum(exp(l_k - max))


def confidence_images(output: np.ndarray, spec: ModelSpec, masks: Sequence[np.ndarray]) -> list[np.ndarray]:
    """One ``mono8`` confidence (uint8, probability x 255, rounded) per mask, at its size."""
    prob = top_probability(output[: len(masks)], spec)
    images = []
    for p, mask in zip(prob, masks):
        image = np.clip(np.rint(p * 255.0), 0, 255).astype(np.uint8)
        images.append(processing.resize_bilinear(image, mask.shape[:2]))
    return images


def open_scoring(model: str | Path, backend: str | None = None, **options: Any) -> Any:
    """An open backend of ``model`` whose output is class scores, for a Segmenter that writes
    confidence images: ``auto`` leaves OpenVINO's in-graph argmax out and an explicit
    ``openvino`` runs its host form (same labels; see ``backends/openvino.py``)."""
    from .choice import open_model

    if backend == "openvino":
        options = {**options, "prepost": "host"}
    return open_model(model, backend, graph_prepost=False, **options)
