"""Which TensorRT can build here, and whether engines can run here (for skip reasons)."""

from __future__ import annotations

import importlib

import pytest


def importable(name: str):
    try:
        return importlib.import_module(name)
    except Exception:  # noqa: BLE001 - a broken install counts as absent
        return None


def gpu_problem() -> str | None:
    from bisenet_deploy.trt.cuda_buffers import gpu_problem as problem

    return problem(0)


def installed_flavours() -> list:
    """Every TensorRT Python package importable here (the shims are checked against each)."""
    return [m for m in (importable("tensorrt"), importable("tensorrt_rtx")) if m is not None]


def builder_module():
    """The TensorRT to build with here: the full TensorRT where it can build (it needs a GPU),
    else TensorRT-RTX (builds without one). The full TensorRT comes first so that a GPU
    machine with both installed checks the builder against the TensorRT users deploy with."""
    trt = importable("tensorrt")
    if trt is not None and gpu_problem() is None:
        return trt
    rtx = importable("tensorrt_rtx")
    if rtx is not None:
        return rtx
    pytest.skip("needs tensorrt_rtx (builds without a GPU: pip install 'bisenet-deploy[rtx]') or TensorRT with a GPU")


def runtime_module():
    """A TensorRT that can run engines here (needs a GPU and cuda-python)."""
    problem = gpu_problem()
    if problem is not None:
        pytest.skip(f"needs a CUDA GPU: {problem}")
    trt = importable("tensorrt")
    if trt is not None:
        return trt
    rtx = importable("tensorrt_rtx")
    if rtx is None:
        pytest.skip("needs TensorRT (pip install tensorrt, or JetPack) or TensorRT-RTX")
    from bisenet_deploy.trt.cuda_buffers import gpu_info

    cc = gpu_info(0)["compute_capability"]
    if "SM" + cc.replace(".", "") not in rtx.ComputeCapability.__members__:
        pytest.skip(f"TensorRT-RTX does not target this GPU (compute capability {cc}); install TensorRT")
    return rtx
