"""A robotics-style perception loop around Segmenter.

    capture thread --> bounded queue (drops the OLDEST frame when full) --> segment --> consumer

A robot wants the freshest frame, not a backlog: when segmentation is slower than the camera,
old frames are dropped at the queue instead of piling up latency. Per frame it prints the
latency from capture to mask, the running count of dropped frames, and what a consumer would
act on: "free ahead", the share of pixels in the lower-middle third of the image (the road
just in front of the robot) whose label is one of --free-labels (default: class 0).

A video file is read at its own frame rate (as a camera would deliver it), unless --fps says
otherwise; a camera delivers at its own rate.

    python examples/robot_pipeline.py model.onnx --source clip.mp4
    python examples/robot_pipeline.py model.onnx --source 0 --seconds 30      # camera 0
    python examples/robot_pipeline.py model.onnx --source synthetic --fps 30  # no camera needed
"""

from __future__ import annotations

import argparse
import collections
import sys
import threading
import time

import cv2
import numpy as np

from bisenet_deploy.errors import UserError
from bisenet_deploy.runtime import Segmenter
from bisenet_deploy.runtime.sources import open_video


class LatestFrameQueue:
    """Bounded queue that drops the oldest item when full (and counts the drops)."""

    def __init__(self, maxsize: int = 2) -> None:
        self._items: collections.deque = collections.deque()
        self._maxsize = maxsize
        self._cond = threading.Condition()
        self.dropped = 0
        self.closed = False

    def put(self, item) -> None:
        with self._cond:
            if len(self._items) >= self._maxsize:
                self._items.popleft()
                self.dropped += 1
            self._items.append(item)
            self._cond.notify()

    def get(self, timeout: float = 1.0):
        with self._cond:
            if not self._cond.wait_for(lambda: self._items or self.closed, timeout):
                return None
            return self._items.popleft() if self._items else None

    def close(self) -> None:
        with self._cond:
            self.closed = True
            self._cond.notify_all()


def open_source(source: str):
    """(capture or None for synthetic, frames per second it delivers, is it a file); opened in
    the main thread so a missing camera or file is one clear error, not a dead thread."""
    if source == "synthetic":
        return None, None, False
    cap = open_video(int(source) if source.isdigit() else source)
    fps = cap.get(cv2.CAP_PROP_FPS) or None
    return cap, fps, not source.isdigit()


def capture(cap, paced_fps: float | None, queue: LatestFrameQueue, stop: threading.Event) -> None:  # noqa: ANN001
    """Producer: frames with their capture timestamp; paced at ``paced_fps`` (synthetic
    frames and files), or as fast as the camera delivers them (``None``)."""
    period = 1.0 / paced_fps if paced_fps else 0.0
    index = 0
    next_at = time.perf_counter()
    rng = np.random.default_rng(0)
    base = rng.integers(0, 255, (480, 640, 3), dtype=np.uint8) if cap is None else None
    try:
        while not stop.is_set():
            if cap is None:
                frame = np.roll(base, index * 4, axis=1)
            else:
                ok, frame = cap.read()
                if not ok:
                    break
            queue.put((index, time.perf_counter(), frame))
            index += 1
            if period:  # a file reads faster than a camera: deliver it at its own frame rate
                next_at += period
                time.sleep(max(0.0, next_at - time.perf_counter()))
    finally:
        if cap is not None:
            cap.release()
        queue.close()


def free_space_ahead(mask: np.ndarray, free_labels=(0,)) -> float:  # noqa: B006
    """Example consumer: share of 'free' pixels in the lower-middle third of the image."""
    h, w = mask.shape
    roi = mask[2 * h // 3 :, w // 3 : 2 * w // 3]
    return float(np.isin(roi, free_labels).mean())


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", help=".onnx / .engine / .pth")
    p.add_argument("--source", default="synthetic", help="video file, camera index or 'synthetic'")
    p.add_argument("--fps", type=float, help="delivery rate (default: a file's own rate; 30 for synthetic)")
    p.add_argument("--seconds", type=float, default=10.0, help="how long to run")
    p.add_argument("--queue", type=int, default=2, help="queue size (frames)")
    p.add_argument("--free-labels", default="0", help="labels that count as free space, comma-separated")
    args = p.parse_args()
    try:
        return run(args)
    except UserError as exc:
        print(f"robot_pipeline: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def run(args: argparse.Namespace) -> int:
    if args.fps is not None and args.fps <= 0:
        raise UserError("--fps must be positive")
    free = tuple(int(x) for x in args.free_labels.split(",") if x.strip())
    cap, source_fps, is_file = open_source(args.source)
    paced = args.fps or (source_fps if is_file else None) or (30.0 if cap is None else None)
    try:
        seg = Segmenter(args.model, output_size="network")  # consumers rarely need full resolution
    except BaseException:
        if cap is not None:
            cap.release()
        raise
    queue = LatestFrameQueue(args.queue)
    stop = threading.Event()
    producer = threading.Thread(target=capture, args=(cap, paced, queue, stop), daemon=True)
    producer.start()
    rate = f"{paced:g} FPS" if paced else "the camera's rate"
    print(f"source {args.source} at {rate}; free ahead = share of labels {free} in the lower-middle third")
    latencies = []
    deadline = time.perf_counter() + args.seconds
    while time.perf_counter() < deadline:
        item = queue.get()
        if item is None:
            if queue.closed:
                break
            continue
        index, captured, frame = item
        mask = seg(frame)
        latency = time.perf_counter() - captured
        latencies.append(latency)
        print(f"frame {index:5d}  latency {latency * 1e3:7.1f} ms  dropped {queue.dropped:4d}  "
              f"free ahead {free_space_ahead(mask, free):.2f}", flush=True)
    stop.set()
    producer.join(timeout=2)
    seg.close()
    if latencies:
        ms = np.array(latencies) * 1e3
        print(f"processed {len(ms)} frames, dropped {queue.dropped}; latency median {np.median(ms):.1f} ms, "
              f"p90 {np.percentile(ms, 90):.1f} ms")
        return 0
    print("processed 0 frames: the source delivered none", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
