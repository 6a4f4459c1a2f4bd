"""One-shot check on a machine with a GPU and TensorRT: does the whole engine path work here?

Exports the demo model, builds FP32 / FP16 / INT8 engines (and a dynamic-shape FP32 one)
with ``bisenet-export ... --engine``, runs them with the TensorRT backend and compares the
labels with onnxruntime FP32 on the same frames. Also checks that the CUDA-graph path and a
GPU-resident input give exactly what the plain path gives. Prints a table and a verdict;
``scripts/gpu_check.sh`` runs it. Exit code 0 only when every check that could run passed.

    python -m bisenet_deploy.cli.gpu_check --out gpu_check --size 256x512
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

#: minimum label agreement (%) with onnxruntime FP32, per engine precision
THRESHOLDS = {"fp32": 99.9, "fp16": 99.5, "int8": 99.0}


@dataclass
class CheckResult:
    name: str
    status: str  # PASS, FAIL or SKIP
    detail: str = ""
    figures: dict[str, Any] = field(default_factory=dict)


def check_frames(size_hw: tuple[int, int], count: int = 6) -> list[np.ndarray]:
    """Sample photos (real scenes) topped up with seeded random frames."""
    from ..samples import sample_photos
    from .verify import random_frames

    frames = [image for _, image in sample_photos(count)]
    return frames + random_frames(max(0, count - len(frames)), size_hw, seed=1)


def export_with_engine(out_dir: Path, name: str, size: str, *extra: str) -> tuple[int, str]:
    """Run ``bisenet-export --demo ... --engine``; (exit code, stderr-ish reason)."""
    import contextlib
    import io

    from ..cli.export import main

    argv = ["--demo", "-o", str(out_dir / f"{name}.onnx"), "--size", size, "--engine", "-q", *extra]
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        try:
            code = main(argv)
        except SystemExit as exc:  # argparse: an option this build does not know
            code = int(exc.code or 2)
    return code, err.getvalue().strip().splitlines()[-1] if err.getvalue().strip() else ""


def write_calibration_images(folder: Path, size_hw: tuple[int, int]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i, frame in enumerate(check_frames(size_hw, count=16)):
        cv2.imwrite(str(folder / f"calib_{i:02d}.png"), frame)
    return folder


def _labels(backend: Any, frames: list[np.ndarray], size_hw: tuple[int, int], batch: int = 1) -> np.ndarray:
    from ..runtime import processing

    out = []
    for start in range(0, len(frames) - batch + 1, batch):
        x = processing.preprocess(frames[start : start + batch], backend.spec, size_hw)
        out.append(processing.labels_from_output(backend.infer(x), backend.spec))
    return np.concatenate(out)


def agreement_check(engine: Path, onnx: Path, frames, size_hw, threshold: float, batch: int = 1) -> CheckResult:
    """Label agreement of the engine with onnxruntime FP32 (minimum over frames)."""
    from ..metrics import label_agreement
    from ..runtime.backends.onnxruntime import OnnxRuntimeBackend
    from ..trt.runner import TensorRTBackend

    with OnnxRuntimeBackend(onnx, device="cpu") as ref:
        expected = _labels(ref, frames, size_hw, batch)
    with TensorRTBackend(engine) as trt_backend:
        got = _labels(trt_backend, frames, size_hw, batch)
        computes = []
        for _ in range(20):
            _labels(trt_backend, frames[:batch], size_hw, batch)
            computes.append(trt_backend.last_stage_times["compute"])
        stages = dict(trt_backend.last_stage_times)
    per_frame = [label_agreement(e, g) for e, g in zip(expected, got)]
    worst = min(per_frame)
    figures = {"min_agreement": worst, "mean_agreement": float(np.mean(per_frame)), "frames": len(per_frame),
               "batch": batch, "size": list(size_hw), "compute_ms_median": 1000 * float(np.median(computes)),
               "last_stage_ms": {k: 1000 * v for k, v in stages.items()}}
    status = "PASS" if worst >= threshold else "FAIL"
    return CheckResult(f"{engine.name} vs onnxruntime fp32 at {batch}x{size_hw[0]}x{size_hw[1]}", status,
                       f"min agreement {worst:.3f}% (need >= {threshold}%)", figures)


def cuda_graph_check(engine: Path, frames, size_hw) -> CheckResult:
    """The CUDA-graph path returns exactly what the plain path returns."""
    from ..runtime import processing
    from ..trt.runner import TensorRTBackend

    with TensorRTBackend(engine) as plain, TensorRTBackend(engine, cuda_graph=True) as graphed:
        diffs = []
        for frame in frames:
            x = processing.preprocess([frame], plain.spec, size_hw)
            a, b = plain.infer(x), graphed.infer(x)
            diffs.append(float(np.max(np.abs(a.astype(np.float64) - b.astype(np.float64)))))
        used = graphed.cuda_graph
    if not used:
        return CheckResult(f"{engine.name} CUDA graph", "FAIL", "capture failed; the backend fell back to plain runs")
    worst = max(diffs)
    return CheckResult(f"{engine.name} CUDA graph == plain", "PASS" if worst == 0.0 else "FAIL",
                       f"max |diff| {worst:.3g} over {len(frames)} frames", {"max_abs_diff": worst})


def _to_gpu(array: np.ndarray) -> Any:
    try:
        import torch

        if torch.cuda.is_available():
            return torch.from_numpy(array).cuda()
    except ImportError:
        pass
    try:
        import cupy

        return cupy.asarray(array)
    except ImportError:
        return None


def gpu_input_check(engine: Path, frames, size_hw) -> CheckResult:
    """An input already on the GPU (torch or cupy) gives what the host input gives."""
    from ..runtime import processing
    from ..trt.runner import TensorRTBackend

    name = f"{engine.name} GPU-resident input"
    with TensorRTBackend(engine) as backend:
        x = processing.preprocess(frames[:1], backend.spec, size_hw)
        on_gpu = _to_gpu(x)
        if on_gpu is None:
            return CheckResult(name, "SKIP", "needs torch with CUDA or cupy")
        host = backend.infer(x)
        dev = backend.infer(on_gpu)
        h2d_ms = 1000 * backend.last_stage_times["h2d"]
    same = np.array_equal(host, dev)
    return CheckResult(name, "PASS" if same else "FAIL", f"{type(on_gpu).__module__} input, h2d stage {h2d_ms:.3f} ms",
                       {"identical": same})


def run_checks(out_dir: Path, size_hw: tuple[int, int], tensorrt: str = "auto") -> list[CheckResult]:
    from ..trt.cuda_buffers import require_gpu
    from ..trt.loading import flavour, load_tensorrt, version_of

    trt = load_tensorrt(tensorrt)
    gpu = require_gpu(0)
    print(f"{flavour(trt)} {version_of(trt)} on {gpu['name']} (compute capability {gpu['compute_capability']}, "
          f"CUDA runtime {gpu.get('cuda_runtime')}, driver {gpu.get('cuda_driver')})")
    out_dir.mkdir(parents=True, exist_ok=True)
    size = f"{size_hw[0]}x{size_hw[1]}"
    frames = check_frames(size_hw)
    results: list[CheckResult] = []
    engine_args = ["--tensorrt", tensorrt]

    code, why = export_with_engine(out_dir, "demo", size, *engine_args)
    if code != 0:
        return [CheckResult("export + fp32 engine", "FAIL", why)]
    onnx = out_dir / "demo.onnx"
    engines = {"fp32": out_dir / "demo.fp32.engine"}
    calib = write_calibration_images(out_dir / "calib", size_hw)
    for precision, extra in (("fp16", []), ("int8", ["--calib", str(calib)])):
        # Own output names, so the FP32 reference demo.onnx is never replaced by a variant.
        argv = ["--precision", precision, *extra, *engine_args]
        code, why = export_with_engine(out_dir, f"demo_{precision}", size, *argv)
        found = sorted(out_dir.glob(f"*.{precision}.engine"))
        if code != 0 or not found:
            status = "SKIP" if "unrecognized arguments" in why else "FAIL"
            results.append(CheckResult(f"{precision} export + engine", status, why or "no engine written"))
        else:
            engines[precision] = found[0]
    for precision, engine in engines.items():
        results.append(agreement_check(engine, onnx, frames, size_hw, THRESHOLDS[precision]))
    results.append(cuda_graph_check(engines["fp32"], frames[:3], size_hw))
    results.append(gpu_input_check(engines["fp32"], frames, size_hw))

    code, why = export_with_engine(out_dir, "demo_dynamic", size, "--dynamic", "batch,height,width", *engine_args)
    if code != 0:
        results.append(CheckResult("dynamic export + engine", "FAIL", why))
    else:
        dyn_onnx, dyn_engine = out_dir / "demo_dynamic.onnx", out_dir / "demo_dynamic.fp32.engine"
        other = (size_hw[0] * 3 // 4 // 32 * 32 or 32, size_hw[1] * 3 // 4 // 32 * 32 or 32)
        results.append(agreement_check(dyn_engine, dyn_onnx, frames, size_hw, THRESHOLDS["fp32"], batch=2))
        results.append(agreement_check(dyn_engine, dyn_onnx, frames, other, THRESHOLDS["fp32"], batch=1))
    return results


def verdict(results: list[CheckResult]) -> tuple[bool, str]:
    failed = [r for r in results if r.status == "FAIL"]
    skipped = [r for r in results if r.status == "SKIP"]
    if failed:
        return False, f"FAIL: {len(failed)} of {len(results)} checks failed ({', '.join(r.name for r in failed)})"
    note = f" ({len(skipped)} skipped: {', '.join(r.name for r in skipped)})" if skipped else ""
    return True, f"PASS: {len(results) - len(skipped)} checks passed{note}"


def main(argv: list[str] | None = None) -> int:
    from ..cli.common import cli_entry, size_arg

    p = argparse.ArgumentParser(prog="gpu_check", description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path("gpu_check"), help="work folder (models, engines, report)")
    p.add_argument("--size", type=size_arg, default=(256, 512), help="export size HxW")
    p.add_argument("--tensorrt", choices=("auto", "tensorrt", "tensorrt_rtx"), default="auto")

    @cli_entry("gpu_check")
    def run(args_list: list[str] | None) -> int:
        args = p.parse_args(args_list)
        results = run_checks(args.out, tuple(args.size), args.tensorrt)
        width = max(len(r.name) for r in results)
        for r in results:
            print(f"{r.status:4}  {r.name:<{width}}  {r.detail}")
        ok, line = verdict(results)
        from ..model.demo import demo_checkpoint_path

        if demo_checkpoint_path() is None:
            line += " [demo model is UNTRAINED: agreement figures are for plumbing, not fidelity]"
        report = {"verdict": line, "passed": ok, "results": [asdict(r) for r in results]}
        (args.out / "gpu_check.json").write_text(json.dumps(report, indent=2) + "\n")
        print(line)
        return 0 if ok else 1

    return run(argv)


if __name__ == "__main__":
    sys.exit(main())
