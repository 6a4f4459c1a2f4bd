"""Segmenter: BGR frames in, label masks out, over any backend.

``mask = Segmenter("model.onnx")(frame)`` is the whole API for a robot. The ModelSpec comes
from the artifact (ONNX metadata, engine sidecar, checkpoint), so no configuration is needed;
explicit keyword arguments override single spec fields.

Pipeline per call, each stage public so the benchmark can time it separately:
``preprocess`` (validate, resize, normalize unless fused in the graph) -> ``infer`` (the
backend) -> ``postprocess`` (labels unless argmax is in the graph: for a low-resolution export,
those of its head's full-size upsample, exactly; nearest-neighbour upscale of the labels to
the frame size).

Thread safety: a Segmenter may be shared between threads. Backends that allow concurrent
runs (onnxruntime) run concurrently; the others (TensorRT's one execution context, torch on
CUDA) are serialized by a lock, so concurrent calls are safe and simply queue.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ArtifactError, InputError
from ..spec import ModelSpec, SpecError
from . import choice, confidence, pipeline, processing
from .backends import Backend
from .pipeline import spec_mismatch


class Segmenter:
    """Semantic segmentation of BGR uint8 frames with a BiSeNet artifact.

    Args:
        model: ``.onnx``, ``.engine``/``.plan`` or ``.pth`` path, a served model's URL
            (``grpc://host:port/bisenet``, ``http://...``: see ``bisenet-serve``), or an open ``Backend``.
        backend: force a backend (``onnxruntime``, ``tensorrt``, ``torch``); default by suffix.
        device: passed to the backend (``auto``, ``cpu``, ``cuda``, ...).
        output_size: ``"frame"`` (masks at each frame's resolution, default) or
            ``"network"`` (masks at the network resolution: no upscale, fastest).
        backend_options: extra backend constructor options (threads, fp16, cuda_graph, ...).
        **spec_overrides: ModelSpec fields that override the artifact's (e.g. ``class_names``,
            ``binary_threshold``, ``mean``/``std`` for an ONNX without metadata).
    """

    def __init__(
        self,
        model: str | Path | Backend,
        backend: str | None = None,
        device: str = "auto",
        output_size: str = "frame",
        backend_options: dict[str, Any] | None = None,
        spec: ModelSpec | None = None,
        **spec_overrides: Any,
    ) -> None:
        if output_size not in ("frame", "network"):
            raise ValueError("output_size must be 'frame' or 'network'")
        if isinstance(model, Backend):
            self.backend = model
        else:
            options = dict(backend_options or {})
            options.setdefault("device", device)
            # the caller's normalization must reach the model: not one compiled into it
            own_prepost = spec is not None or bool(set(spec_overrides) & _GRAPH_PREPOST_FIELDS)
            self.backend = choice.open_model(model, backend, graph_prepost=not own_prepost, **options)
        base = spec or self.backend.spec
        if base is None:
            raise ArtifactError(
                f"'{self.backend.path}' carries no ModelSpec (not exported by bisenet-export?); "
                "pass spec=ModelSpec(...) with its classes, size and normalization"
            )
        unknown = set(spec_overrides) - {f.name for f in dataclasses.fields(ModelSpec)}
        if unknown:
            raise TypeError(f"unknown Segmenter arguments: {', '.join(sorted(unknown))}")
        baked = sorted(set(spec_overrides) & set(self.backend.fixed_spec_fields))
        if baked:
            raise ArtifactError(
                f"the {self.backend.name} backend compiled {', '.join(baked)} into its graph; to override "
                f"{'them' if len(baked) > 1 else 'it'}, open it with backend_options={{'prepost': 'host'}}"
            )
        try:
            self.spec = base.replace(**spec_overrides) if spec_overrides else base
        except SpecError as exc:
            raise ArtifactError(f"Segmenter arguments do not make a valid ModelSpec: {exc}") from None
        problem = spec_mismatch(self.backend, self.spec)
        if problem:
            raise ArtifactError(f"'{self.backend.path.name}' does not fit its ModelSpec: {problem}")
        self.output_size = output_size
        self.batch_size = pipeline.fixed_batch(self.backend)  # None: any batch
        self._lock = None if self.backend.thread_safe else threading.Lock()

    # --- stages -------------------------------------------------------------------------

    def preprocess(self, frames: Sequence[np.ndarray]) -> np.ndarray:
        """Frames -> the backend's input batch (see ``processing.preprocess``)."""
        return processing.preprocess(frames, self.spec)

    def infer(self, batch: np.ndarray) -> np.ndarray:
        """Run the backend (serialized when it is not thread-safe)."""
        if self._lock is None:
            return self.backend.infer(batch)
        with self._lock:
            return self.backend.infer(batch)

    def postprocess(self, output: np.ndarray, frame_sizes: Sequence[tuple[int, int]]) -> list[np.ndarray]:
        """Backend output -> one uint8 label mask per frame."""
        if self.spec.output_kind == "logits" and (output.ndim != 4 or output.shape[1] != self.spec.num_classes):
            # A dynamic channel axis can only be checked here; masks with impossible labels never leave.
            raise ArtifactError(
                f"'{self.backend.path.name}' returned output of shape {'x'.join(map(str, output.shape))}, "
                f"but its ModelSpec says {self.spec.num_classes} classes (N x {self.spec.num_classes} x H x W)"
            )
        labels = processing.labels_from_output(output, self.spec)
        if self.output_size == "network":
            return [labels[i] for i in range(len(frame_sizes))]
        return [processing.resize_labels(labels[i], size) for i, size in enumerate(frame_sizes)]

    def confidence_images(self, output: np.ndarray, masks: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Backend output (class scores) and its ``postprocess`` masks -> one ``mono8``
        confidence per mask (see ``confidence.py``): no second network run."""
        return confidence.confidence_images(output, self.spec, masks)

    # --- calls --------------------------------------------------------------------------

    def __call__(self, frame: np.ndarray) -> np.ndarray:
        """Label mask (H x W uint8; binary models: 0/1) for one BGR uint8 frame."""
        return self.predict_batch([frame])[0]

    predict = __call__

    def predict_batch(self, frames: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Masks for several frames, run in chunks of the model's batch size."""
        frames = self._frames(frames)
        masks: list[np.ndarray] = []
        for chunk in self._chunks(frames):
            output = self.infer(self.preprocess(self._padded(chunk)))
            masks += self.postprocess(output[: len(chunk)], [f.shape[:2] for f in chunk])
        return masks

    def predict_with_confidence(self, frames: Sequence[np.ndarray]) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """``predict_batch``'s masks and their confidence images, from one network run."""
        if self.spec.output_kind != "logits":
            confidence.top_probability(np.empty(0), self.spec)  # refused: labels, no scores
        frames = self._frames(frames)
        masks: list[np.ndarray] = []
        confidences: list[np.ndarray] = []
        for chunk in self._chunks(frames):
            output = self.infer(self.preprocess(self._padded(chunk)))[: len(chunk)]
            chunk_masks = self.postprocess(output, [f.shape[:2] for f in chunk])
            masks += chunk_masks
            confidences += self.confidence_images(output, chunk_masks)
        return masks, confidences

    def logits(self, frame: np.ndarray) -> np.ndarray:
        """Raw class scores (C x h x w float32) at the network resolution for one frame (a
        low-resolution export's upsampled by its head's rule, as a full-size export's)."""
        self.backend.ensure_open()
        scores = self.backend if self.spec.output_kind == "logits" else self.backend.logits_backend()
        if scores is None:
            raise ArtifactError(f"'{self.backend.path.name}' computes labels in the graph (exported with --argmax); "
                                "it has no class scores: export without --argmax for logits or probabilities")
        frame = processing.as_bgr_frame(frame)
        batch = self.preprocess(self._padded([frame]))  # the variant takes the same input
        if scores is self.backend:
            output = self.infer(batch)
        elif self._lock is None:
            output = scores.infer(batch)
        else:
            with self._lock:
                output = scores.infer(batch)
        return processing.scores_from_output(output[:1], self.spec)[0]

    def probabilities(self, frame: np.ndarray) -> np.ndarray:
        """Binary models: foreground probability (H x W float32, sigmoid of the logit);
        multi-class models: softmax (C x H x W). At the frame resolution unless
        ``output_size="network"``."""
        logits = self.logits(frame)
        if self.spec.scores_are_probabilities:
            prob = logits  # the head interpolates probabilities (TorchSeg's speed heads): already them
        elif self.spec.is_binary:
            prob = processing.sigmoid(logits[0])
        else:
            shifted = np.exp(logits - logits.max(axis=0, keepdims=True))
            prob = shifted / shifted.sum(axis=0, keepdims=True)
        if self.output_size == "network":
            return prob
        size = frame.shape[:2]
        if prob.ndim == 2:
            return processing.resize_bilinear(prob, size)
        return np.stack([processing.resize_bilinear(p, size) for p in prob])

    def network_outputs(self, frames: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray | None]:
        """(labels N x h x w, logits N x C x h x w or None for an in-graph argmax) at the
        network resolution: what the comparator (``compare.py``) reads."""
        return pipeline.network_outputs(self.backend, self.spec, self._frames(frames), self.infer)

    # --- helpers ------------------------------------------------------------------------

    def _frames(self, frames: Sequence[np.ndarray]) -> list[np.ndarray]:
        self.backend.ensure_open()
        if isinstance(frames, np.ndarray) and frames.ndim in (2, 3):
            raise InputError("predict_batch takes a list of frames (or an N x H x W x 3 array), got one frame")
        if frames is None or isinstance(frames, (str, bytes)) or not hasattr(frames, "__iter__"):
            raise InputError(
                f"predict_batch takes a list of frames (or an N x H x W x 3 array), got {type(frames).__name__}"
            )
        frames = [processing.as_bgr_frame(f, f"frame {i}") for i, f in enumerate(frames)]
        if not frames:
            raise InputError("no frames given")
        return frames

    def _chunks(self, frames: list[np.ndarray]):
        step = self.batch_size or len(frames)
        for start in range(0, len(frames), step):
            yield frames[start : start + step]

    def _padded(self, chunk: list[np.ndarray]) -> list[np.ndarray]:
        """Fixed-batch models need full batches: repeat the last frame (outputs dropped)."""
        if self.batch_size is None or len(chunk) == self.batch_size:
            return chunk
        return chunk + [chunk[-1]] * (self.batch_size - len(chunk))

    @property
    def class_names(self) -> tuple[str, ...]:
        return self.spec.class_names

    def close(self) -> None:
        self.backend.close()

    def __enter__(self) -> Segmenter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        h, w = self.spec.input_size
        return f"<Segmenter {self.backend!r} {h}x{w} {self.spec.num_classes} classes>"


#: spec fields a backend may compile into its graph (OpenVINO's in-graph pre/postprocessing)
_GRAPH_PREPOST_FIELDS = {"mean", "std", "scale", "color_order", "frame_color_order", "input_layout", "output_kind",
                         "binary_threshold"}
