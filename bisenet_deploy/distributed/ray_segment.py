"""``segment()``: a segmentation job as a Ray Data pipeline, with a local run's outputs.

    decode (tasks: images; videos and bags split into frame / message ranges) -> SegmentActor
    (actor pool, one Segmenter each) -> write (tasks) -> summary rows back to the driver

The plan (inputs, output names, the output-folder guards), the outputs and the summary are
``jobs``' own, so ``--ray`` writes what a plain run writes: the same palette PNGs (byte for
byte), overlay videos (assembled on the driver from the frames the tasks wrote), and
``summary.csv`` / ``summary.parquet`` with one row per frame, and for bags the mask bag
(written on the driver from the masks the tasks left, ``bags.py``). Frames whose output exists are
kept (``overwrite`` redoes them); a frame that cannot be decoded is a summary row, not the
end of the job.
"""

from __future__ import annotations

import shutil
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import UserError
from ..fileio import temporary_name

Log = Callable[[str], None]


@dataclass
class RayOptions:
    """How the job runs on Ray.

    Attributes:
        address: ``local`` (a private cluster on this machine, stopped afterwards), ``auto``
            (the cluster this machine belongs to) or a cluster address (``ray://host:10001``,
            ``host:6379``).
        workers: actors, each holding one Segmenter (default: one per 4 CPUs, at least 1).
        batch: frames per Segmenter call.
        gpus_per_worker: GPUs each actor reserves (GPU clusters; the backend runs on CUDA).
        cpus_per_worker: CPUs each actor reserves (fractional: decode and write tasks need
            room too; whole CPUs per actor deadlock a 2-CPU cluster).
        threads: CPU threads of each Segmenter (default: CPUs / workers).
        chunk: video frames per decode task, so one long video spreads over workers.
        verbose: Ray's own logs and per-operator progress bars.
    """

    address: str = "local"
    workers: int | None = None
    batch: int = 8
    gpus_per_worker: float = 0.0
    cpus_per_worker: float = 0.5
    threads: int | None = None
    chunk: int = 64
    verbose: bool = False


@dataclass
class RayResult:
    frames: int = 0
    existing: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)
    videos: list[tuple[Path, int]] = field(default_factory=list)
    seconds: float = 0.0
    startup_s: float = 0.0
    summary_paths: list[Path] = field(default_factory=list)
    interrupted: bool = False
    workers: int = 0

    @property
    def ok(self) -> bool:
        return not self.failed and not self.interrupted


def _resolve_backend(model: Path, backend: str | None, options: dict[str, Any], log: Log) -> tuple[str, dict]:
    """The backend every actor opens: an explicit one, or what ``auto`` picks here (measured
    once on the driver and cached), so all workers and a later plain run agree."""
    from ..runtime.choice import CANDIDATES, choose, default_backend

    name = backend or default_backend(model, options)
    if name != "auto":
        return name, options
    chosen = choose(model, options)
    candidate = (chosen.choice or {}).get("backend", chosen.name)
    chosen.close()
    real, extra = CANDIDATES.get(candidate, (candidate, {}))
    log(f"every worker runs {candidate} (the automatic choice for this artifact here)")
    return real, {**options, **extra}


def _artifact_files(model: Path) -> dict[str, bytes]:
    from ..trt.sidecar import sidecar_path

    files = {model.name: model.read_bytes()}
    sidecar = sidecar_path(model)
    if sidecar.is_file():  # engines carry their ModelSpec in it
        files[sidecar.name] = sidecar.read_bytes()
    return files


def work_items(plan, out: Path, mode: str, overwrite: bool, max_frames: int | None, chunk: int,  # noqa: ANN001
               frames_dirs: dict[str, str], bag) -> tuple[list[dict], list[dict], dict, dict]:  # noqa: ANN001
    """(items for the decode stage, summary rows decided on the driver, video facts, bag facts)."""
    import cv2

    from ..jobs.outputs import video_output
    from .bags import bag_items

    items, decided, videos, bags = [], [], {}, {}
    for source in plan.sources:
        base = {"source": source.label, "name": source.name, "out": str(out), "mode": mode, "overwrite": overwrite}
        if source.kind == "camera":
            raise UserError(f"camera {source.target} cannot be read by a cluster; segment cameras without --ray")
        if source.kind == "bag":
            more, rows, facts = bag_items(source, base, out, overwrite, max_frames, chunk, bag,
                                          frames_dirs[source.label])
            items += more
            decided += rows
            if facts is not None:
                bags[source.label] = facts
            continue
        if source.kind == "image":
            items.append({**base, "kind": "image", "path": str(source.target), "start": 0, "stop": 1})
            continue
        cap = cv2.VideoCapture(str(source.target))
        declared = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0) if cap.isOpened() else 0
        fps = (cap.get(cv2.CAP_PROP_FPS) or 25.0) if cap.isOpened() else 25.0
        opened = cap.isOpened()
        cap.release()
        if not opened:
            decided.append({"source": source.label, "frame": -1, "output": "", "status": "failed",
                            "error": f"cannot open video '{source.target}'"})
            continue
        total = min(declared, max_frames) if max_frames else declared
        if mode != "mask":
            relative = video_output(source.name, mode)
            if not overwrite and (out / relative).is_file():
                decided.append({"source": source.label, "frame": 0, "output": relative, "status": "exists"})
                continue
            videos[source.label] = {"output": relative, "fps": fps, "frames_dir": frames_dirs[source.label],
                                    "expected": total}
        for start in range(0, max(total, 1), chunk):
            items.append({**base, "kind": "video", "path": str(source.target), "start": start,
                          "stop": min(start + chunk, total), "declared": declared,
                          "frames_dir": frames_dirs.get(source.label, "")})
    return items, decided, videos, bags


def segment(model: str | Path, inputs: Sequence[str], output: str | Path, *, mode: str = "mask",
            background: np.ndarray | None = None, alpha: float = 0.5, legend: bool = False,
            network_size: bool = False, max_frames: int | None = None, overwrite: bool = False,
            backend: str | None = None, backend_options: dict[str, Any] | None = None,
            ray: RayOptions | None = None, progress: bool = True, log: Log = lambda msg: None,
            on_rows: Callable[[int], None] | None = None, bag=None) -> RayResult:  # noqa: ANN001 - BagOptions
    """Segment ``inputs`` into ``output`` on Ray; returns what was done (see the module docstring)."""
    from tqdm import tqdm

    from ..jobs.local import BagOptions
    from ..jobs.outputs import Renderer
    from ..jobs.plan import check_output_against_inputs, collect_sources
    from ..jobs.summary import Summary, check_manifest, class_columns, manifest_for, read_previous
    from ..machine import usable_cpus
    from ..runtime import Segmenter
    from .cluster import ray_cluster
    from .stages import decode, write

    ray_options = ray or RayOptions()
    if isinstance(model, str) and "://" in model:
        raise UserError("--ray runs the model in its workers; a served model (URL) is called without --ray")
    model, out = Path(model), Path(output)
    if not model.is_file():
        raise UserError(f"model '{model}' not found")
    plan = collect_sources(inputs)
    check_output_against_inputs(out, inputs)
    for note in plan.notes:
        log(note)
    options = dict(backend_options or {})
    cpus = usable_cpus()
    workers = ray_options.workers or max(1, cpus // 4)
    if ray_options.threads or not ray_options.gpus_per_worker:
        options.setdefault("threads", ray_options.threads or max(1, cpus // workers))
    if ray_options.gpus_per_worker:
        options.setdefault("device", "cuda")
    real_backend, options = _resolve_backend(model, backend, options, log)
    with Segmenter(model, backend=real_backend, backend_options=options) as probe:  # fails here, clearly
        spec, backend_name = probe.spec, probe.backend.name
    manifest = manifest_for(model, mode, network_size, spec.num_classes)
    check_manifest(out, manifest, overwrite)
    renderer = Renderer.for_spec(spec, mode=mode, background=background, alpha=alpha, legend=legend,
                                 network_size=network_size)
    columns = class_columns(spec.num_classes, renderer.class_names)
    summary = Summary(columns, model.name, backend_name)
    previous = {} if overwrite else read_previous(out)
    # overlay frames of a video (and every frame's mask of a bag) land in a hidden folder in OUT
    # until the video (the bag) is assembled
    frames_dirs = {s.label: temporary_name(Path(f"{s.name}.{mode}.frames"), suffix="").as_posix()
                   for s in plan.sources if (s.kind == "video" and mode != "mask") or s.kind == "bag"}
    bag = bag or BagOptions()
    items, decided, videos, bags = work_items(plan, out, mode, overwrite, max_frames, ray_options.chunk,
                                              frames_dirs, bag)
    result = RayResult(workers=workers)
    for label, facts in bags.items():
        if facts["auto"]:
            log(f"{label}: image topics {', '.join(facts['topics'])}")
    for row in decided:
        if row["status"] == "exists" and row["frame"] == "*":  # a bag written before: every row of it
            result.existing += summary.keep_source(row["source"], row["output"], previous)
            log(f"kept {out / row['output']} from an earlier run (--overwrite redoes it)")
        elif row["status"] == "exists":
            summary.keep_existing(row["source"], row["frame"], row["output"], previous)
        else:
            summary.add(summary.failure_row(row["source"], row["frame"], row["error"], row["output"]))
            log(f"failed: {row['source']}: {row['error']}")
    scratch: dict[tuple[str, int], dict] = {}  # bag frames: where their masks wait, their header facts
    total = sum(i["stop"] - i["start"] for i in items)
    start = time.perf_counter()
    bar = None

    def finish() -> RayResult:
        return _finish(out, videos, bags, scratch, renderer, bag, summary, result, manifest, start)

    try:
        if not items:  # everything was done before (or could not be opened): no cluster needed
            return finish()
        with ray_cluster(ray_options.address, num_cpus=cpus if ray_options.address == "local" else None,
                         verbose=ray_options.verbose) as cluster:
            result.startup_s = cluster["startup_s"]
            log(f"Ray {'local cluster' if cluster['started'] else ray_options.address} ready in "
                f"{result.startup_s:.1f} s; {workers} worker(s), batch {ray_options.batch}")
            import ray as ray_module

            # A local cluster reads the artifact where it is; other nodes get its bytes (and sidecar)
            # through the object store.
            files = {"path": str(model.resolve())} if cluster["started"] else ray_module.put(_artifact_files(model))
            render = {"mode": mode, "palette": renderer.palette, "class_names": renderer.class_names,
                      "background": background, "alpha": alpha, "legend": legend, "network_size": network_size}
            # blocks of several images: one task per image costs more than decoding it
            # (a video or bag range is a block of its own: its frames are plenty of work, and
            # grouping ranges would hold the first results back until several were decoded)
            per_block = 1 if total >= ray_options.batch * len(items) else \
                max(1, min(ray_options.batch, -(-len(items) // (2 * workers))))
            ds = ray_module.data.from_items(items, override_num_blocks=max(1, -(-len(items) // per_block)))
            ds = ds.flat_map(decode, num_cpus=0.25)
            with warnings.catch_warnings():
                # Ray 2.60 deprecates ray_remote_args_fn without a replacement for max_restarts yet;
                # max_restarts=0 keeps Ray from logging an error about actor restarts at every start.
                warnings.simplefilter("ignore", DeprecationWarning)
                ds = _segment_stage(ds, ray_options, workers, files, model, real_backend, options, network_size,
                                    mode)
            ds = ds.map_batches(write, batch_format="numpy", num_cpus=0.25,
                                fn_kwargs={"render": render, "out": str(out), "columns": columns,
                                           "model": model.name, "backend": backend_name})
            bar = tqdm(total=total, unit="frame", disable=not progress, file=sys.stderr, dynamic_ncols=True)
            for batch in ds.iter_batches(batch_format="numpy", batch_size=None):
                rows = [dict(zip(batch, values)) for values in zip(*batch.values())]
                for row in rows:
                    row = _bag_facts({k: _plain(v) for k, v in row.items()}, scratch)
                    if row["status"] == "exists":
                        summary.keep_existing(row["source"], int(row["frame"]), row["output"], previous)
                        result.existing += 1
                    else:
                        summary.add(row)
                        if row["status"] == "ok":
                            result.frames += 1
                        else:
                            log(f"failed: {row['source']}: {row['error']}")
                bar.update(len(rows))
                if on_rows is not None:
                    on_rows(len(rows))
    except KeyboardInterrupt:
        result.interrupted = True
        raise
    finally:
        if bar is not None:
            bar.close()
        if items:
            finish()
    return result


def _bag_facts(row: dict[str, Any], scratch: dict[tuple[str, int], dict]) -> dict[str, Any]:
    """A summary row without the bag columns that only carry facts to the driver (kept in
    ``scratch``); a bag frame's stamp as the integer it is."""
    facts = {k: row.pop(k, None) for k in ("scratch", "log_time", "frame_id")}
    if row.get("topic"):
        scratch[(str(row["source"]), int(row["frame"]))] = facts
        row["stamp"] = int(row["stamp"]) if row.get("stamp") not in (None, "") else None
    else:
        row.pop("topic", None)
        row.pop("stamp", None)
    return row


def _finish(out: Path, videos: dict, bags: dict, scratch: dict, renderer, bag, summary,  # noqa: ANN001
            result: RayResult, manifest: dict, start: float) -> RayResult:
    from ..jobs.summary import write_manifest
    from .bags import assemble_bags

    result.seconds = time.perf_counter() - start
    try:
        if not result.interrupted:
            _assemble_videos(out, videos, summary, result)
            assemble_bags(out, bags, summary, scratch, renderer, bag, result)
    finally:
        for info in [*videos.values(), *bags.values()]:
            shutil.rmtree(out / info["frames_dir"], ignore_errors=True)
    result.failed = [(r["source"], r["error"]) for r in summary.rows.values() if r.get("status") == "failed"]
    if summary.rows:
        result.summary_paths = summary.write(out)
        write_manifest(out, manifest)
    return result


def _plain(value: Any) -> Any:
    """A value of a Ray batch as the summary wants it: Python scalars; None where Ray filled
    a column one block did not have (failure rows have no size) with NaN."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and value != value:
        return None
    return value


def _segment_stage(ds, ray_options: RayOptions, workers: int, files, model: Path, backend: str,  # noqa: ANN001
                   options: dict[str, Any], network_size: bool, mode: str):  # noqa: ANN202 - a Dataset
    """The actor pool: one Segmenter per actor, fractional CPUs (decode and write tasks need
    room too), GPUs where asked."""
    from .stages import SegmentActor

    return ds.map_batches(
        SegmentActor, batch_size=ray_options.batch, concurrency=workers, num_cpus=ray_options.cpus_per_worker,
        num_gpus=ray_options.gpus_per_worker or None, batch_format="numpy",
        fn_constructor_kwargs={"files": files, "model_name": model.name, "backend": backend, "options": options,
                               "output_size": "network" if network_size else "frame", "keep_images": mode != "mask"},
        ray_remote_args_fn=lambda: {"max_restarts": 0})


def _assemble_videos(out: Path, videos: dict[str, dict], summary, result: RayResult) -> None:  # noqa: ANN001
    """Overlay/background videos from the frames the write tasks left, in frame order."""
    from ..runtime.rendering import VideoSink
    from ..runtime.sources import read_image

    for source, info in videos.items():
        frames = sorted((out / info["frames_dir"]).glob("*.png"))
        if not frames:
            continue
        sink = None
        try:
            for path in frames:
                image = read_image(path)
                if sink is None:
                    sink = VideoSink(out / info["output"], info["fps"], image.shape[:2])
                sink.write(image)
        except BaseException:
            if sink is not None:
                sink.abort()
            raise
        sink.close()
        result.videos.append((sink.path, sink.frames))
        for key, row in summary.rows.items():
            if key[0] == source and row.get("status") == "ok":
                row["output"] = info["output"]
