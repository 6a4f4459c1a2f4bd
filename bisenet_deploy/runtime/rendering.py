"""Turning masks into files: palette PNGs, overlays, background-replaced frames and videos."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from ..errors import InputError, UserError
from ..fileio import (
    atomic_output,
    check_output_path,
    make_folders,
    remove_empty_folders,
    remove_stale_temporaries,
    temporary_name,
)
from . import processing

RENDER_MODES = ("mask", "overlay", "background")


def render(frame: np.ndarray, mask: np.ndarray, mode: str, palette: np.ndarray,
           background: np.ndarray | None = None, alpha: float = 0.5) -> np.ndarray:
    """A BGR image showing ``mask``: colourized mask, overlay, or background replacement."""
    if mode == "mask":
        return processing.colorize(processing.resize_labels(mask, frame.shape[:2]), palette)
    if mode == "overlay":
        return processing.overlay(frame, mask, palette, alpha)
    if mode == "background":
        if background is None:
            raise UserError("background mode needs a background image")
        return processing.replace_background(frame, mask, background)
    raise UserError(f"unknown render mode {mode!r}; choose from {', '.join(RENDER_MODES)}")


def display_size(frame_hw: tuple[int, int], mask_hw: tuple[int, int]) -> tuple[int, int]:
    """Where a network-size mask is drawn over its frame: the mask's height and the frame's
    aspect ratio (a 512x512 mask over a 720x1280 frame is drawn at 512x910), so overlays of
    ``--network-size`` runs are not squashed."""
    fh, fw = frame_hw
    mh = mask_hw[0]
    return mh, max(1, round(mh * fw / fh))


def draw_legend(image: np.ndarray, mask: np.ndarray, palette: np.ndarray, class_names: tuple[str, ...] = (),
                max_entries: int = 20) -> np.ndarray:
    """A box in the top-left corner with a colour swatch and a name for each class present in
    ``mask`` (the largest first, at most ``max_entries``), drawn on a copy of ``image``."""
    counts = np.bincount(mask.reshape(-1), minlength=len(palette))
    present = [int(k) for k in np.argsort(-counts, kind="stable") if counts[k] > 0][:max_entries]
    if not present:
        return image
    out = image.copy()
    scale = max(0.35, min(0.7, image.shape[0] / 900))
    line = max(12, int(28 * scale))
    names = [class_names[k] if k < len(class_names) else f"class {k}" for k in present]
    widths = [cv2.getTextSize(n, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)[0][0] for n in names]
    box_w = min(image.shape[1], line + 12 + max(widths))
    box_h = min(image.shape[0], line * len(present) + 8)
    region = out[:box_h, :box_w]
    region[:] = (region.astype(np.uint16) * 2 // 5).astype(np.uint8)  # darken behind the text
    for row, (k, name) in enumerate(zip(present, names)):
        y = 4 + row * line
        if y + line > box_h:
            break
        colour = tuple(int(c) for c in palette[k])
        cv2.rectangle(out, (4, y + 2), (4 + line - 6, y + line - 4), colour, thickness=-1)
        cv2.putText(out, name, (line + 4, y + line - 6), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), 1,
                    cv2.LINE_AA)
    return out


def write_palette_png(path: str | Path, mask: np.ndarray, palette: np.ndarray) -> None:
    """Indexed-colour PNG: pixel values are class ids, the palette shows them in colour.

    Falls back to a colourized RGB PNG when Pillow is not installed.
    """
    try:
        from PIL import Image
    except ImportError:
        write_image(path, processing.colorize(mask, palette))
        return
    if mask.dtype != np.uint8:
        write_image(path, processing.colorize(mask, palette))
        return
    image = Image.fromarray(mask, mode="P")
    rgb = np.zeros((256, 3), np.uint8)
    rgb[: len(palette)] = palette[:, ::-1]  # palette is BGR like the frames
    image.putpalette(rgb.reshape(-1).tolist())
    with atomic_output(path) as tmp:
        image.save(tmp, format="PNG")


def write_image(path: str | Path, image: np.ndarray) -> None:
    ok, data = cv2.imencode(Path(path).suffix or ".png", image)
    if not ok:
        raise UserError(f"cannot encode image for '{path}'")
    with atomic_output(path) as tmp:
        tmp.write_bytes(data.tobytes())


class VideoSink:
    """Writes frames to a video file atomically (a temporary file renamed on ``close``)."""

    def __init__(self, path: str | Path, fps: float, size_hw: tuple[int, int]) -> None:
        self.path = check_output_path(path)
        self._created = make_folders(self.path.parent)
        remove_stale_temporaries(self.path.parent)
        # VideoWriter picks the container from the suffix, so the temporary name keeps it.
        self._tmp = temporary_name(self.path)
        h, w = size_hw
        self._writer = cv2.VideoWriter(str(self._tmp), cv2.VideoWriter_fourcc(*"mp4v"), fps or 25.0, (w, h))
        if not self._writer.isOpened():
            self.abort()
            raise UserError(f"cannot write video '{self.path}' (no mp4v encoder in this OpenCV build?)")
        self.size_hw = tuple(size_hw)
        self.frames = 0

    def write(self, image: np.ndarray) -> None:
        if image.shape[:2] != self.size_hw:
            raise InputError(f"video frame size changed from {self.size_hw} to {image.shape[:2]}")
        self._writer.write(image)
        self.frames += 1

    def close(self) -> None:
        self._writer.release()
        os.replace(self._tmp, self.path)

    def abort(self) -> None:
        """Drop the partial video; an existing file at the path is left as it was."""
        self._writer.release()
        if self._tmp.exists():
            self._tmp.unlink()
        remove_empty_folders(self._created)


@dataclass
class Renderer:
    """Turns (frame, mask) into what a job writes, the same way in every process."""

    mode: str = "mask"
    palette: np.ndarray | None = None
    class_names: tuple[str, ...] = ()
    background: np.ndarray | None = None
    alpha: float = 0.5
    legend: bool = False
    network_size: bool = False

    @classmethod
    def for_spec(cls, spec, **options) -> Renderer:  # noqa: ANN001 - a ModelSpec
        palette = processing.palette_for(max(2, spec.num_classes), spec.class_names)
        names = spec.class_names or (("background", "foreground") if spec.is_binary else ())
        return cls(palette=palette, class_names=tuple(names), **options)

    def names(self) -> tuple[str, ...]:
        """A name for every palette entry (``class i`` where the model names none)."""
        return self.class_names or tuple(f"class {i}" for i in range(len(self.palette)))

    def picture(self, frame: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """The overlay / background image; with ``network_size`` drawn at the mask's height
        and the frame's aspect ratio."""
        if self.network_size and mask.shape[:2] != frame.shape[:2]:
            size = display_size(frame.shape[:2], mask.shape[:2])
            frame = processing.resize_bilinear(frame, size)
            mask = processing.resize_labels(mask, size)
        image = render(frame, mask, self.mode, self.palette, self.background, self.alpha)
        if self.legend:
            image = draw_legend(image, processing.resize_labels(mask, image.shape[:2]), self.palette,
                                self.class_names)
        return image

    def write(self, path: Path, frame: np.ndarray, mask: np.ndarray) -> None:
        """Write one frame's result as a PNG (atomically)."""
        if self.mode == "mask":
            write_palette_png(path, mask, self.palette)
        else:
            write_image(path, self.picture(frame, mask))
