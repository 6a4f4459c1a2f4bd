"""Parse and build an ONNX model with NVIDIA TensorRT-RTX (no GPU needed).

TensorRT-RTX's builder runs ahead of time for a named compute capability, so CI can check
on a CPU-only machine that every ONNX we emit parses and builds, strongly typed (the
precision comes from the ONNX, as on TensorRT 10/11). Its ONNX parser rejects the Q/DQ
patterns TensorRT rejects (non-zero zero points, int32 bias DequantizeLinear, ...).
A deliberately small test helper, not the project's engine builder (``export/tensorrt.py``).
"""

from __future__ import annotations

from pathlib import Path

import onnx
import pytest

from bisenet_deploy.spec import METADATA_KEY, ModelSpec

trt = pytest.importorskip("tensorrt_rtx", reason="needs NVIDIA TensorRT-RTX (pip install 'bisenet-deploy[rtx]')")


class BuildError(AssertionError):
    pass


def _profile_shapes(path: Path, shape: tuple[int, ...]) -> tuple[tuple, tuple, tuple]:
    """min / opt / max shapes for a dynamic input: batch 1..2, sides 32..2x the export size."""
    model = onnx.load(str(path), load_external_data=False)
    spec = ModelSpec.from_json({p.key: p.value for p in model.metadata_props}[METADATA_KEY])
    h, w = spec.input_size
    nhwc = spec.input_layout == "NHWC_UINT8"
    axes = {"batch": 0, "height": 1 if nhwc else 2, "width": 2 if nhwc else 3}
    sizes = {"batch": (1, 1, 2), "height": (32, h, 2 * h), "width": (32, w, 2 * w)}
    shapes = [list(shape), list(shape), list(shape)]
    for name, axis in axes.items():
        if shape[axis] == -1:
            for k in range(3):
                shapes[k][axis] = sizes[name][k]
    return tuple(map(tuple, shapes))


def build_with_tensorrt_rtx(path: str | Path, compute_capability: str = "SM89") -> int:
    """Parse and build ``path``; returns the serialized engine's size in bytes."""
    path = Path(path)
    logger = trt.Logger(trt.Logger.ERROR)
    builder = trt.Builder(logger)
    network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(path)):
        errors = "; ".join(str(parser.get_error(i)).splitlines()[0] for i in range(parser.num_errors))
        raise BuildError(f"TensorRT-RTX cannot parse {path.name}: {errors}")
    config = builder.create_builder_config()
    config.num_compute_capabilities = 1
    config.set_compute_capability(getattr(trt.ComputeCapability, compute_capability), 0)
    tensor = network.get_input(0)
    shape = tuple(tensor.shape)
    if -1 in shape:
        profile = builder.create_optimization_profile()
        profile.set_shape(tensor.name, *_profile_shapes(path, shape))
        config.add_optimization_profile(profile)
    engine = builder.build_serialized_network(network, config)
    if engine is None:
        raise BuildError(f"TensorRT-RTX could not build {path.name}")
    return engine.nbytes
