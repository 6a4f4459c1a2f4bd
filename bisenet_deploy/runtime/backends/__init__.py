"""Backends: one small module each, one interface (``base.Backend``), chosen by file type.

Modules are imported lazily so that, e.g., onnxruntime users never import TensorRT or torch.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

from ...errors import UserError
from .base import Backend, TensorInfo

#: backend name -> "module:Class" (relative to this package)
BACKENDS = {
    "onnxruntime": "onnxruntime:OnnxRuntimeBackend",
    "openvino": "openvino:OpenVinoBackend",
    "tensorrt": "tensorrt:TensorRTBackend",
    "torch": "torch:TorchBackend",
    "triton": "triton:TritonBackend",
}
#: artifact suffix -> default backend
SUFFIXES = {
    ".onnx": "onnxruntime",
    ".engine": "tensorrt",
    ".plan": "tensorrt",
    ".trt": "tensorrt",
    ".pth": "torch",
    ".pt": "torch",
    ".safetensors": "torch",
}


#: backend name -> the artifact kind it runs (and the suffixes of that kind)
RUNS = {
    "onnxruntime": ("ONNX models", (".onnx",)),
    "openvino": ("ONNX models", (".onnx",)),
    "tensorrt": ("TensorRT engines", (".engine", ".plan", ".trt")),
    "torch": ("PyTorch checkpoints", (".pth", ".pt", ".safetensors")),
}


def _wrong_kind(path: Path, backend: str) -> str:
    """One line for an explicit backend that cannot run this kind of file, with what can."""
    kind, suffixes = RUNS[backend]
    own = SUFFIXES.get(path.suffix.lower())
    line = f"the {backend} backend runs {kind} ({'/'.join(suffixes)}), not '{path}'"
    if own == "onnxruntime" and backend == "tensorrt":
        stem = path.with_suffix("")
        return (f"{line}; build an engine from it first: bisenet-export {path} --engine "
                f"(writes {stem}.<precision>.engine next to it), then run that")
    if own is not None:
        others = [b for b, (_, sfx) in RUNS.items() if path.suffix.lower() in sfx]
        return f"{line}; for this file use --backend {' or '.join(others)} (or leave --backend out)"
    return line


def backend_for(path: str | Path, backend: str | None = None) -> str:
    """The backend name to use for ``path`` (explicit choice wins where it can run the file).
    ``auto`` (measure the installed ONNX backends) is returned for ONNX models only; a
    ``grpc://`` / ``http://`` URL is a model served by Triton."""
    from .triton import is_url

    if is_url(path):
        if backend not in (None, "triton", "auto"):
            raise UserError(f"'{path}' is a served model: it runs on the Triton server, not with --backend {backend}")
        return "triton"
    path = Path(path)
    if backend == "auto":
        return "auto" if path.suffix.lower() == ".onnx" else backend_for(path)
    if backend is not None:
        if backend not in BACKENDS:
            raise UserError(f"unknown backend {backend!r}; choose from {', '.join(BACKENDS)}")
        suffix = path.suffix.lower()
        if backend in RUNS and suffix in SUFFIXES and suffix not in RUNS[backend][1]:
            raise UserError(_wrong_kind(path, backend))
        return backend
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise UserError(
            f"cannot tell the backend for '{path}' from its suffix; use .onnx, .engine/.plan or .pth, "
            "or name the backend explicitly"
        )
    return SUFFIXES[suffix]


def backend_class(name: str) -> type[Backend]:
    module_name, class_name = BACKENDS[name].split(":")
    try:
        module = importlib.import_module(f"{__name__}.{module_name}")
    except ImportError as exc:
        raise UserError(f"the {name} backend is not available here: {exc}") from None
    return getattr(module, class_name)


def default_backend(path: str | Path, options: dict[str, Any]) -> str:
    """What ``backend=None`` means: ``$BISENET_DEPLOY_BACKEND`` if set; for an ONNX model
    ``auto`` where more than one CPU backend is installed (onnxruntime and OpenVINO), the
    device is the CPU (or auto) and no option names one backend; else by suffix."""
    import os

    from .triton import is_url

    if is_url(path):
        return "triton"
    forced = os.environ.get("BISENET_DEPLOY_BACKEND")
    if forced:
        return backend_for(path, forced)
    if Path(path).suffix.lower() == ".onnx":
        from .choice import backend_named_by, wants_choice

        named = backend_named_by(options)
        if named:
            return named
        if wants_choice(options.get("device", "auto"), options):
            return "auto"
    return backend_for(path)


def open_backend(path: str | Path, backend: str | None = None, **options: Any) -> Backend:
    """Construct the backend for an artifact; ``options`` go to its constructor. ``auto``
    (the default for ONNX models where onnxruntime and OpenVINO are both installed) times
    them on the artifact once and keeps the faster (``choice.py``)."""
    exclude = tuple(options.pop("_exclude", ()))
    name = backend_for(path, backend) if backend is not None else default_backend(path, options)
    if name == "auto":
        from .choice import choose

        return choose(path, options, exclude=exclude)
    return backend_class(name)(path, **options)


__all__ = ["BACKENDS", "Backend", "TensorInfo", "backend_class", "backend_for", "default_backend", "open_backend"]
