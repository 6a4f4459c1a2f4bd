"""One-shot check on a machine with a GPU and TensorRT: does every engine path work here?

Exports the demo model in four forms (fixed and dynamic shapes, each with logits out and
with ``--argmax --fuse-preprocess``: uint8 NHWC frames in, int32 labels out), at FP32, FP16
and INT8, builds each with ``bisenet-export ... --engine`` (one shared timing cache), runs
every engine with the TensorRT backend and compares its labels with onnxruntime running the
FP32 ONNX of the same form on the same frames. Also: the CUDA-graph path equals the plain
path, a GPU-resident input equals the host input, the timing cache is reused by a rebuild,
every engine has its layer report, and (where the machine has DLA cores) a DLA engine runs.
Writes ``checks.json`` into ``--out``; ``scripts/gpu_check.sh`` runs this, then the
``gpu``/``tensorrt`` tests, and merges both into one report file.

    python -m bisenet_deploy.cli.gpu_check --out gpu_check --size 256x512
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

#: minimum label agreement (%) with onnxruntime FP32, per engine precision
THRESHOLDS = {"fp32": 99.9, "fp16": 99.5, "int8": 99.0}
#: the exported forms: name -> bisenet-export options
FORMS = {
    "fixed": [],
    "dynamic": ["--dynamic", "batch,height,width"],
    "labels_fixed": ["--argmax", "--fuse-preprocess"],
    "labels_dynamic": ["--dynamic", "batch,height,width", "--argmax", "--fuse-preprocess"],
}
PRECISIONS = ("fp32", "fp16", "int8")


@dataclass
class CheckResult:
    name: str
    status: str  # PASS, FAIL or SKIP
    detail: str = ""
    figures: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0


def check_frames(size_hw: tuple[int, int], count: int = 6) -> list[np.ndarray]:
    """Sample photos (real scenes) topped up with seeded random frames (``compare.frame_source``)."""
    from ..compare import frame_source

    photos = [image for _, image in frame_source(size_hw, random=0, samples=count)]
    return photos + [image for _, image in frame_source(size_hw, random=max(0, count - len(photos)), samples=0,
                                                        seed=1)]


def export_with_engine(out_dir: Path, name: str, size: str, *extra: str) -> tuple[int, str]:
    """Run ``bisenet-export --demo ... --engine``; (exit code, its last stderr line)."""
    from .export import main

    argv = ["--demo", "-o", str(out_dir / f"{name}.onnx"), "--size", size, "--engine", "-q", *extra]
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            code = main(argv)
        except SystemExit as exc:  # argparse: an option this build does not know
            code = int(exc.code or 2)
    lines = err.getvalue().strip().splitlines()
    return code, lines[-1] if lines else ""


def write_calibration_images(folder: Path, size_hw: tuple[int, int]) -> Path:
    import cv2

    folder.mkdir(parents=True, exist_ok=True)
    for i, frame in enumerate(check_frames(size_hw, count=16)):
        cv2.imwrite(str(folder / f"calib_{i:02d}.png"), frame)
    return folder


def _outputs(backend: Any, frames: list[np.ndarray], size_hw: tuple[int, int], batch: int = 1):  # noqa: ANN202
    """(labels, logits or None) of ``frames`` at ``size_hw`` in batches of ``batch``: a runner
    for the comparator at a size of our choosing (a dynamic engine is checked at two)."""
    from ..runtime import processing

    labels, logits = [], []
    for start in range(0, len(frames) - batch + 1, batch):
        out = backend.infer(processing.preprocess(frames[start : start + batch], backend.spec, size_hw))
        labels.append(processing.labels_from_output(out, backend.spec))
        if backend.spec.output_kind == "logits":
            logits.append(np.asarray(out, dtype=np.float32))
    return np.concatenate(labels), (np.concatenate(logits) if logits else None)


def agreement_figures(expected, got, threshold: float) -> tuple[str, str, dict[str, Any]]:  # noqa: ANN001
    """Status, detail and figures of an engine's outputs against the reference's, through the
    one comparator: each frame must keep ``threshold`` % of the reference's labels."""
    from ..compare import Tolerance, compare

    tolerance = Tolerance(min_agreement=threshold)
    per_frame = [compare((e, None), (g, None), tolerance, f"frame {i}")
                 for i, (e, g) in enumerate(zip(expected[0], got[0]))]
    overall = compare(expected, got, tolerance, "all frames")
    worst = min(c.agreement for c in per_frame)
    figures = {"min_agreement": worst, "mean_agreement": float(np.mean([c.agreement for c in per_frame])),
               "frames": len(per_frame), "miou_vs_reference": overall.miou, "max_abs_diff": overall.max_abs_diff}
    status = "PASS" if all(c.passed for c in per_frame) else "FAIL"
    return status, f"min agreement {worst:.3f}% (need >= {threshold}%)", figures


def agreement_check(engine: Path, onnx: Path, frames, size_hw, threshold: float, batch: int = 1) -> CheckResult:
    """Label agreement of the engine with onnxruntime FP32 (minimum over frames)."""
    from ..runtime.backends.onnxruntime import OnnxRuntimeBackend
    from ..trt.runner import TensorRTBackend

    with OnnxRuntimeBackend(onnx, device="cpu") as ref:
        expected = _outputs(ref, frames, size_hw, batch)
    with TensorRTBackend(engine) as trt_backend:
        got = _outputs(trt_backend, frames, size_hw, batch)
        computes = []
        for _ in range(20):
            _outputs(trt_backend, frames[:batch], size_hw, batch)
            computes.append(trt_backend.last_stage_times["compute"])
        stages = dict(trt_backend.last_stage_times)
    status, detail, figures = agreement_figures(expected, got, threshold)
    figures.update({"batch": batch, "size": list(size_hw), "compute_ms_median": 1000 * float(np.median(computes)),
                    "last_stage_ms": {k: 1000 * v for k, v in stages.items()}})
    return CheckResult(f"{engine.name} vs onnxruntime fp32 at {batch}x{size_hw[0]}x{size_hw[1]}", status, detail,
                       figures)


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
        used = graphed.cuda_graph and graphed._graph is not None
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


def layer_report_check(engines: list[Path]) -> CheckResult:
    """Every engine built here has the engine inspector's layer report next to it."""
    from ..trt.builder import layers_path_for

    missing, layers = [], {}
    for engine in engines:
        path = layers_path_for(engine)
        try:
            layers[engine.name] = len(json.loads(path.read_text()).get("Layers", []))
        except (OSError, ValueError):
            missing.append(engine.name)
    bad = missing + [name for name, n in layers.items() if n == 0]
    return CheckResult("layer reports", "FAIL" if bad else "PASS",
                       f"missing or empty: {', '.join(bad)}" if bad else f"{len(layers)} engines", {"layers": layers})


def timing_cache_check(onnx: Path, cache: Path, out_dir: Path, tensorrt: str) -> CheckResult:
    """A rebuild with the shared cache loads and accepts it (and says how long it took)."""
    from ..trt.builder import EngineOptions, build_engine

    before = cache.stat().st_size if cache.is_file() else 0
    build = build_engine(onnx, out_dir / "rebuild.engine",
                         EngineOptions(timing_cache=cache, tensorrt=tensorrt, progress=False, layer_report=False))
    record = build.sidecar.build.get("timing_cache", {})
    ok = before > 0 and record.get("loaded_bytes") == before and record.get("accepted") is True
    detail = (f"loaded {record.get('loaded_bytes')} bytes, accepted {record.get('accepted')}, "
              f"rebuild {build.sidecar.build_seconds:.1f}s")
    return CheckResult("timing cache reused", "PASS" if ok else "FAIL", detail, record)


def dla_check(out_dir: Path, size: str, frames, size_hw, tensorrt: str, cache: Path) -> CheckResult:
    from ..trt.features import dla_note
    from ..trt.loading import flavour, load_tensorrt, logger_for, version_of

    trt = load_tensorrt(tensorrt)
    if not getattr(trt.Builder(logger_for(trt)), "num_DLA_cores", 0):
        note = dla_note(flavour(trt), version_of(trt))
        return CheckResult("DLA engine", "SKIP", "no DLA cores" + (f" ({note})" if note else ""))
    code, why = export_with_engine(out_dir, "demo_dla", size, "--precision", "fp16", "--dla", "0",
                                   "--timing-cache", str(cache), "--tensorrt", tensorrt)
    found = sorted(out_dir.glob("demo_dla*.fp16.engine"))
    if code != 0 or not found:
        return CheckResult("DLA engine", "FAIL", why or "no engine written")
    # GPU fallback may have taken every layer: then the engine runs, but not on DLA.
    from ..trt.builder import layers_path_for
    from ..trt.features import dla_layers

    report_path = layers_path_for(found[0])
    on_dla = dla_layers(json.loads(report_path.read_text())) if report_path.is_file() else []
    if not on_dla:
        return CheckResult("DLA engine", "FAIL", "no layer runs on DLA core 0 (layer report "
                           + ("shows none" if report_path.is_file() else "missing") + ")")
    result = agreement_check(found[0], out_dir / "demo_dla.onnx", frames, size_hw, THRESHOLDS["fp16"])
    result.name = f"DLA core 0 ({len(on_dla)} DLA layers): {result.name}"
    return result


def _timed(results: list[CheckResult], fn, *args) -> None:
    start = time.perf_counter()
    try:
        result = fn(*args)
    except Exception as exc:  # noqa: BLE001 - one check failing must not hide the others
        result = CheckResult(getattr(fn, "__name__", "check"), "FAIL", f"{type(exc).__name__}: {exc}"[:400])
    result.seconds = round(time.perf_counter() - start, 2)
    results.append(result)


def run_checks(out_dir: Path, size_hw: tuple[int, int], tensorrt: str = "auto",
               forms: tuple[str, ...] = tuple(FORMS), precisions: tuple[str, ...] = PRECISIONS) -> list[CheckResult]:
    from ..trt.cuda_buffers import require_gpu
    from ..trt.loading import flavour, load_tensorrt, version_of

    trt = load_tensorrt(tensorrt)
    gpu = require_gpu(0)
    print(f"{flavour(trt)} {version_of(trt)} on {gpu['name']} (compute capability {gpu['compute_capability']}, "
          f"{gpu['multiprocessors']} SMs, CUDA runtime {gpu.get('cuda_runtime')}, driver {gpu.get('cuda_driver')})")
    out_dir.mkdir(parents=True, exist_ok=True)
    size = f"{size_hw[0]}x{size_hw[1]}"
    frames = check_frames(size_hw)
    other = (size_hw[0] * 3 // 4 // 32 * 32 or 32, size_hw[1] * 3 // 4 // 32 * 32 or 32)
    calib = write_calibration_images(out_dir / "calib", size_hw)
    cache = out_dir / "shared.timing-cache"
    engine_args = ["--tensorrt", tensorrt, "--timing-cache", str(cache)]
    results: list[CheckResult] = []
    built: list[Path] = []
    for form in forms:
        start = time.perf_counter()
        argv = [*FORMS[form], "--precision", ",".join(precisions), *engine_args]
        if "int8" in precisions:
            argv += ["--calib", str(calib)]
        code, why = export_with_engine(out_dir, form, size, *argv)
        engines = {p: out_dir / f"{form}.{p}.engine" for p in precisions}
        missing = [p for p, e in engines.items() if not e.is_file()]
        status = "FAIL" if code != 0 or missing else "PASS"
        detail = why if code != 0 else (f"no {', '.join(missing)} engine" if missing else ", ".join(precisions))
        results.append(CheckResult(f"{form}: export + engines", status, detail,
                                   seconds=round(time.perf_counter() - start, 2)))
        onnx = out_dir / f"{form}.onnx"
        for precision, engine in engines.items():
            if not engine.is_file():
                continue
            built.append(engine)
            if form.endswith("dynamic"):
                _timed(results, agreement_check, engine, onnx, frames, size_hw, THRESHOLDS[precision], 2)
                _timed(results, agreement_check, engine, onnx, frames, other, THRESHOLDS[precision], 1)
            else:
                _timed(results, agreement_check, engine, onnx, frames, size_hw, THRESHOLDS[precision])
        graph_engine = engines.get("fp16") if engines.get("fp16", Path()).is_file() else engines.get("fp32")
        if graph_engine is not None and graph_engine.is_file():
            _timed(results, cuda_graph_check, graph_engine, frames[:3], size_hw)
            _timed(results, gpu_input_check, graph_engine, frames, size_hw)
    _timed(results, layer_report_check, built)
    if (out_dir / "fixed.onnx").is_file():
        _timed(results, timing_cache_check, out_dir / "fixed.onnx", cache, out_dir, tensorrt)
    _timed(results, dla_check, out_dir, size, frames, size_hw, tensorrt, cache)
    return results


def verdict(results: list[CheckResult]) -> tuple[bool, str]:
    failed = [r for r in results if r.status == "FAIL"]
    skipped = [r for r in results if r.status == "SKIP"]
    if failed:
        return False, f"FAIL: {len(failed)} of {len(results)} checks failed ({', '.join(r.name for r in failed)})"
    note = f" ({len(skipped)} skipped: {', '.join(r.name for r in skipped)})" if skipped else ""
    return True, f"PASS: {len(results) - len(skipped)} checks passed{note}"


def main(argv: list[str] | None = None) -> int:
    from .common import cli_entry, size_arg

    p = argparse.ArgumentParser(prog="gpu_check", description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path("gpu_check"), help="work folder (models, engines, checks.json)")
    p.add_argument("--size", type=size_arg, default=(256, 512), help="export size HxW")
    p.add_argument("--tensorrt", choices=("auto", "tensorrt", "tensorrt_rtx"), default="auto")
    p.add_argument("--forms", default=",".join(FORMS), help=f"exported forms to check (of {', '.join(FORMS)})")
    p.add_argument("--precisions", default=",".join(PRECISIONS), help="engine precisions to check")

    @cli_entry("gpu_check")
    def run(args_list: list[str] | None) -> int:
        args = p.parse_args(args_list)
        forms = tuple(f for f in args.forms.split(",") if f)
        precisions = tuple(x for x in args.precisions.split(",") if x)
        unknown = [f for f in forms if f not in FORMS] + [x for x in precisions if x not in PRECISIONS]
        if unknown:
            p.error(f"unknown form or precision: {', '.join(unknown)}")
        results = run_checks(args.out, tuple(args.size), args.tensorrt, forms, precisions)
        width = max(len(r.name) for r in results)
        for r in results:
            print(f"{r.status:4}  {r.name:<{width}}  {r.seconds:7.1f}s  {r.detail}")
        ok, line = verdict(results)
        from ..model.demo import demo_checkpoint_path

        if demo_checkpoint_path() is None:
            line += " [demo model is UNTRAINED: agreement figures are for plumbing, not fidelity]"
        report = {"verdict": line, "passed": ok, "results": [asdict(r) for r in results]}
        (args.out / "checks.json").write_text(json.dumps(report, indent=2) + "\n")
        print(line)
        return 0 if ok else 1

    return run(argv)


if __name__ == "__main__":
    sys.exit(main())
