"""A one-camera, one-frame-at-a-time node core: message in, mask message out, and a depth-1
mailbox that drops stale frames. (The ROS 2 node, ``python -m bisenet_deploy.ros2``, now
serves several topics through the streaming runtime: ``stream_node``; this stays for code
that segments one topic with a plain Segmenter.)

A camera publishes faster than a CPU segments; a robot wants the freshest mask, not a
growing backlog. The node's subscription callback only ``put``s the message into a
``LatestOnly`` mailbox (replacing one still waiting: a drop); one worker thread ``take``s
the newest and runs ``SegmentationCore.handle``. Both are plain Python over message fields,
tested with the ``rosbags`` message classes; ``rclpy`` is imported only by the node module.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import InputError
from ..runtime.rendering import Renderer
from .images import array_to_image, message_to_bgr


class LatestOnly:
    """A mailbox of depth one: ``put`` replaces what is waiting (counted in ``dropped``)."""

    def __init__(self) -> None:
        self._item: Any = None
        self._full = False
        self._closed = False
        self._cond = threading.Condition()
        self.dropped = 0
        self.received = 0

    def put(self, item: Any) -> None:
        with self._cond:
            if self._full:
                self.dropped += 1
            self._item, self._full = item, True
            self.received += 1
            self._cond.notify()

    def take(self, timeout: float | None = None) -> Any:
        """The newest item, or None after ``timeout`` seconds or once closed."""
        with self._cond:
            if not self._cond.wait_for(lambda: self._full or self._closed, timeout):
                return None
            if not self._full:
                return None
            item, self._item, self._full = self._item, None, False
            return item

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()


@dataclass
class Stats:
    """Latency of the last ``window`` frames (receive to publish) and counters."""

    window: int = 100
    latencies: deque = field(default_factory=lambda: deque(maxlen=100))
    processed: int = 0
    failed: int = 0

    def line(self, mailbox: LatestOnly) -> str:
        if not self.latencies:
            return f"received {mailbox.received}, processed 0, dropped {mailbox.dropped}"
        ms = np.array(self.latencies) * 1e3
        return (f"received {mailbox.received}, processed {self.processed}, dropped {mailbox.dropped} (stale), "
                f"failed {self.failed}; latency median {np.median(ms):.1f} ms, p90 {np.percentile(ms, 90):.1f} ms")


class SegmentationCore:
    """Camera message -> [(topic suffix, message)]: a ``mono8`` class-id mask with the camera
    message's header, and a ``bgr8`` overlay when asked.

    Args:
        seg: a Segmenter.
        image_type: the ``sensor_msgs/Image`` class to build (rosbags' or rclpy's).
        overlay: also publish an overlay.
        data_as_bytes: give ``data`` as bytes (rclpy) instead of a NumPy array (rosbags).
    """

    def __init__(self, seg: Any, image_type: Any, overlay: bool = False, data_as_bytes: bool = False) -> None:
        self.seg, self.image_type, self.data_as_bytes = seg, image_type, data_as_bytes
        self.renderer = Renderer.for_spec(seg.spec, mode="overlay") if overlay else None
        self.stats = Stats()

    def _image(self, header: Any, array: np.ndarray, encoding: str) -> Any:
        return array_to_image(self.image_type, header, array, encoding, self.data_as_bytes)

    def handle(self, msg: Any, msgtype: str = "sensor_msgs/msg/Image", received: float | None = None
               ) -> list[tuple[str, Any]]:
        start = received if received is not None else time.perf_counter()
        try:
            frame = message_to_bgr(msg, msgtype)
        except InputError:
            self.stats.failed += 1
            raise
        mask = self.seg(frame)
        out = [("", self._image(msg.header, mask, "mono8"))]
        if self.renderer is not None:
            out.append(("/overlay", self._image(msg.header, self.renderer.picture(frame, mask), "bgr8")))
        self.stats.latencies.append(time.perf_counter() - start)
        self.stats.processed += 1
        return out
