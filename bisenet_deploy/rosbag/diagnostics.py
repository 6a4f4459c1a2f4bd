"""Per-camera figures of the live node as ``diagnostic_msgs/DiagnosticStatus`` entries.

Robot stacks watch ``/diagnostics`` (rqt_robot_monitor, diagnostic_aggregator, Foxglove):
one status per camera topic, named ``<node>: <topic>``, with the rate of masks out, the
rate of frames in, the share dropped as stale, failures and the receive-to-publish latency,
all over the period since the previous report (totals too). Levels: STALE when nothing came
in during the period, ERROR when frames came in but none could be segmented, WARN when more
than 5 % were dropped or any failed, else OK. Plain Python: the node only publishes.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

OK, WARN, ERROR, STALE = 0, 1, 2, 3
DROP_WARN = 0.05  # ros2_benchmark's limit for "keeps up": < 5 % dropped


@dataclass
class _Counts:
    received: int = 0
    dropped: int = 0
    segmented: int = 0
    failed: int = 0


@dataclass
class TopicFigures:
    total: _Counts = field(default_factory=_Counts)
    seen: _Counts = field(default_factory=_Counts)  # the totals at the previous report
    latencies: deque = field(default_factory=lambda: deque(maxlen=10_000))  # seconds, this period
    last_error: str = ""


class Diagnostics:
    """Counters per topic, thread-safe (callbacks, the result thread and a timer use them)."""

    def __init__(self, node: str, topics: Sequence[str], clock: Callable[[], float] = time.monotonic,
                 hardware_id: str = "") -> None:
        self.node, self.clock, self.hardware_id = node, clock, hardware_id
        self.topics = {t: TopicFigures() for t in topics}
        self._since = clock()
        self._lock = threading.Lock()

    def received(self, topic: str) -> None:
        with self._lock:
            self.topics[topic].total.received += 1

    def dropped(self, topic: str, total: int) -> None:
        """The topic's drops so far (a runtime's running count)."""
        with self._lock:
            self.topics[topic].total.dropped = max(self.topics[topic].total.dropped, int(total))

    def segmented(self, topic: str, latency_s: float) -> None:
        with self._lock:
            figures = self.topics[topic]
            figures.total.segmented += 1
            figures.latencies.append(latency_s)

    def failed(self, topic: str, why: str) -> None:
        with self._lock:
            figures = self.topics[topic]
            figures.total.failed += 1
            figures.last_error = why

    def statuses(self) -> list[dict[str, Any]]:
        """One status per topic for the period since the last call (which starts a new one)."""
        with self._lock:
            now = self.clock()
            period = max(now - self._since, 1e-9)
            self._since = now
            out = []
            for topic, f in self.topics.items():
                t, s = f.total, f.seen
                got, dropped = t.received - s.received, t.dropped - s.dropped
                done, failed = t.segmented - s.segmented, t.failed - s.failed
                ms = np.asarray(f.latencies, dtype=np.float64) * 1e3
                f.latencies.clear()
                f.seen = _Counts(**vars(t))
                drop_rate = dropped / got if got else 0.0
                level = STALE if got == 0 else ERROR if done == 0 and failed else \
                    WARN if drop_rate > DROP_WARN or failed else OK
                values = {"rate_hz": f"{done / period:.2f}", "input_rate_hz": f"{got / period:.2f}",
                          "drop_rate": f"{drop_rate:.4f}", "received": t.received, "segmented": t.segmented,
                          "dropped": t.dropped, "failed": t.failed, "period_s": f"{period:.2f}"}
                if ms.size:
                    p50, p90 = np.percentile(ms, [50, 90])
                    values.update(latency_p50_ms=f"{p50:.1f}", latency_p90_ms=f"{p90:.1f}",
                                  latency_max_ms=f"{ms.max():.1f}")
                if f.last_error:
                    values["last_error"] = f.last_error
                message = ("no frames" if level == STALE else
                           f"{done / period:.1f} Hz, {100 * drop_rate:.1f} % dropped" +
                           (f", latency p50 {values['latency_p50_ms']} ms" if ms.size else "") +
                           (f", {failed} failed" if failed else ""))
                out.append({"level": level, "name": f"{self.node}: {topic}", "message": message,
                            "hardware_id": self.hardware_id, "values": values})
            return out
