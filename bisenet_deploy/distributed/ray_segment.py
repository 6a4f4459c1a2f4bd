"""The Ray executor: the items of a prepared Job (``jobs.prepare``) as a Ray Data pipeline.

    items -> decode (tasks: ``jobs.frames.decode``; videos and bags come as frame / message
    ranges) -> SegmentActor (actor pool, one Segmenter each) -> write (tasks:
    ``jobs.frames.written``) -> rows back to the driver's ``Job.add``; ``Job.finish``

The job (sources, guards, lock and manifest, keep decisions, rows, the summary, the assembly
of videos and bags) is the one a local run has, so ``--ray`` writes what a plain run writes.
"""

from __future__ import annotations

import signal
import sys
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ..jobs.job import JobSpec, Result, prepare


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
        chunk: video frames (bag messages) per decode task, so one long input spreads over workers.
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


def _resolve_backend(model: Path, backend: str | None, options: dict[str, Any]) -> tuple[str, dict]:
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
    return real, {**options, **extra}


def _artifact_files(model: Path) -> dict[str, bytes]:
    from ..trt.sidecar import sidecar_path

    files = {model.name: model.read_bytes()}
    sidecar = sidecar_path(model)
    if sidecar.is_file():  # engines carry their ModelSpec in it
        files[sidecar.name] = sidecar.read_bytes()
    return files


def run(spec: JobSpec) -> Result:
    """Run ``spec`` (whose ``ray`` is a RayOptions) on Ray; returns what was done."""
    from tqdm import tqdm

    from ..machine import usable_cpus
    from ..runtime.given_spec import open_segmenter
    from .cluster import ray_cluster
    from .stages import SegmentActor, decode_stage, write_stage

    opts: RayOptions = spec.ray
    checked = spec.check()  # before the model is opened
    model = Path(spec.model)
    options = {"threads": spec.threads} if spec.threads else {}
    if spec.device != "auto":
        options["device"] = spec.device
    cpus = usable_cpus()
    workers = opts.workers or max(1, cpus // 4)
    if opts.threads or not opts.gpus_per_worker:
        options.setdefault("threads", opts.threads or max(1, cpus // workers))
    if opts.gpus_per_worker:
        options.setdefault("device", "cuda")
    backend, options = _resolve_backend(model, spec.backend, options)
    with open_segmenter(model, spec.given_spec, backend=backend, options=options) as probe:  # fails here, clearly
        model_spec, backend_name = probe.spec, probe.backend.name
    # a --spec made here (completed from the model's input) travels to every actor as it is
    given = model_spec.to_dict() if spec.given_spec is not None else None
    job = prepare(spec, checked, model_spec, backend_name, chunk=opts.chunk)
    interrupted, startup = True, 0.0
    try:
        if job.items:
            ours = signal.getsignal(signal.SIGTERM)
            with ray_cluster(opts.address, num_cpus=cpus if opts.address == "local" else None,
                             verbose=opts.verbose) as cluster:
                signal.signal(signal.SIGTERM, ours)  # Ray's own exits 15 after a native stack dump
                startup = cluster["startup_s"]
                job.log(f"Ray {'local cluster' if cluster['started'] else opts.address} ready in {startup:.1f} s; "
                        f"{workers} worker(s), batch {opts.batch}", info=True)
                import ray

                # A local cluster reads the artifact where it is; other nodes get its bytes
                # (and sidecar) through the object store.
                files = {"path": str(model.resolve())} if cluster["started"] else ray.put(_artifact_files(model))
                items = [asdict(i) for i in job.items]
                # blocks of several images: one task per image costs more than decoding it
                total = job.total() or len(items) * opts.chunk
                per_block = 1 if total >= opts.batch * len(items) else \
                    max(1, min(opts.batch, -(-len(items) // (2 * workers))))
                ds = ray.data.from_items(items, override_num_blocks=max(1, -(-len(items) // per_block)))
                ds = ds.flat_map(decode_stage, num_cpus=0.25)
                with warnings.catch_warnings():
                    # Ray 2.60 deprecates ray_remote_args_fn without a replacement for max_restarts;
                    # max_restarts=0 keeps Ray from logging an error about actor restarts at every start.
                    warnings.simplefilter("ignore", DeprecationWarning)
                    ds = ds.map_batches(
                        SegmentActor, batch_size=opts.batch, concurrency=workers, num_cpus=opts.cpus_per_worker,
                        num_gpus=opts.gpus_per_worker or None, batch_format="numpy",
                        fn_constructor_kwargs={"files": files, "model_name": model.name, "backend": backend,
                                               "options": options, "network_size": spec.network_size,
                                               "spec": given,
                                               "keep_images": job.mode != "mask"},
                        ray_remote_args_fn=lambda: {"max_restarts": 0})
                ds = ds.map_batches(write_stage, batch_format="numpy", num_cpus=0.25,
                                    fn_kwargs={"out": str(job.out), "renderer": job.renderer,
                                               "columns": job.summary.columns, "model": job.summary.model,
                                               "backend": backend_name})
                job.bar = tqdm(total=job.total(), initial=job.result.existing, unit="frame",
                               disable=spec.quiet, file=sys.stderr, dynamic_ncols=True)
                for batch in ds.iter_batches(batch_format="numpy", batch_size=None):
                    for values in zip(*batch.values()):
                        job.add(dict(zip(batch, values)))
        interrupted = False
    finally:
        if job.bar is not None:
            job.bar.close()
            job.bar = None
        result = job.finish(interrupted)
        result.startup_s, result.workers = startup, workers
    return result
