"""Where frames come from: image files, folders, videos and cameras (OpenCV)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np

from ..errors import InputError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")
VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg")


def is_image(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_SUFFIXES


def is_video(path: Path) -> bool:
    return path.suffix.lower() in VIDEO_SUFFIXES


def list_images(folder: str | Path, recursive: bool = True) -> list[Path]:
    """Image files under ``folder`` in sorted order (recursively by default)."""
    folder = Path(folder)
    if not folder.exists():
        raise InputError(f"'{folder}' does not exist")
    if folder.is_file():
        return [folder] if is_image(folder) else []
    pattern = "**/*" if recursive else "*"
    return sorted(p for p in folder.glob(pattern) if p.is_file() and is_image(p))


def read_image(path: str | Path) -> np.ndarray | None:
    """BGR uint8 image, or None when the file cannot be decoded."""
    data = np.fromfile(str(path), dtype=np.uint8)  # handles non-ASCII paths, unlike imread
    if data.size == 0:
        return None
    return cv2.imdecode(data, cv2.IMREAD_COLOR)


#: how long OpenCV may wait for a network stream to open, or for its next packet. Its default
#: is 30 s, and its FFmpeg backend opens one stream at a time: a server that accepts and never
#: answers held every other open (files included) for that long.
NETWORK_TIMEOUT_MS = 10000


def open_video(source: str | int) -> cv2.VideoCapture:
    if isinstance(source, str) and "://" in source:
        cap = cv2.VideoCapture(source, cv2.CAP_ANY, [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, NETWORK_TIMEOUT_MS,
                                                     cv2.CAP_PROP_READ_TIMEOUT_MSEC, NETWORK_TIMEOUT_MS])
    else:
        cap = cv2.VideoCapture(source)
    if not cap.isOpened():
        what = f"camera {source}" if isinstance(source, int) else f"video '{source}'"
        raise InputError(f"cannot open {what}")
    return cap


class OpenedOnRead:
    """A video source opened by the thread that reads it, on its first frame: a URL's open can
    block for ``NETWORK_TIMEOUT_MS`` and must stall only its own stream, not the caller that
    sets the streams up. ``cap()`` opens (once) and returns the capture; ``release()`` (from the
    same thread, when its frames end) releases it if it was opened."""

    def __init__(self, target: str | int) -> None:
        self.target = target
        self._cap: cv2.VideoCapture | None = None

    def cap(self) -> cv2.VideoCapture:
        if self._cap is None:
            self._cap = open_video(self.target)
        return self._cap

    def release(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None


def truncated(declared: int, read: int, wanted: int | None = None) -> str | None:
    """Why a video that ended after ``read`` frames failed, or None when it did not: it declared
    ``declared`` frames (0: nothing declared) and ``wanted`` of them were asked for (None: all).
    The one rule of a plain run (``jobs.frames``), of ``--live`` and of the streaming runtime."""
    stop = declared if wanted is None or declared <= 0 else min(declared, wanted)
    return truncation(declared, read) if 0 < stop and read < stop else None


def truncation(declared: int, read: int) -> str:
    return f"declares {declared} frames but only {read} could be decoded (truncated or corrupt?)"


def video_frames(source: str | int, max_frames: int | None = None) -> Iterator[np.ndarray]:
    """Frames of a video file or camera index until it ends or ``max_frames`` is reached."""
    cap = open_video(source)
    try:
        count = 0
        while max_frames is None or count < max_frames:
            ok, frame = cap.read()
            if not ok:
                break
            count += 1
            yield frame
    finally:
        cap.release()
