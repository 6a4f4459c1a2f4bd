"""The job model: what to do (``JobSpec``), getting ready (``prepare``), the job's items and rows
(``Job``), and what was done (``Result``). Executors (``local.run``, ``distributed.run``) only
decode, segment and write the items and hand every row to ``Job.add``.

Never mixed: ``prepare`` takes the folder's lock and writes ``OUT/.bisenet-infer.json`` (the
model's hash, the output size and each mode's options) before the first output, so after a
crash of any kind a run with another model or other options is refused with one line
(``--overwrite`` replaces the folder's results instead). Never two at once: the run holds
``flock(2)`` on OUT itself for its whole length; a second run into the folder is refused, and
since the kernel drops the lock when the process dies, a killed run cannot leave it stuck.
Never forgotten: earlier rows are kept (those of inputs not in this run too); an output is kept
only where its row says ``ok``/``exists`` for the input as it is now (``input_stamp``), so a
failed, missing or changed input is done again, and a failure stays in the summary (and the
exit status) until a run succeeds on it.
"""

from __future__ import annotations

import os
import re
import socket
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import UserError
from ..fileio import make_folders, remove_stale_temporaries, temporary_name
from .frames import Item, bag_output, frame_output, image_output, video_output
from .plan import check_output_against_inputs, collect_sources
from .summary import Summary, claim, class_columns, lock_folder, manifest_for, read_previous

DONE = ("ok", "exists")
#: a ROS topic name's characters (a space or an empty name makes a bag no ROS tool reads)
_ROS_NAME = re.compile(r"[A-Za-z0-9_/~]+")


@dataclass(frozen=True)
class BagOptions:
    """Bag inputs: camera topics (``auto``: every image topic), the mask topics' suffix,
    whether the camera topics are copied into the output bag, and the optional outputs for
    robot stacks: an ``rgb8`` colour mask and a ``mono8`` confidence image (``rosbag.topics``)."""

    topics: tuple[str, ...] = ("auto",)
    mask_suffix: str = "/segmentation"
    copy_topics: bool = False
    color: bool = False
    confidence: bool = False


@dataclass
class JobSpec:
    """One ``bisenet-infer`` run. ``bag`` None: no bag options given; ``ray`` (a
    ``distributed.RayOptions``) None: run in this process."""

    model: Path | str
    inputs: Sequence[str]
    output: Path
    mode: str | None = None
    background: Path | None = None
    alpha: float | None = None
    legend: bool = False
    network_size: bool = False
    max_frames: int | None = None
    overwrite: bool = False
    backend: str | None = None
    device: str = "auto"
    threads: int = 0
    bag: BagOptions | None = None
    ray: Any = None
    quiet: bool = False
    live: bool = False  # cameras, streams and videos at their own rate through one streaming runtime (``live``)
    given_spec: dict | None = None  # ``--spec``: ModelSpec fields for a model that carries none

    def check(self):  # noqa: ANN201 - (mode, plan.Plan)
        """Refuse options that would be ignored and unusable inputs or -o (one line each),
        before any model is opened; returns the mode and the sources."""
        mode = self.mode or ("background" if self.background else "mask")
        suffix = (self.bag or BagOptions()).mask_suffix
        if not suffix.startswith("/") or suffix.strip("/") == "" or not _ROS_NAME.fullmatch(suffix) or "//" in suffix:
            raise UserError(f"--mask-topic must look like /segmentation (ROS name characters A-Z a-z 0-9 _ /), "
                            f"got {suffix!r}")
        if mode == "background" and self.background is None:
            raise UserError("--mode background needs --background IMG")
        if self.background is not None and mode != "background":
            raise UserError(f"--background is used only by --mode background, not --mode {mode}; drop one of them")
        if self.legend and mode == "mask":
            raise UserError("--legend draws on overlays; masks hold class ids only (add --mode overlay)")
        if self.alpha is not None and mode != "overlay":
            raise UserError(f"--alpha sets the overlay opacity; it has no effect with --mode {mode}")
        if isinstance(self.model, str) and (self.backend or self.threads or self.device != "auto" or self.ray):
            raise UserError("--backend, --device, --threads and --ray run a model file here; a served model (URL) "
                            "runs on its server: drop them")
        if isinstance(self.model, str) and self.given_spec is not None:
            raise UserError("--spec gives a model file without a ModelSpec its own; a served model (URL) has its "
                            "server's: drop --spec")
        if isinstance(self.model, Path) and not self.model.is_file():
            raise UserError(f"model '{self.model}' not found")
        plan = collect_sources(self.inputs)
        check_output_against_inputs(Path(self.output), self.inputs)
        self._check_live(plan)
        for s in plan.sources if self.ray else []:
            if s.kind == "camera":
                raise UserError(f"camera {s.target} cannot be read by a cluster; segment cameras without --ray")
        if self.bag is not None and not any(s.kind == "bag" for s in plan.sources):
            raise UserError("--topic, --mask-topic, --copy-topics, --color-mask and --confidence apply to bag inputs; "
                            "none of the inputs is a bag")
        if self.bag is not None and self.bag.confidence and (self.ray or isinstance(self.model, str)):
            raise UserError("--confidence reads the class scores of a model file run here; drop --ray / use the "
                            "model file instead of a served model")
        if self.max_frames and all(s.kind == "image" for s in plan.sources):
            raise UserError("--max-frames applies to videos, cameras and bags; the inputs are images")
        return mode, plan


    def _check_live(self, plan) -> None:  # noqa: ANN001 - a plan.Plan
        from .plan import is_url

        if not self.live:
            for s in plan.sources:
                if is_url(s.target):
                    raise UserError(f"'{s.target}' is a stream: streams are read as they come, add --live")
            return
        if self.ray:
            raise UserError("--live runs its sources through one streaming runtime in this process; drop --ray")
        still = [s.origin for s in plan.sources if s.kind in ("image", "bag")] + [f for f, _ in plan.unreadable]
        if still:
            raise UserError(f"--live reads cameras, streams (URLs) and videos as they play; '{still[0]}' is not one: "
                            "segment images and bags in a run without --live")


@dataclass
class Result:
    frames: int = 0  # segmented in this run
    existing: int = 0  # kept from an earlier run
    failed: list[tuple[str, str]] = field(default_factory=list)  # (input, why): this run's and kept ones
    earlier_failures: int = 0  # of ``failed``: inputs of an earlier run, not of this one
    videos: list[tuple[Path, int]] = field(default_factory=list)
    seconds: float = 0.0
    startup_s: float = 0.0  # Ray
    workers: int = 0  # Ray
    summary_paths: list[Path] = field(default_factory=list)
    interrupted: bool = False
    streams: list[str] = field(default_factory=list)  # ``--live``: one line of figures per stream

    @property
    def ok(self) -> bool:
        return not self.failed and not self.interrupted

    def report(self, out: Path, prog: str, ray: bool = False) -> int:
        """The closing lines of a run; the exit status (1 when any input is not done)."""
        parts = [f"{self.frames} frames segmented in {self.seconds:.1f} s "
                 f"({self.frames / max(self.seconds, 1e-9):.1f} FPS) -> {out}"]
        if self.existing:
            parts.append(f"{self.existing} kept from an earlier run (--overwrite redoes them)")
        if self.failed:
            parts.append(f"{len(self.failed)} failed")
        extra = (f"; Ray startup {self.startup_s:.1f} s, {self.workers} worker(s)" if self.startup_s else
                 "; nothing left to run on Ray") if ray else ""
        print("; ".join(parts) + extra)
        for line in self.streams:
            print(f"  {line}")
        for path, count in self.videos:
            print(f"  {path} ({count} frames)")
        for path in self.summary_paths[:1]:
            print(f"  summary: {path}")
        if self.failed:
            earlier = f" ({self.earlier_failures} of an earlier run, not among these inputs)" \
                if self.earlier_failures else ""
            print(f"{prog}: {len(self.failed)} input(s) failed{earlier}; see the lines above and the summary",
                  file=sys.stderr)
        return 1 if self.failed else 0


def _stamp(path: Path) -> str:
    try:
        st = path.stat()
    except OSError:
        return ""
    return f"{st.st_size}:{st.st_mtime_ns}"


class Job:
    """A prepared job: its items, the rows decided before any work, and the summary."""

    def __init__(self, spec: JobSpec, mode: str, out: Path, renderer, summary: Summary,  # noqa: ANN001
                 previous: dict, lock: int) -> None:
        self.spec, self.mode, self.out, self.renderer, self.summary = spec, mode, out, renderer, summary
        self.previous, self.lock, self.labels = previous, lock, set()
        self.items: list[Item] = []
        self.fps: dict[str, float] = {}
        self.result = Result()
        self.start_ns = time.time_ns()
        self._failed_logged: set[str] = set()
        self._truncated: dict[str, int] = {}
        self.bar = None
        self.worker = f"{socket.gethostname()}:{os.getpid()}"
        self.label_threshold = 0.0  # the bags' LabelInfo threshold (``prepare`` sets the model's)

    def log(self, msg: str, info: bool = False) -> None:
        if not (info and self.spec.quiet):
            (self.bar.write if self.bar is not None else print)(f"bisenet-infer: {msg}", file=sys.stderr)

    def plan(self, sources, chunk: int | None) -> None:  # noqa: ANN001 - plan.Source list
        """Work items (ranges of ``chunk`` frames; None: one per input) and the rows known now."""
        by_source: dict[str, list[dict]] = {}
        for row in self.previous.values():
            by_source.setdefault(row["source"], []).append(row)
        self.labels = {s.label for s in sources}
        folders = tuple(f"{Path(i).resolve()}{os.sep}" for i in self.spec.inputs if Path(i).is_dir())
        for key in [k for k in self.summary.rows if k[0] in self.labels or k[0].startswith(folders)]:
            del self.summary.rows[key]  # this run decides them again (what left a folder is not its)
        for s in sources:
            stamp = "" if s.kind == "camera" else _stamp(Path(s.target))
            item = Item(s.label, s.kind, str(s.target), s.name, "", stamp=stamp)
            frames = s.kind in ("video", "camera") and self.mode == "mask"  # a mask PNG per frame
            item.output = image_output(s.name, self.mode) if s.kind == "image" else bag_output(s.name) \
                if s.kind == "bag" else s.name if frames else video_output(s.name, self.mode)
            # rows of this input as it is now, for outputs of this mode (another mode's share the keys)
            earlier = [r for r in by_source.get(s.label, []) if r.get("input_stamp") == stamp != "" and
                       r.get("model") == self.summary.model and
                       r.get("output") == (frame_output(s.name, int(r["frame"])) if frames else item.output)]
            done = bool(earlier) and len(earlier) == len(by_source[s.label]) and \
                all(r.get("status") in DONE for r in earlier) and not self.spec.overwrite
            if s.kind == "image":
                if not (done and (self.out / item.output).is_file()):
                    self.items.append(item)
                else:
                    self.keep(s.label, 0)
                continue
            total = self._bag(item) if s.kind == "bag" else self._video(item)
            if frames and not self.spec.overwrite:  # frame by frame, failed or not
                item.keep = [int(r["frame"]) for r in earlier if r.get("status") in DONE
                             and (self.out / r["output"]).is_file()]
            if total is None:
                continue
            if not frames and done and (self.out / item.output).exists():
                for row in earlier:
                    self.keep(s.label, int(row["frame"]))
                continue
            if not frames:
                item.frames_dir = temporary_name(Path(f"{s.name}.frames"), suffix="").as_posix()
            step = chunk or max(total, 1)
            for start in range(0, max(total, 1), step) if total >= 0 else [0]:
                self.items.append(Item(**{**vars(item), "start": start, "stop": min(start + step, total)
                                          if total >= 0 else -1}))

    def _video(self, item: Item) -> int | None:
        """Frames to read (-1: to the end), the frame rate noted; None when the input failed."""
        if item.kind == "camera":
            self.fps[item.source] = 25.0
            return self.spec.max_frames or -1
        import cv2

        cap = cv2.VideoCapture(item.path)
        declared, fps = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0), cap.get(cv2.CAP_PROP_FPS) or 25.0
        opened = cap.isOpened()
        cap.release()
        if not opened:
            self.add(self.summary.failure_row(item.source, -1, f"cannot open video '{item.path}'"))
            return None
        self.fps[item.source], item.declared = fps, declared
        if declared <= 0:
            return self.spec.max_frames or -1
        return min(declared, self.spec.max_frames) if self.spec.max_frames else declared

    def _bag(self, item: Item) -> int | None:
        from ..rosbag.bags import BagReader
        from ..rosbag.topics import output_topics

        bag = self.spec.bag or BagOptions()
        try:
            with BagReader(item.path) as reader:
                item.topics = reader.select(bag.topics)
                count = reader.count(item.topics)
            output_topics(item.topics, bag.mask_suffix, bag.color, bag.confidence,  # refuses collisions
                          "" if self.mode == "mask" else self.mode, item.topics if bag.copy_topics else ())
        except (UserError, OSError) as exc:
            self.add(self.summary.failure_row(item.source, -1, str(exc)))
            return None
        if list(bag.topics) == ["auto"]:
            self.log(f"{item.source}: image topics {', '.join(item.topics)}", info=True)
        return min(count, self.spec.max_frames) if self.spec.max_frames else count

    def total(self) -> int | None:
        stops = [i.stop - i.start for i in self.items]
        return None if any(n < 0 for n in stops) else sum(stops) + self.result.existing

    def keep(self, source: str, frame: int) -> None:
        row = dict(self.previous[(source, frame)])
        row["status"] = "exists"
        self.summary.add(row)
        self.result.existing += 1

    def add(self, row: dict[str, Any]) -> None:
        """A row from an executor: ``ok`` (written), ``exists`` (kept) or ``failed``."""
        source, frame, status = str(row["source"]), int(row["frame"]), str(row["status"])
        if self.bar is not None:
            self.bar.update(1)
        if status == "exists":
            return self.keep(source, frame)
        if status == "failed":
            error = str(row["error"])
            if error.startswith("declares "):  # Ray: every range after the end says so; the first counts
                if self._truncated.get(source, frame + 1) <= frame:
                    return
                self.summary.rows.pop((source, self._truncated.get(source)), None)
                self._truncated[source] = frame
            row = self.summary.failure_row(source, frame, error, topic=row.get("topic"), stamp=row.get("stamp"))
            if source not in self._failed_logged:
                self._failed_logged.add(source)
                self.log(f"failed: {source}: {error}")
        else:
            self.result.frames += 1
        self.summary.add(row)

    @property
    def failed_now(self) -> set[str]:
        """The inputs that failed in this run (not kept failures of an earlier one)."""
        return set(self._failed_logged)

    def finish(self, interrupted: bool) -> Result:
        """Videos and bags assembled (a camera's also on Ctrl-C: that is how a recording ends),
        temporary frames removed, the summary written, the lock let go."""
        import shutil

        from .frames import assemble_bag, assemble_video

        result = self.result
        result.interrupted = interrupted
        try:
            for item in {i.source: i for i in self.items if i.frames_dir}.values():
                rows = [r for k, r in self.summary.rows.items() if k[0] == item.source and r["status"] == "ok"]
                if interrupted and item.kind != "camera" or not rows:
                    for row in rows:  # never written: no rows
                        del self.summary.rows[(item.source, row["frame"])]
                    continue
                try:
                    count = assemble_bag(self.out, item, rows, self.renderer, self.spec.bag or BagOptions(),
                                         self.label_threshold) \
                        if item.kind == "bag" else assemble_video(self.out, item.frames_dir, item.output,
                                                                  self.fps[item.source])
                except (OSError, UserError) as exc:  # disk full, a folder in the way: this input's failure
                    for row in rows:
                        del self.summary.rows[(item.source, row["frame"])]
                    self.add({"source": item.source, "frame": -1, "status": "failed",
                              "error": f"cannot write {item.output}: {exc}"})
                    continue
                result.videos.append((self.out / item.output, count))
        finally:
            for item in self.items:
                if item.frames_dir:
                    shutil.rmtree(self.out / item.frames_dir, ignore_errors=True)
            if interrupted:  # earlier rows not decided again yet stay; outputs without rows go
                have = {k[0] for k in self.summary.rows}
                for key, row in self.previous.items():
                    there = bool(row.get("output")) and (self.out / row["output"]).exists()
                    if key not in self.summary.rows and (key[0] not in have or there or row.get("status") == "failed"):
                        self.summary.add(dict(row))
                self._drop_unlisted()
            result.seconds = (time.time_ns() - self.start_ns) / 1e9
            failed = {r["source"]: r["error"] for r in self.summary.failed()}
            result.failed = list(failed.items())
            result.earlier_failures = len([s for s in failed if s not in self.labels])
            if self.summary.rows:
                result.summary_paths = self.summary.write(self.out)
            os.close(self.lock)
        return result

    def _drop_unlisted(self) -> None:
        """After a signal: outputs written in this run whose rows never reached us (Ray) go, so
        the summary lists every mask on disk; the next run does them again."""
        listed = {r.get("output") for r in self.summary.rows.values()}
        for item in self.items:
            paths = [self.out / item.output] if item.kind == "image" else \
                (self.out / item.output).glob("*.png") if not item.frames_dir else []
            for path in paths:
                rel = path.relative_to(self.out).as_posix()
                try:
                    if rel not in listed and path.stat().st_mtime_ns >= self.start_ns:
                        path.unlink()
                except OSError:
                    pass


def prepare(spec: JobSpec, checked, model_spec, backend: str, chunk: int | None = None) -> Job:  # noqa: ANN001
    """``checked`` (``spec.check()``) with a model: the folder's lock and manifest (before any
    output), renderer, summary with the earlier rows, and the items."""
    from ..rosbag.messages import label_threshold
    from ..runtime.rendering import Renderer
    from ..runtime.sources import read_image

    mode, plan = checked
    out, bags = Path(spec.output), any(s.kind == "bag" for s in plan.sources)
    background = None
    if mode == "background":
        background = read_image(spec.background) if Path(spec.background).is_file() else None
        if background is None:
            raise UserError(f"cannot read background image '{spec.background}'")
    renderer = Renderer.for_spec(model_spec, mode=mode, background=background,
                                 alpha=0.5 if spec.alpha is None else spec.alpha, legend=spec.legend,
                                 network_size=spec.network_size)
    manifest = manifest_for(spec, mode, model_spec.num_classes, bags)
    make_folders(out)
    lock = lock_folder(out)
    try:
        remove_stale_temporaries(out)  # of a killed run: half-written files, frames of a video
        replaced = claim(out, manifest, mode, spec.overwrite)
        summary = Summary(class_columns(model_spec.num_classes, renderer.class_names), manifest["model"], backend)
        previous = {} if replaced else read_previous(out)
        for row in previous.values():
            summary.add(dict(row))
        job = Job(spec, mode, out, renderer, summary, previous, lock)
        job.label_threshold = label_threshold(model_spec)
        for note in plan.notes:
            job.log(note)
        job.plan(plan.sources, chunk)
        for folder, why in plan.unreadable:
            job.labels.add(folder)
            job.add({"source": folder, "frame": -1, "status": "failed", "error": why})
    except BaseException:
        os.close(lock)
        raise
    return job
