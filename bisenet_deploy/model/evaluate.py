"""Accuracy of a PyTorch segmentation model against labelled frames: per-class IoU, mIoU.

The frames go through ``runtime.processing`` exactly as at runtime (resize to the network
size, the spec's colour order and normalization); predictions are resized back to each
label map with nearest neighbour. IoU is accumulated over the whole set (one confusion
matrix), the usual definition for segmentation benchmarks.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch
from torch import nn

from ..metrics import confusion_matrix
from ..runtime import processing
from ..spec import ModelSpec


@dataclass
class SegmentationScore:
    """IoU per class in percent (None where a class is in neither prediction nor labels)."""

    class_names: list[str]
    iou: list[float | None]
    miou: float
    pixel_accuracy: float
    images: int
    size_hw: list[int] | None

    def to_dict(self) -> dict:
        return asdict(self)

    def table(self) -> str:
        size = "frame size" if self.size_hw is None else f"{self.size_hw[0]}x{self.size_hw[1]}"
        lines = [f"mIoU {self.miou:.2f}%  pixel accuracy {self.pixel_accuracy:.2f}%  ({self.images} images at {size})"]
        for name, value in zip(self.class_names, self.iou):
            lines.append(f"  {name:<16} {'absent' if value is None else f'{value:6.2f}%'}")
        return "\n".join(lines)


def score_from_confusion(cm: np.ndarray, class_names: Sequence[str], images: int, size_hw=None) -> SegmentationScore:
    inter = np.diag(cm).astype(np.float64)
    union = cm.sum(0) + cm.sum(1) - inter
    iou = [None if u == 0 else round(100.0 * float(i) / float(u), 4) for i, u in zip(inter, union)]
    present = [v for v in iou if v is not None]
    return SegmentationScore(
        class_names=list(class_names),
        iou=iou,
        miou=round(float(np.mean(present)), 4) if present else 100.0,
        pixel_accuracy=round(100.0 * float(inter.sum()) / max(1, int(cm.sum())), 4),
        images=images,
        size_hw=None if size_hw is None else [int(size_hw[0]), int(size_hw[1])],
    )


def predict_labels(model: nn.Module, spec: ModelSpec, frame: np.ndarray, size_hw=None) -> np.ndarray:
    """(H, W) labels for one BGR frame, predicted at ``size_hw`` (default: the frame's size)."""
    size_hw = tuple(size_hw or frame.shape[:2])
    host_spec = spec.replace(input_layout="NCHW", output_kind="logits")
    batch = processing.preprocess([frame], host_spec, size_hw)
    with torch.no_grad():
        logits = model(torch.from_numpy(batch)).numpy()
    return processing.resize_labels(processing.labels_from_output(logits, host_spec)[0], frame.shape[:2])


def score_model(
    model: nn.Module,
    spec: ModelSpec,
    items: Iterable,
    size_hw: Sequence[int] | None = None,
) -> SegmentationScore:
    """Score ``model`` (in eval mode) on items with ``.image`` (BGR) and ``.labels``."""
    num_labels = max(2, spec.num_classes)
    names = list(spec.class_names) or [str(i) for i in range(num_labels)]
    cm = np.zeros((num_labels, num_labels), dtype=np.int64)
    count = 0
    for item in items:
        pred = predict_labels(model, spec, item.image, size_hw)
        cm += confusion_matrix(pred, item.labels, num_labels, ignore_index=255)
        count += 1
    return score_from_confusion(cm, names, count, size_hw)
