"""Ray overhead and scaling on this machine: ``bisenet-infer --ray local`` against a plain run.

    python benchmarks/ray_throughput.py [--frames 200] [--size 256] [--out benchmarks/results/ray-<cpu>.json]

One run, the same 200 shapes scenes (256x256) and the demo model (onnxruntime, explicit so
no backend choice is timed), all outputs into fresh folders:

* plain: the single-process job (``jobs.local``), from the first frame to the last;
* Ray local with 1 and 2 workers: cluster startup (``ray.init``) reported on its own; the
  pipeline time from the cluster being ready to the last row (actor start included), and
  the steady rate (frames after the first result / time from the first to the last result);
* two Ray nodes of one CPU each on this machine (``ray.cluster_utils.Cluster``): what adding
  a node does when the cores are the same two.

Prints a table and writes JSON. Masks of every Ray run are compared with the plain run's.
"""

from __future__ import annotations

import argparse
import filecmp
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def plain_run(model: Path, images: Path, out: Path) -> dict:
    from bisenet_deploy.jobs.job import JobSpec
    from bisenet_deploy.jobs.local import run

    result = run(JobSpec(model, [str(images)], out, backend="onnxruntime", quiet=True))
    return {"frames": result.frames, "seconds": round(result.seconds, 2), "fps": round(result.frames / result.seconds, 2)}


def ray_run(model: Path, images: Path, out: Path, workers: int, address: str = "local") -> dict:
    from bisenet_deploy.distributed import RayOptions, run
    from bisenet_deploy.jobs.job import Job, JobSpec

    times: list[float] = []
    add = Job.add

    def timed(job, row) -> None:  # noqa: ANN001 - when each row reaches the driver
        times.append(time.perf_counter())
        add(job, row)

    Job.add = timed
    try:
        began = [time.perf_counter()]
        result = run(JobSpec(model, [str(images)], out, backend="onnxruntime", quiet=True,
                             ray=RayOptions(address=address, workers=workers)))
        began[0] += result.startup_s  # the pipeline starts once the cluster is up (prepare's time is small)
    finally:
        Job.add = add
    pipeline = times[-1] - began[0]
    first = times[0] - began[0]
    steady = (result.frames - result.frames / len(times)) / max(times[-1] - times[0], 1e-9) if len(times) > 1 else None
    return {"workers": workers, "address": address if address == "local" else "2-node test cluster",
            "frames": result.frames, "startup_s": round(result.startup_s, 2), "pipeline_s": round(pipeline, 2),
            "first_result_s": round(first, 2), "fps": round(result.frames / pipeline, 2),
            "steady_fps": None if steady is None else round(steady, 2)}


def same_masks(a: Path, b: Path) -> bool:
    names = sorted(p.relative_to(a) for p in a.rglob("*.png"))
    return names == sorted(p.relative_to(b) for p in b.rglob("*.png")) and all(
        filecmp.cmp(a / n, b / n, shallow=False) for n in names)


def main() -> int:
    from bisenet_deploy.datasets import shapes
    from bisenet_deploy.fileio import write_text_atomic
    from bisenet_deploy.machine import cpu_facts

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--frames", type=int, default=200)
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--model", type=Path, default=ROOT / "demo" / "model.onnx")
    p.add_argument("--out", type=Path)
    args = p.parse_args()
    os.environ.setdefault("BISENET_DEPLOY_CACHE", tempfile.mkdtemp(prefix="ray-bench-cache-"))
    work = Path(tempfile.mkdtemp(prefix="ray-bench-"))
    try:
        model = args.model
        if not model.is_file():
            subprocess_export(model)
        shapes.write_scene_folder(work / "scenes", shapes.validation_scenes(args.frames, (args.size, args.size)))
        images = work / "scenes" / "images"
        rows = {"plain": plain_run(model, images, work / "plain")}
        for workers in (1, 2):
            rows[f"ray local, {workers} worker{'s' if workers > 1 else ''}"] = ray_run(model, images, work / f"ray{workers}",
                                                                                       workers)
        rows["ray, 2 nodes x 1 CPU"] = two_node_run(model, images, work / "ray2n")
        for key, row in rows.items():
            if key != "plain":
                folder = {"ray local, 1 worker": "ray1", "ray local, 2 workers": "ray2",
                          "ray, 2 nodes x 1 CPU": "ray2n"}[key]
                row["masks_equal_plain"] = same_masks(work / "plain", work / folder)
                row["vs_plain"] = round(row["fps"] / rows["plain"]["fps"], 2)
                if row.get("steady_fps"):
                    row["steady_vs_plain"] = round(row["steady_fps"] / rows["plain"]["fps"], 2)
        cpu = cpu_facts()
        report = {"cpu": cpu["model"], "flags": cpu["isa_flags"], "usable_cpus": cpu["usable_cpus"],
                  "frames": args.frames, "size": args.size, "model": str(model), "runs": rows}
        print(json.dumps(report, indent=1))
        if args.out:
            write_text_atomic(args.out, json.dumps(report, indent=1) + "\n")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


def two_node_run(model: Path, images: Path, out: Path) -> dict:
    """Two raylets with one CPU each on this machine, joined by address."""
    from bisenet_deploy.distributed.cluster import import_ray

    import_ray()
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    cluster.add_node(num_cpus=1)
    try:
        return ray_run(model, images, out, workers=2, address=cluster.address)
    finally:
        cluster.shutdown()


def subprocess_export(model: Path) -> None:
    import subprocess

    model.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "bisenet_deploy.cli.export", "--demo", "--size", "512x512", "-o",
                    str(model), "-q"], check=True)


if __name__ == "__main__":
    sys.exit(main())
