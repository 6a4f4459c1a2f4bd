"""What travels through the streaming runtime: captured frames, the latest-frame slot that
holds them, the results that come out, and the per-stream figures."""

from __future__ import annotations

import collections
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

#: what an inference form calls when a batch is done: (output, None) or (None, the error)
Done = Callable[[np.ndarray | None, BaseException | None], None]


def deliver(done: Done, work: Callable[[np.ndarray], np.ndarray], batch: np.ndarray) -> None:
    """Run ``work(batch)`` and hand its output, or the error it raised, to ``done`` (the
    runtime reports the error as its stream's): every inference form's worker ends this way."""
    try:
        output = work(batch)
    except BaseException as exc:  # noqa: BLE001 - handed to the runtime, which reports it
        done(None, exc)
        return
    done(output, None)


#: latencies kept per stream for the percentiles (a ring: memory stays bounded on long runs)
LATENCY_WINDOW = 20000


@dataclass
class Captured:
    """One frame as it arrived: ``captured`` is ``time.perf_counter()`` at capture (the clock
    latencies are measured on); ``stamp`` is the caller's own time (ROS header stamp, wall
    clock) carried through untouched."""

    stream_id: str
    index: int
    frame: np.ndarray
    stamp: Any
    captured: float
    seq: int = -1  # position among this stream's processed frames (set when taken)
    taken: float = 0.0


@dataclass
class StreamResult:
    """One mask, delivered per stream in capture order.

    ``index``: the frame's number in its source (dropped frames leave gaps); ``stamp``: the
    caller's capture stamp (``time.time()`` at capture when none was given); ``frame``: the
    input frame (not a copy). Times in seconds: ``queued`` (capture -> taken for
    preprocessing), ``pre``, ``infer`` (submitted -> output back, waiting for a free request
    included), ``post``, and ``latency`` (capture -> mask ready, delivery wait excluded).
    """

    stream_id: str
    index: int
    stamp: Any
    mask: np.ndarray
    frame: np.ndarray
    queued: float
    pre: float
    infer: float
    post: float
    latency: float
    batch: int = 1


@dataclass
class StreamStats:
    """Figures of one stream so far: ``received`` frames offered, ``dropped`` by the latest-frame
    slot (a newer frame replaced them), ``delivered`` masks, ``failed`` frames whose batch
    failed, ``error`` why the source stopped early (None: it did not), latency percentiles in
    milliseconds (None before the first mask)."""

    stream_id: str
    source: str
    received: int = 0
    dropped: int = 0
    delivered: int = 0
    failed: int = 0
    ended: bool = False
    error: str | None = None
    latencies: collections.deque = field(default_factory=lambda: collections.deque(maxlen=LATENCY_WINDOW),
                                         repr=False)

    @property
    def drop_rate(self) -> float:
        return self.dropped / self.received if self.received else 0.0

    def latency_ms(self) -> dict[str, float] | None:
        if not self.latencies:
            return None
        values = np.asarray(list(self.latencies)) * 1000.0  # a copy: post threads append
        p50, p90, p99 = np.percentile(values, [50, 90, 99])
        return {"p50": float(p50), "p90": float(p90), "p99": float(p99), "max": float(values.max())}

    def to_dict(self) -> dict[str, Any]:
        return {"stream_id": self.stream_id, "source": self.source, "received": self.received,
                "dropped": self.dropped, "delivered": self.delivered, "failed": self.failed,
                "drop_rate": self.drop_rate, "ended": self.ended, "error": self.error,
                "latency_ms": self.latency_ms()}


class LatestFrameSlot:
    """Holds at most ``depth`` frames of one stream; a new frame replaces the oldest and counts
    it as dropped (a robot wants the freshest frame, not a backlog). ``lossless`` sources
    (files read for every frame) wait for room instead. All slots of a runtime share one
    condition, so the workers wait for "any stream has a frame" in one place."""

    def __init__(self, stats: StreamStats, cond: threading.Condition, depth: int = 1, lossless: bool = False) -> None:
        self.stats = stats
        self.frames: collections.deque[Captured] = collections.deque()
        self.depth = depth
        self.lossless = lossless
        self._cond = cond
        self.next_index = 0
        self.next_seq = 0

    def put(self, item: Captured, stopping: threading.Event) -> bool:
        """Store ``item``; False when the runtime stopped first (lossless waits only)."""
        with self._cond:
            if self.lossless:
                while len(self.frames) >= self.depth and not stopping.is_set():
                    self._cond.wait(0.1)
                if stopping.is_set():
                    return False
            elif len(self.frames) >= self.depth:
                self.frames.popleft()
                self.stats.dropped += 1
            self.frames.append(item)
            self.stats.received += 1
            self._cond.notify_all()
            return True

    def take(self, now: float) -> Captured:
        """The oldest held frame (caller holds the condition), numbered for in-order delivery."""
        item = self.frames.popleft()
        item.seq, item.taken = self.next_seq, now
        self.next_seq += 1
        self._cond.notify_all()  # a lossless source may be waiting for room
        return item
