"""OpenVINO backend: our ONNX files (FP32, FP16, INT8 Q/DQ) compiled for the CPU (or an Intel
GPU/NPU by name), with the compiled-model cache in the user's cache folder.

* Precision: the artifact's own, computed with ``INFERENCE_PRECISION_HINT=f32`` by default.
  OpenVINO's CPU default on AMX/AVX-512-BF16 machines is bf16, which changed about 0.1% of
  the demo model's labels, so bf16 is opt-in (``precision_hint="bf16"``) and reported as its
  own precision (``bf16``; ``int8+bf16`` for an INT8 model).
* Pre/postprocessing in the compiled graph (``prepost="graph"``, the default for models that
  take normalized NCHW floats and return logits): OpenVINO's PrePostProcessor takes the
  uint8 frames (resized by the host, in the network's own channel order) and converts,
  reorders and normalizes them inside the compiled model, and a TopK on the logits returns
  labels. The backend then describes itself with a ModelSpec that says so (``NHWC_UINT8`` in,
  ``labels`` out), so Segmenter does only the resize (and, for an RGB network, the channel
  flip as it copies the frame into the batch) and the label upscale. The compiled TopK is
  this backend's choice, not the file's: ``logits_backend()`` compiles the same graph
  without it when class scores are asked for. ``prepost="host"`` keeps Segmenter's NumPy
  pre/postprocessing. Which is faster depends on the machine: ``backend="auto"`` times both.
* Why no ``convert_color`` in the graph: OpenVINO (2026.4) folds PrePostProcessor's BGR->RGB
  step into the first convolutions' weights when it builds the model, and for a graph whose
  input also feeds a ShapeOf (a ``--dynamic height,width`` export, which resizes its logits
  to the input size) the CPU plugin compiled the in-memory model as if the flip were not
  there: 62-86 % label agreement with onnxruntime, 100 % on channel-swapped frames. The same
  model saved as IR, or reshaped static, was right. The host's flip costs nothing (the frame
  is copied into the batch anyway) and is exact on every shape.
* Threads: ``threads`` sets ``INFERENCE_NUM_THREADS`` (0: OpenVINO's default).
  ``infer`` may be called from several threads at once: each thread gets its own infer
  request on the one compiled model.
* INT8: convolutions over a Concat are compiled as one convolution per Concat input and their
  sum, the same arithmetic, because OpenVINO computes the concatenated form wrongly
  (``openvino_concat.py``); ``split_convs`` names them.
* ``compile_seconds`` and ``cache_hit`` tell how long the model took to become ready and
  whether the compiled-model cache served it.

Importing this module needs no OpenVINO; opening a model does.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from ...errors import ArtifactError, UserError
from ...spec import PRECISION_KEY, ModelSpec
from ..onnx_metadata import read_onnx_metadata, spec_from_metadata
from .base import Backend, TensorInfo
from .openvino_concat import split_int8_concat_convs

log = logging.getLogger(__name__)

#: The names of OpenVINO's cache files (its 64-bit model hash in decimal): the only files pruned.
OPENVINO_BLOB = r"[0-9]{8,20}\.blob"

HINTS = ("f32", "bf16", "f16")
PREPOST = ("graph", "host")


def import_openvino():  # noqa: ANN201 - the module
    from ..library_imports import import_openvino as _import

    try:
        openvino = _import()
    except ImportError:
        raise UserError("openvino is not installed: pip install 'bisenet-deploy[openvino]'") from None
    return openvino


def _device_name(device: str, available: list[str]) -> str:
    text = str(device).strip()
    if text.lower() in ("auto", "cpu", ""):
        return "CPU"
    name = text.upper()
    if name.split(".")[0] not in {d.split(".")[0] for d in available}:
        raise UserError(f"OpenVINO has no device {text!r} here (available: {', '.join(available) or 'none'})")
    return name


def _files(folder: Path) -> int:
    try:
        return sum(1 for p in folder.iterdir() if re.fullmatch(OPENVINO_BLOB, p.name) and p.is_file())
    except OSError:
        return 0


def _compile(core: Any, model: Any, device: str, config: dict[str, Any], cache_dir: Path | None) -> Any:
    """``core.compile_model``, safe beside other processes using the same cache folder.

    OpenVINO writes a model's blob under a name of its hash and then sets the file's
    permissions; two processes compiling the same model at once (two cameras' processes
    started together) race on that file, and one fails with "filesystem error: cannot set
    permissions ... No such file". That is the cache's failure, not the model's: try again
    (the other process's blob is then there to load), then without the cache."""
    from ...cache import in_use

    for _ in range(2):
        try:
            with in_use(cache_dir):  # no process prunes the blob being written or read
                return core.compile_model(model, device, config)
        except Exception as exc:  # noqa: BLE001 - OpenVINO raises RuntimeError for everything
            if cache_dir is None or str(cache_dir) not in str(exc):
                raise
            failure = exc
    log.warning("OpenVINO's cache '%s' failed twice (%s); compiling without it", cache_dir, _first_line(failure))
    core.set_property({"CACHE_DIR": ""})
    return core.compile_model(model, device, config)


class OpenVinoBackend(Backend):
    """Run an ONNX model with OpenVINO.

    Args:
        path: the .onnx file.
        device: ``auto``/``cpu`` (the CPU), or an OpenVINO device name present here
            (``GPU``, ``GPU.1``, ``NPU``).
        threads: inference threads (0: OpenVINO's default).
        precision_hint: ``f32`` (default: the artifact's own precision), ``bf16`` (CPUs with
            AVX-512-BF16 or AMX) or ``f16`` (GPU).
        prepost: ``graph`` (uint8 frames in, labels out, inside the compiled model; default
            where the artifact takes float NCHW and returns logits) or ``host``.
        cache: use OpenVINO's compiled-model cache in the user's cache folder.
    """

    name = "openvino"
    thread_safe = True  # one infer request per thread

    def __init__(self, path: str | Path, device: str = "auto", threads: int = 0, precision_hint: str = "f32",
                 prepost: str = "graph", cache: bool = True, _argmax: bool = True) -> None:
        super().__init__(path)
        self._options = {"device": device, "threads": threads, "precision_hint": precision_hint,
                         "prepost": prepost, "cache": cache}
        self._logits_variant: OpenVinoBackend | None = None
        self._variant_lock = threading.Lock()
        ov = import_openvino()
        if not self.path.is_file():
            raise ArtifactError(f"ONNX model '{self.path}' not found")
        if precision_hint not in HINTS:
            raise UserError(f"precision_hint must be one of {', '.join(HINTS)}, got {precision_hint!r}")
        if prepost not in PREPOST:
            raise UserError(f"prepost must be 'graph' or 'host', got {prepost!r}")
        if int(threads) < 0:
            raise UserError(f"threads must be >= 0, got {threads}")
        meta = read_onnx_metadata(self.path)
        artifact_spec = spec_from_metadata(meta, self.path)
        self.artifact_precision = meta.get(PRECISION_KEY, "fp32")

        self.core = core = ov.Core()
        self._device_name = _device_name(device, list(core.available_devices))
        if precision_hint == "bf16" and self._device_name == "CPU":
            caps = core.get_property("CPU", "OPTIMIZATION_CAPABILITIES")
            if "BF16" not in caps:
                raise UserError("this CPU has no bf16 support (no AVX-512-BF16 or AMX); use precision_hint='f32'")
        self.cache_dir: Path | None = None
        if cache:
            from ...cache import cache_dir

            self.cache_dir = cache_dir("openvino")
            if self.cache_dir is not None:  # None: unwritable, already warned; run uncached
                core.set_property({"CACHE_DIR": str(self.cache_dir)})
        try:
            model = core.read_model(str(self.path))
        except Exception as exc:  # noqa: BLE001 - OpenVINO raises RuntimeError with pages of text
            raise ArtifactError(f"OpenVINO cannot read '{self.path}': {_first_line(exc)}") from None
        if len(model.inputs) != 1 or len(model.outputs) != 1:
            raise ArtifactError(f"'{self.path}' has {len(model.inputs)} inputs and {len(model.outputs)} outputs; "
                                "a segmentation model needs exactly one of each")
        # OpenVINO computes int8 convolutions over a Concat wrongly; same arithmetic, split
        self.split_convs = split_int8_concat_convs(model)
        self.prepost = "host"
        self.spec = self.artifact_spec = artifact_spec
        if prepost == "graph" and artifact_spec is not None and artifact_spec.input_layout == "NCHW":
            model, self.spec = _graph_prepost(ov, model, artifact_spec, argmax=_argmax)
            self.prepost = "graph"
            # Baked into the compiled graph: a Segmenter override of these would be ignored.
            self.fixed_spec_fields = ("mean", "std", "scale", "color_order", "frame_color_order", "input_layout",
                                      "output_kind")

        config: dict[str, Any] = {"INFERENCE_PRECISION_HINT": precision_hint, "PERFORMANCE_HINT": "LATENCY"}
        if threads:
            config["INFERENCE_NUM_THREADS"] = int(threads)
        before = _files(self.cache_dir) if self.cache_dir else 0
        start = time.perf_counter()
        wall_start = time.time() - 1.0  # a file system's timestamps may be coarser than time.time()
        from ...cache import prune

        try:
            self.compiled = _compile(core, model, self._device_name, config, self.cache_dir)
        except Exception as exc:  # noqa: BLE001
            raise ArtifactError(f"OpenVINO cannot compile '{self.path}' for {self._device_name}: "
                                f"{_first_line(exc)}") from None
        self.compile_seconds = time.perf_counter() - start
        self.cache_hit = bool(self.cache_dir) and before > 0 and _files(self.cache_dir) == before
        if self.cache_dir is not None:  # after a hit too: a prune skipped while others compiled is made up
            prune(self.cache_dir, OPENVINO_BLOB, keep_since=wall_start)
        self.threads = int(threads)
        self.precision_hint = precision_hint
        self.device = "cpu" if self._device_name == "CPU" else self._device_name.lower()
        self.precision = precision_label(self.artifact_precision, precision_hint)
        self._inputs = [_tensor_info(p) for p in self.compiled.inputs]
        self._outputs = [_tensor_info(p) for p in self.compiled.outputs]
        self._local = threading.local()
        self.version = ov.__version__
        self._model, self._config = model, config  # for compiled_for(): the same graph under another hint
        self._by_hint: dict[str, Any] = {}

    def _request(self):  # noqa: ANN202 - an InferRequest
        request = getattr(self._local, "request", None)
        if request is None:
            request = self._local.request = self.compiled.create_infer_request()
        return request

    def infer_impl(self, batch: Any) -> np.ndarray:
        request = self._request()
        start = time.perf_counter()
        request.infer({0: np.ascontiguousarray(batch)})
        out = self.request_output(request)
        self.last_stage_times = {"compute": time.perf_counter() - start}
        return out

    def request_output(self, request: Any) -> np.ndarray:
        """A finished infer request's output as ``infer`` returns it: copied (the request reuses its
        tensor) and without the channel axis the in-graph TopK keeps."""
        out = request.get_output_tensor(0).data.copy()
        if self.prepost == "graph" and self.spec.output_kind == "labels" and out.ndim == 4:
            out = out[:, 0]
        return out

    def compiled_for(self, performance_hint: str = "latency") -> Any:
        """This graph compiled under OpenVINO's ``latency`` (what ``infer`` uses) or ``throughput``
        hint (several CPU streams, so concurrent requests overlap), for ``AsyncInferQueue`` users such
        as the streaming runtime; the throughput form is compiled once, on first use."""
        hint = str(performance_hint).upper()
        if hint not in ("LATENCY", "THROUGHPUT"):
            raise UserError(f"performance_hint must be 'latency' or 'throughput', got {performance_hint!r}")
        self.ensure_open()
        if hint == self._config["PERFORMANCE_HINT"]:
            return self.compiled
        with self._variant_lock:
            if hint not in self._by_hint:
                self._by_hint[hint] = self.core.compile_model(self._model, self._device_name,
                                                              {**self._config, "PERFORMANCE_HINT": hint})
        return self._by_hint[hint]

    def logits_backend(self) -> Backend | None:
        """Class scores for this artifact: itself, or (in-graph pre/post on a logits file) the
        same compiled preprocessing without the TopK, compiled on first use."""
        if self.spec is None or self.spec.output_kind == "logits":
            return self
        if self.prepost != "graph" or self.artifact_spec.output_kind != "logits":
            return None  # the file itself computes labels (--argmax)
        self.ensure_open()
        with self._variant_lock:  # threads share a backend: compile the variant once
            if self._logits_variant is None:
                self._logits_variant = OpenVinoBackend(self.path, **self._options, _argmax=False)
        return self._logits_variant

    def describe(self) -> dict[str, Any]:
        info = super().describe()
        info.update(openvino=self.version, device_name=self._device_name, precision_hint=self.precision_hint,
                    prepost=self.prepost, threads=self.threads, compile_seconds=round(self.compile_seconds, 3),
                    cache_hit=self.cache_hit, cache_dir=None if self.cache_dir is None else str(self.cache_dir),
                    split_concat_convs=len(self.split_convs))
        return info

    def close(self) -> None:
        if self._logits_variant is not None:
            self._logits_variant.close()
            self._logits_variant = None
        self._local = threading.local()
        self.compiled = None
        self._by_hint = {}
        super().close()


def _first_line(exc: BaseException) -> str:
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip() and not ln.startswith("Exception from")]
    return lines[-1] if lines else type(exc).__name__


def precision_label(artifact: str, hint: str) -> str:
    """The precision a model of ``artifact`` precision runs at under ``hint``: its own, or
    ``bf16`` / ``<artifact>+bf16`` with the bf16 hint."""
    if hint != "bf16":
        return artifact
    return "bf16" if artifact in ("fp32", "fp16") else f"{artifact}+bf16"


def _tensor_info(port: Any) -> TensorInfo:
    shape = tuple(d.get_length() if d.is_static else None for d in port.get_partial_shape())
    try:
        dtype = np.dtype(port.get_element_type().to_dtype())
    except (TypeError, AttributeError):
        dtype = np.dtype(np.float32)
    return TensorInfo(port.get_any_name(), shape, dtype)


def _graph_prepost(ov: Any, model: Any, spec: ModelSpec, argmax: bool = True) -> tuple[Any, ModelSpec]:
    """The model with uint8 NHWC frames in the network's channel order (converted, reordered
    and normalized by OpenVINO) and, for multi-class logits with ``argmax``, int32 labels out;
    and the spec that says so. No ``convert_color``: see the module docstring."""
    from openvino.preprocess import PrePostProcessor

    ppp = PrePostProcessor(model)
    ppp.input().tensor().set_element_type(ov.Type.u8).set_layout(ov.Layout("NHWC"))
    ppp.input().model().set_layout(ov.Layout("NCHW"))
    steps = ppp.input().preprocess().convert_element_type(ov.Type.f32)
    # normalized = (pixel * scale - mean) / std = (pixel - mean / scale) / (std / scale)
    steps.mean([m / spec.scale for m in spec.mean]).scale([s / spec.scale for s in spec.std])
    out_kind = spec.output_kind
    # A low-resolution export's labels need its head's upsample first: the host's exact
    # label stage does that (see runtime/upsampling.py); a TopK here would give 1/8 labels.
    if argmax and spec.output_kind == "logits" and not spec.is_binary and spec.upsample is None:
        import openvino.opset13 as ops

        k = ops.constant(np.int64(1))
        ppp.output().postprocess().custom(
            lambda node: ops.topk(node, k, axis=1, mode="max", sort="none", index_element_type="i32").output(1))
        out_kind = "labels"
    return ppp.build(), spec.replace(input_layout="NHWC_UINT8", frame_color_order=spec.color_order,
                                     output_kind=out_kind)
