"""The live executor (``bisenet-infer --live``): cameras, streams (URLs) and videos played at
their own frame rate, all at once through one streaming runtime (``runtime.streaming``).

The job is the same as a plain run's (``JobSpec``, ``prepare``: the folder's lock, manifest,
summary and items; outputs named and written by ``frames``), but frames are not read one
after another: each source feeds its own latest-frame slot in real time, so a frame that
arrives while the model is busy replaces the one waiting (a drop, as on a robot) and every
stream gets the freshest masks the machine can deliver. Each stream writes its own outputs
(mask PNGs numbered by the source's frame index, gaps where frames were dropped; or an
overlay/background video of the frames segmented), one summary row per mask, and the run
ends with one line per stream: frames captured, segmented, dropped and the capture-to-mask
latency. A source that fails is that input's failed row; the others go on. Ctrl-C ends the
run after the summary (a camera's video is kept, as in a plain run) with exit 130 (SIGTERM: 143),
frames still in flight counted as such.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterator
from typing import Any

import numpy as np

from ..errors import InputError
from .frames import Item, todo_row, written
from .job import JobSpec, Result, prepare

#: a mask's name in a stream's folder (``frames.frame_output``)
_MASK_NAME = re.compile(r"\d{6}\.png")


def _frames(item: Item, max_frames: int | None) -> tuple[Iterator[np.ndarray], float | None, Any]:
    """(frames, pace in frames per second or None, release) of a video, camera or stream. A
    stream's URL is opened on the runtime's source thread, on the first frame: a server that
    accepts and never answers holds OpenCV's open (``sources.NETWORK_TIMEOUT_MS``), which must
    stall only that stream."""
    import cv2

    from ..runtime.sources import OpenedOnRead, truncated

    source = OpenedOnRead(int(item.path) if item.kind == "camera" and item.path.isdigit() else item.path)
    fps = 0.0
    if "://" not in str(item.path):  # a file or camera: opened here, so that it fails here
        cap = source.cap()
        fps = cap.get(cv2.CAP_PROP_FPS) if item.kind == "video" else 0.0
        if item.kind == "video" and not 0 < fps <= 1000:
            fps = 25.0  # a file that declares no usable rate: played as a 25 Hz camera

    def frames() -> Iterator[np.ndarray]:
        cap = source.cap()
        count = 0
        while max_frames is None or count < max_frames:
            ok, frame = cap.read()
            if not ok:
                if count == 0:
                    raise InputError(f"no frames could be read from {item.kind} {item.source}")
                why = truncated(item.declared, count, max_frames) if item.kind == "video" else None
                if why:  # as a plain run says it: that stream's failure
                    raise InputError(why)
                return
            count += 1
            yield frame

    return frames(), (fps or None), source.release  # on the source's thread, when its frames end


def stream_line(label: str, stats: Any, segmented: int | None = None) -> str:
    """One stream's figures, as printed at the end of the run; ``segmented``: masks written
    (default: delivered). Frames captured but neither segmented, dropped nor failed were in
    flight when a signal stopped the run: said, so that the figures add up."""
    latency = stats.latency_ms()
    segmented = stats.delivered if segmented is None else segmented
    line = (f"{label}: {stats.received} captured, {segmented} segmented, {stats.dropped} dropped "
            f"({100 * stats.drop_rate:.1f} %)")
    if stats.failed:
        line += f", {stats.failed} failed"
    in_flight = stats.received - segmented - stats.dropped - stats.failed
    if in_flight > 0:
        line += f", {in_flight} in flight at stop (not segmented)"
    if latency:
        line += (f"; latency capture->mask p50 {latency['p50']:.1f} ms, p90 {latency['p90']:.1f}, "
                 f"p99 {latency['p99']:.1f}, max {latency['max']:.1f}")
    return line + (f"; stopped: {stats.error}" if stats.error else "")


def run(spec: JobSpec) -> Result:
    from ..runtime.given_spec import open_segmenter
    from ..runtime.streaming import StreamRuntime

    checked = spec.check()  # before the model is opened
    options = {"threads": spec.threads} if spec.threads else {}
    with open_segmenter(spec.model, spec.given_spec, backend=spec.backend, options={**options, "device": spec.device},
                        output_size="network" if spec.network_size else "frame") as seg:
        job = prepare(spec, checked, seg.spec, seg.backend.name)
        items = {item.source: item for item in job.items}  # one per source: cameras/streams/videos
        interrupted, runtime, stopped_by = True, None, None
        delivered: dict[str, set[int]] = {source: set() for source in items}
        try:
            runtime = StreamRuntime(seg)
            for source, item in items.items():
                try:
                    frames, fps, release = _frames(item, spec.max_frames)
                except (InputError, OSError) as exc:
                    job.add({"source": source, "frame": -1, "status": "failed", "error": str(exc)})
                    continue
                runtime.add_source(_released(frames, release), stream_id=source, rate=fps)
            job.log(f"live: {len(runtime.stats())} stream(s) through one streaming runtime ({seg!r}); "
                    "Ctrl-C ends the run", info=True)
            for result in runtime.results() if runtime.stats() else ():
                item = items[result.stream_id]
                row = todo_row(item, result.index, result.frame)
                job.add(written(job.out, job.renderer, job.summary, row, result.mask, result.latency * 1e3,
                                job.worker))
                delivered[result.stream_id].add(result.index)
            interrupted = False
        except KeyboardInterrupt as exc:  # Ctrl-C or SIGTERM (cli_entry): the figures, then exit 130/143
            stopped_by = exc
        finally:
            if runtime is not None:
                try:
                    runtime.close()
                except KeyboardInterrupt:  # a second Ctrl-C while a source is still opening: the summary still comes
                    stopped_by = stopped_by or KeyboardInterrupt()
                for source, stats in runtime.stats().items():
                    job.result.streams.append(stream_line(source, stats, len(delivered.get(source, ()))))
                    if stats.error:
                        job.add({"source": source, "frame": -1, "status": "failed", "error": stats.error})
            for source, item in items.items():  # earlier masks of frames this run did not redo
                for index in item.keep:
                    if index not in delivered[source] and (source, index) in job.previous:
                        job.keep(source, index)
            _drop_rowless(job, items.values())
            result = job.finish(interrupted)
            streamed = set(runtime.stats()) if runtime is not None else set()
            for source, why in result.failed:  # an input that never streamed still gets its line
                if source in job.failed_now and source not in streamed:
                    result.streams.append(f"{source}: not opened: {why}")
    if runtime is not None and runtime.errors:
        print(f"bisenet-infer: {runtime.errors[0]}", file=sys.stderr)
    if stopped_by is not None:  # as a plain run ends on a signal (130/143), after what was done
        result.report(spec.output, "bisenet-infer")
        raise stopped_by
    return result


def _drop_rowless(job: Any, items: Any) -> None:
    """Masks in a stream's folder that no row lists go: a run killed with SIGKILL wrote masks but
    never its summary, and a live rerun drops other frames than it did, so unlike a plain rerun
    it does not write over every one of them. The job's rule: an output is kept only with its
    row (every mask on disk is in the summary); earlier rows' masks are listed and stay."""
    listed = {r.get("output") for r in job.summary.rows.values()} | {r.get("output") for r in job.previous.values()}
    for item in items:
        folder = job.out / item.output
        if item.frames_dir or not folder.is_dir():
            continue  # a video output (overlay, background): assembled from its own rows
        for path in folder.glob("*.png"):
            if _MASK_NAME.fullmatch(path.name) and f"{item.output}/{path.name}" not in listed:
                path.unlink(missing_ok=True)


def _released(frames: Iterator[np.ndarray], release: Any) -> Iterator[np.ndarray]:
    """The frames, the capture released when the runtime stops reading them."""
    try:
        yield from frames
    finally:
        release()

