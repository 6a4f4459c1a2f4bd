"""Versions of the tools that made or run an artifact (read without importing them)."""

from __future__ import annotations

import platform
from importlib import metadata

from . import __version__

_DISTRIBUTIONS = {
    "numpy": ("numpy",),
    "opencv": ("opencv-python-headless", "opencv-python", "opencv-contrib-python"),
    "torch": ("torch",),
    "torchvision": ("torchvision",),
    "onnx": ("onnx",),
    "onnxslim": ("onnxslim",),
    "onnxruntime": ("onnxruntime", "onnxruntime-gpu", "onnxruntime-openvino"),
    "openvino": ("openvino",),
    "tensorrt": ("tensorrt", "tensorrt-cu12", "tensorrt-cu13", "tensorrt_cu12", "tensorrt_cu13"),
    "tensorrt_rtx": ("tensorrt-rtx-cu13", "tensorrt_rtx_cu13", "tensorrt-rtx"),
    "cuda-python": ("cuda-bindings", "cuda-python"),
}


def package_version(key: str) -> str | None:
    for dist in _DISTRIBUTIONS.get(key, (key,)):
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            continue
    return None


def tool_versions(*keys: str) -> dict[str, str]:
    """{tool: version} for the given keys (all known tools when none given), installed only."""
    out = {"bisenet_deploy": __version__, "python": platform.python_version()}
    for key in keys or tuple(_DISTRIBUTIONS):
        version = package_version(key)
        if version is not None:
            out[key] = version
    return out
