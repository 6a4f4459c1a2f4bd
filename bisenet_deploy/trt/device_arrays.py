"""Arrays already on the GPU (torch, cupy, numba, JAX ...): pointer, shape, dtype, stream.

Read through DLPack (preferred: the producer orders its pending work before our stream)
or the CUDA array interface, so the TensorRT backend can bind them without a host copy.
Pure ctypes and numpy: no CUDA call happens here.
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import UserError

_DL_CPU, _DL_CUDA, _DL_CUDA_HOST, _DL_CUDA_MANAGED = 1, 2, 3, 13

#: "The pointer must have at least 256-byte alignment." (NvInferRuntime.h, setTensorAddress,
#: 8.6.1 and 10.3.0); cudaMalloc returns 256-byte aligned memory, a view into it need not be.
TENSOR_ALIGNMENT = 256


def needs_copy(address: int, alignment: int = TENSOR_ALIGNMENT) -> bool:
    """Whether a device pointer must be copied into an aligned buffer before TensorRT binds it.

    A DLPack view or a slice of a batch of frames starts wherever its offset puts it;
    TensorRT's ``set_tensor_address`` refuses (returns False) an address that is not
    ``alignment``-aligned, and a null pointer is never a valid input.
    """
    if alignment <= 0 or alignment & (alignment - 1):
        raise ValueError(f"alignment must be a power of two, got {alignment}")
    return address == 0 or address % alignment != 0
_DL_TYPES = {0: "i", 1: "u", 2: "f", 6: "b"}  # DLDataTypeCode -> numpy kind


@dataclass
class DeviceArray:
    """A C-contiguous array in device (or, for DLPack from the CPU, host) memory."""

    ptr: int
    shape: tuple[int, ...]
    dtype: np.dtype
    device_type: int = _DL_CUDA
    stream: int | None = None  # producer stream to wait for (CUDA array interface)
    owner: Any = None  # keeps the producer's memory alive while we use the pointer

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * self.dtype.itemsize

    @property
    def on_gpu(self) -> bool:
        return self.device_type in (_DL_CUDA, _DL_CUDA_MANAGED)


def _c_contiguous(shape: tuple[int, ...], strides: tuple[int, ...] | None, itemsize: int) -> bool:
    if strides is None:
        return True
    expected = itemsize
    for dim, stride in zip(reversed(shape), reversed(strides)):
        if dim != 1 and stride != expected:
            return False
        expected *= dim
    return True


_LEGACY_STREAM = 1  # cudaStreamLegacy, the default stream torch and cupy use unless told otherwise


def _from_cuda_array_interface(obj: Any) -> DeviceArray:
    cai = obj.__cuda_array_interface__
    shape = tuple(int(d) for d in cai["shape"])
    dtype = np.dtype(cai["typestr"])
    strides = cai.get("strides")
    if not _c_contiguous(shape, tuple(strides) if strides is not None else None, dtype.itemsize):
        raise UserError("GPU input must be C-contiguous (call .contiguous() / cupy.ascontiguousarray first)")
    # Version 3 producers name the stream their work is on (None: nothing to wait for).
    # Version 2 producers (torch) say nothing: their work is on the legacy default stream,
    # which a non-blocking stream does not wait for by itself.
    stream = cai["stream"] if "stream" in cai else _LEGACY_STREAM
    return DeviceArray(int(cai["data"][0]), shape, dtype, _DL_CUDA, int(stream) if stream else None, obj)


class _DLDevice(ctypes.Structure):
    _fields_ = [("device_type", ctypes.c_int32), ("device_id", ctypes.c_int32)]


class _DLDataType(ctypes.Structure):
    _fields_ = [("code", ctypes.c_uint8), ("bits", ctypes.c_uint8), ("lanes", ctypes.c_uint16)]


class _DLTensor(ctypes.Structure):
    _fields_ = [
        ("data", ctypes.c_void_p),
        ("device", _DLDevice),
        ("ndim", ctypes.c_int32),
        ("dtype", _DLDataType),
        ("shape", ctypes.POINTER(ctypes.c_int64)),
        ("strides", ctypes.POINTER(ctypes.c_int64)),
        ("byte_offset", ctypes.c_uint64),
    ]


class _DLManagedTensor(ctypes.Structure):
    _fields_ = [("dl_tensor", _DLTensor), ("manager_ctx", ctypes.c_void_p), ("deleter", ctypes.c_void_p)]


class _DLManagedTensorVersioned(ctypes.Structure):
    _fields_ = [
        ("version_major", ctypes.c_uint32),
        ("version_minor", ctypes.c_uint32),
        ("manager_ctx", ctypes.c_void_p),
        ("deleter", ctypes.c_void_p),
        ("flags", ctypes.c_uint64),
        ("dl_tensor", _DLTensor),
    ]


# Private prototypes, so we never change ctypes.pythonapi's global argtypes.
_capsule_pointer = ctypes.PYFUNCTYPE(ctypes.c_void_p, ctypes.py_object, ctypes.c_char_p)(
    ("PyCapsule_GetPointer", ctypes.pythonapi)
)
_capsule_name = ctypes.PYFUNCTYPE(ctypes.c_char_p, ctypes.py_object)(("PyCapsule_GetName", ctypes.pythonapi))


def _dl_tensor(capsule: Any) -> _DLTensor:
    name = _capsule_name(capsule)
    if name == b"dltensor":
        return _DLManagedTensor.from_address(_capsule_pointer(capsule, name)).dl_tensor
    if name == b"dltensor_versioned":
        return _DLManagedTensorVersioned.from_address(_capsule_pointer(capsule, name)).dl_tensor
    raise UserError(f"not a DLPack capsule (name {name!r})")


def dlpack_array(obj: Any, stream: int | None = None) -> DeviceArray:
    """Read pointer, shape and dtype of ``obj`` through the DLPack protocol.

    ``stream`` is the consumer stream: a CUDA producer makes its pending work visible there
    (torch and cupy insert the wait themselves). The capsule is only read, not consumed, so
    its own destructor releases it; ``owner`` keeps the memory alive.
    """
    device_type = int(obj.__dlpack_device__()[0])
    try:
        capsule = obj.__dlpack__(stream=stream) if device_type in (_DL_CUDA, _DL_CUDA_MANAGED) else obj.__dlpack__()
    except (RuntimeError, BufferError, TypeError, ValueError) as exc:
        raise UserError(f"cannot read the GPU input through DLPack: {str(exc).strip().splitlines()[0]}") from None
    t = _dl_tensor(capsule)
    if t.dtype.lanes != 1 or t.dtype.code not in _DL_TYPES:
        raise UserError(f"unsupported DLPack dtype (code {t.dtype.code}, {t.dtype.bits} bits, {t.dtype.lanes} lanes)")
    dtype = np.dtype(f"{_DL_TYPES[t.dtype.code]}{t.dtype.bits // 8}") if t.dtype.code != 6 else np.dtype(bool)
    shape = tuple(int(t.shape[i]) for i in range(t.ndim))
    strides = tuple(int(t.strides[i]) * dtype.itemsize for i in range(t.ndim)) if t.strides else None
    if not _c_contiguous(shape, strides, dtype.itemsize):
        raise UserError("GPU input must be C-contiguous (make a contiguous copy first)")
    ptr = int(t.data or 0) + int(t.byte_offset)
    return DeviceArray(ptr, shape, dtype, int(t.device.device_type), None, obj)


def device_array(obj: Any, stream: int | None = None) -> DeviceArray | None:
    """A ``DeviceArray`` when ``obj`` lives on a CUDA device, else None (a host array).

    DLPack comes first: it lets the producer order its pending work before ``stream``.
    The CUDA array interface is the fallback (numba and older producers).
    """
    if isinstance(obj, np.ndarray):
        return None
    if hasattr(obj, "__dlpack__") and hasattr(obj, "__dlpack_device__"):
        if int(obj.__dlpack_device__()[0]) in (_DL_CUDA, _DL_CUDA_MANAGED):
            return dlpack_array(obj, stream)
    if hasattr(obj, "__cuda_array_interface__"):
        return _from_cuda_array_interface(obj)
    return None
