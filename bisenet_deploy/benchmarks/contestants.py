"""What a benchmark compares: artifacts and PyTorch rows, and which one is the reference.

The reference is the PyTorch model whenever it can be had: a ``--checkpoint``, the built-in
demo model, or the checkpoint an artifact records in its ModelSpec
(``extra["checkpoint_path"]``), used only while its SHA-256 still matches
``checkpoint_sha256``. Otherwise the first FP32 ONNX model is the reference, and the report
says why.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import UserError
from ..fileio import sha256_file
from ..runtime.backends import Backend, backend_for, open_backend
from ..spec import ModelSpec
from . import system

#: short backend names used in row labels
SHORT = {"torch": "torch", "onnxruntime": "ort", "openvino": "ov", "auto": "auto", "tensorrt": "trt",
         "triton": "triton"}
#: PyTorch row options: name -> TorchBackend keyword
TORCH_OPTIONS = ("fp16", "bf16", "channels_last", "cuda_graph")
#: backends an ONNX artifact can be timed with (``--backend``)
ONNX_BACKENDS = ("onnxruntime", "openvino", "auto")


@dataclass
class Contestant:
    """One row of the benchmark: an artifact file, or a PyTorch model with options."""

    kind: str  # "onnxruntime", "openvino", "auto", "tensorrt" or "torch"
    path: Path | None = None
    loaded: Any = None  # LoadedCheckpoint for torch rows
    torch_options: dict[str, bool] = field(default_factory=dict)
    backend_options: dict[str, Any] = field(default_factory=dict)  # e.g. OpenVINO's precision_hint
    role: str = "candidate"  # or "reference"
    name: str = ""
    backend: Backend | None = None
    error: str | None = None
    facts: dict[str, Any] = field(default_factory=dict)

    @property
    def spec(self) -> ModelSpec | None:
        if self.backend is not None:
            return self.backend.spec
        return self.loaded.spec if self.loaded is not None else None

    @property
    def precision(self) -> str:
        """As the artifact records it, also when it could not be opened (an engine that
        cannot run here is still an INT8 engine, not "fp32")."""
        if self.backend is not None:
            return self.backend.precision
        if self.kind == "torch":
            return "fp16" if self.torch_options.get("fp16") else "bf16" if self.torch_options.get("bf16") else "fp32"
        if self.kind == "triton":
            return "served"
        if self.backend_options.get("precision_hint") == "bf16":
            from ..runtime.backends.openvino import precision_label

            return precision_label(self.facts.get("recorded_precision") or "fp32", "bf16")
        return self.facts.get("sidecar_precision") or self.facts.get("recorded_precision") or "unknown"

    @property
    def artifact_spec(self) -> ModelSpec | None:
        """The spec of the file itself (a backend may compile pre/postprocessing in and
        describe itself with another: OpenVINO's in-graph pre/post)."""
        return getattr(self.backend, "artifact_spec", None) or self.spec

    def label(self) -> str:
        """``ort int8``, ``ov int8``, ``torch bf16 channels_last``, ``ort fp32 argmax``,
        ``auto int8 (ov)`` ..."""
        if self.kind == "triton":
            url = self.facts.get("url", "")
            return f"triton {url.split('://', 1)[0]} {url.rsplit('/', 1)[-1]}"
        parts = [SHORT.get(self.kind, self.kind), self.precision]
        parts += [k for k, v in self.torch_options.items() if v and k not in ("fp16", "bf16")]
        spec = self.artifact_spec
        if spec is not None and spec.output_kind == "labels":
            parts.append("argmax")
        if spec is not None and spec.input_layout == "NHWC_UINT8":
            parts.append("fused-pre")
        if self.kind == "openvino" and self.backend_options.get("prepost") == "host":
            parts.append("host-pre/post")
        if self.kind == "auto" and self.backend is not None:
            chosen = (self.backend.choice or {}).get("backend", self.backend.name)
            parts.append(f"({SHORT.get(chosen, chosen).replace('openvino', 'ov')})")
        return " ".join(parts)


def parse_torch_variant(text: str) -> dict[str, bool]:
    """``fp16+channels_last`` -> {"fp16": True, "channels_last": True, "cuda_graph": False}."""
    names = [t.strip().lower().replace("-", "_") for t in text.replace(",", "+").split("+") if t.strip()]
    bad = [n for n in names if n not in TORCH_OPTIONS + ("fp32", "eager")]
    if bad or not names:
        raise UserError(f"--torch-variant {text!r}: combine {', '.join(TORCH_OPTIONS)} with '+', e.g. fp16+channels_last")
    return {k: k in names for k in TORCH_OPTIONS}


def artifact_contestants(path: str | Path, onnx_backends: tuple[str, ...] = ("onnxruntime",),
                         ov_hints: tuple[str, ...] = ("f32",), ov_prepost: tuple[str, ...] = ("graph",)
                         ) -> list[Contestant]:
    """The rows of one artifact: an engine is one row; an ONNX model one row per backend in
    ``onnx_backends`` (OpenVINO once per precision hint and pre/post form)."""
    from ..runtime.backends.triton import is_url, parse_url

    if is_url(path):
        parse_url(str(path))  # a malformed URL is one line now, not at open time
        return [Contestant(kind="triton", path=None, facts={"url": str(path)})]
    path = Path(path)
    if not path.is_file():
        raise UserError(f"artifact '{path}' not found")
    kind = backend_for(path)
    facts: dict[str, Any] = {"file_bytes": path.stat().st_size}
    if kind == "tensorrt":
        facts.update(engine_sidecar_facts(path))
        return [Contestant(kind=kind, path=path, facts=facts)]
    facts["recorded_precision"] = recorded_onnx_precision(path)
    rows = []
    for backend in onnx_backends:
        if backend == "openvino":
            rows += [Contestant(kind=backend, path=path, facts=dict(facts),
                                backend_options={"precision_hint": hint, "prepost": form})
                     for hint in ov_hints for form in ov_prepost]
        else:
            rows.append(Contestant(kind=backend, path=path, facts=dict(facts)))
    return rows


def artifact_contestant(path: str | Path) -> Contestant:
    """The default row of an artifact (onnxruntime for ONNX, TensorRT for an engine)."""
    return artifact_contestants(path)[0]


def installed_onnx_backends() -> tuple[str, ...]:
    """onnxruntime, plus OpenVINO and the automatic choice where OpenVINO is installed."""
    import importlib.util

    if importlib.util.find_spec("openvino") is None:
        return ("onnxruntime",)
    return ("onnxruntime", "openvino", "auto")


def recorded_onnx_precision(path: Path) -> str | None:
    """The precision in an ONNX file's metadata, read without opening a session (None when
    the file or the onnx package cannot tell)."""
    try:
        from ..export.metadata import read_metadata_file
        from ..spec import PRECISION_KEY

        return read_metadata_file(path).get(PRECISION_KEY)
    except Exception:  # noqa: BLE001 - a corrupt file says why when it is opened
        return None


def engine_sidecar_facts(engine: Path) -> dict[str, Any]:
    """Build time and build facts from the engine's sidecar (``model.engine.json``); an
    unreadable or missing sidecar gives no figures here (the backend says why it cannot run)."""
    from ..trt.sidecar import EngineSidecar

    try:
        sidecar = EngineSidecar.read(engine)
    except UserError:
        return {}
    if sidecar is None:
        return {}
    return {
        "build_seconds": sidecar.build_seconds or None,
        "sidecar_precision": sidecar.precision,
        "build_gpu": (sidecar.gpu or {}).get("name"),
        "build_tensorrt": f"{sidecar.tensorrt.get('package')} {sidecar.tensorrt.get('version')}",
    }


def torch_contestant(loaded: Any, role: str = "candidate", options: dict[str, bool] | None = None,
                     path: Path | None = None) -> Contestant:
    facts = {"file_bytes": path.stat().st_size} if path is not None and path.is_file() else {}
    return Contestant(kind="torch", path=path, loaded=loaded, torch_options=dict(options or {}), role=role,
                      facts=facts)


def open_contestant(c: Contestant, device: str, threads: int,
                    spec: Callable[[Backend], ModelSpec] | None = None) -> None:
    """Open the backend (recording host/GPU memory growth); on a user error keep the reason
    in ``c.error`` so the run goes on without that row. ``spec``: the ModelSpec for a model
    that carries none (``--spec``), made from the opened backend.

    A problem of the file itself (no ModelSpec, one its graph contradicts) is marked
    ``c.facts["artifact_error"]``: the same for every backend, it is reported once."""
    rss, gpu = system.rss_bytes(), system.gpu_used_bytes()
    try:
        c.backend = _open(c, device, threads)
        if spec is not None and c.kind != "torch":
            if c.backend.spec is not None:
                c.facts["artifact_error"] = True
                raise UserError(f"'{c.backend.path.name}' carries its own ModelSpec; --spec is for models without one")
            c.backend.spec = spec(c.backend)
        problem = _unusable(c.backend)
        if problem:
            c.facts["artifact_error"] = True
            raise UserError(problem)
    except UserError as exc:
        if c.backend is not None:
            c.backend.close()
            c.backend = None
        c.error = str(exc)
        return
    c.facts["host_open_bytes"] = growth(rss, system.rss_bytes())
    c.facts["gpu_open_bytes"] = growth(gpu, system.gpu_used_bytes())


def _unusable(backend: Backend) -> str | None:
    """Why Segmenter could not run this opened artifact (no spec, or one that does not fit)."""
    from ..runtime.segmenter import spec_mismatch

    if backend.spec is None:
        return (f"'{backend.path.name}' carries no ModelSpec (not exported by bisenet-export?); give its classes "
                "and normalization with --spec '{\"num_classes\": N, \"mean\": [...], \"std\": [...]}'")
    problem = spec_mismatch(backend, backend.spec)
    return f"'{backend.path.name}' does not fit its ModelSpec: {problem}" if problem else None


def growth(before: int | None, after: int | None) -> int | None:
    return None if before is None or after is None else max(0, after - before)


def _open(c: Contestant, device: str, threads: int) -> Backend:
    if c.kind == "torch":
        from ..runtime.backends.torch import TorchBackend

        options = {k: v for k, v in c.torch_options.items() if v}
        # Variants convert the module in place (.to(fp16), channels_last): give each its own.
        module = c.loaded.model if not options else copy.deepcopy(c.loaded.model)
        name = str(c.path) if c.path is not None else f"<{c.loaded.spec.extra.get('source', 'module')}>"
        return TorchBackend.from_module(module, c.loaded.spec, name=name, device=device, threads=threads, **options)
    if c.kind == "triton":
        from ..runtime.backends.triton import TritonBackend

        return TritonBackend(c.facts["url"])
    if c.kind == "openvino":
        from ..runtime.backends.openvino import OpenVinoBackend

        return OpenVinoBackend(c.path, device="cpu" if device == "auto" else device, threads=threads,
                               **c.backend_options)
    if c.kind == "auto":
        if device not in ("auto", "cpu"):
            raise UserError("the automatic choice is among CPU backends; --device cpu or auto")
        from ..runtime.choice import open_model

        return open_model(c.path, "auto", device="cpu", threads=threads)
    if c.kind == "onnxruntime":
        from ..runtime.backends.onnxruntime import OnnxRuntimeBackend

        ort_device = device
        if device == "auto":
            # The TensorRT EP would build an engine inside the session and still be labelled
            # onnxruntime; engines get their own rows, so ORT uses CUDA or the CPU here.
            ort_device = "cuda" if "CUDAExecutionProvider" in _ort_providers() else "cpu"
        return OnnxRuntimeBackend(c.path, device=ort_device, threads=threads, optimization="all")
    if device == "cpu":
        raise UserError("TensorRT engines run on a GPU; --device cpu leaves them out")
    return open_backend(c.path, "tensorrt", **({} if device == "auto" else {"device": device}))


def _ort_providers() -> list[str]:
    from ..runtime.library_imports import import_onnxruntime

    try:
        onnxruntime = import_onnxruntime()
    except ImportError:
        return []  # the backend itself then says how to install it
    return onnxruntime.get_available_providers()


def recorded_checkpoint(specs: list[tuple[str, ModelSpec]]) -> tuple[Path | None, list[str]]:
    """The checkpoint the artifacts were exported from, if it is here with a matching hash."""
    notes: list[str] = []
    for name, spec in specs:
        recorded = spec.extra.get("checkpoint_path") if spec is not None else None
        if not recorded:
            continue
        path = Path(recorded)
        if not path.is_file():
            notes.append(f"{name} was exported from {path}, which is not on this machine")
        elif spec.checkpoint_sha256 and sha256_file(path) != spec.checkpoint_sha256:
            notes.append(f"{path} changed since {name} was exported from it (SHA-256 differs); not used")
        else:
            return path, notes
    if not notes:
        notes.append("no artifact records its source checkpoint")
    return None, notes


def same_model(reference: ModelSpec, other: ModelSpec | None) -> bool:
    """Whether an artifact was made from the reference's weights, as far as specs tell."""
    if other is None:
        return False
    if reference.checkpoint_sha256 and other.checkpoint_sha256:
        return reference.checkpoint_sha256 == other.checkpoint_sha256
    return reference.extra.get("source") == other.extra.get("source") and reference.num_classes == other.num_classes


def fixed_dims(backend: Backend, spec: ModelSpec) -> tuple[int | None, int | None, int | None]:
    """(batch, height, width) the artifact is fixed to; None for a dynamic axis."""
    shape = backend.inputs[0].shape
    if len(shape) != 4:
        return None, None, None
    h, w = (shape[1], shape[2]) if spec.input_layout == "NHWC_UINT8" else (shape[2], shape[3])
    return shape[0], h, w


def cannot_run(c: Contestant, size: tuple[int, int], batch: int) -> str | None:
    """Why the contestant cannot run at (size, batch), or None when it can."""
    if c.backend is None:
        return c.error or "not opened"
    b, h, w = fixed_dims(c.backend, c.spec)
    if (h is not None and h != size[0]) or (w is not None and w != size[1]):
        return f"fixed input size {h}x{w}: runs only at its own size"
    if b is not None and b != batch:
        return f"fixed batch {b}: runs only at batch {b}"
    profile = getattr(c.backend, "profile_shapes", lambda: None)()  # dynamic TensorRT engines
    if profile is not None:
        shape = (batch, *size, 3) if c.spec.input_layout == "NHWC_UINT8" else (batch, 3, *size)
        lo, _, hi = profile
        if any(not a <= s <= z for a, s, z in zip(lo, shape, hi)):
            return f"outside the engine's profile {'x'.join(map(str, lo))} .. {'x'.join(map(str, hi))}"
    divisor = c.spec.size_divisor
    if size[0] % divisor or size[1] % divisor:
        return f"sides must be multiples of {divisor}"
    return None
