"""The timing loop: stage-timed Segmenter calls, warm-up until stable, interleaved rounds.

What one timed call is (the protocol header quotes ``TIMED``): ``Segmenter.predict_batch``
on N pre-decoded BGR uint8 frames, timed with ``time.perf_counter`` around the whole call.
The backends return host arrays, so the call is synchronous: on a GPU it includes the
host-to-device copy, the compute and the device-to-host copy. Inside the same call each
stage is timed too: preprocess, the backend call (``infer``, the "raw backend call"),
postprocess; the backend's own split of its call (``h2d``/``compute``/``d2h``, CUDA events on
a GPU) comes from ``Backend.last_stage_times``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..runtime.segmenter import Segmenter
from ..runtime.timing import balanced_orders  # noqa: F401 - re-exported
from .stats import is_stable

TIMED = (
    "Segmenter.predict_batch(frames): N pre-decoded BGR uint8 frames -> N uint8 label masks at the frame size; "
    "wall clock (perf_counter) of the whole call. Stages inside the same call: preprocess "
    "(validate, resize, normalize, layout), infer = the raw backend call (synchronous; on a GPU "
    "h2d + compute + d2h, split with CUDA events by the backend), postprocess (argmax unless in "
    "the graph, nearest-neighbour upscale to the frame size). Decoding, model loading and "
    "warm-up are not timed."
)
#: Stage keys in report order. ``infer`` is the whole backend call; h2d/compute/d2h its parts.
STAGES = ("preprocess", "h2d", "compute", "d2h", "postprocess", "infer", "e2e")


@dataclass
class Sample:
    """One timed call: end-to-end seconds, seconds per stage, when it finished."""

    e2e: float
    stages: dict[str, float]
    finished_at: float


class StageTimedSegmenter(Segmenter):
    """A Segmenter that records the wall time of each stage of its calls.

    The stages are Segmenter's own public methods, called by its own ``predict_batch``, so
    what is timed is exactly what a user's call runs; only two ``perf_counter`` reads per
    stage are added.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.stage_times: dict[str, float] = {}

    def _add(self, key: str, seconds: float) -> None:
        self.stage_times[key] = self.stage_times.get(key, 0.0) + seconds

    def preprocess(self, frames):  # noqa: ANN001, ANN201 - same signature as Segmenter
        start = time.perf_counter()
        batch = super().preprocess(frames)
        self._add("preprocess", time.perf_counter() - start)
        return batch

    def infer(self, batch):  # noqa: ANN001, ANN201
        start = time.perf_counter()
        out = super().infer(batch)
        self._add("infer", time.perf_counter() - start)
        for key, seconds in self.backend.last_stage_times.items():
            self._add(key, seconds)
        return out

    def postprocess(self, output, frame_sizes):  # noqa: ANN001, ANN201
        start = time.perf_counter()
        masks = super().postprocess(output, frame_sizes)
        self._add("postprocess", time.perf_counter() - start)
        return masks

    def timed_call(self, frames: Sequence[np.ndarray]) -> Sample:
        self.stage_times = {}
        start = time.perf_counter()
        self.predict_batch(frames)
        end = time.perf_counter()
        stages = dict(self.stage_times)
        stages["e2e"] = end - start
        return Sample(end - start, stages, end)


@dataclass
class WarmUp:
    """How warm-up ends: after at least ``min_runs`` calls, once the median of the last
    ``window`` calls differs by at most ``tolerance`` from the median of the ``window``
    before; or, unstable, after ``max_runs`` calls."""

    min_runs: int = 3
    max_runs: int = 20
    window: int = 3
    tolerance: float = 0.05

    def describe(self) -> str:
        return (
            f"until the median of the last {self.window} calls changes < {self.tolerance:.0%} "
            f"({self.min_runs}..{self.max_runs} calls)"
        )


def warm_up(call: Callable[[], float], policy: WarmUp) -> tuple[list[float], bool]:
    """Call until latency is stable; returns the warm-up latencies and whether it settled."""
    seconds: list[float] = []
    while len(seconds) < max(policy.max_runs, policy.min_runs):
        seconds.append(call())
        if len(seconds) >= policy.min_runs and is_stable(seconds, policy.window, policy.tolerance):
            return seconds, True
    return seconds, False


@dataclass
class Runner:
    """One contestant in one benchmark cell (size, batch): its Segmenter, frames, samples."""

    name: str
    segmenter: StageTimedSegmenter
    frame_sets: list[list[np.ndarray]]
    samples: list[Sample] = field(default_factory=list)
    warmup_seconds: list[float] = field(default_factory=list)
    warmup_stable: bool = False
    _next: int = 0

    def call(self) -> Sample:
        frames = self.frame_sets[self._next % len(self.frame_sets)]
        self._next += 1
        return self.segmenter.timed_call(frames)

    def warm_up(self, policy: WarmUp) -> None:
        self.warmup_seconds, self.warmup_stable = warm_up(lambda: self.call().e2e, policy)

    def series(self, stage: str = "e2e") -> list[float]:
        return [s.stages[stage] for s in self.samples if stage in s.stages]


def run_rounds(
    runners: Sequence[Runner],
    rounds: int | None = None,
    duration: float | None = None,
    on_call: Callable[[Runner], None] | None = None,
) -> int:
    """Time the runners in rounds: each round calls every runner once, in the orders of
    ``balanced_orders`` so no backend always runs right after the same other one.

    Stops after ``rounds`` rounds or, with ``duration``, at the first round boundary after
    ``duration`` seconds (every runner has the same number of samples). Returns the rounds.
    """
    if (rounds is None) == (duration is None):
        raise ValueError("give rounds or duration")
    if not runners:
        return 0
    orders = balanced_orders(len(runners))
    start = time.perf_counter()
    done = 0
    while (rounds is not None and done < rounds) or (duration is not None and time.perf_counter() - start < duration):
        for index in orders[done % len(orders)]:
            runner = runners[index]
            runner.samples.append(runner.call())
            if on_call is not None:
                on_call(runner)
        done += 1
    return done
