"""Rate-driven benchmark: N synthetic cameras at a fixed rate, the synchronous way against the
streaming runtime (``bisenet-bench MODEL --streams 1,2,4 --rate HZ|max``).

After ros2_benchmark's method: frames are replayed at a fixed rate per camera and stamped at
capture; a frame that a newer one replaces before it is taken is dropped (latest-frame slot,
depth 1, in both ways); latency is capture -> mask. ``--rate max`` searches for the highest
per-stream rate at which fewer than ``MAX_DROP`` of the frames are dropped.

* ``sync``: one ``Segmenter`` shared by N threads, one per camera, each segmenting its
  camera's latest frame with ``seg(frame)``: what an application does without the runtime.
* ``pipeline``: one ``StreamRuntime`` on the same Segmenter, N push streams.

All cameras are driven by one clock thread (staggered, so they do not tick together) with the
same frames (``--images`` or the demo scenes) in both ways. CPU use is the process's CPU time
over the wall time (100 % = one core busy).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..runtime.segmenter import Segmenter
from ..runtime.streaming import StreamRuntime
from ..runtime.streaming.records import Captured, LatestFrameSlot, StreamStats
from . import stream_ceiling

MAX_DROP = 0.05
#: rate searches: fewest frames a trial offers (with 20, one dropped frame already failed the 5 % bar)
MIN_FRAMES = 40
#: the overload probe of a rate search offers this many frames per second in all
PROBE_FPS = 1000.0
#: rate searches: trials after the unthrottled probe
SEARCH_STEPS = 5
DRAIN_SECONDS = 3.0


@dataclass
class RateConfig:
    model: Path
    backends: list[str]
    streams: list[int]
    rate_hz: float | None  # None: search for the peak
    seconds: float
    frames: list[np.ndarray]
    pipeline_modes: tuple[str, ...] = ("throughput",)
    max_batch: int = 1
    search_steps: int = SEARCH_STEPS
    log: Callable[[str], None] = field(default=lambda msg: None)


def drive_cameras(n: int, rate_hz: float, seconds: float, frames: list[np.ndarray],
                  sink: Callable[[int, int, np.ndarray, float], None]) -> int:
    """Offer ``n`` cameras' frames at ``rate_hz`` each for ``seconds`` from one clock thread
    (the caller's), camera i shifted by i/n of a period; returns the frames offered. A clock
    that falls behind (an overloaded machine) skips ahead instead of bursting."""
    period = 1.0 / rate_hz
    start = time.perf_counter()
    end = start + seconds
    offered = 0
    tick = 0
    while True:
        due = start + tick * period
        if due >= end:
            return offered
        for cam in range(n):
            at = due + cam * period / n
            delay = at - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
            sink(cam, tick, frames[(cam * 7 + tick) % len(frames)], time.perf_counter())
            offered += 1
        tick += 1
        late = int((time.perf_counter() - start) / period) - tick
        if late > 0:  # behind by whole periods: those frames were never captured
            tick += late


class _Collector:
    """Latencies and counts of one trial (thread-safe)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.latencies: list[float] = []
        self.last = 0.0

    def add(self, latency: float) -> None:
        now = time.perf_counter()
        with self.lock:
            self.latencies.append(latency)
            self.last = now


def _sync_trial(seg: Segmenter, n: int, rate: float, seconds: float, frames: list[np.ndarray]) -> dict[str, Any]:
    cond = threading.Condition()
    stop = threading.Event()
    stats = [StreamStats(str(i), "synthetic") for i in range(n)]
    slots = [LatestFrameSlot(s, cond) for s in stats]
    got = _Collector()
    busy = [0]

    def worker(i: int) -> None:
        slot = slots[i]
        while True:
            with cond:
                while not slot.frames and not stop.is_set():
                    cond.wait(0.1)
                if not slot.frames:
                    return
                item = slot.take(time.perf_counter())
                busy[0] += 1
            seg(item.frame)
            got.add(time.perf_counter() - item.captured)
            with cond:
                busy[0] -= 1
                cond.notify_all()

    threads = [threading.Thread(target=worker, args=(i,), name=f"bisenet-sync-{i}", daemon=True) for i in range(n)]
    for t in threads:
        t.start()

    def sink(cam: int, tick: int, frame: np.ndarray, captured: float) -> None:
        slots[cam].put(Captured(str(cam), tick, frame, None, captured), stop)

    def finish() -> None:
        stop.set()
        for t in threads:
            t.join(5)

    try:
        return _timed(n, rate, seconds, frames, sink, got, stats,
                      drained=lambda: all(not s.frames for s in slots) and busy[0] == 0, finish=finish)
    finally:  # also on SIGTERM/Ctrl-C: no worker may still be inside the backend when the process exits
        finish()


def _pipeline_trial(seg: Segmenter, n: int, rate: float, seconds: float, frames: list[np.ndarray], mode: str,
                    max_batch: int) -> dict[str, Any]:
    got = _Collector()
    rt = StreamRuntime(seg, mode=mode, max_batch=max_batch, on_result=lambda r: got.add(r.latency))
    try:  # closed however the trial ends (SIGTERM in the warm-up too): no request left running at exit
        ids = [rt.add_push(str(i)) for i in range(n)]
        rt.start()
        for sid in ids:  # warm the requests and threads before the clock starts
            rt.push(sid, frames[0])
        deadline = time.monotonic() + 10
        while sum(s.delivered for s in rt.stats().values()) < n and time.monotonic() < deadline:
            time.sleep(0.01)
        warm = {sid: (s.received, s.dropped) for sid, s in rt.stats().items()}
        got.latencies.clear()

        def sink(cam: int, tick: int, frame: np.ndarray, captured: float) -> None:
            rt.push(ids[cam], frame)

        row = _timed(n, rate, seconds, frames, sink, got, list(rt.stats().values()), drained=rt.idle,
                     finish=lambda: None, baseline=warm)
    finally:
        rt.close()
    row["runtime"] = rt.inference.kind
    return row


def _timed(n: int, rate: float, seconds: float, frames: list[np.ndarray], sink, got: _Collector,  # noqa: ANN001
           stats: list[StreamStats], drained: Callable[[], bool], finish: Callable[[], Any],
           baseline: dict[str, tuple[int, int]] | None = None) -> dict[str, Any]:
    cpu0, start = time.process_time(), time.perf_counter()
    offered = drive_cameras(n, rate, seconds, frames, sink)
    emitted = time.perf_counter()
    deadline = emitted + DRAIN_SECONDS
    while not drained() and time.perf_counter() < deadline:
        time.sleep(0.005)
    with got.lock:
        latencies = list(got.latencies)
        last = got.last
    wall = max(last, emitted) - start  # capture window + the drain: the CPU time's share
    cpu = time.process_time() - cpu0
    finish()
    base = baseline or {}
    dropped = sum(s.dropped - base.get(s.stream_id, (0, 0))[1] for s in stats)
    delivered = len(latencies)
    ms = np.asarray(latencies) * 1000.0
    lat = ({k: float(v) for k, v in zip(("p50", "p90", "p99"), np.percentile(ms, [50, 90, 99]))} | {"max": float(ms.max())}
           if delivered else {"p50": None, "p90": None, "p99": None, "max": None})
    return {"streams": n, "rate_hz": rate, "offered_fps": offered / seconds, "delivered_fps": delivered / seconds,
            "offered": offered, "delivered": delivered, "dropped": dropped,
            "drop_rate": (offered - delivered) / offered if offered else 0.0,
            "latency_ms": lat, "cpu_percent": 100.0 * cpu / wall, "seconds": wall}


def trial(seg: Segmenter, mode: str, n: int, rate: float, config: RateConfig, min_frames: int = 0) -> dict[str, Any]:
    """One measured run of ``n`` cameras at ``rate`` Hz each: ``mode`` ``sync`` or a runtime mode;
    at least ``min_frames`` frames offered."""
    seconds = max(config.seconds, min_frames / (n * rate))
    if mode == "sync":
        row = _sync_trial(seg, n, rate, seconds, config.frames)
        row["mode"], row["runtime"] = "sync", "Segmenter shared by threads"
    else:
        row = _pipeline_trial(seg, n, rate, seconds, config.frames, mode, config.max_batch)
        row["mode"], row["pipeline_mode"] = "pipeline", mode
    return row


class _Search:
    """One way's peak-rate search: an overloaded probe bounds what it delivers at all; a trial
    that drops too much starts the next one at 90 % of what it delivered (what the way kept
    up with, not what it was offered), and once one passes the search bisects between the
    best pass and the lowest failure."""

    def __init__(self, n: int, probe: dict[str, Any]) -> None:
        self.n = n
        self.low, self.high = 0.0, max(probe["delivered_fps"] / n / 0.9, 0.05)
        self.best: dict[str, Any] | None = None
        self.lowest: dict[str, Any] | None = None

    def next_rate(self) -> float:
        return round((self.low + self.high) / 2 if self.best is not None else self.high * 0.9, 3)

    def record(self, row: dict[str, Any]) -> None:
        if row["drop_rate"] < MAX_DROP:
            self.low = row["rate_hz"]
            if self.best is None or row["rate_hz"] > self.best["rate_hz"]:
                self.best = row
        else:
            kept_up = row["delivered_fps"] / self.n
            self.high = row["rate_hz"] if self.best is not None else max(min(row["rate_hz"], kept_up), 0.01)
            if self.lowest is None or row["rate_hz"] < self.lowest["rate_hz"]:
                self.lowest = row

    def result(self) -> dict[str, Any]:
        row = dict(self.best or self.lowest)
        row["peak_found"] = self.best is not None
        return row


def peak_rates(seg: Segmenter, modes: list[str], n: int, config: RateConfig,
               trials: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The highest per-stream rate with fewer than ``MAX_DROP`` of the frames dropped, for each
    way; the ways' trials alternate, so a change in the machine's load touches them alike.
    Each trial offers at least ``MIN_FRAMES`` frames (longer than ``seconds`` at low rates)."""
    searches = {}
    for mode in modes:
        probe = trial(seg, mode, n, PROBE_FPS / n, config)  # far beyond any CPU here: the capacity
        trials.append(probe)
        searches[mode] = _Search(n, probe)
    for _ in range(config.search_steps):
        for mode, search in searches.items():
            rate = search.next_rate()
            row = trial(seg, mode, n, rate, config, min_frames=MIN_FRAMES)
            trials.append(row)
            search.record(row)
            config.log(f"  {mode} x{n} at {rate:g} Hz: {row['delivered_fps']:.2f} FPS, "
                       f"{100 * row['drop_rate']:.1f} % dropped")
    return [searches[m].result() for m in modes]


def single_frame_ms(seg: Segmenter, frames: list[np.ndarray], calls: int = 12) -> float:
    """Median of one-frame-at-a-time ``seg(frame)`` on an idle pipeline (warm)."""
    for f in frames[:3]:
        seg(f)
    times = []
    for k in range(calls):
        start = time.perf_counter()
        seg(frames[k % len(frames)])
        times.append(time.perf_counter() - start)
    return float(np.median(times) * 1000.0)


def run_rate_benchmark(config: RateConfig) -> dict[str, Any]:
    """Every backend x N x way; ``{"streams": [rows], "trials": [...], "single_frame_ms": {...}}``."""
    rows, trials, single, ceilings = [], [], {}, []
    for backend in config.backends:
        seg = Segmenter(config.model, backend=backend)
        try:
            single[backend] = single_frame_ms(seg, config.frames)
            config.log(f"{backend}: one frame at a time {single[backend]:.1f} ms (median)")
            for n in config.streams:
                modes = ["sync", *config.pipeline_modes]
                if config.rate_hz is None:
                    found = peak_rates(seg, modes, n, config, trials)
                else:
                    found = [trial(seg, mode, n, config.rate_hz, config) for mode in modes]
                    trials.extend(found)
                for row in found:
                    row = {"backend": backend, "backend_used": seg.backend.name, **row}
                    for t in trials:
                        t.setdefault("backend", backend)
                    rows.append(row)
                    config.log(f"{backend} {row['mode']:8s} x{n}: {row['rate_hz']:g} Hz per stream, "
                               f"{row['delivered_fps']:.1f} FPS delivered, {100 * row['drop_rate']:.1f} % dropped, "
                               f"p99 {_ms(row['latency_ms']['p99'])}")
            # why the ratios are what they are on this machine: once per backend and runtime mode,
            # at the most streams asked for (the row holds the one-stream bound too)
            for mode in config.pipeline_modes:
                ceiling = {"backend": backend, "backend_used": seg.backend.name,
                           **stream_ceiling.measure(seg, config.frames[0], max(config.streams), mode)}
                ceilings.append(ceiling)
                config.log(stream_ceiling.format_line(backend, ceiling))
        finally:
            seg.close()
    return {"streams": rows, "trials": trials, "single_frame_ms": single, "backend_ceiling": ceilings,
            "max_drop_rate": MAX_DROP,
            "rate": "max" if config.rate_hz is None else config.rate_hz, "seconds": config.seconds, "min_frames": MIN_FRAMES,
            "model": str(config.model)}


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f} ms"
