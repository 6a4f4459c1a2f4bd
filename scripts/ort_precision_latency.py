"""onnxruntime CPU latency of FP32 / FP16 / INT8 ONNX models, interleaved in one process.

    python scripts/ort_precision_latency.py model.onnx model.int8.onnx [--runs 10] [--threads 0]

Runs the models round-robin (one run of each per round, after warm-up) so that load from
other processes on a shared machine hits all of them alike, and reports the median and
minimum wall time and the median CPU time per run; speed-ups are relative to the first
model. It also prints how many convolutions onnxruntime turned into int8 QLinearConv. A
measurement program, not a test: on a busy machine read the CPU-time column.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort

from bisenet_deploy.export.metadata import read_metadata
from bisenet_deploy.runtime import processing
from bisenet_deploy.samples import sample_photos
from bisenet_deploy.spec import METADATA_KEY, ModelSpec


def session(path: Path, threads: int, optimized: Path) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.log_severity_level = 3
    options.optimized_model_filepath = str(optimized)
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("models", nargs="+", type=Path)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--threads", type=int, default=0, help="intra-op threads (0: onnxruntime's default)")
    args = parser.parse_args()

    spec = ModelSpec.from_json(read_metadata(onnx.load(str(args.models[0]), load_external_data=False))[METADATA_KEY])
    batch = processing.preprocess([sample_photos(1)[0][1]], spec)
    runs, kernels = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        for i, path in enumerate(args.models):
            optimized = Path(tmp) / f"{i}.onnx"
            runs[path] = session(path, args.threads, optimized)
            ops = Counter(n.op_type for n in onnx.load(str(optimized), load_external_data=False).graph.node)
            kernels[path] = f"{ops['QLinearConv']} QLinearConv, {ops['Conv'] + ops['FusedConv']} float Conv"
    wall = {p: [] for p in args.models}
    cpu = {p: [] for p in args.models}
    for s in runs.values():
        for _ in range(2):
            s.run(None, {s.get_inputs()[0].name: batch})
    for _ in range(args.runs):
        for path, s in runs.items():
            t, c = time.perf_counter(), time.process_time()
            s.run(None, {s.get_inputs()[0].name: batch})
            wall[path].append(time.perf_counter() - t)
            cpu[path].append(time.process_time() - c)
    base_wall, base_cpu = np.median(wall[args.models[0]]), np.median(cpu[args.models[0]])
    h, w = spec.input_size
    print(f"{h}x{w}, {args.runs} interleaved runs, threads={args.threads or 'default'}")
    print(f"{'model':32s} {'median ms':>10s} {'min ms':>8s} {'cpu ms':>8s} {'speed-up':>9s} {'(cpu)':>6s}  kernels")
    for path in args.models:
        med, low, c = np.median(wall[path]), np.min(wall[path]), np.median(cpu[path])
        times = f"{med * 1e3:10.1f} {low * 1e3:8.1f} {c * 1e3:8.1f}"
        print(f"{path.name:32s} {times} {base_wall / med:8.2f}x {base_cpu / c:5.2f}x  {kernels[path]}")


if __name__ == "__main__":
    main()
