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


@dataclass
class BagOptions:
    """What a bag input writes: which camera topics (``auto``: every image topic), the suffix
    of the mask topics, and whether the camera topics are copied into the output bag."""

    topics: tuple[str, ...] = ("auto",)
    mask_suffix: str = "/segmentation"
    copy_topics: bool = False


def declared_frames(source: Source, max_frames: int | None, bag: BagOptions | None = None) -> int | None:
    """Frames a video (or a bag's camera topics) says it has (capped by ``max_frames``); None
    for cameras or when unknown."""
    if source.kind == "bag":
        from ..rosbag.bags import BagReader

        try:
            with BagReader(source.target) as reader:
                return reader.count(reader.select((bag or BagOptions()).topics))
        except UserError:
            return 0
    if source.kind != "video":
        return max_frames if source.kind == "camera" else 1
    cap = cv2.VideoCapture(str(source.target))
    n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0) if cap.isOpened() else 0
    cap.release()
    if n <= 0:
        return None
    return min(n, max_frames) if max_frames else n


def total_frames(plan: Plan, max_frames: int | None, bag: BagOptions | None = None) -> int | None:
    total = 0
    for source in plan.sources:
        n = declared_frames(source, max_frames, bag)
        if n is None:
            return None
        total += n
    return total


class LocalJob:
    """One job: segmenter, plan, output folder, renderer; ``run()`` returns a JobResult."""

    def __init__(self, seg, plan: Plan, out: Path, renderer: Renderer, summary: Summary,  # noqa: ANN001
                 max_frames: int | None = None, overwrite: bool = False, log: Log = print,
                 progress: Callable[[int], None] = lambda n: None, bag: BagOptions | None = None) -> None:
        self.seg, self.plan, self.out, self.renderer, self.summary = seg, plan, out, renderer, summary
        self.max_frames, self.overwrite, self.log, self.progress = max_frames, overwrite, log, progress
        self.bag = bag or BagOptions()
        self.previous = {} if overwrite else read_previous(out)
        self.result = JobResult()

    def run(self) -> JobResult:
        start = time.perf_counter()
        try:
            for source in self.plan.sources:
                if source.kind == "image":
                    self._image(source)
                elif source.kind == "bag":
                    self._bag(source)
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
            kept = self.summary.keep_source(source.label, video_rel, self.previous)
            self.result.existing += kept
            self.progress(declared_frames(source, self.max_frames) or kept)
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

    # --- bags ---------------------------------------------------------------------------------

    def _bag(self, source: Source) -> None:
        """Camera topics of a bag -> a new rosbag2 MCAP bag with mask (and overlay) topics,
        written under a temporary name and renamed when complete."""
        from ..rosbag.bags import BagReader, staged_bag
        from .outputs import bag_output

        relative = bag_output(source.name)
        final = self.out / relative
        if final.exists() and not self.overwrite:
            self.result.existing += self.summary.keep_source(source.label, relative, self.previous)
            self.log(f"kept {final} from an earlier run (--overwrite redoes it)")
            return
        try:
            reader = BagReader(source.target)
            topics = reader.select(self.bag.topics)
        except UserError as exc:
            self._fail(source, str(exc))
            return
        if list(self.bag.topics) == ["auto"]:
            self.log(f"{source.label}: image topics {', '.join(topics)}")
        reported: set[tuple[str, str]] = set()
        try:
            with staged_bag(final, self.renderer.names(), self.renderer.palette) as writer:
                if self.bag.copy_topics:
                    for connection, timestamp, data in reader.raw_messages(topics):
                        writer.write_raw(connection.topic, connection.msgtype, timestamp, data)
                count = 0
                try:
                    for frame_number, frame in enumerate(reader.frames(topics)):
                        if self.max_frames is not None and count >= self.max_frames:
                            break
                        count += 1
                        self._bag_frame(source, frame_number, frame, writer, relative, reported)
                except UserError as exc:  # damaged part way: keep what was read, report it
                    self._fail(source, str(exc), count)
        finally:
            reader.close()
        self.result.videos.append((final, sum(writer.counts.get(t + self.bag.mask_suffix, 0) for t in topics)))

    def _bag_frame(self, source: Source, number: int, frame, writer, relative: str,  # noqa: ANN001
                   reported: set[tuple[str, str]]) -> None:
        mask_topic = frame.topic + self.bag.mask_suffix
        if frame.image is None:
            row = self.summary.failure_row(source.label, number, f"{frame.topic} message {frame.index}: {frame.error}",
                                           relative)
            row.update(topic=frame.topic, stamp=frame.stamp)
            self.summary.add(row)
            self.result.failed.append((source.label, frame.error))
            if (frame.topic, frame.error) not in reported:
                reported.add((frame.topic, frame.error))
                self.log(f"failed: {source.label} {frame.topic}: {frame.error} (further messages like it are "
                         "counted in the summary)")
            self.progress(1)
            return
        start = time.perf_counter()
        mask = self.seg(frame.image)
        latency = time.perf_counter() - start
        writer.write_image(mask_topic, frame.timestamp, frame.header, mask, "mono8")
        if self.renderer.mode != "mask":
            writer.write_image(mask_topic + "/" + self.renderer.mode, frame.timestamp, frame.header,
                               self.renderer.picture(frame.image, mask), "bgr8")
        row = self.summary.frame_row(source.label, number, relative, mask, frame.image.shape[:2], latency)
        row.update(topic=frame.topic, stamp=frame.stamp)
        self.summary.add(row)
        self.result.frames += 1
        self.progress(1)
