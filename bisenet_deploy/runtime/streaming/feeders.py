"""Pulled sources of the streaming runtime: cameras, video files, URLs and Python iterables,
each read by its own thread into its stream's latest-frame slot.

A camera paces itself (``read()`` blocks until the next frame); a file or an iterable is read
as fast as it gives frames unless ``rate`` paces it (``"native"``: a video's own frame rate),
so "a file played as a camera would deliver it" is ``rate="native"`` and "every frame of a
file" is ``lossless=True``.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from ...errors import InputError
from .. import processing

log = logging.getLogger("bisenet_deploy")


def describe(source: Any) -> str:
    if isinstance(source, bool):
        raise InputError(f"not a frame source: {source!r}")
    if isinstance(source, int):
        return f"camera {source}"
    if isinstance(source, (str, Path)):
        return str(source)
    return type(source).__name__


def open_frames(source: Any, rate: float | str | None) -> tuple[Iterator[Any], float | None, Callable[[], None]]:
    """(items, frames per second to pace at or None, release) for a source: an int camera id,
    a video path or URL (OpenCV), or an iterable of frames or ``(frame, stamp)`` pairs.

    A URL is opened by its own thread, on the first frame asked for: a server that accepts the
    connection and never answers holds OpenCV's open (``sources.NETWORK_TIMEOUT_MS``), and that must
    stall only its own stream, not the caller or the other sources. Its failure to open is that
    stream's error. (It paces itself: ``rate="native"`` adds nothing to a network stream.)"""
    if isinstance(source, (int, str, Path)) and not isinstance(source, bool):
        is_url = isinstance(source, str) and "://" in source
        if is_url:
            return _url_frames(source, None if rate == "native" else _rate(rate))
        import cv2

        from ..sources import open_video

        is_file = not isinstance(source, int)
        if is_file and not Path(source).exists():
            raise InputError(f"video '{source}' does not exist")
        cap = open_video(source if isinstance(source, int) else str(source))
        fps = None
        # a file that ends before the frames it declares is that stream's error (sources.truncated)
        declared = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0) if is_file else 0
        if rate == "native":
            fps = cap.get(cv2.CAP_PROP_FPS) or None
            if not fps or fps <= 0 or fps > 1000:
                fps = None  # cameras and some streams report nothing usable: they pace themselves
        return _read(cap, source, declared), fps if rate == "native" else _rate(rate), cap.release
    if rate == "native":
        raise InputError("rate='native' needs a video file or stream (an iterable has no frame rate of its own)")
    if isinstance(source, (np.ndarray, bytes)) or not isinstance(source, Iterable):
        raise InputError(f"not a frame source: {describe(source)} (give a camera id, a video path or URL, "
                         "or an iterable of frames)")
    iterator = iter(source)
    return iterator, _rate(rate), getattr(iterator, "close", lambda: None)


def _read(cap: Any, source: Any, declared: int) -> Iterator[np.ndarray]:
    from ..sources import truncated

    count = 0
    while True:
        ok, frame = cap.read()
        if not ok:
            why = truncated(declared, count)
            if why:
                raise InputError(f"{source}: {why}")
            return
        count += 1
        yield frame


def _url_frames(url: str, fps: float | None) -> tuple[Iterator[np.ndarray], float | None, Callable[[], None]]:
    from ..sources import OpenedOnRead

    source = OpenedOnRead(url)

    def frames() -> Iterator[np.ndarray]:
        yield from _read(source.cap(), url, 0)  # opened on the feeder thread, which also releases it

    return frames(), fps, source.release


def _rate(rate: float | str | None) -> float | None:
    if rate is None:
        return None
    if isinstance(rate, str) or not rate > 0:
        raise InputError(f"rate must be a positive number of frames per second, 'native' or None, got {rate!r}")
    return float(rate)


def split_item(item: Any) -> tuple[Any, Any]:
    """An iterable yields frames or (frame, stamp) pairs."""
    if isinstance(item, tuple) and len(item) == 2:
        return item
    return item, None


def run_feeder(items: Iterator[Any], fps: float | None, deliver: Callable[[np.ndarray, Any], bool],
               stop: threading.Event, finish: Callable[[str | None], None], name: str) -> None:
    """Thread body: read, validate, pace and deliver frames until the source ends, fails or the
    runtime stops. ``finish(error)`` is always called once (error None: ended normally)."""
    error = None
    period = 1.0 / fps if fps else 0.0
    next_at = time.perf_counter()
    try:
        for count, item in enumerate(items):
            if stop.is_set():
                break
            frame, stamp = split_item(item)
            frame = processing.as_bgr_frame(frame, f"{name} frame {count}")
            if period:
                delay = next_at - time.perf_counter()
                if delay > 0 and stop.wait(delay):
                    break
                # behind schedule: carry on from now rather than bursting to catch up
                next_at = max(next_at, time.perf_counter() - period) + period
            if not deliver(frame, stamp):
                break
    except Exception as exc:  # noqa: BLE001 - one failing source is reported and the others go on
        error = f"{type(exc).__name__}: {exc}" if not isinstance(exc, InputError) else str(exc)
        log.warning("stream %s stopped: %s", name, error)
    finally:
        finish(error)
