"""The one implementation of pre- and postprocessing, parameterized by ModelSpec.

Calibration, export verification, the runtime and the benchmarks all call these functions,
so a model sees exactly the same pixels everywhere. NumPy and OpenCV only (no torch).

Conventions: frames are ``uint8`` H x W x 3 in **BGR** order, as OpenCV delivers them.
Resizing uses bilinear interpolation (``cv2.INTER_LINEAR``) to the network size; label maps
are resized with nearest neighbour so class ids are never blended.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

# FFmpeg's own log lines ("moov atom not found", "overread 8") would repeat what our
# one-line errors say; OpenCV reads this when cv2 is imported. An explicit setting wins.
os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from ..errors import InputError  # noqa: E402
from ..spec import ModelSpec  # noqa: E402
from .upsampling import upsampled_labels, upsampled_scores  # noqa: E402

# OpenCV's warnings for a camera it cannot open ("can't open camera by index") precede our
# own one-line error; errors still show.
try:
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_ERROR)
except AttributeError:  # builds without the logging module
    pass

# OpenCV spawns its own thread pool per call; inside a pipeline that already runs several
# threads this costs more than it gains for 1-megapixel images.
cv2.setNumThreads(1)

CITYSCAPES_PALETTE = np.array(
    [
        (128, 64, 128), (244, 35, 232), (70, 70, 70), (102, 102, 156), (190, 153, 153),
        (153, 153, 153), (250, 170, 30), (220, 220, 0), (107, 142, 35), (152, 251, 152),
        (70, 130, 180), (220, 20, 60), (255, 0, 0), (0, 0, 142), (0, 0, 70),
        (0, 60, 100), (0, 80, 100), (0, 0, 230), (119, 11, 32),
    ],
    dtype=np.uint8,
)[:, ::-1]  # listed as RGB, stored BGR like the frames


def as_bgr_frame(frame: object, name: str = "frame") -> np.ndarray:
    """Validate one frame and convert the documented cases to uint8 BGR H x W x 3.

    Accepted: uint8 H x W x 3 (BGR); H x W or H x W x 1 grayscale (replicated to three
    channels); H x W x 4 BGRA (alpha dropped). Anything else raises ``InputError``.
    """
    if frame is None:
        raise InputError(f"{name} is None (a failed cv2.imread or an exhausted capture?)")
    if not isinstance(frame, np.ndarray):
        raise InputError(f"{name} must be a numpy array, got {type(frame).__name__}")
    if frame.size == 0:
        raise InputError(f"{name} is empty (shape {frame.shape})")
    if frame.dtype != np.uint8:
        raise InputError(
            f"{name} has dtype {frame.dtype}; expected uint8 pixels 0..255 "
            "(convert with (x * 255).clip(0, 255).astype(np.uint8) if it is a 0..1 float image)"
        )
    if frame.ndim == 2 or (frame.ndim == 3 and frame.shape[2] == 1):
        return cv2.cvtColor(frame.reshape(frame.shape[:2]), cv2.COLOR_GRAY2BGR)
    if frame.ndim != 3:
        raise InputError(f"{name} has shape {frame.shape}; expected H x W x 3 (BGR)")
    if frame.shape[2] == 4:
        return cv2.cvtColor(frame, cv2.COLOR_BGRA2BGR)
    if frame.shape[2] != 3:
        raise InputError(f"{name} has {frame.shape[2]} channels; expected 3 (BGR), 4 (BGRA) or 1 (gray)")
    return frame


def resize_bilinear(frame: np.ndarray, size_hw: Sequence[int]) -> np.ndarray:
    h, w = int(size_hw[0]), int(size_hw[1])
    if frame.shape[:2] == (h, w):
        return frame
    return cv2.resize(frame, (w, h), interpolation=cv2.INTER_LINEAR)


def _affine(spec: ModelSpec) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel (a, b) with ``normalized = pixel * a + b``, in network channel order."""
    std = np.asarray(spec.std, dtype=np.float64)
    a = spec.scale / std
    b = -np.asarray(spec.mean, dtype=np.float64) / std
    return a.astype(np.float32), b.astype(np.float32)


def normalize_into(frame_bgr: np.ndarray, spec: ModelSpec, out: np.ndarray) -> np.ndarray:
    """Write one resized BGR uint8 frame into ``out`` (3, H, W) float32, normalized."""
    a, b = _affine(spec)
    for c in range(3):
        # Network channel c comes from frame channel 2 - c when the network wants RGB.
        src = frame_bgr[:, :, 2 - c] if spec.color_order == "RGB" else frame_bgr[:, :, c]
        np.multiply(src, a[c], out=out[c], casting="unsafe")
        out[c] += b[c]
    return out


def preprocess(frames: Sequence[np.ndarray] | np.ndarray, spec: ModelSpec, size_hw=None) -> np.ndarray:
    """Frames (BGR uint8) -> the network input batch the artifact expects.

    ``NCHW`` artifacts get float32 (N, 3, H, W), color-swapped and normalized on the host;
    ``NHWC_UINT8`` artifacts (preprocessing fused into the graph) get uint8 (N, H, W, 3) in
    the graph's frame color order, and nothing else is done on the host.
    """
    if isinstance(frames, np.ndarray) and frames.ndim == 4:
        frames = list(frames)
    if len(frames) == 0:
        raise InputError("no frames given")
    h, w = size_hw or spec.input_size
    if spec.input_layout == "NHWC_UINT8":
        batch = np.empty((len(frames), h, w, 3), dtype=np.uint8)
        for i, frame in enumerate(frames):
            resized = resize_bilinear(as_bgr_frame(frame, f"frame {i}"), (h, w))
            if spec.frame_color_order == "RGB":
                _bgr_to_rgb_into(resized, batch[i])
            else:
                batch[i] = resized
        return batch
    batch = np.empty((len(frames), 3, h, w), dtype=np.float32)
    for i, frame in enumerate(frames):
        normalize_into(resize_bilinear(as_bgr_frame(frame, f"frame {i}"), (h, w)), spec, batch[i])
    return batch


def _bgr_to_rgb_into(frame: np.ndarray, out: np.ndarray) -> None:
    """Channel swap into ``out`` (H, W, 3 uint8, contiguous): OpenCV's, 0.7 ms at 1024x2048
    where NumPy's reversed-stride copy (``out[...] = frame[:, :, ::-1]``) took 17 ms."""
    written = cv2.cvtColor(np.ascontiguousarray(frame), cv2.COLOR_BGR2RGB, dst=out)
    if not np.shares_memory(written, out):  # OpenCV made its own array
        out[...] = written


def argmax_channels(logits: np.ndarray) -> np.ndarray:
    """Argmax over axis 1 of (N, C, H, W) logits -> (N, H, W) uint8 (uint16 above 256 classes).

    ``np.argmax(axis=1)`` walks the channel axis with a large stride: 25 ms for 19 x 512 x 512
    on these CPUs. Here each channel is one branch-free pass over a contiguous plane: where
    it beats the running maximum (strictly, so ties go to the lowest index, as in
    ``np.argmax`` and ``torch.argmax``), the label moves to it by arithmetic
    (``labels += (k - labels) * beats``) instead of masked assignment, which branches and
    costs ~2 ms per plane on real logits. Measured 0.43 ms for 7 x 512 x 512 and 2.3 ms for
    19 x 512 x 512 (one pass; the two-pass version before it took 0.66 and 3.5 ms).
    """
    c = logits.shape[1]
    dtype = np.uint8 if c <= 256 else np.uint16
    best = logits[:, 0].copy()
    labels = np.zeros(best.shape, dtype=dtype)
    beats = np.empty(best.shape, dtype=bool)
    step = np.empty(best.shape, dtype=dtype)
    for k in range(1, c):
        plane = logits[:, k]
        np.greater(plane, best, out=beats)
        np.maximum(best, plane, out=best)
        np.subtract(dtype(k), labels, out=step)
        np.multiply(step, beats, out=step)
        np.add(labels, step, out=labels)
    return labels


def labels_from_output(output: np.ndarray, spec: ModelSpec, input_hw: Sequence[int] | None = None) -> np.ndarray:
    """Network output (logits or in-graph labels) -> (N, H, W) integer label maps.

    A low-resolution export (``spec.upsample``) gets the labels of its head's full-size
    result (``upsampling.upsampled_labels``: exact, without upsampling every class);
    ``input_hw``: the network input size the output came from (default: the spec's).
    """
    if spec.output_kind == "labels":
        labels = output.reshape((output.shape[0],) + output.shape[-2:])
        return labels.astype(np.uint8, copy=False) if spec.num_classes <= 256 else labels
    if output.ndim != 4:
        raise InputError(f"expected logits of shape (N, C, H, W), got {output.shape}")
    low = (output[:, 0] > spec.binary_threshold).astype(np.uint8) if spec.is_binary else argmax_channels(output)
    if spec.upsample is None:
        return low
    size = spec.upsample.output_size(output.shape[-2:], input_hw or spec.input_size)
    threshold = spec.binary_threshold if spec.is_binary else None
    scores = output.astype(np.float32, copy=False)
    maps = [upsampled_labels(scores[i], low[i], size, spec.upsample, threshold) for i in range(len(output))]
    return maps[0][None] if len(maps) == 1 else np.stack(maps)  # one frame: no copy


def scores_from_output(output: np.ndarray, spec: ModelSpec, input_hw: Sequence[int] | None = None) -> np.ndarray:
    """Network output -> float32 class scores at the network's full resolution: a
    low-resolution export's are upsampled by its head's rule (then e.g. log-softmax), so
    they are what a full-size export returns."""
    output = np.asarray(output, dtype=np.float32)
    if spec.upsample is None or output.ndim != 4:
        return output
    size = spec.upsample.output_size(output.shape[-2:], input_hw or spec.input_size)
    return upsampled_scores(output, size, spec.upsample)


def resize_labels(labels: np.ndarray, size_hw: Sequence[int]) -> np.ndarray:
    """Nearest-neighbour resize of one (H, W) label map; class ids are never blended."""
    h, w = int(size_hw[0]), int(size_hw[1])
    if labels.shape[:2] == (h, w):
        return labels
    return cv2.resize(labels, (w, h), interpolation=cv2.INTER_NEAREST)


def sigmoid(x: np.ndarray) -> np.ndarray:
    return (1.0 / (1.0 + np.exp(-x.astype(np.float32, copy=False)))).astype(np.float32)


#: BGR colours for classes named after a colour (e.g. the demo model's), so masks show them.
NAMED_COLOURS = {
    "background": (0, 0, 0), "black": (0, 0, 0), "white": (255, 255, 255), "gray": (128, 128, 128),
    "red": (0, 0, 255), "yellow": (0, 255, 255), "green": (0, 255, 0), "cyan": (255, 255, 0),
    "blue": (255, 0, 0), "magenta": (255, 0, 255), "orange": (0, 165, 255), "purple": (128, 0, 128),
}


def palette_for(num_classes: int, class_names: Sequence[str] = ()) -> np.ndarray:
    """(num_classes, 3) uint8 BGR colours: the colours themselves when every class is named
    after one (``NAMED_COLOURS``), Cityscapes for 19 classes, else a fixed spread."""
    names = [str(n).lower() for n in class_names]
    if len(names) == num_classes and num_classes > 1 and all(n in NAMED_COLOURS for n in names):
        return np.array([NAMED_COLOURS[n] for n in names], dtype=np.uint8)
    if num_classes == 19:
        return CITYSCAPES_PALETTE.copy()
    if num_classes <= 2:
        return np.array([(0, 0, 0), (0, 200, 255)], dtype=np.uint8)[: max(num_classes, 2)]
    rng = np.random.default_rng(1234)
    colors = rng.integers(40, 256, size=(num_classes, 3), dtype=np.uint8)
    colors[0] = 0
    return colors


def colorize(mask: np.ndarray, palette: np.ndarray | None = None) -> np.ndarray:
    """(H, W) labels -> (H, W, 3) BGR colour image."""
    palette = palette_for(int(mask.max()) + 1) if palette is None else np.asarray(palette, np.uint8)
    if int(mask.max()) >= len(palette):
        raise InputError(f"mask has label {int(mask.max())} but the palette has {len(palette)} colours")
    return palette[mask]


def overlay(frame: np.ndarray, mask: np.ndarray, palette: np.ndarray | None = None, alpha: float = 0.5) -> np.ndarray:
    """Blend the colourized mask over the frame (both at the frame's resolution)."""
    frame = as_bgr_frame(frame)
    if mask.shape[:2] != frame.shape[:2]:
        mask = resize_labels(mask, frame.shape[:2])
    return cv2.addWeighted(frame, 1.0 - alpha, colorize(mask, palette), alpha, 0.0)


def replace_background(
    frame: np.ndarray,
    mask: np.ndarray,
    background: np.ndarray | Sequence[int],
    foreground: Sequence[int] | None = None,
) -> np.ndarray:
    """Keep the pixels whose label is in ``foreground`` (default: any non-zero label) and
    replace the rest with ``background`` (an image, resized to fit, or one BGR colour)."""
    frame = as_bgr_frame(frame)
    if mask.shape[:2] != frame.shape[:2]:
        mask = resize_labels(mask, frame.shape[:2])
    keep = mask != 0 if foreground is None else np.isin(mask, np.asarray(list(foreground)))
    if isinstance(background, np.ndarray) and background.ndim >= 2:
        bg = resize_bilinear(as_bgr_frame(background, "background"), frame.shape[:2])
    else:
        bg = np.empty_like(frame)
        bg[:] = np.asarray(background, dtype=np.uint8).reshape(1, 1, 3)
    return np.where(keep[:, :, None], frame, bg)
