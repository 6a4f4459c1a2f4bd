"""How much more a backend can deliver with concurrent requests than one at a time, with no
host stage in the way: the ceiling of what the streaming runtime can gain over the sync way
on this machine (``bisenet-bench MODEL --streams ...`` reports it beside its rows).

Three figures on the same preprocessed frame, each over the same number of requests:

* ``one_at_a_time_fps``: ``Segmenter.infer`` called back to back (one thread: the 1-stream
  sync way without its host stages);
* ``sync_concurrent_fps``: ``streams`` threads calling ``Segmenter.infer`` at once (what
  the N-stream sync way reaches at best: OpenVINO gives each thread its own request on the
  latency-hint model, onnxruntime runs them concurrently on one session);
* ``pipeline_fps``: the streaming runtime's inference form for ``mode`` (OpenVINO
  ``AsyncInferQueue`` under the throughput hint, ...) kept full.

``pipeline_fps / sync_concurrent_fps`` bounds the N-stream pipeline/sync ratio from the
backend's side; the host stages (overlapped by the pipeline, in series in each sync thread)
add to it only where they are a sizeable share of a frame's time.
"""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # the report formats the figures without opening a runtime
    from ..runtime.segmenter import Segmenter

#: requests per figure (after the warm-up): 16 gave figures 20 % apart for the same form on a
#: shared 2-core VM
REQUESTS = 32
#: a figure whose requests take longer than this raises TimeoutError
TIMEOUT_S = 120.0


def _one_at_a_time(seg: Segmenter, tensor: np.ndarray, requests: int) -> float:
    start = time.perf_counter()
    for _ in range(requests):
        seg.infer(tensor)
    return requests / (time.perf_counter() - start)


def _threads(seg: Segmenter, tensor: np.ndarray, requests: int, n: int) -> float:
    left = [requests]
    lock = threading.Lock()

    def work() -> None:
        while True:
            with lock:
                if left[0] <= 0:
                    return
                left[0] -= 1
            seg.infer(tensor)

    threads = [threading.Thread(target=work, name=f"bisenet-ceiling-{i}", daemon=True) for i in range(n)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join(TIMEOUT_S)
    if any(t.is_alive() for t in threads):
        raise TimeoutError(f"{requests} requests on {n} threads took over {TIMEOUT_S:g} s")
    return requests / (time.perf_counter() - start)


def _pipeline(form: Any, tensor: np.ndarray, requests: int) -> float:
    finished = threading.Semaphore(0)
    errors: list[BaseException] = []

    def done(output: np.ndarray | None, error: BaseException | None) -> None:
        if error is not None:
            errors.append(error)
        finished.release()

    start = time.perf_counter()
    for _ in range(requests):
        form.submit(tensor, done)  # OpenVINO's queue blocks while every request is busy
    deadline = start + TIMEOUT_S
    for _ in range(requests):
        if not finished.acquire(timeout=max(0.0, deadline - time.perf_counter())):
            raise TimeoutError(f"{requests} requests took over {TIMEOUT_S:g} s")
    if errors:
        raise errors[0]
    return requests / (time.perf_counter() - start)


def measure(seg: Segmenter, frame: np.ndarray, streams: int, mode: str = "throughput",
            requests: int = REQUESTS) -> dict[str, Any]:
    """The three figures of the module docstring for ``streams`` concurrent callers and the
    pipeline form ``mode``; every form warmed first, the three interleaved twice (halves of
    ``requests`` each) so a change in the machine's load touches them alike."""
    from ..runtime.streaming import inference as stream_inference

    tensor = seg.preprocess([frame] * (seg.batch_size or 1))
    frames_per_request = tensor.shape[0]
    form = stream_inference.for_segmenter(seg, mode, None)
    try:
        seg.infer(tensor)
        _threads(seg, tensor, max(streams, 2), streams)
        _pipeline(form, tensor, form.parallel)
        half = max(1, requests // 2)
        runs: dict[str, list[float]] = {"one_at_a_time_fps": [], "sync_concurrent_fps": [], "pipeline_fps": []}
        for order in (0, 1):
            steps = [("one_at_a_time_fps", lambda: _one_at_a_time(seg, tensor, half)),
                     ("sync_concurrent_fps", lambda: _threads(seg, tensor, half, streams)),
                     ("pipeline_fps", lambda: _pipeline(form, tensor, half))]
            for key, step in (steps if order == 0 else steps[::-1]):
                runs[key].append(step() * frames_per_request)
    finally:
        form.close()
    row: dict[str, Any] = {key: float(np.mean(values)) for key, values in runs.items()}
    row.update(streams=streams, pipeline_mode=mode, pipeline_form=form.kind, requests=2 * half)
    row["pipeline_over_sync"] = row["pipeline_fps"] / row["sync_concurrent_fps"]
    return row


def format_line(backend: str, row: dict[str, Any]) -> str:
    n = row["streams"]
    one, threads, pipe = row["one_at_a_time_fps"], row["sync_concurrent_fps"], row["pipeline_fps"]
    return (f"{backend} alone (no host stages, {row['requests']} requests each): one at a time {one:.1f} FPS, "
            f"{n} threads {threads:.1f} FPS, {row['pipeline_form']} {pipe:.1f} FPS: the backend alone gave "
            f"{pipe / one:.2f}x over one stream's sync way, {row['pipeline_over_sync']:.2f}x over {n} streams' "
            "(a brief measurement: a guide to the rows above, not a bound)")
