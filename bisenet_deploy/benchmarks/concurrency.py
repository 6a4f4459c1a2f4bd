"""A served model under load: ``--concurrency 1,4,8`` clients at once.

Each client is a thread with its own Segmenter on the URL (its own connection) calling
``predict_batch`` on one frame in a loop, ``calls`` times, all starting together. Reported
per level: latency percentiles of one call, throughput (frames / wall time of the level), and
from Triton's statistics endpoint how many requests it merged into one model execution
(dynamic batching: inferences / executions).
"""

from __future__ import annotations

import threading
import time
from typing import Any

import numpy as np

from .stats import summarize


def _settled(probe, inferences: int, timeout: float = 3.0) -> dict[str, int]:  # noqa: ANN001
    """Triton's statistics once they count ``inferences``: it records a request after sending
    its response, so right after the last answer the count can still be short (bounded wait)."""
    deadline = time.monotonic() + timeout
    stats = probe.statistics()
    while stats["inference_count"] < inferences and time.monotonic() < deadline:
        time.sleep(0.05)
        stats = probe.statistics()
    return stats


def concurrency_run(url: str, frames: list[np.ndarray], clients: int, calls: int) -> dict[str, Any]:
    from ..runtime import Segmenter
    from ..runtime.backends.triton import TritonBackend

    probe = TritonBackend(url)
    before = probe.statistics()
    segs = [Segmenter(url) for _ in range(clients)]
    for seg in segs:  # connections up before the clock starts
        seg(frames[0])
    warm = _settled(probe, before["inference_count"] + clients)
    barrier = threading.Barrier(clients + 1)
    latencies: list[list[float]] = [[] for _ in range(clients)]
    errors: list[str] = []

    def client(i: int) -> None:
        barrier.wait()
        try:
            for k in range(calls):
                frame = frames[(i + k) % len(frames)]
                start = time.perf_counter()
                segs[i](frame)
                latencies[i].append(time.perf_counter() - start)
        except Exception as exc:  # noqa: BLE001 - reported, the level is marked failed
            errors.append(str(exc))

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    barrier.wait()
    start = time.perf_counter()
    for t in threads:
        t.join(timeout=600)
    wall = time.perf_counter() - start
    after = _settled(probe, warm["inference_count"] + sum(len(per) for per in latencies))
    for seg in segs:
        seg.close()
    probe.close()
    samples = [s for per in latencies for s in per]
    inferences = after["inference_count"] - warm["inference_count"]
    executions = after["execution_count"] - warm["execution_count"]
    stats = summarize(samples).to_dict() if samples else None
    return {"clients": clients, "calls": len(samples), "latency_ms": stats, "throughput_fps": len(samples) / wall,
            "wall_s": wall, "inferences": inferences, "executions": executions,
            "requests_per_execution": inferences / executions if executions else None,
            "errors": errors[:3], "before": before}
