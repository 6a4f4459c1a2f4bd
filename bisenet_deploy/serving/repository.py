"""``bisenet-serve repo``: a Triton model repository from the project's artifacts.

For an artifact (``.onnx``, ``.engine``/``.plan`` with its sidecar, ``.pth``) and a name
(``bisenet``):

* ``<name>/`` -- the Python-backend model that runs the Segmenter on the artifact (any
  backend: onnxruntime, OpenVINO, TensorRT on a GPU): frames of any size in, labels out.
  This is what ``bisenet-serve run`` serves and what ``Segmenter("grpc://host:port/<name>")``
  calls.
* with ``native=True``, for NVIDIA's Triton containers on a GPU: ``<name>_onnx``
  (``onnxruntime_onnx``) or ``<name>_trt`` (``tensorrt_plan``, the engine as ``model.plan``
  with its sidecar's facts as parameters), and ``<name>_ensemble``: ``<name>_pre`` ->
  native model -> ``<name>_post``, so a client sends frames and gets labels without the
  Python step running the network.

The repository is assembled in a hidden folder next to the destination and renamed into
place, so a failed run leaves nothing behind; an existing repository is refused.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import UserError
from ..fileio import check_output_folder, remove_stale_temporaries, temporary_name
from . import config as cfg

MODEL_PY = Path(__file__).with_name("triton_model.py")


@dataclass
class RepoOptions:
    name: str = "bisenet"
    max_batch: int = 8
    instances: int = 1
    gpu: bool = False
    output_size: str = "frame"  # or "network"
    backend: str = ""  # "" : as Segmenter chooses (by suffix / auto)
    backend_options: dict[str, Any] | None = None
    native: bool = False


def check_options(path: Path, options: RepoOptions) -> str:
    """Refuse, with one line, what the served model could not run (today Triton would say so in
    its log only, at load time); returns the artifact's kind (its default backend)."""
    import importlib.util

    from ..runtime.backends import RUNS, SUFFIXES, backend_for

    kind = SUFFIXES.get(path.suffix.lower())
    if kind is None:
        raise UserError(f"'{path}' is not an artifact: give an .onnx, .engine/.plan or .pth file")
    from ..trt.artifacts import checked_engine, what_is_wrong_with

    problem = what_is_wrong_with(path, "artifact")
    if problem:
        raise UserError(problem)
    if kind == "tensorrt":
        # The same check inspect, infer, bench and Segmenter make: an empty, foreign or
        # truncated engine (sha256 differs from its sidecar) is refused, never packaged.
        checked_engine(path)
    if options.backend == "triton":
        raise UserError("--backend triton is a client of a server; the served model runs the artifact itself "
                        f"(leave --backend out, or give {', '.join(RUNS)})")
    if options.backend and options.backend not in (*RUNS, "auto"):
        raise UserError(f"unknown --backend {options.backend!r}; choose from {', '.join(RUNS)} or auto")
    if options.backend:
        backend_for(path, options.backend)  # unknown, or not for this kind of file: one line
    if kind == "torch" and options.native:
        raise UserError("native Triton models need an .onnx or an engine; export the checkpoint first "
                        f"(bisenet-export {path})")
    if kind == "tensorrt" and options.native:
        _refuse_rtx_plan(path)
    if kind == "torch" and importlib.util.find_spec("torch") is None:
        raise UserError(f"'{path}' is a PyTorch checkpoint and this environment has no torch: export it first "
                        f"(bisenet-export {path}, where torch is installed) and write the repository from the .onnx")
    threads = (options.backend_options or {}).get("threads", 0)
    if threads and "tensorrt" in (kind, options.backend):
        raise UserError("--threads applies to the CPU backends (onnxruntime, openvino, torch), not to TensorRT")
    if int(threads) < 0:
        raise UserError(f"--threads must be >= 0, got {threads}")
    return kind


def _refuse_rtx_plan(path: Path) -> None:
    """Triton's ``tensorrt_plan`` backend links the full TensorRT, which cannot deserialize a
    TensorRT-RTX engine: the model would fail at load time, in the server log only."""
    from ..trt.sidecar import EngineSidecar

    sidecar = EngineSidecar.read(path)
    if sidecar is not None and sidecar.tensorrt.get("package") == "tensorrt_rtx":
        raise UserError(f"'{path}' is a TensorRT-RTX engine, which Triton's TensorRT backend (tensorrt_plan) cannot "
                        "load; leave out --native (the Python-backend model runs it with tensorrt_rtx), or rebuild "
                        "it with TensorRT (bisenet-export model.onnx --engine --tensorrt tensorrt)")


def _artifact(path: Path, options: RepoOptions) -> tuple[Any, str]:
    """(backend opened on the artifact for its facts, kind)."""
    from ..runtime.backends import open_backend

    kind = check_options(path, options)
    if kind == "tensorrt":
        return None, kind  # needs a GPU to open; the sidecar has what the configs need
    backend = open_backend(path, "onnxruntime" if kind == "onnxruntime" else None, device="cpu")
    return backend, kind


def _dims(info, batch_dynamic: bool) -> tuple[list[int], bool]:  # noqa: ANN001 - TensorInfo
    dims = [-1 if d is None else int(d) for d in info.shape]
    return (dims[1:], True) if batch_dynamic else (dims, False)


def write_repository(artifact: str | Path, output: str | Path, options: RepoOptions = RepoOptions(),
                     log=lambda msg: None) -> Path:  # noqa: ANN001
    """Write the repository for ``artifact`` at ``output`` (see the module docstring)."""
    from ..runtime.segmenter import Segmenter
    from ..trt.sidecar import EngineSidecar, sidecar_path

    artifact, output = Path(artifact), Path(output)
    if output.exists():
        raise UserError(f"'{output}' exists; give a new folder for the repository (nothing is overwritten)")
    check_output_folder(output)
    if not options.name.replace("_", "").replace("-", "").isalnum():
        raise UserError(f"model name {options.name!r}: use letters, digits, '-' and '_'")
    if options.max_batch < 1 or options.instances < 1:
        raise UserError("--max-batch and --instances must be >= 1")
    backend, kind = _artifact(artifact, options)
    if kind == "tensorrt":
        sidecar = EngineSidecar.read(artifact)
        if sidecar is None or sidecar.spec is None:  # checked_engine refused a missing sidecar
            raise UserError(f"engine '{artifact}': its sidecar {sidecar_path(artifact).name} holds no ModelSpec "
                            "(the ONNX it was built from carried none); rebuild from an ONNX exported by bisenet-export")
        spec = sidecar.spec
    else:
        try:
            spec = Segmenter(backend).spec
        except UserError:
            backend.close()
            raise
    output.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(output.parent)
    staging = temporary_name(output, suffix="")
    staging.mkdir()
    try:
        _python_model(staging, artifact, spec, options)
        log(f"{options.name}: Python-backend model running Segmenter on {artifact.name}")
        if options.native:
            _native_models(staging, artifact, kind, backend, spec, options, log)
        staging.rename(output)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    finally:
        if backend is not None:
            backend.close()
    return output


def _copy_artifact(artifact: Path, folder: Path, name: str | None = None) -> str:
    from ..trt.sidecar import sidecar_path

    folder.mkdir(parents=True, exist_ok=True)
    target = folder / (name or artifact.name)
    shutil.copy2(artifact, target)
    if sidecar_path(artifact).is_file():
        shutil.copy2(sidecar_path(artifact), sidecar_path(target))
    return target.name


def _python_model(root: Path, artifact: Path, spec, options: RepoOptions) -> None:  # noqa: ANN001
    model = root / options.name
    version = model / "1"
    name = _copy_artifact(artifact, version)
    shutil.copy2(MODEL_PY, version / "model.py")
    config = cfg.python_model(options.name, spec, name, options.max_batch, options.instances, options.gpu,
                              options.output_size, options.backend, json.dumps(options.backend_options or {}))
    (model / "config.pbtxt").write_text(cfg.to_text(config))


def _native_models(root: Path, artifact: Path, kind: str, backend, spec, options: RepoOptions, log) -> None:  # noqa: ANN001
    from ..trt.sidecar import EngineSidecar

    if kind == "torch":
        raise UserError("native Triton models need an .onnx or an engine; export the checkpoint first")
    if kind == "onnxruntime":
        tensors_in, tensors_out = backend.inputs, backend.outputs
        platform, native, file_name, facts = "onnxruntime_onnx", f"{options.name}_onnx", "model.onnx", {}
    else:
        sidecar = EngineSidecar.read(artifact)
        tensors_in, tensors_out = _engine_tensors(artifact, sidecar)
        platform, native, file_name = "tensorrt_plan", f"{options.name}_trt", "model.plan"
        facts = {"tensorrt": json.dumps(sidecar.tensorrt), "gpu": json.dumps(sidecar.gpu),
                 "precision": sidecar.precision, "rebuild_command": sidecar.rebuild_command}
    batch_dynamic = tensors_in[0].shape[0] is None
    max_batch = options.max_batch if batch_dynamic else 0
    ins = [(t.name, t.dtype, _dims(t, batch_dynamic)[0]) for t in tensors_in]
    outs = [(t.name, t.dtype, _dims(t, batch_dynamic)[0]) for t in tensors_out]
    _copy_artifact(artifact, root / native / "1", file_name)
    (root / native / "config.pbtxt").write_text(cfg.to_text(
        cfg.native_model(native, platform, spec, ins, outs, max_batch, options.instances, True, facts)))
    pre, post = f"{options.name}_pre", f"{options.name}_post"
    for stage, name in (("pre", pre), ("post", post)):
        (root / name / "1").mkdir(parents=True)
        shutil.copy2(MODEL_PY, root / name / "1" / "model.py")
        (root / name / "config.pbtxt").write_text(cfg.to_text(
            cfg.stage_model(name, spec, stage, ins, outs, max_batch, options.instances)))
    ens = f"{options.name}_ensemble"
    (root / ens / "1").mkdir(parents=True)
    (root / ens / "config.pbtxt").write_text(cfg.to_text(cfg.ensemble(ens, spec, pre, native, post, ins, outs,
                                                                      max_batch)))
    log(f"{native}: {platform} ({file_name}); {ens}: {pre} -> {native} -> {post}")


def _engine_tensors(artifact: Path, sidecar) -> tuple[list, list]:  # noqa: ANN001
    """Engine tensors from the sidecar's build record (no GPU needed)."""
    from ..runtime.backends.base import TensorInfo

    spec = sidecar.spec
    io = sidecar.build.get("io") or {}
    if io:
        make = lambda d: TensorInfo(d["name"], tuple(None if s < 0 else s for s in d["shape"]),  # noqa: E731
                                    np.dtype(d["dtype"]))
        return [make(d) for d in io.get("inputs", [])], [make(d) for d in io.get("outputs", [])]
    batch = None if "batch" in spec.dynamic_axes else 1
    h, w = (None, None) if {"height", "width"} & set(spec.dynamic_axes) else spec.input_size
    if spec.input_layout == "NHWC_UINT8":
        inp = TensorInfo("input", (batch, h, w, 3), np.dtype(np.uint8))
    else:
        inp = TensorInfo("input", (batch, 3, h, w), np.dtype(np.float32))
    if spec.output_kind == "labels":
        out = TensorInfo("labels", (batch, h, w), np.dtype(np.int32))
    else:
        out = TensorInfo("logits", (batch, spec.num_classes, h, w), np.dtype(np.float32))
    return [inp], [out]
