"""onnxruntime backend: CPU, CUDA and TensorRT execution providers.

onnxruntime silently falls back to the CPU when a GPU provider cannot load (missing CUDA
libraries, wrong driver). We compare the providers the session actually uses with the ones
asked for: an explicit ``device="cuda"`` or ``"tensorrt"`` that ends up on the CPU is an
error, ``device="auto"`` takes the best that loads and reports it.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from ...errors import ArtifactError, UserError
from ...spec import PRECISION_KEY
from ..onnx_metadata import spec_from_metadata
from .base import Backend, TensorInfo

_ORT_TYPES = {
    "tensor(float)": np.float32,
    "tensor(float16)": np.float16,
    "tensor(double)": np.float64,
    "tensor(uint8)": np.uint8,
    "tensor(int8)": np.int8,
    "tensor(int32)": np.int32,
    "tensor(int64)": np.int64,
}
_PROVIDERS = {
    "cpu": ["CPUExecutionProvider"],
    "cuda": ["CUDAExecutionProvider", "CPUExecutionProvider"],
    "tensorrt": ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"],
}
_OPT_LEVELS = {
    "disable": "ORT_DISABLE_ALL",
    "basic": "ORT_ENABLE_BASIC",
    "extended": "ORT_ENABLE_EXTENDED",
    "all": "ORT_ENABLE_ALL",
}


def _import_ort():
    from ..library_imports import import_onnxruntime

    try:
        onnxruntime = import_onnxruntime()
    except ImportError:
        raise UserError("onnxruntime is not installed: pip install 'bisenet-deploy[ort]'") from None
    return onnxruntime


_warned: set[str] = set()


def _warn_if_int8_saturates(path: Path, meta: dict[str, str]) -> None:
    """One warning line for an 8-bit-weight INT8 model on an x86 CPU without VNNI, where
    onnxruntime's int8 convolutions saturate int16 pair sums (see calibration.int8)."""
    import json
    import logging
    import platform

    from ...machine import cpu_flags, has_int8_dot_product
    from ...spec import CALIBRATION_KEY

    try:
        bits = json.loads(meta.get(CALIBRATION_KEY, "{}")).get("weight_bits")
    except (ValueError, AttributeError):
        return
    if bits != 8 or platform.machine().lower() not in ("x86_64", "amd64", "i686", "x86"):
        return
    if has_int8_dot_product(cpu_flags()) or str(path) in _warned:
        return
    _warned.add(str(path))
    logging.getLogger("bisenet_deploy").warning(
        "%s has 8-bit INT8 weights, which onnxruntime's int8 kernels saturate on this CPU (no VNNI): expect lower "
        "agreement; re-export with --int8-weight-bits 7 for onnxruntime here (or run it with OpenVINO)", path.name)


class OnnxRuntimeBackend(Backend):
    """Run an ONNX model with onnxruntime.

    Args:
        path: the .onnx file.
        device: ``auto`` (best provider that loads), ``cpu``, ``cuda`` or ``tensorrt``.
        threads: intra-op threads (0: onnxruntime's default, one per physical core).
        optimization: graph optimization level, one of ``disable basic extended all``.
        spinning: let idle intra-op threads spin (lowest latency for one process alone);
            ``False`` where other work shares the cores (pipelines, Ray actors).
    """

    name = "onnxruntime"
    thread_safe = True  # InferenceSession.run may be called concurrently

    def __init__(self, path: str | Path, device: str = "auto", threads: int = 0, optimization: str = "all",
                 spinning: bool = True) -> None:
        super().__init__(path)
        ort = _import_ort()
        if not self.path.is_file():
            raise ArtifactError(f"ONNX model '{self.path}' not found")
        if optimization not in _OPT_LEVELS:
            raise UserError(f"optimization must be one of {', '.join(_OPT_LEVELS)}, got {optimization!r}")
        available = ort.get_available_providers()
        if device == "auto":
            wanted = [p for p in _PROVIDERS["tensorrt"] if p in available]
        elif device in _PROVIDERS:
            wanted = _PROVIDERS[device]
            if wanted[0] not in available:
                raise UserError(
                    f"onnxruntime here has no {wanted[0]} (available: {', '.join(available)}); "
                    "install onnxruntime-gpu, or run on the CPU (device 'cpu')"
                )
        else:
            raise UserError(f"unknown device {device!r}; choose auto, cpu, cuda or tensorrt")

        options = ort.SessionOptions()
        options.intra_op_num_threads = int(threads)
        options.graph_optimization_level = getattr(ort.GraphOptimizationLevel, _OPT_LEVELS[optimization])
        options.log_severity_level = 3
        if not spinning:
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            self.session = ort.InferenceSession(str(self.path), sess_options=options, providers=wanted)
        except Exception as exc:  # noqa: BLE001 - ORT raises its own exception types
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ArtifactError(f"onnxruntime cannot load '{self.path}': {first}") from None

        used = self.session.get_providers()
        if device in ("cuda", "tensorrt") and used[0] != wanted[0]:
            raise UserError(
                f"asked for {wanted[0]} but onnxruntime fell back to {used[0]} "
                "(CUDA/TensorRT libraries missing or not matching the driver)"
            )
        self.providers = used
        self.device = "cpu" if used[0] == "CPUExecutionProvider" else "cuda:0"
        self.threads = int(threads)
        self.optimization = optimization
        meta = self.session.get_modelmeta().custom_metadata_map
        self.spec = spec_from_metadata(meta, self.path)
        self.precision = meta.get(PRECISION_KEY, "fp32")
        if self.device == "cpu" and self.precision in ("int8", "mixed"):
            _warn_if_int8_saturates(self.path, meta)
        self._inputs = [self._info(t) for t in self.session.get_inputs()]
        self._outputs = [self._info(t) for t in self.session.get_outputs()]
        if len(self._inputs) != 1 or len(self._outputs) != 1:
            raise ArtifactError(
                f"'{self.path}' has {len(self._inputs)} inputs and {len(self._outputs)} outputs; "
                "a segmentation model needs exactly one of each"
            )
        self._input_name = self._inputs[0].name
        self._output_names = [self._outputs[0].name]

    @staticmethod
    def _info(node: Any) -> TensorInfo:
        shape = tuple(d if isinstance(d, int) else None for d in node.shape)
        return TensorInfo(node.name, shape, np.dtype(_ORT_TYPES.get(node.type, np.float32)))

    def infer_impl(self, batch: Any) -> np.ndarray:
        """Run on a host array, or (GPU providers) on a device array exposing
        ``__cuda_array_interface__`` (torch/cupy), which is bound without a host copy."""
        start = time.perf_counter()
        if self.device == "cpu":
            if hasattr(batch, "__cuda_array_interface__"):
                raise UserError("this session runs on the CPU; pass a host (numpy) array")
            (out,) = self.session.run(self._output_names, {self._input_name: batch})
        else:
            out = self._infer_bound(batch)
        self.last_stage_times = {"compute": time.perf_counter() - start}
        return out

    def _infer_bound(self, batch: Any) -> np.ndarray:
        # I/O binding: onnxruntime copies the input to the GPU once and allocates nothing
        # per call for it; a new binding per call keeps concurrent calls independent.
        binding = self.session.io_binding()
        cai = getattr(batch, "__cuda_array_interface__", None)
        if cai is not None:
            binding.bind_input(
                self._input_name, "cuda", 0, np.dtype(cai["typestr"]), tuple(cai["shape"]), cai["data"][0]
            )
        else:
            binding.bind_cpu_input(self._input_name, np.ascontiguousarray(batch))
        binding.bind_output(self._output_names[0], "cpu")
        self.session.run_with_iobinding(binding)
        return binding.copy_outputs_to_cpu()[0]

    def describe(self) -> dict[str, Any]:
        info = super().describe()
        info.update(providers=self.providers, threads=self.threads, optimization=self.optimization)
        return info

    def close(self) -> None:
        self.session = None
        super().close()
