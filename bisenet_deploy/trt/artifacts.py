"""What an engine file and the files a build writes next to it are, checked in one place.

Every reader (inspect, infer, bench, Segmenter, serve repo) asks ``engine_problem`` whether
an engine file is usable before trusting its sidecar, and the builder asks
``check_build_outputs`` / ``check_timing_cache_path`` before writing anything, so that a
build never replaces a file that is not one of its own (an ONNX, another engine's sidecar,
a checkpoint...). Standard library only.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from ..errors import ArtifactError, UserError
from ..fileio import check_output_path
from .sidecar import EngineSidecar, rebuild_hint, sidecar_path

#: the names an engine may have (TensorRT's docs and trtexec use both)
ENGINE_SUFFIXES = (".engine", ".plan")

#: every serialized engine seen starts with a 4-byte tag ending in "trt" (TensorRT "ftrt",
#: TensorRT-RTX "vtrt")
_ENGINE_TAG = b"trt"

#: files a timing cache must never replace (models, engines, sidecars, checkpoints)
_ARTIFACT_SUFFIXES = (".onnx", ".engine", ".plan", ".trt", ".json", ".pth", ".pt", ".safetensors")


def layers_path_for(engine_path: str | Path) -> Path:
    engine_path = Path(engine_path)
    return engine_path.with_name(engine_path.name + ".layers.json")


def what_is_wrong_with(path: str | Path, what: str) -> str | None:
    """'not found' only for a path that does not exist: a folder, a fifo or a device is named
    as such (None: a regular file)."""
    path = Path(path)
    if path.is_file():
        return None
    if not path.exists():
        return f"{what} '{path}' not found"
    kind = "a folder" if path.is_dir() else "not a regular file (a pipe, socket or device)"
    return f"{what} '{path}' is {kind}"


def engine_file_problem(path: str | Path) -> str | None:
    """Why ``path`` is not a TensorRT engine at all (missing, empty, not a serialized engine)."""
    path = Path(path)
    problem = what_is_wrong_with(path, "engine")
    if problem:
        return problem
    with path.open("rb") as f:
        head = f.read(4)
    if not head:
        return f"'{path}' is empty (0 bytes): not a TensorRT engine"
    if len(head) < 4 or head[1:4] != _ENGINE_TAG:
        return f"'{path}' is not a TensorRT engine (it does not start with TensorRT's engine header)"
    return None


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def sidecar_mismatch(path: str | Path, sidecar: EngineSidecar, sha256: str | None = None) -> str | None:
    """Why the sidecar does not describe this engine file (None: its sha256 matches)."""
    path = Path(path)
    if not sidecar.engine_sha256 or (sha256 or sha256_of(path)) == sidecar.engine_sha256:
        return None
    return (f"the engine does not match its sidecar '{sidecar_path(path).name}' (sha256 differs): "
            f"corrupt, truncated or replaced since it was built; rebuild: {rebuild_hint(path, sidecar)}")


def checked_engine(path: str | Path, require_sidecar: bool = True) -> EngineSidecar | None:
    """The sidecar of an engine that is what its sidecar says, or ArtifactError in one line:
    missing, a folder, empty, not an engine, no sidecar (when required), or a different engine
    than the sidecar describes."""
    path = Path(path)
    problem = engine_file_problem(path)
    if problem:
        raise ArtifactError(problem)
    side = sidecar_path(path)
    sidecar = EngineSidecar.read(path)  # a folder where the sidecar belongs: one line from read
    if sidecar is None:
        if require_sidecar:
            raise ArtifactError(f"engine '{path}' has no sidecar '{side.name}' (ModelSpec and build record); copy it "
                                f"next to the engine or rebuild: {rebuild_hint(path, None)}")
        return None
    mismatch = sidecar_mismatch(path, sidecar)
    if mismatch:
        raise ArtifactError(f"engine '{path}': {mismatch}")
    return sidecar


def check_build_outputs(onnx_path: Path, engine_path: Path) -> None:
    """Refuse, before building, an engine path that is not one or that would replace a file
    which is not an engine of this model: the engine itself must end in .engine/.plan and be
    absent or an engine; its sidecar absent or a sidecar; the layer report absent or a file."""
    if engine_path.suffix.lower() not in ENGINE_SUFFIXES:
        raise UserError(f"engine output '{engine_path}' must end in .engine or .plan "
                        "(the name says what the file is; sidecar and layer report are named after it)")
    check_output_path(engine_path)
    if engine_path.resolve() == onnx_path.resolve():
        raise UserError(f"engine output '{engine_path}' would overwrite the ONNX model")
    if engine_path.exists():
        problem = engine_file_problem(engine_path)
        if problem:
            raise UserError(f"engine output '{engine_path}' exists and is not an engine ({problem.split(': ', 1)[-1]}); "
                            "it is not replaced: remove it or name another file")
    side = sidecar_path(engine_path)
    if side.exists():
        if not side.is_file() or not _is_sidecar(side):
            raise UserError(f"'{side}' (the new engine's sidecar) exists and is not an engine sidecar; "
                            "it is not replaced: remove it or name another engine file")
        other = _built_from(side, engine_path)
        if other is not None and other != onnx_path.resolve():
            raise UserError(f"'{engine_path}' is the engine of another model ({os.path.relpath(other)}, says its "
                            "sidecar); it is not replaced: remove it first or name another file")
    layers = layers_path_for(engine_path)
    if layers.exists() and not layers.is_file():
        raise UserError(f"'{layers}' (the layer report) is a folder; remove it or name another engine file")


def _is_sidecar(path: Path) -> bool:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and "engine_sha256" in data


def _built_from(side: Path, engine_path: Path) -> Path | None:
    try:
        onnx = json.loads(side.read_text()).get("onnx", {}).get("path")
    except (OSError, ValueError, AttributeError):
        return None
    return (engine_path.parent / onnx).resolve() if isinstance(onnx, str) and onnx else None


def check_timing_cache_path(cache_path: Path, onnx_path: Path, engine_path: Path) -> None:
    """A named --timing-cache is written after the build: it must not be the input, an output
    of this build, an existing model/engine/sidecar, something that is not a file, or in a
    folder that does not exist (created silently, a typo would go unnoticed)."""
    own = {p.resolve() for p in (onnx_path, engine_path, sidecar_path(engine_path), layers_path_for(engine_path))}
    if cache_path.resolve() in own or (cache_path.exists() and cache_path.suffix.lower() in _ARTIFACT_SUFFIXES):
        raise UserError(f"--timing-cache '{cache_path}' would overwrite a model, engine or sidecar; "
                        "name a separate file, e.g. build.timing-cache")
    if cache_path.exists() and not cache_path.is_file():
        raise UserError(f"--timing-cache '{cache_path}' is not a file")
    folder = cache_path.parent if str(cache_path.parent) else Path(".")
    if not folder.is_dir():
        raise UserError(f"--timing-cache '{cache_path}': folder '{folder}' does not exist (create it first)")
    check_output_path(cache_path)
