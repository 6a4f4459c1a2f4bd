"""The stages every runner of a backend shares: frames -> input batch -> backend -> labels.

Segmenter is the public API over these; the automatic backend choice times and checks its
candidates with them directly (so it never builds a Segmenter inside the backend factory),
and the comparator reads network-size labels through ``network_outputs``: one place for
"labels at the network resolution from an open backend".
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..spec import ModelSpec
from . import processing
from .backends.base import Backend

_FLOAT_INPUTS = (np.dtype(np.float32), np.dtype(np.float16))


def fixed_batch(backend: Backend) -> int | None:
    """The backend's fixed batch size, or None when any batch runs."""
    dim = backend.inputs[0].shape[0] if backend.inputs else None
    return dim if isinstance(dim, int) else None


def padded(frames: list[np.ndarray], batch: int | None) -> list[np.ndarray]:
    """Fixed-batch models need full batches: repeat the last frame (outputs dropped)."""
    if batch is None or len(frames) % batch == 0:
        return frames
    return frames + [frames[-1]] * (batch - len(frames) % batch)


def network_outputs(backend: Backend, spec: ModelSpec, frames: Sequence[np.ndarray],
                    infer=None) -> tuple[np.ndarray, np.ndarray | None]:  # noqa: ANN001 - a callable
    """(labels N x h x w, logits N x C x h x w or None where the output is labels) of
    ``frames`` at the network resolution (a low-resolution export's upsampled by its
    head's rule, so every artifact form compares alike); ``infer``: the call to use."""
    infer = infer or backend.infer
    frames = list(frames)
    step = fixed_batch(backend) or len(frames)
    labels, logits = [], []
    for start in range(0, len(frames), step):
        chunk = frames[start:start + step]
        output = infer(processing.preprocess(padded(chunk, fixed_batch(backend)), spec))[: len(chunk)]
        labels.append(processing.labels_from_output(output, spec))
        if spec.output_kind == "logits":
            logits.append(processing.scores_from_output(output, spec))  # full size, whatever the export
    return np.concatenate(labels), (np.concatenate(logits) if logits else None)


def frame_labels(backend: Backend, spec: ModelSpec, frame: np.ndarray) -> np.ndarray:
    """One frame end to end (resize, infer, labels, upscale): what ``Segmenter(frame)`` does."""
    labels, _ = network_outputs(backend, spec, [frame])
    return processing.resize_labels(labels[0], frame.shape[:2])


def spec_mismatch(backend: Backend, spec: ModelSpec) -> str | None:
    """Why the backend's tensors cannot be what ``spec`` describes, or None when they fit.

    Checked when a Segmenter opens, so a spec override or metadata that disagrees with the
    graph (3 classes named on a 7-channel model, a fused-preprocessing spec on a float
    input) is one clear error instead of masks with impossible labels.
    """
    if not backend.inputs or not backend.outputs:
        return None
    inp, out = backend.inputs[0], backend.outputs[0]
    if spec.input_layout == "NHWC_UINT8":
        if inp.dtype != np.uint8 or len(inp.shape) != 4 or inp.shape[3] not in (3, None):
            return f"the spec says uint8 N x H x W x 3 frames (fused preprocessing), the model takes {inp}"
        fixed_hw = inp.shape[1:3]
    else:
        if inp.dtype not in _FLOAT_INPUTS or len(inp.shape) != 4 or inp.shape[1] not in (3, None):
            return f"the spec says float N x 3 x H x W input, the model takes {inp}"
        fixed_hw = inp.shape[2:4]
    if all(isinstance(d, int) for d in fixed_hw) and tuple(fixed_hw) != tuple(spec.input_size):
        return (f"the model's input is fixed to {fixed_hw[0]}x{fixed_hw[1]}, the spec says "
                f"{spec.input_size[0]}x{spec.input_size[1]}")
    if spec.output_kind == "logits":
        if np.issubdtype(out.dtype, np.integer):
            return f"the spec says logits, the model returns integer labels ({out})"
        if len(out.shape) != 4:
            return f"the spec says N x C x H x W logits, the model returns {out}"
        if out.shape[1] is not None and out.shape[1] != spec.num_classes:
            return (f"the model returns {out.shape[1]} channels, the spec says {spec.num_classes} "
                    f"class{'es' if spec.num_classes != 1 else ''}")
    elif not np.issubdtype(out.dtype, np.integer) or len(out.shape) not in (3, 4):
        return f"the spec says in-graph labels (N x H x W integers), the model returns {out}"
    return _stride_mismatch(fixed_hw, out.shape[-2:], spec)


def _stride_mismatch(input_hw, output_hw, spec: ModelSpec) -> str | None:  # noqa: ANN001 - shapes
    """Where the graph fixes both sizes, a spec that claims a stride > 1 needs an output of
    the input / output_stride (the network's ceil or floor rounding): a ``--spec`` claiming a
    stride the model does not have is refused, not recorded. Stride 1 is not checked: it is
    the default of a spec that says nothing about the output size, and the runtime upscales
    whatever size the labels come in (a foreign native low-resolution model runs so)."""
    stride = spec.output_stride
    if stride == 1 or not all(isinstance(d, int) for d in (*input_hw, *output_hw)):
        return None
    if all(o in (i // stride, -(-i // stride)) for i, o in zip(input_hw, output_hw)):
        return None
    return (f"the model's output is {output_hw[0]}x{output_hw[1]} for a {input_hw[0]}x{input_hw[1]} input, "
            f"not 1/{stride} of it as the spec's output_stride {stride} says")
