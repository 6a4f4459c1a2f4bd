"""StreamRuntime: many sources, one model, the stages overlapped (see the package docstring)."""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from ...errors import InputError, UserError
from .. import processing
from ..segmenter import Segmenter
from . import feeders, inference
from .records import Captured, LatestFrameSlot, StreamResult, StreamStats

log = logging.getLogger("bisenet_deploy")


class StreamRuntime:
    """Segment frames from several sources through one model, stages overlapped.

    Args:
        model: a ``Segmenter`` (shared, not closed by the runtime), or what ``Segmenter`` opens
            (path, URL or backend), opened with ``backend``, ``backend_options`` and ``segmenter_options``.
        mode: ``latency`` (one request at a time at the backend, host stages overlapped) or
            ``throughput`` (several concurrent requests: OpenVINO's THROUGHPUT hint, two
            concurrent onnxruntime runs); more frames per second, each a little later.
        parallel: concurrent requests at the backend (default: from ``mode`` and the backend).
        max_batch, batch_wait_ms: cross-stream batching: up to ``max_batch`` frames of different
            streams in one batch, waiting at most ``batch_wait_ms`` for them to fill it. Needs an
            artifact with a dynamic batch axis (or a fixed batch equal to ``max_batch``).
        workers: preprocessing threads and postprocessing threads (each).
        result_queue: results held for ``results()``/``get()`` before postprocessing waits (memory bound).
        on_result: called with each ``StreamResult`` (on a runtime thread, in per-stream order)
            instead of queueing it for ``results()``.
        depth: frames each stream's latest-frame slot holds (1: only the freshest).
    """

    def __init__(self, model: Segmenter | str | Path | Any, *, mode: str = "latency", parallel: int | None = None,
                 max_batch: int = 1, batch_wait_ms: float = 2.0, workers: int = 1, result_queue: int = 16,
                 on_result: Callable[[StreamResult], None] | None = None, depth: int = 1,
                 backend: str | None = None, backend_options: dict[str, Any] | None = None,
                 **segmenter_options: Any) -> None:
        if mode not in inference.MODES:
            raise UserError(f"mode must be 'latency' or 'throughput', got {mode!r}")
        for name, value in (("max_batch", max_batch), ("workers", workers), ("result_queue", result_queue),
                            ("depth", depth)):
            if not isinstance(value, int) or value < 1:
                raise UserError(f"{name} must be a positive integer, got {value!r}")
        if parallel is not None and (not isinstance(parallel, int) or parallel < 1):
            raise UserError(f"parallel must be a positive integer, got {parallel!r}")
        if not batch_wait_ms >= 0:
            raise UserError(f"batch_wait_ms must be >= 0, got {batch_wait_ms!r}")
        self._own = not isinstance(model, Segmenter)
        self.segmenter = Segmenter(model, backend=backend, backend_options=backend_options,
                                   **segmenter_options) if self._own else model
        fixed = self.segmenter.batch_size
        if max_batch > 1 and fixed is not None and fixed != max_batch:
            self._close_own()
            raise UserError(f"max_batch={max_batch} needs a model with a dynamic batch axis; "
                            f"'{self.segmenter.backend.path.name}' takes batches of {fixed} (export with --dynamic batch)")
        self.mode, self.max_batch, self.batch_wait = mode, max_batch, batch_wait_ms / 1000.0
        self.depth = depth
        try:
            self.inference = inference.for_segmenter(self.segmenter, mode, parallel)
        except BaseException:
            self._close_own()
            raise
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._slots: dict[str, LatestFrameSlot] = {}
        self._stats: dict[str, StreamStats] = {}
        self._feeders: list[threading.Thread] = []
        self._workers: list[threading.Thread] = []
        self._capacity = threading.Semaphore(self.inference.parallel + 1)  # +1: one batch ready ahead
        self._post: queue.Queue = queue.Queue(self.inference.parallel + 1)
        self._out: queue.Queue = queue.Queue(result_queue)
        self._on_result = on_result
        self._order_lock = threading.Lock()
        self._pending: dict[str, dict[int, StreamResult | None]] = {}
        self._next: dict[str, int] = {}
        self._active = 0  # frames taken and not yet delivered or failed
        self._cursor = 0
        self._started = False
        self._closed = False
        self._n_workers = workers
        self.errors: list[str] = []  # inference / postprocessing / callback failures

    # --- sources ------------------------------------------------------------------------

    def add_source(self, source: Any, stream_id: str | None = None, *, rate: float | str | None = None,
                   lossless: bool = False) -> str:
        """Read ``source`` (camera id, video path or URL, iterable of frames or ``(frame, stamp)``
        pairs) on its own thread, from now on (the runtime starts with its first source).
        ``rate``: pace it at this many frames per second (``"native"``: a video's own rate);
        ``lossless``: wait for room instead of dropping. A missing file or camera raises here;
        a URL is opened on the source's thread, and failing to open it is that stream's error.
        Returns the stream id (default: ``"0"``, ``"1"``, ... in the order added)."""
        stream_id = self._new_stream(stream_id, feeders.describe(source), lossless)
        try:
            items, fps, release = feeders.open_frames(source, rate)
        except BaseException:
            with self._cond:
                del self._slots[stream_id], self._stats[stream_id]
            raise

        def deliver(frame: np.ndarray, stamp: Any) -> bool:
            return self._put(stream_id, frame, stamp)

        def finish(error: str | None) -> None:
            try:
                release()
            except Exception:  # noqa: BLE001 - releasing a broken capture must not hide its error
                pass
            self._end(stream_id, error)

        thread = threading.Thread(target=feeders.run_feeder, name=f"bisenet-source-{stream_id}", daemon=True,
                                  args=(items, fps, deliver, self._stop, finish, stream_id))
        self._feeders.append(thread)
        if self._started:
            thread.start()
        else:
            self.start()  # reading starts now: an on_result consumer never calls results()
        return stream_id

    def add_push(self, stream_id: str | None = None, *, lossless: bool = False) -> str:
        """A stream fed by ``push()`` (a ROS subscription, a camera SDK callback); it ends with
        ``end(stream_id)`` or ``close()``."""
        return self._new_stream(stream_id, "push", lossless)

    def push(self, stream_id: str, frame: np.ndarray, stamp: Any = None) -> None:
        """Hand one frame of ``stream_id`` to the runtime (returns at once unless lossless)."""
        slot = self._slots.get(stream_id)
        if slot is None:
            raise InputError(f"no push stream {stream_id!r}: add it with add_push() first")
        if slot.stats.ended:
            raise InputError(f"stream {stream_id!r} has ended")
        self.start()
        self._put(stream_id, processing.as_bgr_frame(frame, f"stream {stream_id} frame"), stamp)

    def end(self, stream_id: str, error: str | None = None) -> None:
        """No more frames for ``stream_id`` (its held frame is still processed)."""
        if stream_id not in self._slots:
            raise InputError(f"no stream {stream_id!r}")
        self._end(stream_id, error)

    # --- results ------------------------------------------------------------------------

    def results(self, timeout: float | None = None) -> Iterator[StreamResult]:
        """Results as they are ready (per stream in capture order) until every stream has ended
        and its frames are done, or ``close()``; ``timeout``: give up after this many seconds
        without a result."""
        self.start()
        last = time.monotonic()
        while True:
            try:
                yield self._out.get(timeout=0.05)
                last = time.monotonic()
            except queue.Empty:
                if self._closed or self.finished():
                    yield from self._drain()  # delivered between the empty get and the check
                    return
                if timeout is not None and time.monotonic() - last > timeout:
                    return

    def get(self, timeout: float | None = None) -> StreamResult | None:
        """The next result, or None after ``timeout`` seconds (or once everything has finished)."""
        self.start()
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            wait = 0.05 if deadline is None else max(0.0, min(0.05, deadline - time.monotonic()))
            try:
                return self._out.get(timeout=wait)
            except queue.Empty:
                if self._closed or self.finished() or (deadline is not None and time.monotonic() >= deadline):
                    return next(self._drain(), None)

    def _drain(self) -> Iterator[StreamResult]:
        while True:
            try:
                yield self._out.get_nowait()
            except queue.Empty:
                return

    def finished(self) -> bool:
        """Every stream has ended and every frame taken is delivered (results may still be queued)."""
        with self._cond:
            return (all(s.stats.ended and not s.frames for s in self._slots.values()) and self._active == 0
                    and bool(self._slots))

    def idle(self) -> bool:
        """No frame is held in a slot or in flight (streams may still be open)."""
        with self._cond:
            return self._active == 0 and not any(s.frames for s in self._slots.values())

    def stats(self) -> dict[str, StreamStats]:
        """Per-stream figures (live objects; read, do not modify)."""
        return dict(self._stats)

    # --- lifecycle ----------------------------------------------------------------------

    def start(self) -> StreamRuntime:
        """Start the workers and every source added so far (``add_source``, ``push``,
        ``results()`` and ``get()`` call it; calling it again does nothing)."""
        with self._cond:
            if self._closed:
                raise UserError("this StreamRuntime is closed")
            if self._started:
                return self
            self._started = True
        for i in range(self._n_workers):
            self._spawn(self._pre_worker, f"bisenet-pre-{i}")
            self._spawn(self._post_worker, f"bisenet-post-{i}")
        for thread in self._feeders:
            thread.start()
        return self

    def close(self, timeout: float = 5.0) -> list[str]:
        """Stop reading, let in-flight requests finish, join every thread; returns within about
        ``timeout`` seconds. Returns the names of threads that did not stop (a source blocked
        inside its own ``next()`` or ``read()``: daemon threads, left behind), normally []."""
        with self._cond:
            if self._closed:
                return []
            self._closed = True
            self._stop.set()
            for stats in self._stats.values():
                stats.ended = True
            self._cond.notify_all()
        deadline = time.monotonic() + timeout
        for _ in self._workers:  # post workers stop on None; a full queue: they see _stop instead
            try:
                self._post.put_nowait(None)
            except queue.Full:
                break
        for thread in self._workers + [t for t in self._feeders if t.is_alive() or t.ident is not None]:
            thread.join(max(0.0, deadline - time.monotonic()))
        self.inference.close()
        self._close_own()
        return [t.name for t in self._workers + self._feeders if t.is_alive()]

    def __enter__(self) -> StreamRuntime:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- internals ----------------------------------------------------------------------

    def _close_own(self) -> None:
        if self._own:
            self.segmenter.close()

    def _new_stream(self, stream_id: str | None, source: str, lossless: bool) -> str:
        with self._cond:
            if self._closed:
                raise UserError("this StreamRuntime is closed")
            stream_id = str(len(self._slots)) if stream_id is None else str(stream_id)
            if stream_id in self._slots:
                raise InputError(f"stream id {stream_id!r} is already in use")
            stats = StreamStats(stream_id, source)
            self._stats[stream_id] = stats
            self._slots[stream_id] = LatestFrameSlot(stats, self._cond, self.depth, lossless)
            self._pending[stream_id], self._next[stream_id] = {}, 0
        return stream_id

    def _put(self, stream_id: str, frame: np.ndarray, stamp: Any) -> bool:
        now = time.perf_counter()
        slot = self._slots[stream_id]
        with self._cond:
            index = slot.next_index
            slot.next_index += 1
        item = Captured(stream_id, index, frame, time.time() if stamp is None else stamp, now)
        return slot.put(item, self._stop)

    def _end(self, stream_id: str, error: str | None) -> None:
        with self._cond:
            stats = self._stats[stream_id]
            if error and stats.error is None:
                stats.error = error
            stats.ended = True
            self._cond.notify_all()

    def _spawn(self, target: Callable[[], None], name: str) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)
        self._workers.append(thread)
        thread.start()

    def _take(self) -> list[Captured] | None:
        """Up to ``max_batch`` frames, round-robin over the streams (the oldest of each), waiting
        for the first and at most ``batch_wait`` for the rest; None when stopping."""
        batch: list[Captured] = []
        deadline = None
        with self._cond:
            while not self._stop.is_set():
                ids = list(self._slots)
                for k in range(len(ids)):
                    if len(batch) >= self.max_batch:
                        break
                    slot = self._slots[ids[(self._cursor + k) % len(ids)]]
                    if slot.frames:
                        batch.append(slot.take(time.perf_counter()))
                        self._cursor = (self._cursor + k + 1) % len(ids)
                        self._active += 1
                if len(batch) >= self.max_batch or (batch and self.max_batch == 1):
                    return batch
                if batch:
                    deadline = deadline or time.perf_counter() + self.batch_wait
                    remaining = deadline - time.perf_counter()
                    if remaining <= 0:
                        return batch
                    self._cond.wait(remaining)
                else:
                    self._cond.wait(0.1)
            return batch or None

    def _pre_worker(self) -> None:
        seg = self.segmenter
        while not self._stop.is_set():
            if not self._capacity.acquire(timeout=0.1):
                continue
            batch = self._take()
            if batch is None:
                self._capacity.release()
                return
            start = time.perf_counter()
            try:
                frames = [c.frame for c in batch]
                padded = frames + [frames[-1]] * ((seg.batch_size or len(frames)) - len(frames))
                tensor = seg.preprocess(padded)
            except BaseException as exc:  # noqa: BLE001
                self._capacity.release()
                self._failed(batch, exc, "preprocessing")
                continue
            pre = time.perf_counter() - start
            submitted = time.perf_counter()

            def done(output: np.ndarray | None, error: BaseException | None, batch=batch, pre=pre,
                     submitted=submitted) -> None:
                self._capacity.release()
                job = (batch, output, error, pre, time.perf_counter() - submitted)
                while not self._stop.is_set():  # a full queue: postprocessing is behind; wait for it
                    try:
                        self._post.put(job, timeout=0.1)
                        return
                    except queue.Full:
                        continue

            try:
                self.inference.submit(tensor, done)
            except BaseException as exc:  # noqa: BLE001
                done(None, exc)

    def _post_worker(self) -> None:
        while True:
            try:
                job = self._post.get(timeout=0.1)
            except queue.Empty:
                if self._stop.is_set():
                    return
                continue
            if job is None or self._stop.is_set():
                return
            batch, output, error, pre, infer = job
            if error is not None:
                self._failed(batch, error, "inference")
                continue
            start = time.perf_counter()
            try:
                masks = self.segmenter.postprocess(output[: len(batch)], [c.frame.shape[:2] for c in batch])
            except BaseException as exc:  # noqa: BLE001
                self._failed(batch, exc, "postprocessing")
                continue
            end = time.perf_counter()
            for c, mask in zip(batch, masks):
                self._deliver(c, StreamResult(c.stream_id, c.index, c.stamp, mask, c.frame, c.taken - c.captured,
                                              pre, infer, end - start, end - c.captured, len(batch)))

    def _failed(self, batch: list[Captured], exc: BaseException, stage: str) -> None:
        message = f"{stage} failed: {type(exc).__name__}: {exc}"
        if len(self.errors) < 100:
            self.errors.append(message)
        log.warning("stream runtime: %s", message)
        for c in batch:
            self._deliver(c, None)

    def _deliver(self, c: Captured, result: StreamResult | None) -> None:
        """Release results of ``c``'s stream in capture order (None: that frame failed)."""
        with self._order_lock:
            pending = self._pending[c.stream_id]
            pending[c.seq] = result
            stats = self._stats[c.stream_id]
            while self._next[c.stream_id] in pending:
                ready = pending.pop(self._next[c.stream_id])
                self._next[c.stream_id] += 1
                if ready is None:
                    stats.failed += 1
                elif self._emit(ready, stats):
                    stats.delivered += 1
                    stats.latencies.append(ready.latency)
                else:  # the consumer's callback raised: that frame failed, not delivered
                    stats.failed += 1
                with self._cond:
                    self._active -= 1

    def _emit(self, result: StreamResult, stats: Any) -> bool:
        """Hand ``result`` on; False when the ``on_result`` callback raised (the stream's first
        such error is its ``error`` and one log line; every one is in ``errors``)."""
        if self._on_result is not None:
            try:
                self._on_result(result)
            except Exception as exc:  # noqa: BLE001 - a consumer's bug is reported, not fatal
                message = f"on_result failed: {type(exc).__name__}: {exc}"
                if len(self.errors) < 100:
                    self.errors.append(message)
                if stats.error is None:
                    stats.error = message
                    log.warning("stream %s: %s", result.stream_id, message)
                return False
            return True
        while not self._stop.is_set():
            try:
                self._out.put(result, timeout=0.1)
                return True
            except queue.Full:
                continue
        return True
