"""TensorRT for the streaming runtime: one execution context per CUDA stream on one engine.

``TensorRTBackend`` (``runner.py``) has one context, one stream and shared buffers, so a
Segmenter serializes its calls. For several cameras, ``ContextPool`` creates ``parallel``
execution contexts on the backend's deserialized engine (weights shared), each with its own
non-blocking CUDA stream, pinned input/output buffers and device buffers, served by one host
thread per context: H2D, ``execute_async_v3``, D2H and a stream synchronize, so while one
context computes, another copies (TensorRT's documented way to overlap independent
inferences: "multiple execution contexts, each on its own stream").

Feature checks, not versions: the pool needs the tensor-address API (``execute_async_v3``,
``set_input_shape``, ``set_tensor_address``; TensorRT 8.5+). A dynamic-shape engine runs at
most one context per optimization profile (contexts that run concurrently must not share a
profile on older TensorRT releases), each bound with ``set_optimization_profile_async``.
Where a check fails, ``context_pool`` returns None and the runtime uses the Segmenter's own
serialized call. Tested only where a GPU and TensorRT exist (``tests/test_streaming_trt.py``).
"""

from __future__ import annotations

import queue
import threading
from typing import Any

import numpy as np

from ..runtime.streaming.records import Done, deliver
from .cuda_buffers import DeviceBuffer, PinnedBuffer, Stream, _call, closing_all, copy_dtoh_async, copy_htod_async


def context_pool(segmenter: Any, parallel: int) -> ContextPool | None:
    """A pool over ``segmenter``'s TensorRT engine, or None where this TensorRT or engine
    cannot run one (the runtime then uses the Segmenter's serialized call)."""
    backend = segmenter.backend
    engine = getattr(backend, "_engine", None)
    if engine is None or not hasattr(engine, "num_io_tensors"):
        return None
    probe = engine.create_execution_context()
    usable = probe is not None and all(hasattr(probe, a) for a in
                                       ("execute_async_v3", "set_input_shape", "set_tensor_address"))
    del probe
    if not usable:
        return None
    names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
    dynamic = any(d < 0 for n in names for d in engine.get_tensor_shape(n))
    if dynamic:
        parallel = min(parallel, max(1, int(getattr(engine, "num_optimization_profiles", 1))))
    return ContextPool(backend, engine, parallel, dynamic)


class _Lane:
    """One execution context with its own stream and buffers."""

    def __init__(self, backend: Any, engine: Any, profile: int | None) -> None:
        trt = backend.trt
        self.context = engine.create_execution_context()
        if self.context is None:
            raise RuntimeError("TensorRT could not create another execution context (out of device memory?)")
        self.stream = Stream()
        if profile is not None and hasattr(self.context, "set_optimization_profile_async"):
            self.context.set_optimization_profile_async(profile, self.stream.ptr)
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        self.input = next(n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT)
        self.output = next(n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT)
        self.in_dtype = np.dtype(trt.nptype(engine.get_tensor_dtype(self.input)))
        self.out_dtype = np.dtype(trt.nptype(engine.get_tensor_dtype(self.output)))
        self.buffers: dict[str, tuple[DeviceBuffer, PinnedBuffer]] = {}
        self.shape: tuple[int, ...] | None = None

    def _buffer(self, name: str, nbytes: int) -> tuple[DeviceBuffer, PinnedBuffer]:
        held = self.buffers.get(name)
        if held is None or held[0].nbytes < nbytes:
            if held is not None:
                with closing_all(*held):
                    pass
            held = self.buffers[name] = (DeviceBuffer(nbytes), PinnedBuffer(nbytes))
            # a new device address: bind it (outputs here; the input is bound per call below)
            if not self.context.set_tensor_address(name, held[0].ptr):
                raise RuntimeError(f"TensorRT refused the address of tensor '{name}'")
        return held

    def run(self, batch: np.ndarray) -> np.ndarray:
        batch = np.ascontiguousarray(batch, dtype=self.in_dtype)
        if batch.shape != self.shape:
            if not self.context.set_input_shape(self.input, batch.shape):
                raise RuntimeError(f"TensorRT rejects input shape {batch.shape}")
            self.shape = batch.shape
        out_shape = tuple(int(d) for d in self.context.get_tensor_shape(self.output))
        d_in, h_in = self._buffer(self.input, batch.nbytes)
        d_out, h_out = self._buffer(self.output, int(np.prod(out_shape)) * self.out_dtype.itemsize)
        np.copyto(h_in.view(batch.shape, self.in_dtype), batch)
        copy_htod_async(d_in.ptr, h_in.ptr, batch.nbytes, self.stream)
        if not self.context.execute_async_v3(self.stream.ptr):
            raise RuntimeError("TensorRT execution failed")
        copy_dtoh_async(h_out.ptr, d_out.ptr, int(np.prod(out_shape)) * self.out_dtype.itemsize, self.stream)
        self.stream.synchronize()
        return h_out.view(out_shape, self.out_dtype).copy()

    def close(self) -> None:
        try:
            self.stream.synchronize()
        finally:
            with closing_all(*[b for pair in self.buffers.values() for b in pair], self.stream):
                self.buffers = {}
            self.context = None


class ContextPool:
    """The runtime's inference interface (``submit``/``close``/``parallel``/``kind``) over
    ``parallel`` contexts, one host thread each."""

    def __init__(self, backend: Any, engine: Any, parallel: int, dynamic: bool) -> None:
        self.backend = backend
        self.parallel = parallel
        self.kind = f"tensorrt {parallel} contexts x CUDA streams"
        self._jobs: queue.Queue = queue.Queue()
        self._lanes = [_Lane(backend, engine, i if dynamic else None) for i in range(parallel)]
        self._threads = [threading.Thread(target=self._serve, args=(lane,), name=f"bisenet-trt-{i}", daemon=True)
                         for i, lane in enumerate(self._lanes)]
        for t in self._threads:
            t.start()

    def _serve(self, lane: _Lane) -> None:
        device = getattr(self.backend, "_device_index", 0)
        if device:
            _call("cudaSetDevice", device)  # the current device is per thread
        while True:
            job = self._jobs.get()
            if job is None:
                return
            batch, done = job
            deliver(done, lane.run, batch)

    def submit(self, batch: np.ndarray, done: Done) -> None:
        self.backend.ensure_open()
        from ..runtime.backends.base import check_input

        check_input(self.backend.inputs[0], batch)
        self._jobs.put((batch, done))

    def close(self) -> None:
        for _ in self._threads:
            self._jobs.put(None)
        for t in self._threads:
            t.join(10)
        with closing_all(*self._lanes):
            self._lanes = []
