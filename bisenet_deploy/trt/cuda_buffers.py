"""Device memory, pinned host memory, streams, events and CUDA graphs through cuda-python.

No torch, no TensorRT: the TensorRT backend builds on this, and the plumbing can be tested
on any CUDA machine. cuda-python's runtime calls return ``(error, *values)``; ``_call``
turns a failure into one line that names the call and the CUDA error.
"""

from __future__ import annotations

import contextlib
import ctypes
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from ..errors import UserError


class CudaUnavailable(UserError):
    """No cuda-python, no driver or no GPU: the GPU backends cannot run here."""


class CudaError(UserError):
    """A CUDA runtime call failed (out of memory, invalid pointer, ...)."""


_RT: Any = None


def cudart() -> Any:
    """The ``cuda.bindings.runtime`` module, imported on first use."""
    global _RT
    if _RT is None:
        try:
            from cuda.bindings import runtime
        except ImportError:
            try:  # cuda-python before 12.6 (e.g. next to older JetPacks): same API, older name
                from cuda import cudart as runtime
            except ImportError:
                raise CudaUnavailable(
                    "cuda-python is not installed (needed for GPU inference): pip install 'bisenet-deploy[gpu]'"
                ) from None
        _RT = runtime
    return _RT


def _error_text(err: Any) -> str:
    rt = cudart()
    name = rt.cudaGetErrorName(err)[1]
    text = rt.cudaGetErrorString(err)[1]
    decode = lambda b: b.decode() if isinstance(b, bytes) else str(b)  # noqa: E731
    return f"{decode(name)} ({decode(text)})"


def _call(name: str, *args: Any) -> Any:
    """Call ``cudart.<name>``; raise ``CudaError`` on failure, return the value(s)."""
    rt = cudart()
    result = getattr(rt, name)(*args)
    err, values = result[0], result[1:]
    if err != rt.cudaError_t.cudaSuccess:
        raise CudaError(f"CUDA {name} failed: {_error_text(err)}")
    if not values:
        return None
    return values[0] if len(values) == 1 else values


def _version_text(v: int) -> str:
    return f"{v // 1000}.{(v % 1000) // 10}" if v else "none"


def cuda_versions() -> dict[str, str]:
    """CUDA runtime (of cuda-python) and driver versions; works without a GPU."""
    try:
        rt = cudart()
    except CudaUnavailable:
        return {}
    runtime = rt.cudaRuntimeGetVersion()
    driver = rt.cudaDriverGetVersion()
    return {
        "runtime": _version_text(runtime[1]) if runtime[0] == rt.cudaError_t.cudaSuccess else "unknown",
        "driver": _version_text(driver[1]) if driver[0] == rt.cudaError_t.cudaSuccess else "none",
    }


#: the cuda-python line that works with every driver from 525.60.13 (CUDA 12.0) on, JetPack 6.x included
CUDA_PYTHON_12 = 'pip install "cuda-python>=12.3,<13"'
#: minimum Linux driver per cuda-bindings major (cuda-bindings install pages: 12.x 525.60.13, 13.x 580.65.06)
DRIVER_FLOOR = {12: "525.60.13", 13: "580.65.06"}


def bindings_driver_problem(driver_version: int, runtime_version: int) -> str | None:
    """Why cuda-python's CUDA runtime (``cudaRuntimeGetVersion``) cannot run on this driver
    (``cudaDriverGetVersion``), or None. Both are ``1000 * major + 10 * minor``.

    cuda-bindings links the CUDA runtime of its own major version; CUDA's minor version
    compatibility lets it run on any driver of that major, not an older one. ``pip install
    cuda-python`` picks 13.x today, which needs a CUDA 13 driver (Linux >= 580.65.06): on
    JetPack 6.x (CUDA 12.2/12.6) and desktop drivers 525-579 the 12.x line is the one to use.
    """
    if not driver_version or not runtime_version:
        return None  # no driver at all is said elsewhere
    need, have = runtime_version // 1000, driver_version // 1000
    if have >= need:
        return None
    floor = DRIVER_FLOOR.get(need, f"one for CUDA {need}")
    text = (f"cuda-python's CUDA {_version_text(runtime_version)} runtime needs a CUDA {need} driver "
            f"(Linux >= {floor}); this driver supports CUDA {_version_text(driver_version)}")
    if have >= 12:
        line = CUDA_PYTHON_12 if have == 12 else f'pip install "cuda-python>={have}.0,<{have + 1}"'
        return f"{text}: {line}"
    return f"{text}: update the NVIDIA driver to >= {DRIVER_FLOOR[12]} (CUDA 12), then {CUDA_PYTHON_12}"


def nvidia_driver_present() -> bool:
    """Whether an NVIDIA kernel driver is loaded (desktop/server GPUs or Jetson's nvgpu)."""
    import os

    return any(os.path.exists(p) for p in ("/proc/driver/nvidia/version", "/dev/nvidiactl", "/dev/nvhost-ctrl",
                                           "/sys/module/nvgpu", "/dev/dxg"))


def gpu_problem(device: int = 0) -> str | None:
    """Why GPU ``device`` cannot be used here, or None when it can."""
    try:
        rt = cudart()
    except CudaUnavailable as exc:
        return str(exc)
    err, count = rt.cudaGetDeviceCount()
    if err != rt.cudaError_t.cudaSuccess:
        if not nvidia_driver_present():
            # CUDA reports a missing driver as "driver version is insufficient": say what it is.
            return "no NVIDIA GPU driver on this machine (no GPU, or the driver is not installed)"
        driver, runtime = rt.cudaDriverGetVersion(), rt.cudaRuntimeGetVersion()
        if driver[0] == rt.cudaError_t.cudaSuccess and runtime[0] == rt.cudaError_t.cudaSuccess:
            mismatch = bindings_driver_problem(int(driver[1]), int(runtime[1]))
            if mismatch:
                return mismatch
        return f"no usable CUDA GPU: {_error_text(err)}"
    if device >= count:
        return f"CUDA device {device} does not exist ({count} GPU(s) visible)"
    return None


def _uuid(props: Any) -> str | None:
    """``GPU-xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx`` (as nvidia-smi prints it), where readable."""
    try:
        raw = bytes(props.uuid.bytes)[:16]
    except (AttributeError, TypeError, ValueError):
        return None
    if len(raw) != 16:
        return None
    h = raw.hex()
    return f"GPU-{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def gpu_info(device: int = 0) -> dict[str, Any] | None:
    """Name, compute capability, SM count, memory, UUID and CUDA versions of ``device``;
    None without a GPU. Name + SM count + memory tell Jetson modules apart (an Orin NX 8GB
    and 16GB share a name); the UUID names the physical device."""
    if gpu_problem(device) is not None:
        return None
    props = _call("cudaGetDeviceProperties", device)
    name = props.name.decode(errors="replace") if isinstance(props.name, bytes) else str(props.name)
    return {
        "device": device,
        "name": name.split("\x00")[0].strip(),
        "compute_capability": f"{props.major}.{props.minor}",
        "total_memory_mb": int(props.totalGlobalMem) // (1 << 20),
        "multiprocessors": int(props.multiProcessorCount),
        "integrated": bool(props.integrated),
        "uuid": _uuid(props),
        **{f"cuda_{k}": v for k, v in cuda_versions().items()},
    }


def require_gpu(device: int = 0) -> dict[str, Any]:
    """``gpu_info`` or one clear line saying why there is no GPU."""
    problem = gpu_problem(device)
    if problem is not None:
        raise CudaUnavailable(problem)
    _call("cudaSetDevice", device)
    return gpu_info(device)  # type: ignore[return-value]


class Stream:
    """A non-blocking CUDA stream (never synchronizes with the legacy default stream)."""

    def __init__(self) -> None:
        self.handle = _call("cudaStreamCreateWithFlags", cudart().cudaStreamNonBlocking)

    @property
    def ptr(self) -> int:
        return int(self.handle)

    def synchronize(self) -> None:
        _call("cudaStreamSynchronize", self.handle)

    def wait_for(self, other_stream: int, event: Event) -> None:
        """Make this stream wait for work already queued on ``other_stream``."""
        event.record(other_stream)
        _call("cudaStreamWaitEvent", self.handle, event.handle, 0)

    def close(self) -> None:
        if self.handle is not None:
            _call("cudaStreamDestroy", self.handle)
            self.handle = None


class Event:
    """A CUDA event used for timing stages on a stream."""

    def __init__(self) -> None:
        self.handle = _call("cudaEventCreate")

    def record(self, stream: int | Stream) -> None:
        _call("cudaEventRecord", self.handle, stream.ptr if isinstance(stream, Stream) else stream)

    def seconds_since(self, start: Event) -> float:
        """Elapsed time between ``start`` and this event (both completed)."""
        return float(_call("cudaEventElapsedTime", start.handle, self.handle)) / 1000.0

    def close(self) -> None:
        if self.handle is not None:
            _call("cudaEventDestroy", self.handle)
            self.handle = None


class DeviceBuffer:
    """``nbytes`` of device memory."""

    def __init__(self, nbytes: int) -> None:
        self.nbytes = int(nbytes)
        self.ptr = int(_call("cudaMalloc", max(1, self.nbytes)))

    def close(self) -> None:
        if self.ptr:
            _call("cudaFree", self.ptr)
            self.ptr = 0


class PinnedBuffer:
    """``nbytes`` of page-locked host memory (fast, truly asynchronous copies)."""

    def __init__(self, nbytes: int) -> None:
        self.nbytes = int(nbytes)
        self.ptr = int(_call("cudaMallocHost", max(1, self.nbytes)))
        self._raw = (ctypes.c_byte * max(1, self.nbytes)).from_address(self.ptr)

    def view(self, shape: tuple[int, ...], dtype: Any) -> np.ndarray:
        """A numpy array over the first bytes of the buffer (valid until ``close``)."""
        dtype = np.dtype(dtype)
        need = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        if need > self.nbytes:
            raise ValueError(f"pinned buffer of {self.nbytes} bytes cannot hold {shape} {dtype}")
        return np.frombuffer(self._raw, dtype=dtype, count=need // dtype.itemsize).reshape(shape)

    def close(self) -> None:
        if self.ptr:
            self._raw = None
            _call("cudaFreeHost", self.ptr)
            self.ptr = 0


def _kind(name: str) -> Any:
    return getattr(cudart().cudaMemcpyKind, name)


def copy_htod_async(dst: int, src: int, nbytes: int, stream: Stream) -> None:
    _call("cudaMemcpyAsync", dst, src, nbytes, _kind("cudaMemcpyHostToDevice"), stream.handle)


def copy_dtoh_async(dst: int, src: int, nbytes: int, stream: Stream) -> None:
    _call("cudaMemcpyAsync", dst, src, nbytes, _kind("cudaMemcpyDeviceToHost"), stream.handle)


def copy_dtod_async(dst: int, src: int, nbytes: int, stream: Stream) -> None:
    _call("cudaMemcpyAsync", dst, src, nbytes, _kind("cudaMemcpyDeviceToDevice"), stream.handle)


def end_capture_on_error(stream: Stream) -> None:
    """End a capture whose enqueue failed and destroy what it captured (trtexec's
    ``TrtCudaGraph::endCaptureOnError``, samples/common/sampleDevice.h).

    Either the capture was invalidated (no graph comes back) or TensorRT reported the
    failure (a graph comes back that must not be used): destroy it, then clear the error.
    """
    rt = cudart()
    err, graph = rt.cudaStreamEndCapture(stream.handle)
    if err == rt.cudaError_t.cudaSuccess and graph is not None and int(graph):
        rt.cudaGraphDestroy(graph)
    rt.cudaGetLastError()


class CudaGraph:
    """Work captured once from a stream and replayed with one launch.

    Like trtexec: the caller runs the enqueue once before capturing (TensorRT finishes lazy
    setup on its first enqueue for a shape, which capture must not record); a failed enqueue
    ends the capture and destroys its graph; after instantiation only the executable graph
    is kept.
    """

    def __init__(self, stream: Stream, enqueue: Callable[[], None]) -> None:
        rt = cudart()
        self.exec = None
        _call("cudaStreamBeginCapture", stream.handle, rt.cudaStreamCaptureMode.cudaStreamCaptureModeThreadLocal)
        try:
            enqueue()
        except BaseException:
            end_capture_on_error(stream)
            raise
        err, graph = rt.cudaStreamEndCapture(stream.handle)
        if err != rt.cudaError_t.cudaSuccess:
            # The enqueue returned, but the capture was invalidated (an operation not allowed
            # in capture): that error stays on the thread until read, and would be reported by
            # the next unrelated CUDA call. trtexec clears it with cudaGetLastError.
            rt.cudaGetLastError()
            raise CudaError(f"CUDA cudaStreamEndCapture failed: {_error_text(err)}")
        try:
            self.exec = _call("cudaGraphInstantiate", graph, 0)
        finally:
            _call("cudaGraphDestroy", graph)

    def launch(self, stream: Stream) -> None:
        _call("cudaGraphLaunch", self.exec, stream.handle)

    def close(self) -> None:
        if self.exec is not None:
            _call("cudaGraphExecDestroy", self.exec)
            self.exec = None


@contextlib.contextmanager
def closing_all(*resources: Any) -> Iterator[None]:
    """Close every resource even when some ``close`` fails (first error re-raised)."""
    try:
        yield
    finally:
        first: BaseException | None = None
        for r in resources:
            if r is None:
                continue
            try:
                r.close()
            except Exception as exc:  # noqa: BLE001 - keep releasing the rest
                first = first or exc
        if first is not None:
            raise first
