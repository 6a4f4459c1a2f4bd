"""Where each frame's result goes, and drawing it.

Per source name (see ``plan``) and mode:

| input | ``mask`` (class ids, lossless) | ``overlay`` / ``background`` |
|---|---|---|
| image ``x`` | ``x.png`` (palette PNG: pixel value = class id) | ``x.overlay.png`` |
| video / camera ``clip`` | ``clip/000000.png``, one palette PNG per frame | ``clip.overlay.mp4`` (same frame count and rate) |
| bag ``drive`` | ``drive_segmentation/``: a rosbag2 MCAP bag, ``mono8`` ids on ``<topic>/segmentation`` | the same plus ``bgr8`` overlays on ``<topic>/segmentation/overlay`` |

Masks are never written as lossy video: mp4 colours do not survive as class ids.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..runtime import processing
from ..runtime.rendering import display_size, draw_legend, render, write_image, write_palette_png

MODES = ("mask", "overlay", "background")


def image_output(name: str, mode: str) -> str:
    return f"{name}.png" if mode == "mask" else f"{name}.{mode}.png"


def frame_output(name: str, index: int, mode: str) -> str:
    """One frame of a video or camera: a palette PNG in the source's folder (``mask``), or a
    PNG in ``<name>.<mode>.frames/`` where frames are written separately (Ray) before the
    video is assembled."""
    folder = name if mode == "mask" else f"{name}.{mode}.frames"
    return f"{folder}/{index:06d}.png"


def video_output(name: str, mode: str) -> str:
    return f"{name}.{mode}.mp4"


def bag_output(name: str) -> str:
    """A bag's result: a rosbag2 MCAP bag (a folder) with mask topics (and overlays in
    ``overlay`` mode) next to copies of nothing else unless asked."""
    return f"{name}_segmentation"


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
