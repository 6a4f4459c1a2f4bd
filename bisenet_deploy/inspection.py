"""What an artifact is and what can run it here: ``bisenet-inspect model.onnx|.engine|.pth``.

Reads without running: an ONNX file through ``onnx`` (or onnxruntime where onnx is not
installed), an engine through its sidecar, a checkpoint through the safe loader (torch is
imported only for a ``.pth``). Every figure comes from the file or from this machine.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

from .errors import ArtifactError, UserError
from .fileio import sha256_file
from .spec import CALIBRATION_KEY, METADATA_KEY, PRECISION_KEY, VERSIONS_KEY, ModelSpec, SpecError

_ONNX_TYPES = {1: "float32", 2: "uint8", 3: "int8", 6: "int32", 7: "int64", 10: "float16", 11: "float64", 16: "bfloat16"}


def inspect_artifact(path: str | Path) -> dict[str, Any]:
    """A JSON-able description of ``path``: kind, ModelSpec, tensors, precision and its
    provenance, versions, and which backends on this machine could run it."""
    from .runtime.backends import SUFFIXES

    path = Path(path)
    if not path.is_file():
        raise UserError(f"'{path}' not found" if not path.exists() else f"'{path}' is not a file")
    kind = SUFFIXES.get(path.suffix.lower())
    if kind is None:
        raise UserError(f"'{path}' is not a model artifact: give an .onnx, .engine/.plan, .pth or .safetensors file")
    info: dict[str, Any] = {"path": str(path), "file_mb": round(path.stat().st_size / 1e6, 2),
                            "sha256": sha256_file(path)}
    if kind == "onnxruntime":
        info.update(_inspect_onnx(path))
    elif kind == "tensorrt":
        info.update(_inspect_engine(path, info["sha256"]))
    else:
        info.update(_inspect_checkpoint(path))
    return info


def _json_field(meta: dict[str, str], key: str) -> Any:
    text = meta.get(key)
    if text is None:
        return None
    try:
        return json.loads(text)
    except ValueError:
        return text


def _spec_dict(meta: dict[str, str], path: Path) -> dict[str, Any] | None:
    if METADATA_KEY not in meta:
        return None
    try:
        return ModelSpec.from_json(meta[METADATA_KEY]).to_dict()
    except SpecError as exc:
        raise ArtifactError(f"'{path}' carries an unreadable ModelSpec: {exc}") from None


def _inspect_onnx(path: Path) -> dict[str, Any]:
    info: dict[str, Any] = {"kind": "onnx"}
    if path.stat().st_size == 0:
        raise ArtifactError(f"'{path}' is empty (0 bytes): not an ONNX model")
    if importlib.util.find_spec("onnx") is not None:
        import onnx

        try:
            proto = onnx.load(str(path), load_external_data=False)
        except Exception as exc:  # noqa: BLE001 - protobuf raises its own types
            raise ArtifactError(f"'{path}' is not a readable ONNX model: {str(exc).splitlines()[0] if str(exc) else exc}"
                                ) from None
        meta = {p.key: p.value for p in proto.metadata_props}
        ops: dict[str, int] = {}
        for node in proto.graph.node:
            ops[node.op_type] = ops.get(node.op_type, 0) + 1

        def tensor(vi) -> dict[str, Any]:  # noqa: ANN001
            t = vi.type.tensor_type
            dims = [d.dim_param or (d.dim_value if d.HasField("dim_value") else "?") for d in t.shape.dim]
            return {"name": vi.name, "shape": dims, "dtype": _ONNX_TYPES.get(t.elem_type, str(t.elem_type))}

        initializers = {i.name for i in proto.graph.initializer}
        info.update(
            opset=next((o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")), None),
            ir_version=proto.ir_version,
            producer=f"{proto.producer_name} {proto.producer_version}".strip(),
            inputs=[tensor(v) for v in proto.graph.input if v.name not in initializers],
            outputs=[tensor(v) for v in proto.graph.output],
            nodes=len(proto.graph.node),
            ops={k: ops[k] for k in sorted(ops, key=lambda k: -ops[k])},
        )
    else:
        from .runtime.backends.onnxruntime import OnnxRuntimeBackend

        with OnnxRuntimeBackend(path, device="cpu") as backend:
            meta = dict(backend.session.get_modelmeta().custom_metadata_map)
            info.update(inputs=[_info_dict(t) for t in backend.inputs], outputs=[_info_dict(t) for t in backend.outputs],
                        opset=None, note="onnx is not installed: opset and operators not read")
    info.update(
        spec=_spec_dict(meta, path),
        precision=meta.get(PRECISION_KEY, "fp32" if METADATA_KEY in meta else None),
        calibration=_json_field(meta, CALIBRATION_KEY),
        versions=_json_field(meta, VERSIONS_KEY),
        fidelity=_fidelity_record(path),
    )
    info["problem"] = _onnx_problem(path, info)
    info["runs_here"] = _onnx_runners(path)
    if info["problem"] is None and info.get("spec") is None:
        for runner in info["runs_here"]:
            if runner["ok"]:
                runner["detail"] += " (once given its ModelSpec: Segmenter(spec=...), bisenet-bench --spec)"
    if info["problem"]:  # what the file is, not the backend: none of them can run it
        for runner in info["runs_here"]:
            if runner["backend"] != "tensorrt":
                runner.update(ok=False, detail=info["problem"])
    return info


def _onnx_problem(path: Path, info: dict[str, Any]) -> str | None:
    """Why Segmenter cannot run this file, whatever the backend (None: it can)."""
    inputs, outputs = info.get("inputs") or [], info.get("outputs") or []
    if not info.get("nodes", 1) or not inputs or not outputs:
        return "an empty graph (no nodes, inputs or outputs)"
    if len(inputs) != 1 or len(outputs) != 1:
        return (f"{len(inputs)} inputs and {len(outputs)} outputs; a segmentation model has exactly one of each "
                "(not a BiSeNet export)")
    shape = inputs[0]["shape"]
    if len(shape) != 4:
        return f"input '{inputs[0]['name']}' has {len(shape)} dimensions; a segmentation model takes N, C, H, W frames"
    if info.get("spec") is None:
        return None  # runs once given a spec: reported with the runners
    if importlib.util.find_spec("onnxruntime") is not None:
        from .runtime.backends.onnxruntime import OnnxRuntimeBackend
        from .runtime.segmenter import spec_mismatch

        try:
            with OnnxRuntimeBackend(path, device="cpu") as backend:
                return spec_mismatch(backend, backend.spec) if backend.spec is not None else None
        except UserError as exc:
            return str(exc)
    return None


def fidelity_report_for(path: Path) -> Path:
    """``model.int8.onnx`` / ``model.onnx`` -> ``model.fidelity.json``."""
    stem = path.stem
    for precision in ("fp16", "int8", "mixed"):
        if stem.endswith(f".{precision}"):
            stem = stem[: -len(precision) - 1]
    return path.with_name(f"{stem}.fidelity.json")


def _fidelity_record(path: Path) -> dict[str, Any] | None:
    """This file's record in the precision step's fidelity report next to it, if any."""
    report_path = fidelity_report_for(path)
    try:
        report = json.loads(report_path.read_text())
    except (OSError, ValueError):
        return None
    models = report.get("models") if isinstance(report, dict) else None
    if not isinstance(models, dict):
        return None
    for precision, record in models.items():
        if isinstance(record, dict) and record.get("path") and Path(record["path"]).name == path.name:
            return {"report": str(report_path), "precision": precision, **(record.get("fidelity") or {}),
                    "validation": record.get("validation") or report.get("validation")}
    if report.get("fp32") and Path(report["fp32"]).name == path.name:  # the FP32 model: the reference
        return {"report": str(report_path), "precision": "fp32", "reference": True,
                "compared": sorted(models)}
    return None


def _info_dict(t: Any) -> dict[str, Any]:
    return {"name": t.name, "shape": ["?" if d is None else d for d in t.shape], "dtype": t.dtype.name}


def _onnx_runners(path: Path) -> list[dict[str, Any]]:
    """Which backends here could run this ONNX file, and how to get the others."""
    out = []
    if importlib.util.find_spec("onnxruntime") is not None:
        import onnxruntime

        out.append({"backend": "onnxruntime", "ok": True,
                    "detail": f"onnxruntime {onnxruntime.__version__}: {', '.join(onnxruntime.get_available_providers())}"})
    else:
        out.append({"backend": "onnxruntime", "ok": False, "detail": "pip install 'bisenet-deploy[ort]'"})
    if importlib.util.find_spec("openvino") is not None:
        try:
            import openvino

            devices = openvino.Core().available_devices
            out.append({"backend": "openvino", "ok": True,
                        "detail": f"openvino {openvino.__version__}: {', '.join(devices)}"})
        except Exception as exc:  # noqa: BLE001 - plugin discovery may fail on odd machines
            out.append({"backend": "openvino", "ok": False, "detail": f"openvino does not start: {exc}"})
    else:
        out.append({"backend": "openvino", "ok": False, "detail": "pip install 'bisenet-deploy[openvino]'"})
    trt = [m for m in ("tensorrt", "tensorrt_rtx") if importlib.util.find_spec(m) is not None]
    out.append({"backend": "tensorrt", "ok": False,
                "detail": (f"build an engine first: bisenet-export {path} --engine ({', '.join(trt)} installed)" if trt
                           else "needs an engine built with TensorRT (not installed here)")})
    return out


def _inspect_engine(path: Path, sha256: str) -> dict[str, Any]:
    from .trt.artifacts import engine_file_problem, sidecar_mismatch
    from .trt.sidecar import EngineSidecar, compatibility_problem, rebuild_hint, sidecar_path

    problem = engine_file_problem(path)  # the check infer, bench and serve repo make
    if problem:
        raise ArtifactError(problem)
    sidecar = EngineSidecar.read(path)
    if sidecar is None:
        return {"kind": "engine", "spec": None, "precision": None, "sidecar": None,
                "problem": f"no sidecar '{sidecar_path(path).name}' next to it: ModelSpec, precision and build record "
                           "unknown, and nothing can check that it fits this machine",
                "runs_here": [{"backend": "tensorrt", "ok": False, "detail": f"rebuild: {rebuild_hint(path, None)}"}]}
    info: dict[str, Any] = {
        "kind": "engine",
        "spec": sidecar.spec.to_dict() if sidecar.spec else None,
        "precision": sidecar.precision,
        "calibration": sidecar.calibration,
        "tensorrt": sidecar.tensorrt,
        "built_for_gpu": sidecar.gpu,
        "target_compute_capabilities": sidecar.target_compute_capabilities,
        "build": sidecar.build,
        "onnx": sidecar.onnx,
        "built_at": sidecar.built_at,
        "build_seconds": sidecar.build_seconds,
        "rebuild_command": sidecar.rebuild_command,
        "rebuild": rebuild_hint(path, sidecar),  # from where the user stands, as errors show it
        "versions": sidecar.tool_versions,
    }
    mismatch = sidecar_mismatch(path, sidecar, sha256)
    info["matches_sidecar"] = mismatch is None
    if mismatch:
        # Truncated, corrupted or replaced since it was built: nothing the sidecar says holds.
        info["problem"] = mismatch
        info["runs_here"] = [{"backend": "tensorrt", "ok": False, "detail": "the engine does not match its sidecar"}]
        return info
    package = sidecar.tensorrt.get("package", "tensorrt")
    if importlib.util.find_spec(package) is None:
        detail, ok = f"{package} is not installed here", False
    else:
        from .trt.cuda_buffers import gpu_info, gpu_problem
        from .trt.loading import flavour, load_tensorrt, version_of

        trt = load_tensorrt(package)
        problem = compatibility_problem(sidecar, flavour(trt), version_of(trt), None) or gpu_problem(0)
        if problem is None:
            problem = compatibility_problem(sidecar, flavour(trt), version_of(trt), gpu_info(0))
        ok, detail = problem is None, problem or f"{flavour(trt)} {version_of(trt)} on {gpu_info(0)['name']}"
    info["runs_here"] = [{"backend": "tensorrt", "ok": ok, "detail": detail}]
    return info


def _inspect_checkpoint(path: Path) -> dict[str, Any]:
    if importlib.util.find_spec("torch") is None:
        raise UserError("reading a checkpoint needs PyTorch: pip install 'bisenet-deploy[export]'")
    import torch

    from .model.checkpoint import load_checkpoint

    loaded = load_checkpoint(path)
    params = sum(p.numel() for p in loaded.model.parameters())
    return {
        "kind": "checkpoint",
        "family": loaded.spec.arch,
        "spec": loaded.spec.to_dict(),
        "precision": "fp32",
        "parameters_m": round(params / 1e6, 2),
        "notes": list(loaded.notes),
        "runs_here": [{"backend": "torch", "ok": True, "detail": f"torch {torch.__version__}"},
                      {"backend": "onnxruntime", "ok": False, "detail": f"export first: bisenet-export {path}"}],
    }


def _built_for(info: dict[str, Any]) -> str:
    """The GPU of the build, or the compute capabilities an ahead-of-time build targets."""
    gpu = info.get("built_for_gpu") or {}
    if gpu.get("name"):
        cc = f", compute capability {gpu['compute_capability']}" if gpu.get("compute_capability") else ""
        return f"{gpu['name']}{cc}"
    targets = info.get("target_compute_capabilities") or []
    if targets:
        return f"compute capabilities {', '.join(targets)} (ahead of time, no GPU)"
    return "its default compute capabilities (ahead of time, no GPU)"


def _build_lines(build: dict[str, Any], rebuild: str | None) -> list[str]:
    """The sidecar's build record, as --json has it, in a few lines."""
    lines = []
    profile, shape = build.get("profile"), (build.get("input") or {}).get("shape")
    if isinstance(profile, dict):
        lines.append(f"  profile    {profile.get('min')} .. {profile.get('max')} (opt {profile.get('opt')})")
    elif shape:
        lines.append(f"  profile    fixed input {shape}")
    facts = []
    if "tf32" in build:
        facts.append({True: "TF32 on", False: "TF32 off", None: "no TF32 flag"}.get(build["tf32"], f"tf32 {build['tf32']}"))
    if build.get("optimization_level") is not None:
        facts.append(f"opt-level {build['optimization_level']}")
    if build.get("workspace_mb") is not None:
        facts.append(f"workspace {build['workspace_mb']} MB")
    if build.get("dla_core") is not None:
        facts.append(f"DLA core {build['dla_core']}")
    if "strongly_typed" in build:
        facts.append("strongly typed" if build["strongly_typed"] else "weakly typed")
    cache = build.get("timing_cache")
    if isinstance(cache, dict):
        facts.append("timing cache " + ("used" if cache.get("effective") else "ignored by this TensorRT"))
    if facts:
        lines.append("  options    " + ", ".join(facts))
    if rebuild:
        lines.append(f"  rebuild    {rebuild}")
    return lines


def _upsample_text(spec: dict[str, Any]) -> str:
    """A low-resolution artifact's scores and the rule the runtime applies to them."""
    rule = spec.get("upsample")
    if not rule:
        return ""
    stride = spec.get("output_stride") or rule.get("factor")
    what = "probabilities" if rule.get("scores") == "probabilities" else "scores"
    then = f", then {rule['then']}" if rule.get("then") else ""
    return (f", {what} at 1/{stride} of the input, upsampled at run time (bilinear, align_corners="
            f"{rule.get('align_corners')}, to the {rule.get('target')} size{then}; exact labels)")


def format_inspection(info: dict[str, Any]) -> str:
    """The inspection as text for people."""
    lines = [f"{info['path']}: {info['kind']}, {info['file_mb']} MB, sha256 {info['sha256'][:16]}..."]
    spec = info.get("spec")
    if spec:
        names = ", ".join(spec["class_names"]) if spec["class_names"] else "unnamed"
        h, w = spec["input_size"]
        dyn = f", dynamic {','.join(spec['dynamic_axes'])}" if spec["dynamic_axes"] else ""
        lines += [
            f"  model      {spec['arch']} {spec['backbone']} ({spec['variant']}), {spec['num_classes']} classes: {names}",
            f"  input      {h}x{w}{dyn}, {spec['input_layout']}, {spec['color_order']} "
            f"mean {tuple(round(v, 3) for v in spec['mean'])} std {tuple(round(v, 3) for v in spec['std'])}",
            f"  output     {spec['output_kind']}" + (f", sides multiple of {spec['size_divisor']}"
                                                      if spec["size_divisor"] > 1 else "") + _upsample_text(spec),
        ]
        if spec.get("checkpoint_sha256"):
            lines.append(f"  source     checkpoint sha256 {spec['checkpoint_sha256'][:16]}...")
    elif info["kind"] == "engine" and "sidecar" in info:
        lines.append("  model      unknown: the ModelSpec lives in the engine's sidecar, which is missing")
    else:
        lines.append("  model      no ModelSpec: not exported by bisenet-export (Segmenter needs spec=...)")
    for key in ("inputs", "outputs"):
        for t in info.get(key) or []:
            shape = "x".join(str(d) for d in t["shape"])
            lines.append(f"  {key[:-1]:<10} {t['name']} {shape} {t['dtype']}")
    if info.get("opset") is not None:
        lines.append(f"  graph      opset {info['opset']}, {info.get('nodes')} nodes, producer {info.get('producer')}")
    if info.get("family"):
        lines.append(f"  weights    {info['parameters_m']} M parameters; " + "; ".join(info.get("notes") or []))
    lines.append(f"  precision  {info.get('precision') or 'unknown'}")
    calib = info.get("calibration")
    if isinstance(calib, dict):
        method = calib.get("method")
        method = method.get("name") if isinstance(method, dict) else method
        lines.append(f"  calibrated {calib.get('count')} frames from {calib.get('source')} ({method}), data sha256 "
                     f"{str(calib.get('sha256') or '-')[:16]}..., {calib.get('skipped', 0)} skipped")
    if info["kind"] == "engine":
        trt = info.get("tensorrt")
        if trt:  # no sidecar: nothing is known about the build, and the problem line says so
            lines.append(f"  built      {trt.get('package', '?')} {trt.get('version', '?')} for {_built_for(info)}, "
                         f"{info.get('built_at') or 'date unknown'}")
            lines += _build_lines(info.get("build") or {}, info.get("rebuild") or info.get("rebuild_command"))
        if info.get("problem"):
            lines.append(f"  problem    {info['problem']}")
    fidelity = info.get("fidelity")
    if isinstance(fidelity, dict) and fidelity.get("reference"):
        lines.append(f"  fidelity   the FP32 reference of {', '.join(fidelity['compared'])} in {fidelity['report']}")
    elif isinstance(fidelity, dict):
        validation = fidelity.get("validation") or {}
        gt = fidelity.get("miou_vs_ground_truth")
        lines.append(
            f"  fidelity   label agreement {fidelity.get('label_agreement', 0):.3f}% and mIoU "
            f"{fidelity.get('miou_vs_fp32', 0):.2f}% vs FP32, max |logit diff| {fidelity.get('max_abs_logit_diff', 0):.3g}"
            + (f", mIoU vs labels {gt:.2f}%" if gt is not None else "")
            + f" on {fidelity.get('frames')} frames of {validation.get('source', '?')} ({fidelity['report']})")
    if info.get("problem") and info["kind"] != "engine":
        lines.append(f"  problem    {info['problem']}")
    versions = info.get("versions")
    if isinstance(versions, dict) and versions:
        lines.append("  tools      " + ", ".join(f"{k} {v}" for k, v in sorted(versions.items())))
    for runner in info.get("runs_here") or []:
        mark = "yes" if runner["ok"] else "no "
        lines.append(f"  runs here  {mark} {runner['backend']}: {runner['detail']}")
    return "\n".join(lines) + "\n"
