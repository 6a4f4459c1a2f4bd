"""cuda-python plumbing: buffers, streams, events, graphs, device pointers from torch/cupy.

The pointer parsing (DLPack, CUDA array interface) is checked everywhere; everything that
touches the GPU is marked ``gpu`` and runs on any CUDA machine, TensorRT not needed.
"""

from __future__ import annotations

import types

import numpy as np
import pytest

from bisenet_deploy.errors import UserError
from bisenet_deploy.trt import cuda_buffers as cb
from bisenet_deploy.trt import device_arrays as da
from tests.trt_fixtures import gpu_problem, importable

GPU_PROBLEM = gpu_problem()
needs_gpu = pytest.mark.skipif(GPU_PROBLEM is not None, reason=f"needs a CUDA GPU: {GPU_PROBLEM}")


def test_dlpack_pointer_shape_and_dtype_from_numpy():
    a = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    view = da.dlpack_array(a)
    assert view.ptr == a.ctypes.data and view.shape == (2, 3, 4) and view.dtype == np.float32
    assert not view.on_gpu and view.nbytes == a.nbytes
    offset = a[1]  # a view with a byte offset into the same memory
    assert da.dlpack_array(offset).ptr == a.ctypes.data + 12 * 4
    assert da.dlpack_array(np.zeros((2, 2), np.uint8)).dtype == np.uint8
    with pytest.raises(UserError, match="C-contiguous"):
        da.dlpack_array(a[:, :, ::2])


def test_versioned_dlpack_capsules_are_read_too():
    a = np.arange(6, dtype=np.int16).reshape(2, 3)
    try:
        capsule = a.__dlpack__(max_version=(1, 0))
    except TypeError:
        pytest.skip("this numpy exports no versioned DLPack capsules")
    t = da._dl_tensor(capsule)  # valid while the capsule lives
    assert t.data == a.ctypes.data and [t.shape[i] for i in range(t.ndim)] == [2, 3] and t.dtype.bits == 16


def test_host_arrays_are_not_device_arrays():
    assert da.device_array(np.zeros(3)) is None
    assert da.device_array([1, 2, 3]) is None
    torch = importable("torch")
    if torch is not None:
        assert da.device_array(torch.zeros(3)) is None  # CPU tensor: host path


@pytest.mark.parametrize(
    "address, copy",
    [(0x7F0000000000, False), (0x7F0000000100, False), (0x7F0000000000 + 3 * 64 * 128, False),  # 24576 = 96 x 256
     (0x7F0000000000 + 4, True), (0x7F0000000000 + 128, True), (0x7F0000000000 + 3 * 64 * 127, True), (0, True)],
)
def test_alignment_rule_for_input_addresses(address, copy):
    """TensorRT binds only 256-byte aligned addresses (NvInferRuntime.h, setTensorAddress)."""
    assert da.needs_copy(address) is copy


def test_alignment_rule_for_views_into_a_batch():
    """Frame k of a uint8 NHWC batch starts at k * H * W * 3 bytes: aligned only for some sizes."""
    base = 0x7F0000000000  # cudaMalloc: 256-byte aligned
    assert [da.needs_copy(base + k * 64 * 128 * 3) for k in range(3)] == [False, False, False]
    # 43200 = 168.75 x 256: frames 1-3 start off the boundary, frame 4 (172800 = 675 x 256) on it
    assert [da.needs_copy(base + k * 90 * 160 * 3) for k in range(5)] == [False, True, True, True, False]
    assert da.needs_copy(base + 4, alignment=4) is False and da.needs_copy(base + 2, alignment=4) is True
    with pytest.raises(ValueError):
        da.needs_copy(base, alignment=100)


@pytest.mark.parametrize(
    "driver, runtime, expected",
    [
        (12020, 12090, None),  # JetPack 6.0 (CUDA 12.2 driver) with cuda-bindings 12.9: minor-version compatible
        (13000, 12090, None),  # a newer driver runs older bindings
        (13000, 13000, None),
        (12020, 13000, 'pip install "cuda-python>=12.3,<13"'),  # cuda-python 13 on JetPack 6 / drivers < 580
        (12080, 13010, "Linux >= 580.65.06"),
        (11040, 12090, "update the NVIDIA driver to >= 525.60.13"),
        (0, 13000, None),  # no driver at all: said elsewhere
    ],
)
def test_bindings_need_a_driver_of_their_major(driver, runtime, expected):
    problem = cb.bindings_driver_problem(driver, runtime)
    if expected is None:
        assert problem is None
    else:
        assert expected in problem and "\n" not in problem


class _Producer:
    """A minimal producer of the CUDA array interface (v3), as numba/cupy/torch expose it."""

    def __init__(self, ptr, shape, typestr, strides=None, stream=None):
        self.__cuda_array_interface__ = {
            "data": (ptr, False), "shape": shape, "typestr": typestr, "strides": strides, "stream": stream,
            "version": 3,
        }


def test_cuda_array_interface_parsing():
    view = da.device_array(_Producer(0x7F0000001000, (1, 3, 4, 8), "<f4", stream=5))
    assert view.ptr == 0x7F0000001000 and view.shape == (1, 3, 4, 8) and view.dtype == np.float32
    assert view.stream == 5 and view.on_gpu
    assert da.device_array(_Producer(16, (4, 4), "|u1", strides=(4, 1))).dtype == np.uint8
    assert da.device_array(_Producer(16, (4,), "<f4", stream=None)).stream is None  # v3: nothing to wait for
    legacy = _Producer(16, (4,), "<f4")
    del legacy.__cuda_array_interface__["stream"]  # a version-2 producer such as torch
    assert da.device_array(legacy).stream == 1
    with pytest.raises(UserError, match="C-contiguous"):
        da.device_array(_Producer(16, (4, 4), "<f4", strides=(4, 16)))


@pytest.mark.skipif(GPU_PROBLEM is None, reason="this machine has a GPU")
def test_without_a_gpu_the_reason_is_one_line():
    assert cb.gpu_info() is None
    with pytest.raises(cb.CudaUnavailable) as info:
        cb.require_gpu()
    assert "\n" not in str(info.value)


# --- on a GPU -----------------------------------------------------------------------------


@pytest.mark.gpu
@needs_gpu
def test_gpu_info():
    info = cb.require_gpu(0)
    assert info["name"] and info["compute_capability"].count(".") == 1 and info["total_memory_mb"] > 0
    assert info["cuda_driver"] != "none"


@pytest.mark.gpu
@needs_gpu
def test_pinned_round_trip_on_a_stream_with_events():
    data = np.random.default_rng(0).standard_normal((2, 3, 64, 128)).astype(np.float32)
    stream, start, mid, end = cb.Stream(), cb.Event(), cb.Event(), cb.Event()
    pinned_in, pinned_out = cb.PinnedBuffer(data.nbytes), cb.PinnedBuffer(data.nbytes)
    dev_a, dev_b = cb.DeviceBuffer(data.nbytes), cb.DeviceBuffer(data.nbytes)
    with cb.closing_all(pinned_in, pinned_out, dev_a, dev_b, start, mid, end, stream):
        np.copyto(pinned_in.view(data.shape, data.dtype), data)
        start.record(stream)
        cb.copy_htod_async(dev_a.ptr, pinned_in.ptr, data.nbytes, stream)
        cb.copy_dtod_async(dev_b.ptr, dev_a.ptr, data.nbytes, stream)
        mid.record(stream)
        cb.copy_dtoh_async(pinned_out.ptr, dev_b.ptr, data.nbytes, stream)
        end.record(stream)
        stream.synchronize()
        assert np.array_equal(pinned_out.view(data.shape, data.dtype), data)
        assert mid.seconds_since(start) >= 0 and end.seconds_since(mid) >= 0
        with pytest.raises(ValueError):
            pinned_in.view((data.size + 1,), np.float32)
    assert dev_a.ptr == 0 and pinned_in.ptr == 0  # released


@pytest.mark.gpu
@needs_gpu
def test_cuda_graph_replays_captured_copies():
    src = np.arange(1024, dtype=np.int32)
    stream = cb.Stream()
    host_in, host_out = cb.PinnedBuffer(src.nbytes), cb.PinnedBuffer(src.nbytes)
    dev = cb.DeviceBuffer(src.nbytes)
    graph = None
    try:
        def enqueue():
            cb.copy_htod_async(dev.ptr, host_in.ptr, src.nbytes, stream)
            cb.copy_dtoh_async(host_out.ptr, dev.ptr, src.nbytes, stream)

        graph = cb.CudaGraph(stream, enqueue)
        for k in (1, 7):
            np.copyto(host_in.view(src.shape, src.dtype), src * k)
            graph.launch(stream)
            stream.synchronize()
            assert np.array_equal(host_out.view(src.shape, src.dtype), src * k)
    finally:
        with cb.closing_all(graph, host_in, host_out, dev, stream):
            pass


@pytest.mark.gpu
@needs_gpu
def test_failed_capture_is_ended_and_destroyed():
    """trtexec's endCaptureOnError: the error surfaces, the stream leaves capture mode and works."""
    src = np.arange(256, dtype=np.int32)
    stream = cb.Stream()
    host, dev = cb.PinnedBuffer(src.nbytes), cb.DeviceBuffer(src.nbytes)
    try:
        def enqueue():
            cb.copy_htod_async(dev.ptr, host.ptr, src.nbytes, stream)
            raise cb.CudaError("TensorRT execution failed")

        with pytest.raises(cb.CudaError, match="TensorRT execution failed"):
            cb.CudaGraph(stream, enqueue)
        status = cb._call("cudaStreamIsCapturing", stream.handle)
        assert status == cb.cudart().cudaStreamCaptureStatus.cudaStreamCaptureStatusNone
        np.copyto(host.view(src.shape, src.dtype), src)
        cb.copy_htod_async(dev.ptr, host.ptr, src.nbytes, stream)
        stream.synchronize()
    finally:
        with cb.closing_all(host, dev, stream):
            pass


@pytest.mark.gpu
@needs_gpu
def test_device_pointers_from_torch():
    torch = importable("torch")
    if torch is None or not torch.cuda.is_available():
        pytest.skip("needs torch with CUDA")
    t = torch.arange(12, dtype=torch.float32, device="cuda").reshape(3, 4) * 2  # queued on torch's stream
    expected = t.cpu().numpy()
    via_cai = da._from_cuda_array_interface(t)
    assert via_cai.ptr == t.data_ptr() and via_cai.stream == 1  # v2 producer: wait on the legacy stream
    _check_copy_back(t, expected)
    _check_copy_back(via_cai, expected)


@pytest.mark.gpu
@needs_gpu
def test_device_pointers_from_cupy():
    cupy = importable("cupy")
    if cupy is None:
        pytest.skip("needs cupy")
    a = cupy.arange(12, dtype=cupy.float32).reshape(3, 4) * 2
    expected = cupy.asnumpy(a)
    assert da.device_array(a).ptr == a.data.ptr
    assert da._from_cuda_array_interface(a).ptr == a.data.ptr
    _check_copy_back(a, expected)


def _check_copy_back(obj, expected: np.ndarray) -> None:
    """Read ``obj`` on our own non-blocking stream, ordered after its producer's work."""
    stream, producer = cb.Stream(), cb.Event()
    with cb.closing_all(producer, stream):
        view = obj if isinstance(obj, da.DeviceArray) else da.device_array(obj, stream.ptr)
        assert view.on_gpu and view.shape == expected.shape and view.dtype == expected.dtype
        host = cb.PinnedBuffer(view.nbytes)
        with cb.closing_all(host):
            if view.stream:
                stream.wait_for(view.stream, producer)
            cb.copy_dtoh_async(host.ptr, view.ptr, view.nbytes, stream)
            stream.synchronize()
            assert np.array_equal(host.view(view.shape, view.dtype), expected)


class _CaptureRuntime:
    """cudart as far as CudaGraph's capture calls go; the capture ends invalidated."""

    class cudaError_t:  # noqa: N801 - cuda-python's names
        cudaSuccess, cudaErrorStreamCaptureInvalidated = 0, 901

    class cudaStreamCaptureMode:  # noqa: N801
        cudaStreamCaptureModeThreadLocal = 1

    def __init__(self):
        self.calls = []

    def __getattr__(self, name):
        def call(*args):
            self.calls.append(name)
            if name == "cudaStreamEndCapture":
                return self.cudaError_t.cudaErrorStreamCaptureInvalidated, None
            if name in ("cudaGetErrorName", "cudaGetErrorString"):
                return self.cudaError_t.cudaSuccess, b"cudaErrorStreamCaptureInvalidated"
            return (self.cudaError_t.cudaSuccess,)

        return call


def test_invalidated_capture_clears_the_sticky_error(monkeypatch):
    """A capture that ends in error after a successful enqueue: the error is read off the
    thread (cudaGetLastError, as trtexec does) before it is raised."""
    rt = _CaptureRuntime()
    monkeypatch.setattr(cb, "_RT", rt)
    stream = cb.Stream.__new__(cb.Stream)
    stream.handle = 7
    with pytest.raises(cb.CudaError, match="cudaStreamEndCapture failed: cudaErrorStreamCaptureInvalidated"):
        cb.CudaGraph(stream, lambda: None)
    assert rt.calls[0] == "cudaStreamBeginCapture" and "cudaGetLastError" in rt.calls
    assert rt.calls.index("cudaGetLastError") > rt.calls.index("cudaStreamEndCapture")
    assert "cudaGraphInstantiate" not in rt.calls


@pytest.mark.parametrize("device", [0, 1])
def test_every_inference_call_selects_its_device(monkeypatch, device):
    """cudaSetDevice runs on each call, for device 0 too: the current device is per thread
    and may have been switched by another backend or library."""
    from bisenet_deploy.trt import runner

    calls = []

    class Stop(Exception):
        pass

    def stop(*args):
        raise Stop

    monkeypatch.setattr(runner, "_call", lambda name, *args: calls.append((name, *args)))
    monkeypatch.setattr(runner, "device_array", stop)
    backend = runner.TensorRTBackend.__new__(runner.TensorRTBackend)
    backend._device_index, backend._stream = device, types.SimpleNamespace(ptr=0)
    with pytest.raises(Stop):
        backend.infer_impl(np.zeros((1, 3, 8, 8), np.float32))
    assert calls == [("cudaSetDevice", device)]
