"""The backend's asynchronous or concurrent form, behind one small interface.

``submit(batch, done)`` starts inference on a preprocessed batch and returns at once;
``done(output, error)`` is called (on some other thread) when it finishes. ``parallel`` is how
many requests the backend runs at once to good effect; the runtime keeps one more batch
preprocessed so the backend never waits for the host.

* OpenVINO: an ``AsyncInferQueue`` on the compiled model under the ``latency`` hint (one CPU
  stream, requests one after another) or the ``throughput`` hint (several CPU streams whose
  requests overlap; OpenVINO's optimal request count).
* TensorRT: one execution context per CUDA stream (``trt/streams.py``) where the engine
  allows it; otherwise the Segmenter's serialized call.
* onnxruntime (``InferenceSession.run`` may run concurrently on one session), Triton
  (concurrent requests), torch: a small thread pool calling ``Segmenter.infer``. On the CPU,
  onnxruntime runs as many at once as its intra-op threads leave cores for (one by default:
  each run already uses every core), so its throughput mode overlaps only the host stages.
"""

from __future__ import annotations

import concurrent.futures
import threading
from collections.abc import Callable
from typing import Any

import numpy as np

from .records import Done, deliver

MODES = ("latency", "throughput")


class ThreadedInference:
    """``parallel`` threads calling the Segmenter's own ``infer`` (locked where the backend is
    not thread-safe): onnxruntime's concurrent runs on one session, Triton's concurrent
    requests."""

    def __init__(self, infer: Callable[[np.ndarray], np.ndarray], parallel: int, name: str) -> None:
        self.parallel = parallel
        self.kind = f"{name} x{parallel} threads"
        self._pool = concurrent.futures.ThreadPoolExecutor(parallel, thread_name_prefix="bisenet-infer")
        self._infer = infer

    def submit(self, batch: np.ndarray, done: Done) -> None:
        self._pool.submit(deliver, done, self._infer, batch)

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


class OpenVinoQueueInference:
    """OpenVINO's ``AsyncInferQueue``: requests run on OpenVINO's own threads (no GIL held)."""

    def __init__(self, backend: Any, mode: str, parallel: int | None) -> None:
        from openvino import AsyncInferQueue

        self.backend = backend
        compiled = backend.compiled_for(mode)
        if parallel is None:
            try:
                parallel = int(compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS"))
            except Exception:  # noqa: BLE001 - an older plugin without the property
                parallel = 1 if mode == "latency" else 2
        self.parallel = max(1, parallel)
        self.kind = f"openvino AsyncInferQueue x{self.parallel} ({mode} hint)"
        self._queue = AsyncInferQueue(compiled, self.parallel)
        self._queue.set_callback(self._finished)
        self._lock = threading.Lock()

    def _finished(self, request: Any, done: Done) -> None:
        try:
            output = self.backend.request_output(request)
        except BaseException as exc:  # noqa: BLE001
            done(None, exc)
            return
        done(output, None)

    def submit(self, batch: np.ndarray, done: Done) -> None:
        self.backend.ensure_open()
        self.backend.check_batch(batch)  # the same clear error as Backend.infer
        with self._lock:  # start_async blocks for a free request; one caller at a time
            self._queue.start_async({0: np.ascontiguousarray(batch)}, done)

    def close(self) -> None:
        self._queue.wait_all()


def for_segmenter(segmenter: Any, mode: str, parallel: int | None) -> Any:
    """The concurrent form of ``segmenter``'s backend (see the module docstring)."""
    backend = segmenter.backend
    if backend.name == "openvino" and hasattr(backend, "compiled_for"):
        return OpenVinoQueueInference(backend, mode, parallel)
    if backend.name == "tensorrt":
        from ...trt import streams

        pool = streams.context_pool(segmenter, parallel or (1 if mode == "latency" else 2))
        if pool is not None:
            return pool
    if parallel is None:
        parallel = 1 if mode == "latency" or not backend.thread_safe else _concurrent_runs(backend)
    return ThreadedInference(segmenter.infer, parallel, backend.name)


def _concurrent_runs(backend: Any) -> int:
    """Throughput mode's concurrent runs: 2, except for onnxruntime on the CPU, where one run
    already spreads over the cores it was given (intra-op threads; default one per physical
    core): runs side by side then share those cores and only add switching (demo FP32 on 2
    cores: 0.79x the FPS of one run at a time). As many runs as fit on the cores."""
    if backend.name == "onnxruntime" and getattr(backend, "device", "cpu") == "cpu":
        from ...machine import physical_cores

        cores = physical_cores()
        return max(1, cores // (getattr(backend, "threads", 0) or cores))
    return 2
