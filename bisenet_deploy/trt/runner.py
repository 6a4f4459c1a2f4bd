"""TensorRT backend: one engine, one execution context, its own CUDA stream (cuda-python).

Per call: pinned host input -> async H2D -> ``execute_async_v3`` (tensor-address API;
``execute_async_v2`` only where v3 is missing) -> async D2H into pinned memory, all on the
backend's stream, timed with CUDA events (``last_stage_times``). Device buffers are
allocated when the input shape changes and reused (they only grow). Arrays already on the
GPU (torch, cupy: ``__cuda_array_interface__`` or DLPack) are bound as the input without a
host round trip when their address is 256-byte aligned (``device_arrays.needs_copy``),
else copied device-to-device into the backend's own buffer first. Every
``set_tensor_address`` / ``set_input_shape`` / enqueue result is checked, as Polygraphy's
runner does. With ``cuda_graph=True`` the first call of each shape runs plainly (TensorRT's
lazy setup, counted once) and the enqueue is then captured, as trtexec does, and replayed
from the next call on; a capture that fails is ended and destroyed (trtexec's
``endCaptureOnError``) and the backend runs without graphs. An engine built for a DLA
core gets that core set on the runtime before it is deserialized (trtexec does the same).

The ModelSpec and build record come from the engine's sidecar (``model.engine.json``). An
engine without one is refused by default (``require_sidecar=False`` runs it without a spec,
with a warning): without it nothing checks that the engine fits this TensorRT and GPU, and
Segmenter cannot preprocess. Importing this module needs neither a GPU nor TensorRT.
"""

from __future__ import annotations

import hashlib
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ArtifactError, InputError, UserError
from ..runtime.backends.base import Backend, TensorInfo, check_input
from .cuda_buffers import (
    CudaError,
    CudaGraph,
    CudaUnavailable,
    DeviceBuffer,
    Event,
    PinnedBuffer,
    Stream,
    _call,
    closing_all,
    copy_dtod_async,
    copy_dtoh_async,
    copy_htod_async,
    require_gpu,
)
from .device_arrays import device_array, needs_copy
from .features import can_check_capture, dla_note, execute_api, runtime_dla_core
from .loading import engine_validity_problem, flavour, load_tensorrt, logger_for, version_of
from .sidecar import EngineSidecar, compatibility_problem, mismatch_error, rebuild_hint, sidecar_path


class _Tensor:
    """One engine input or output: its TensorInfo plus TensorRT's view of it."""

    def __init__(self, name: str, is_input: bool, shape: tuple[int, ...], dtype: np.dtype, binding: int) -> None:
        self.name, self.is_input, self.engine_shape, self.dtype, self.binding = name, is_input, shape, dtype, binding
        self.info = TensorInfo(name, tuple(None if d < 0 else d for d in shape), dtype)
        self.device: DeviceBuffer | None = None
        self.host: PinnedBuffer | None = None

    def ensure_capacity(self, nbytes: int) -> None:
        """Grow the device and pinned buffers to ``nbytes`` (allocated once per larger shape)."""
        if self.device is None or self.device.nbytes < nbytes:
            self.close()
            self.device = DeviceBuffer(nbytes)
            self.host = PinnedBuffer(nbytes)

    def close(self) -> None:
        with closing_all(self.device, self.host):
            self.device = self.host = None


def _engine_tensors(trt: Any, engine: Any) -> list[_Tensor]:
    if hasattr(engine, "num_io_tensors"):  # tensor API (TensorRT 8.5+)
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        return [
            _Tensor(n, engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT, tuple(engine.get_tensor_shape(n)),
                    np.dtype(trt.nptype(engine.get_tensor_dtype(n))), i)
            for i, n in enumerate(names)
        ]
    return [  # binding API (before 8.5)
        _Tensor(engine.get_binding_name(i), engine.binding_is_input(i), tuple(engine.get_binding_shape(i)),
                np.dtype(trt.nptype(engine.get_binding_dtype(i))), i)
        for i in range(engine.num_bindings)
    ]


def _device_index(device: int | str) -> int:
    """``0``, ``"auto"``, ``"cuda"`` -> 0; ``"cuda:1"`` -> 1 (the names Segmenter passes on)."""
    if isinstance(device, int):
        return device
    text = str(device).strip().lower()
    if text in ("auto", "cuda", "gpu", "tensorrt"):
        return 0
    if text.startswith("cuda:") and text[5:].isdigit():
        return int(text[5:])
    raise UserError(
        f"the TensorRT backend runs on a CUDA GPU, not on {device!r}; choose auto, cuda or cuda:N "
        "(or use the .onnx model with onnxruntime on the CPU)"
    )


class TensorRTBackend(Backend):
    """Run a serialized TensorRT (or TensorRT-RTX) engine on GPU ``device``.

    Args:
        path: the ``.engine``/``.plan``/``.trt`` file (its ``.json`` sidecar next to it).
        device: CUDA device: an index, ``auto``/``cuda`` (device 0) or ``cuda:N``.
        cuda_graph: capture the enqueue as a CUDA graph per input shape and replay it.
        require_sidecar: refuse an engine without its sidecar (default) or run it without
            a ModelSpec and without compatibility checks.
        check_compatibility: refuse an engine built with another TensorRT version or for
            another GPU (default), with the command that rebuilds it.
    """

    name = "tensorrt"
    thread_safe = False  # one execution context, one stream, shared buffers

    def __init__(
        self,
        path: str | Path,
        device: int | str = "auto",
        cuda_graph: bool = False,
        require_sidecar: bool = True,
        check_compatibility: bool = True,
    ) -> None:
        super().__init__(path)
        self._closed = True  # until everything below exists
        device = _device_index(device)
        from .artifacts import sidecar_mismatch, what_is_wrong_with

        problem = what_is_wrong_with(self.path, "engine")  # a folder is not "not found"
        if problem:
            raise ArtifactError(problem)
        sidecar = EngineSidecar.read(self.path)
        data = self.path.read_bytes()
        if sidecar is None:
            if require_sidecar:
                raise ArtifactError(
                    f"engine '{self.path}' has no sidecar '{sidecar_path(self.path).name}' (ModelSpec and build "
                    f"record); copy it next to the engine or rebuild: {rebuild_hint(self.path, None)}"
                )
            warnings.warn(f"{self.path.name}: no sidecar, running without a ModelSpec or compatibility checks",
                          stacklevel=2)
        elif (mismatch := sidecar_mismatch(self.path, sidecar, hashlib.sha256(data).hexdigest())) is not None:
            raise ArtifactError(f"engine '{self.path}': {mismatch}")  # the words inspect and serve repo use
        self.sidecar = sidecar
        self.trt = trt = load_tensorrt(sidecar.tensorrt.get("package", "tensorrt") if sidecar else "auto")
        if sidecar is not None and check_compatibility:  # the version needs no GPU: check it first
            problem = compatibility_problem(sidecar, flavour(trt), version_of(trt), None)
            if problem:
                raise mismatch_error(self.path, sidecar, problem)
        try:
            self.gpu = require_gpu(device)
        except CudaUnavailable as exc:
            raise CudaUnavailable(
                f"the TensorRT backend needs an NVIDIA GPU: {exc}; run the .onnx model instead"
            ) from None
        if sidecar is not None and check_compatibility:
            problem = compatibility_problem(sidecar, flavour(trt), version_of(trt), self.gpu)
            if problem:
                raise mismatch_error(self.path, sidecar, problem)
        self.device = f"cuda:{device}"
        self._device_index = device
        self.spec = sidecar.spec if sidecar else None
        self.precision = sidecar.precision if sidecar else "unknown"
        self.cuda_graph = bool(cuda_graph)

        self._logger = logger_for(trt)
        self._logger.clear()
        self._runtime = trt.Runtime(self._logger)
        self.dla_core = sidecar.build.get("dla_core") if sidecar else None
        problem = runtime_dla_core(self._runtime, self.dla_core)
        if problem:
            note = dla_note(flavour(trt), version_of(trt))
            raise ArtifactError(f"cannot load engine '{self.path}': {problem}" + (f" ({note})" if note else ""))
        if self.dla_core is not None:
            self._runtime.DLA_core = int(self.dla_core)  # before deserializing, as trtexec does
        self._engine = self._runtime.deserialize_cuda_engine(data)
        if self._engine is None:
            reason = engine_validity_problem(trt, self._runtime, data) or self._logger.last_error() or "no reason given"
            raise ArtifactError(
                f"TensorRT cannot load engine '{self.path}': {reason}; "
                f"rebuild it here: {rebuild_hint(self.path, sidecar)}"
            )
        self._context = self._engine.create_execution_context()
        if self._context is None:
            raise ArtifactError(f"cannot create an execution context for '{self.path}': {self._logger.last_error()}")
        self._v3 = execute_api(self._context) == "execute_async_v3"
        tensors = _engine_tensors(trt, self._engine)
        ins, outs = [t for t in tensors if t.is_input], [t for t in tensors if not t.is_input]
        if len(ins) != 1 or len(outs) != 1:
            raise ArtifactError(f"'{self.path}' has {len(ins)} inputs and {len(outs)} outputs; expected one of each")
        self._in, self._out = ins[0], outs[0]
        self._stream = Stream()
        self._events = [Event() for _ in range(5)]  # 4 stage marks + 1 for waiting on a producer stream
        self._shape: tuple[int, ...] | None = None
        self._out_shape: tuple[int, ...] = ()
        self._bound_input = 0
        self._graph: CudaGraph | None = None
        self.input_copied = False  # whether the last GPU-resident input was copied first
        self._closed = False

    # --- interface -------------------------------------------------------------------------

    @property
    def inputs(self) -> list[TensorInfo]:
        return [self._in.info]

    @property
    def outputs(self) -> list[TensorInfo]:
        return [self._out.info]

    def profile_shapes(self) -> tuple[tuple[int, ...], ...] | None:
        """(min, opt, max) input shapes of a dynamic engine; None for a static one."""
        if all(d >= 0 for d in self._in.engine_shape):
            return None
        if hasattr(self._engine, "get_tensor_profile_shape"):
            shapes = self._engine.get_tensor_profile_shape(self._in.name, 0)
        else:
            shapes = self._engine.get_profile_shape(0, self._in.binding)
        return tuple(tuple(int(d) for d in s) for s in shapes)

    def check_batch(self, batch: Any) -> None:
        """Checked in ``infer_impl``: a GPU array may arrive as a DLPack object without ``shape``."""

    def infer_impl(self, batch: Any) -> np.ndarray:
        # The current device is per thread, and another library (or a backend on cuda:1) may
        # have switched this thread away: set it on every call, device 0 included.
        _call("cudaSetDevice", self._device_index)
        gpu_input = device_array(batch, self._stream.ptr)
        if gpu_input is None:
            batch = np.ascontiguousarray(batch)
            check_input(self._in.info, batch)
            shape = tuple(batch.shape)
        else:
            check_input(self._in.info, gpu_input)
            shape = gpu_input.shape
        self._prepare(shape)
        stream, (e0, e1, e2, e3, producer) = self._stream, self._events
        in_bytes = int(np.prod(shape)) * self._in.dtype.itemsize
        e0.record(stream)
        if gpu_input is None:
            np.copyto(self._in.host.view(shape, self._in.dtype), batch)
            copy_htod_async(self._in.device.ptr, self._in.host.ptr, in_bytes, stream)
            self._bind_input(self._in.device.ptr)
        else:
            if gpu_input.stream:
                stream.wait_for(gpu_input.stream, producer)
            # The captured graph reads the buffer it was captured with; TensorRT refuses a
            # pointer that is not 256-byte aligned: both read from our own buffer.
            self.input_copied = self.cuda_graph or needs_copy(gpu_input.ptr)
            if self.input_copied:
                copy_dtod_async(self._in.device.ptr, gpu_input.ptr, in_bytes, stream)
                self._bind_input(self._in.device.ptr)
            else:
                self._bind_input(gpu_input.ptr)
        e1.record(stream)
        self._enqueue()
        e2.record(stream)
        out_bytes = int(np.prod(self._out_shape)) * self._out.dtype.itemsize
        copy_dtoh_async(self._out.host.ptr, self._out.device.ptr, out_bytes, stream)
        e3.record(stream)
        stream.synchronize()
        self.last_stage_times = {
            "h2d": e1.seconds_since(e0), "compute": e2.seconds_since(e1), "d2h": e3.seconds_since(e2)
        }
        if self.cuda_graph and self._graph is None:
            self._capture()  # after this call's one plain run: nothing runs twice, nothing is timed
        # A copy: the pinned buffer is overwritten by the next call.
        return self._out.host.view(self._out_shape, self._out.dtype).copy()

    def describe(self) -> dict[str, Any]:
        info = super().describe()
        info.update(
            tensorrt=f"{flavour(self.trt)} {version_of(self.trt)}",
            gpu=self.gpu.get("name"),
            compute_capability=self.gpu.get("compute_capability"),
            cuda_graph=self.cuda_graph,
            execute_api="execute_async_v3" if self._v3 else "execute_async_v2",
            dla_core=self.dla_core,
        )
        profile = self.profile_shapes()
        if profile is not None:
            info["profile"] = ["x".join(map(str, s)) for s in profile]
        return info

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            self._stream.synchronize()
        finally:
            with closing_all(self._graph, self._in, self._out, *self._events, self._stream):
                self._graph = None
            # Context before engine before runtime: each holds resources of the next.
            self._context = None
            self._engine = None
            self._runtime = None
            super().close()

    # --- internals -------------------------------------------------------------------------

    def _prepare(self, shape: tuple[int, ...]) -> None:
        """Set the input shape on the context and size the buffers (only when it changes)."""
        if shape == self._shape:
            return
        profile = self.profile_shapes()
        if profile is not None:
            lo, _, hi = profile
            if any(not a <= s <= b for a, s, b in zip(lo, shape, hi)):
                raise InputError(
                    f"input shape {'x'.join(map(str, shape))} is outside the engine's profile "
                    f"{'x'.join(map(str, lo))} .. {'x'.join(map(str, hi))} (rebuild with other --min/--max-shape)"
                )
            ok = (self._context.set_input_shape(self._in.name, shape) if self._v3
                  else self._context.set_binding_shape(self._in.binding, shape))
            if not ok:
                raise InputError(f"TensorRT rejects input shape {shape}: {self._logger.last_error()}")
        out = (self._context.get_tensor_shape(self._out.name) if self._v3
               else self._context.get_binding_shape(self._out.binding))
        self._out_shape = tuple(int(d) for d in out)
        self._in.ensure_capacity(int(np.prod(shape)) * self._in.dtype.itemsize)
        self._out.ensure_capacity(int(np.prod(self._out_shape)) * self._out.dtype.itemsize)
        if self._v3:
            self._set_address(self._out.name, self._out.device.ptr)
        self._bound_input = 0
        if self._graph is not None:
            self._graph.close()
            self._graph = None
        self._shape = shape

    def _set_address(self, name: str, ptr: int) -> None:
        """``set_tensor_address`` returns False for an unknown name or a misaligned pointer."""
        if not self._context.set_tensor_address(name, ptr):
            raise CudaError(
                f"TensorRT refused address 0x{ptr:x} for tensor '{name}': "
                f"{self._logger.last_error() or 'not 256-byte aligned, or not a tensor of this engine'}"
            )

    def _bind_input(self, ptr: int) -> None:
        if ptr != self._bound_input:
            if self._v3:
                self._set_address(self._in.name, ptr)
            self._bound_input = ptr

    def _execute(self) -> None:
        if self._v3:
            ok = self._context.execute_async_v3(self._stream.ptr)
        else:
            bindings = [0, 0]
            bindings[self._in.binding], bindings[self._out.binding] = self._bound_input, self._out.device.ptr
            ok = self._context.execute_async_v2(bindings, self._stream.ptr)
        if not ok:
            raise CudaError(f"TensorRT execution failed: {self._logger.last_error() or 'no reason given'}")

    def _enqueue(self) -> None:
        if self._graph is not None:
            self._graph.launch(self._stream)
        else:
            self._execute()

    def _capture(self) -> None:
        """Capture the enqueue for the current shape and addresses (the call before ran it
        once, so TensorRT's lazy setup is not recorded); on failure run without graphs."""
        reason = None
        if can_check_capture(self._context) and not self._context.is_stream_capturable(self._stream.ptr):
            reason = "this engine's context cannot be stream-captured (TensorRT-RTX: build with REQUIRE_USER_ALLOCATION)"
        else:
            try:
                self._graph = CudaGraph(self._stream, self._execute)
            except CudaError as exc:
                reason = str(exc)
        if reason is not None:
            warnings.warn(f"CUDA graph capture failed ({reason}); running without graphs", stacklevel=4)
            self.cuda_graph = False
