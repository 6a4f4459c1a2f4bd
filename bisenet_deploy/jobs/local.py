"""Run a segmentation job in this process: every source of a Plan through one Segmenter.

Per input, never for the whole run: an unreadable image or video, a video that ends before
the frames it declares, or a camera that cannot be opened is recorded (summary row, one
line on the console) and the job goes on with the next input; the caller exits non-zero
afterwards. Frames whose output already exists are kept, unless ``overwrite``. Ctrl-C and
SIGTERM stop the job after writing the summary of what was done (a partial video file is
dropped; a camera recording is kept, since that is how one ends).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import cv2

from ..errors import UserError
from ..runtime.rendering import VideoSink
from ..runtime.sources import open_video, read_image
from .outputs import Renderer, frame_output, image_output, video_output
from .plan import Plan, Source
from .summary import Summary, read_previous

Log = Callable[[str], None]


@dataclass
class JobResult:
    frames: int = 0  # segmented in this run
    existing: int = 0  # skipped: output already there
    failed: list[tuple[str, str]] = field(default_factory=list)  # (input, why)
    warnings: list[str] = field(default_factory=list)
    videos: list[tuple[Path, int]] = field(default_factory=list)
    seconds: float = 0.0
    summary_paths: list[Path] = field(default_factory=list)
    interrupted: bool = False

    @property
    def ok(self) -> bool:
        return not self.failed and not self.interrupted


def declared_frames(source: Source, max_frames: int | None) -> int | None:
    """Frames a video says it has (capped by ``max_frames``); None for cameras or when unknown."""
    if source.kind != "video":
        return max_frames if source.kind == "camera" else 1
    cap = cv2.VideoCapture(str(source.target))
    n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0) if cap.isOpened() else 0
    cap.release()
    if n <= 0:
        return None
    return min(n, max_frames) if max_frames else n


def total_frames(plan: Plan, max_frames: int | None) -> int | None:
    total = 0
    for source in plan.sources:
        n = declared_frames(source, max_frames)
        if n is None:
            return None
        total += n
    return total


class LocalJob:
    """One job: segmenter, plan, output folder, renderer; ``run()`` returns a JobResult."""

    def __init__(self, seg, plan: Plan, out: Path, renderer: Renderer, summary: Summary,  # noqa: ANN001
                 max_frames: int | None = None, overwrite: bool = False, log: Log = print,
                 progress: Callable[[int], None] = lambda n: None) -> None:
        self.seg, self.plan, self.out, self.renderer, self.summary = seg, plan, out, renderer, summary
        self.max_frames, self.overwrite, self.log, self.progress = max_frames, overwrite, log, progress
        self.previous = {} if overwrite else read_previous(out)
        self.result = JobResult()

    def run(self) -> JobResult:
        start = time.perf_counter()
        try:
            for source in self.plan.sources:
                if source.kind == "image":
                    self._image(source)
                else:
                    self._stream(source)
        except KeyboardInterrupt:
            self.result.interrupted = True
            raise
        finally:
            self.result.seconds = time.perf_counter() - start
            if self.summary.rows:
                self.result.summary_paths = self.summary.write(self.out)
        return self.result

    # --- images ------------------------------------------------------------------------------

    def _exists(self, relative: str) -> bool:
        return not self.overwrite and (self.out / relative).is_file()

    def _fail(self, source: Source, why: str, frame: int | None = None) -> None:
        self.result.failed.append((source.label, why))
        self.summary.add(self.summary.failure_row(source.label, frame, why))
        self.log(f"failed: {source.label}: {why}")

    def _image(self, source: Source) -> None:
        relative = image_output(source.name, self.renderer.mode)
        if self._exists(relative):
            self.summary.keep_existing(source.label, 0, relative, self.previous)
            self.result.existing += 1
            self.progress(1)
            return
        frame = read_image(source.target)
        if frame is None:
            self._fail(source, "cannot decode the image (corrupt, empty or not an image)", 0)
            self.progress(1)
            return
        start = time.perf_counter()
        mask = self.seg(frame)
        latency = time.perf_counter() - start
        self.renderer.write(self.out / relative, frame, mask)
        self.summary.add(self.summary.frame_row(source.label, 0, relative, mask, frame.shape[:2], latency))
        self.result.frames += 1
        self.progress(1)

    # --- videos and cameras --------------------------------------------------------------------

    def _stream(self, source: Source) -> None:
        as_frames = self.renderer.mode == "mask"
        video_rel = video_output(source.name, self.renderer.mode)
        if not as_frames and self._exists(video_rel):
            kept = [k[1] for k in self.previous if k[0] == source.label] or [0]
            for index in kept:
                self.summary.keep_existing(source.label, index, video_rel, self.previous)
            self.result.existing += len(kept)
            self.progress(declared_frames(source, self.max_frames) or len(kept))
            return
        expected = declared_frames(source, self.max_frames) if source.kind == "video" else None
        try:
            cap = open_video(str(source.target) if source.kind == "video" else source.target)
        except UserError as exc:
            self._fail(source, str(exc))
            return
        fps = cap.get(cv2.CAP_PROP_FPS) or 25.0
        sink: VideoSink | None = None
        count = 0
        try:
            while self.max_frames is None or count < self.max_frames:
                ok, frame = cap.read()
                if not ok:
                    break
                index = count
                count += 1
                relative = frame_output(source.name, index, "mask") if as_frames else video_rel
                if as_frames and self._exists(relative):
                    self.summary.keep_existing(source.label, index, relative, self.previous)
                    self.result.existing += 1
                    self.progress(1)
                    continue
                start = time.perf_counter()
                mask = self.seg(frame)
                latency = time.perf_counter() - start
                if as_frames:
                    self.renderer.write(self.out / relative, frame, mask)
                else:
                    image = self.renderer.picture(frame, mask)
                    if sink is None:
                        sink = VideoSink(self.out / video_rel, fps, image.shape[:2])
                    sink.write(image)
                self.summary.add(self.summary.frame_row(source.label, index, relative, mask, frame.shape[:2],
                                                        latency))
                self.result.frames += 1
                self.progress(1)
        except KeyboardInterrupt:
            if sink is not None:
                if source.kind == "camera":  # Ctrl-C is how a camera recording ends: keep it
                    sink.close()
                    self.result.videos.append((sink.path, sink.frames))
                else:
                    sink.abort()
            raise
        except UserError as exc:
            if sink is not None:
                sink.abort()
            self._fail(source, str(exc), count)
            return
        except BaseException:
            if sink is not None:
                sink.abort()
            raise
        finally:
            cap.release()
        if sink is not None:
            sink.close()
            self.result.videos.append((sink.path, sink.frames))
        if count == 0:
            self._fail(source, f"no frames could be read from {source.kind} {source.label}")
        elif expected is not None and count < expected:
            why = f"declares {expected} frames but only {count} could be decoded (truncated or corrupt?)"
            self._fail(source, why, count)
