"""Backends: one small module each, one interface (``base.Backend``), chosen by file type.

Modules are imported lazily so that, e.g., onnxruntime users never import TensorRT or torch.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

from ...errors import UserError
from .base import Backend, TensorInfo

#: backend name -> "module:Class" (relative to this package, or absolute when dotted)
BACKENDS = {
    "onnxruntime": "onnxruntime:OnnxRuntimeBackend",
    "openvino": "openvino:OpenVinoBackend",
    "tensorrt": "bisenet_deploy.trt.runner:TensorRTBackend",
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
    ``auto`` (measure the installed ONNX backends, ``runtime/choice.py``) is returned for ONNX
    models only; a
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
        module = importlib.import_module(module_name if "." in module_name else f"{__name__}.{module_name}")
    except ImportError as exc:
        raise UserError(f"the {name} backend is not available here: {exc}") from None
    return getattr(module, class_name)


def open_backend(path: str | Path, backend: str | None = None, **options: Any) -> Backend:
    """Construct the named backend (None: by suffix) for an artifact; ``options`` go to its
    constructor. No policy here: ``auto`` and the default choice for ONNX models are
    ``runtime.choice.open_model`` (``bisenet_deploy.runtime.open_backend``)."""
    name = backend_for(path, backend)
    if name == "auto":
        raise UserError("'auto' is a choice among backends, not one: open the model with "
                        "bisenet_deploy.runtime.open_backend or Segmenter")
    return backend_class(name)(path, **options)


__all__ = ["BACKENDS", "Backend", "TensorInfo", "backend_class", "backend_for", "open_backend"]
