"""The JSON sidecar of a TensorRT engine: ModelSpec, precision, how and where it was built.

``model.fp16.engine`` -> ``model.fp16.engine.json``. A serialized engine runs only with the
TensorRT version that built it, on the GPU it was built for. The sidecar lets the runtime
say so in one line, with the command that rebuilds the engine, instead of failing deep
inside TensorRT. Standard library only: robots read it without torch or onnx installed.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shlex
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ArtifactError
from ..spec import ModelSpec, SpecError

FORMAT_VERSION = 1


#: JSON types each sidecar field must have (None: null allowed).
_FIELD_TYPES: dict[str, tuple[type, ...]] = {
    "engine_sha256": (str,),
    "precision": (str,),
    "tensorrt": (dict,),
    "gpu": (dict, type(None)),
    "target_compute_capabilities": (list,),
    "cuda": (dict,),
    "build": (dict,),
    "onnx": (dict,),
    "built_at": (str,),
    "build_seconds": (int, float),
    "rebuild_command": (str,),
    "tool_versions": (dict,),
    "format": (int,),
}
_JSON_NAMES = {dict: "an object", list: "a list", str: "a string", int: "a number", float: "a number",
               type(None): "null", bool: "true/false"}


def _json_name(value: Any) -> str:
    return _JSON_NAMES.get(type(value), type(value).__name__)


def sidecar_path(engine_path: str | Path) -> Path:
    """``model.fp16.engine`` -> ``model.fp16.engine.json``."""
    engine_path = Path(engine_path)
    return engine_path.with_name(engine_path.name + ".json")


@dataclass
class EngineSidecar:
    """Everything known about one engine file.

    Attributes:
        engine_sha256: hash of the engine file this sidecar describes.
        spec: the ModelSpec from the ONNX model (None if the ONNX carried none).
        precision: ``fp32``, ``fp16``, ``int8`` or ``mixed``, as recorded in the ONNX.
        tensorrt: ``{"package": "tensorrt" | "tensorrt_rtx", "version": ..., "strongly_typed": ...}``.
        gpu: the build GPU (name, compute capability, ...); None when built without one
            (TensorRT-RTX builds ahead of time for ``target_compute_capabilities``).
        target_compute_capabilities: explicit targets of a TensorRT-RTX build ([]: its default
            set, which the builder API does not list; ``build["targets"]`` says so in words).
        cuda: CUDA runtime and driver versions at build time.
        build: build options and facts (profiles, flags, workspace, timing cache, DLA ...).
        onnx: ``{"path": ONNX path relative to the engine's folder, "sha256": ...}``.
        calibration: calibration provenance copied from the ONNX metadata (None for fp32/fp16).
        rebuild_command: the ``bisenet-export`` command, run in the engine's folder, that
            rebuilds this engine.
    """

    engine_sha256: str
    spec: ModelSpec | None
    precision: str
    tensorrt: dict[str, Any]
    gpu: dict[str, Any] | None = None
    target_compute_capabilities: list[str] = field(default_factory=list)
    cuda: dict[str, Any] = field(default_factory=dict)
    build: dict[str, Any] = field(default_factory=dict)
    onnx: dict[str, Any] = field(default_factory=dict)
    calibration: Any = None
    built_at: str = ""
    build_seconds: float = 0.0
    rebuild_command: str = ""
    tool_versions: dict[str, str] = field(default_factory=dict)
    format: int = FORMAT_VERSION

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["spec"] = self.spec.to_dict() if self.spec is not None else None
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EngineSidecar:
        """Parse a sidecar; a field of the wrong JSON type raises ValueError naming it, so a
        hand-edited or foreign file is one clear line, not an AttributeError later."""
        known = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        missing = [k for k in ("engine_sha256", "precision", "tensorrt") if k not in values]
        if missing:
            raise ValueError(f"missing field{'s' if len(missing) > 1 else ''} {', '.join(missing)}")
        for name, kinds in _FIELD_TYPES.items():
            if name in values and not isinstance(values[name], kinds):
                wanted = " or ".join(_JSON_NAMES[k] for k in kinds)
                raise ValueError(f"field '{name}' must be {wanted}, got {_json_name(values[name])}")
        spec = values.get("spec")
        if spec is not None and not isinstance(spec, dict):
            raise ValueError(f"field 'spec' must be an object or null, got {_json_name(spec)}")
        values["spec"] = ModelSpec.from_dict(spec) if isinstance(spec, dict) else None
        return cls(**values)

    def write(self, engine_path: str | Path) -> Path:
        from ..fileio import write_text_atomic

        return write_text_atomic(sidecar_path(engine_path), json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n")

    @classmethod
    def read(cls, engine_path: str | Path) -> EngineSidecar | None:
        """The sidecar next to ``engine_path``; None when there is none."""
        path = sidecar_path(engine_path)
        if not path.is_file():
            if path.exists():  # a folder or a pipe where the sidecar belongs is not "no sidecar"
                kind = "a folder" if path.is_dir() else "not a regular file"
                raise ArtifactError(f"engine sidecar '{path}' is {kind}; it must be the JSON file the build wrote")
            return None
        try:
            data = json.loads(path.read_text())
            if not isinstance(data, dict):
                raise ValueError("not a JSON object")
            if int(data.get("format", 0)) > FORMAT_VERSION:
                raise ValueError(f"format {data['format']} is newer than this bisenet-deploy understands")
            return cls.from_dict(data)
        except (ValueError, TypeError, KeyError, SpecError) as exc:
            raise ArtifactError(f"engine sidecar '{path}' is unreadable: {exc}") from None


#: total memory of two GPUs of one model may differ by carve-outs; module sizes differ 2x
_MEMORY_TOLERANCE = 0.125


def gpu_identity_problem(built: dict[str, Any] | None, here: dict[str, Any]) -> str | None:
    """Why the GPU ``here`` may not be the model ``built`` was tuned for, or None.

    The same physical device (UUID) always fits. Otherwise name, compute capability, SM
    count and total memory must agree: Jetson Orin modules of different sizes share a name
    and a compute capability (an Orin NX 8GB has 6 SMs, the 16GB 8; an AGX Orin 32GB 14,
    the 64GB 16). When either side lacks a field, nothing can tell: refused, not guessed.
    """
    if built is None:
        return (
            "its sidecar names no build GPU (it was built where cuda-python could not see the GPU), "
            "so nothing can tell whether it fits this one"
        )
    if built.get("uuid") and built.get("uuid") == here.get("uuid"):
        return None
    keys = ("name", "compute_capability", "multiprocessors", "total_memory_mb")
    missing = [k for k in keys if built.get(k) in (None, "") or here.get(k) in (None, "")]
    if missing:
        return f"the GPU it was built for cannot be compared with this one (no {', '.join(missing)} recorded)"

    def describe(gpu: dict[str, Any]) -> str:
        return (f"{gpu['name']} (compute capability {gpu['compute_capability']}, {gpu['multiprocessors']} SMs, "
                f"{int(gpu['total_memory_mb']) // 1024 or 1} GiB)")

    same = (
        built["name"] == here["name"]
        and built["compute_capability"] == here["compute_capability"]
        and int(built["multiprocessors"]) == int(here["multiprocessors"])
        and abs(int(built["total_memory_mb"]) - int(here["total_memory_mb"]))
        <= _MEMORY_TOLERANCE * max(int(built["total_memory_mb"]), int(here["total_memory_mb"]))
    )
    return None if same else f"it was built for {describe(built)}, this GPU is {describe(here)}"


def compatibility_problem(
    sidecar: EngineSidecar, package: str, version: str, gpu: dict[str, Any] | None
) -> str | None:
    """Why the engine cannot run with this TensorRT on this GPU, or None when it can.

    Engines are tied to the exact TensorRT version, and (for TensorRT) to the GPU model
    they were tuned on (``gpu_identity_problem``). TensorRT-RTX engines are portable: they
    run on the compute capabilities they were built for (explicit targets, or TensorRT-RTX's
    default set, which its runtime checks itself). ``gpu=None`` checks the version only.
    """
    built = sidecar.tensorrt
    if built.get("package") != package:
        return f"it was built with {built.get('package')}, but it is being loaded with {package}"
    if built.get("version") != version:
        return f"it was built with {package} {built.get('version')}, this machine has {package} {version}"
    if gpu is None:
        return None
    cc = gpu.get("compute_capability")
    if sidecar.target_compute_capabilities:
        if cc not in sidecar.target_compute_capabilities:
            return (
                f"it was built for compute capabilities {', '.join(sidecar.target_compute_capabilities)}, "
                f"this GPU ({gpu.get('name')}) has {cc}"
            )
        return None
    if sidecar.build.get("portable_across_gpus") or (sidecar.gpu is None and package == "tensorrt_rtx"):
        return None  # TensorRT-RTX's default targets: its runtime checks the engine itself
    return gpu_identity_problem(sidecar.gpu, gpu)


def onnx_candidates(engine_path: str | Path) -> list[Path]:
    """The ONNX files an engine without a sidecar was probably built from, most likely first:
    ``m.fp16.engine`` <- ``m.fp16.onnx``; ``m.fp32.engine`` <- ``m.fp32.onnx`` or ``m.onnx``
    (``builder.engine_path_for`` adds ``.fp32`` to a plain ONNX name)."""
    engine_path = Path(engine_path)
    first = engine_path.with_suffix(".onnx")
    found = [first]
    if Path(engine_path.stem).suffix == ".fp32":
        found.append(engine_path.with_name(Path(engine_path.stem).stem + ".onnx"))
    return found


def rebuild_hint(engine_path: str | Path, sidecar: EngineSidecar | None) -> str:
    """The command that rebuilds ``engine_path``, run from where the user stands.

    Whether from the sidecar's record or guessed without one, the command names an ONNX only
    when that file exists (otherwise it says which ONNX to export first: no command with a
    file that is not there), and ``-o`` is the file being looked at, also after a rename.
    """
    engine_path = Path(engine_path)
    if sidecar is None or not sidecar.rebuild_command:
        candidates = onnx_candidates(engine_path)
        onnx = next((c for c in candidates if c.is_file()), None)
        command = f"bisenet-export {shlex.quote(str(onnx or candidates[0]))} --engine -o {shlex.quote(str(engine_path))}"
        return command if onnx is not None else _export_first(candidates[0], command)
    folder = engine_path.parent
    try:
        args = shlex.split(sidecar.rebuild_command)
    except ValueError:  # a hand-edited record: show it as it is
        args = []
    if "-o" in args[:-1]:
        args[args.index("-o") + 1] = engine_path.name
    command = shlex.join(args) if args else sidecar.rebuild_command
    if str(folder) not in ("", "."):
        command = f"cd {shlex.quote(str(folder))} && {command}"
    recorded = sidecar.onnx.get("path") if isinstance(sidecar.onnx, dict) else None
    recorded = recorded or (args[1] if len(args) > 1 and args[0] == "bisenet-export" else None)
    if recorded is None:
        return command
    onnx = Path(os.path.normpath(folder / recorded))
    return command if onnx.is_file() else _export_first(onnx, command)


def _export_first(onnx: Path, command: str) -> str:
    quoted = shlex.quote(str(onnx))
    return f"export {quoted} from its checkpoint first (bisenet-export model.pth -o {quoted}), then {command}"


def mismatch_error(engine_path: str | Path, sidecar: EngineSidecar, problem: str) -> ArtifactError:
    return ArtifactError(
        f"engine '{engine_path}' does not fit this machine: {problem}. "
        f"Rebuild it here: {rebuild_hint(engine_path, sidecar)}"
    )
