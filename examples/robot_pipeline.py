"""A robotics-style perception loop around Segmenter.

    capture thread --> bounded queue (drops the OLDEST frame when full) --> segment --> consumer

A robot wants the freshest frame, not a backlog: when segmentation is slower than the camera,
old frames are dropped at the queue instead of piling up latency. Per frame it prints the
latency from capture to mask and the running count of dropped frames.

    python examples/robot_pipeline.py model.onnx --source clip.mp4
    python examples/robot_pipeline.py model.onnx --source 0 --seconds 30      # camera 0
    python examples/robot_pipeline.py model.onnx --source synthetic --fps 30  # no camera needed
"""

from __future__ import annotations

import argparse
import collections
import threading
import time

import numpy as np

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


def capture(source: str, fps: float, queue: LatestFrameQueue, stop: threading.Event) -> None:
    """Producer: frames with their capture timestamp, paced at ``fps``."""
    period = 1.0 / fps
    if source == "synthetic":
        rng = np.random.default_rng(0)
        base = rng.integers(0, 255, (480, 640, 3), dtype=np.uint8)
        index = 0
        while not stop.is_set():
            frame = np.roll(base, index * 4, axis=1)
            queue.put((index, time.perf_counter(), frame))
            index += 1
            time.sleep(period)
    else:
        cap = open_video(int(source) if source.isdigit() else source)
        index = 0
        try:
            while not stop.is_set():
                ok, frame = cap.read()
                if not ok:
                    break
                queue.put((index, time.perf_counter(), frame))
                index += 1
                time.sleep(period)  # a file reads faster than a camera: pace it like one
        finally:
            cap.release()
    queue.close()


def free_space_ahead(mask: np.ndarray, free_labels=(0,)) -> float:
    """Example consumer: share of 'free' pixels in the lower-middle third of the image."""
    h, w = mask.shape
    roi = mask[2 * h // 3 :, w // 3 : 2 * w // 3]
    return float(np.isin(roi, free_labels).mean())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", help=".onnx / .engine / .pth")
    p.add_argument("--source", default="synthetic", help="video file, camera index or 'synthetic'")
    p.add_argument("--fps", type=float, default=30.0, help="capture rate")
    p.add_argument("--seconds", type=float, default=10.0, help="how long to run")
    p.add_argument("--queue", type=int, default=2, help="queue size (frames)")
    args = p.parse_args()

    seg = Segmenter(args.model, output_size="network")  # consumers rarely need full resolution
    queue = LatestFrameQueue(args.queue)
    stop = threading.Event()
    producer = threading.Thread(target=capture, args=(args.source, args.fps, queue, stop), daemon=True)
    producer.start()
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
              f"free ahead {free_space_ahead(mask):.2f}", flush=True)
    stop.set()
    producer.join(timeout=2)
    seg.close()
    if latencies:
        ms = np.array(latencies) * 1e3
        print(f"processed {len(ms)} frames, dropped {queue.dropped}; latency median {np.median(ms):.1f} ms, "
              f"p90 {np.percentile(ms, 90):.1f} ms")


if __name__ == "__main__":
    main()
