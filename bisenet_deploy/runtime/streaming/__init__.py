"""Streaming runtime: several cameras, one model, the stages overlapped.

``Segmenter`` stays the simple per-frame API; ``StreamRuntime`` runs its very stages
(``preprocess``, ``infer`` through the backend's concurrent form, ``postprocess``) for many
sources at once, so its masks are the Segmenter's, bit for bit::

    from bisenet_deploy.runtime.streaming import StreamRuntime

    with StreamRuntime("model.int8.onnx", backend="openvino", mode="throughput") as rt:
        rt.add_source(0)                               # camera 0 (OpenCV)
        rt.add_source("clip.mp4", rate="native")        # a file played at its own frame rate
        rt.add_source("rtsp://cam/stream", stream_id="front")
        rt.add_source(frames_iterable, lossless=True)   # frames or (frame, stamp) pairs, none dropped
        ros = rt.add_push("left")                        # fed by a callback:
        # ... in the subscription: rt.push("left", bgr_frame, stamp=msg.header.stamp)
        # ... when the topic is gone: rt.end("left")
        for r in rt.results():                           # until every stream has ended
            r.stream_id, r.index, r.stamp, r.mask        # + r.frame, r.queued/pre/infer/post/latency (s)
        for sid, s in rt.stats().items():
            s.received, s.dropped, s.drop_rate, s.delivered, s.error, s.latency_ms()

Public API (stable): ``StreamRuntime(model | Segmenter, *, mode, parallel, max_batch,
batch_wait_ms, workers, result_queue, on_result, depth, backend, backend_options, **spec)``;
``add_source(source, stream_id=None, *, rate=None, lossless=False) -> id``;
``add_push(stream_id=None, *, lossless=False) -> id``; ``push(id, frame, stamp=None)``;
``end(id)``; ``start()``; ``results(timeout=None)``; ``get(timeout=None)``; ``finished()``; ``idle()``;
``stats() -> {id: StreamStats}``; ``errors`` (list of str); ``close(timeout=5.0) -> [threads left]``;
context manager. Records: ``StreamResult`` and ``StreamStats`` (``records.py``).

How it works:

* Each stream has a **latest-frame slot** (``depth`` frames, default 1): a new frame replaces
  the oldest one held, which is counted in ``stats()[id].dropped``. Sources are read by their
  own threads (cameras, files, URLs, iterables; ``feeders.py``) or pushed by the caller.
* **Preprocessing workers** take the oldest held frame of the streams round-robin, only when
  the backend can accept work (``parallel`` requests + one batch ready ahead), so the frame
  taken is as fresh as possible and the backend never waits for the host.
* **Inference** goes through the backend's asynchronous form (``inference.py``): OpenVINO's
  ``AsyncInferQueue`` under the latency or throughput hint, concurrent onnxruntime runs on one
  session, Triton's concurrent requests, TensorRT contexts per CUDA stream (``trt/streams.py``).
* **Postprocessing workers** turn outputs into masks and release them **per stream in capture
  order** (a later frame of a stream that finishes first waits for the earlier one).
* **Cross-stream batching** (``max_batch`` > 1; artifacts with a dynamic batch axis): up to
  ``max_batch`` frames of different streams in one request, waiting at most ``batch_wait_ms``.
* **Bounded**: one slot per stream, ``parallel + 1`` batches in flight, ``result_queue``
  results waiting for the reader (then postprocessing waits, and the slots drop frames).
* **Failures**: a source that raises or yields a bad frame ends its own stream with
  ``stats()[id].error`` set (logged once); the others go on. A failed request counts its frames
  in ``failed`` and appends to ``errors``.
* ``close()`` stops the sources, lets in-flight requests finish and joins every thread it
  started within about ``timeout`` seconds (a source blocked in its own ``read()``/``next()``
  is the one exception, named in the returned list).

Modes: ``latency`` runs one request at a time (lowest latency per frame); ``throughput``
runs several (OpenVINO's THROUGHPUT hint: more frames per second on the same cores, each a
little later). ``bisenet-bench MODEL --streams 1,4 --rate max`` measures both ways.
"""

from .records import StreamResult, StreamStats
from .runtime import StreamRuntime

__all__ = ["StreamResult", "StreamRuntime", "StreamStats"]
