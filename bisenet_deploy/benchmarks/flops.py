"""Floating-point work of a model, counted from its ONNX graph.

Convolutions and matrix products dominate a segmentation network; each multiply-accumulate
counts as 2 FLOPs. Shapes come from ONNX shape inference with the dynamic input axes pinned
to the artifact's own size. Quantized graphs are counted the same way (Q/DQ around a Conv is
still that Conv's work; QLinearConv/ConvInteger too), so INT8 and FP32 rows share one figure.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ArtifactError

# op type -> (index of the weight input, output of interest is output 0)
_CONV_WEIGHT = {"Conv": 1, "ConvInteger": 1, "QLinearConv": 3, "ConvTranspose": 1}
_MATMUL_INPUTS = {"MatMul": (0, 1), "MatMulInteger": (0, 1), "QLinearMatMul": (0, 3), "Gemm": (0, 1)}


def _dims(value_type: Any) -> tuple[int, ...] | None:
    shape = value_type.tensor_type.shape
    dims = []
    for d in shape.dim:
        if not d.HasField("dim_value"):
            return None
        dims.append(int(d.dim_value))
    return tuple(dims)


def _pin_inputs(proto: Any, shape: tuple[int, ...] | None) -> None:
    """Give the (single) image input concrete dimensions."""
    initializers = {t.name for t in proto.graph.initializer}
    inputs = [i for i in proto.graph.input if i.name not in initializers]
    if shape is None or not inputs:
        return
    dims = inputs[0].type.tensor_type.shape.dim
    if len(dims) != len(shape):
        raise ArtifactError(f"cannot count FLOPs: input rank {len(dims)} does not match shape {shape}")
    for d, value in zip(dims, shape):
        if d.HasField("dim_value") and d.dim_value != value:
            fixed = "x".join(str(x.dim_value) if x.HasField("dim_value") else "?" for x in dims)
            raise ArtifactError(f"cannot count FLOPs at shape {shape}: the graph's input is fixed to {fixed}")
        d.Clear()
        d.dim_value = int(value)


def _shapes(proto: Any) -> dict[str, tuple[int, ...]]:
    import onnx

    inferred = onnx.shape_inference.infer_shapes(proto, data_prop=True)
    shapes: dict[str, tuple[int, ...]] = {}
    graph = inferred.graph
    for value in list(graph.input) + list(graph.value_info) + list(graph.output):
        dims = _dims(value.type)
        if dims is not None:
            shapes[value.name] = dims
    for tensor in graph.initializer:
        shapes[tensor.name] = tuple(int(d) for d in tensor.dims)
    return shapes


def count_macs(proto: Any, input_shape: tuple[int, ...] | None = None) -> tuple[int, list[str]]:
    """Multiply-accumulates of Conv/MatMul/Gemm nodes; returns (MACs, nodes not counted)."""
    _pin_inputs(proto, input_shape)
    shapes = _shapes(proto)
    macs = 0
    unknown: list[str] = []
    for node in proto.graph.node:
        op = node.op_type
        if op in _CONV_WEIGHT:
            weight = shapes.get(node.input[_CONV_WEIGHT[op]])
            out = shapes.get(node.output[0])
            inp = shapes.get(node.input[0])
            if weight is None or out is None or (op == "ConvTranspose" and inp is None):
                unknown.append(node.name or op)
                continue
            # Conv: every output pixel of every output channel sums Cin/groups x kernel taps.
            # ConvTranspose: every input pixel scatters its Cin x Cout/groups x kernel taps.
            spatial = inp[2:] if op == "ConvTranspose" else out[2:]
            macs += out[0] * int(np.prod(spatial, dtype=np.int64)) * int(np.prod(weight, dtype=np.int64))
        elif op in _MATMUL_INPUTS:
            ia, ib = _MATMUL_INPUTS[op]
            a, b = shapes.get(node.input[ia]), shapes.get(node.input[ib])
            if a is None or b is None:
                unknown.append(node.name or op)
                continue
            if op == "Gemm":
                trans_a = any(x.name == "transA" and x.i for x in node.attribute)
                m, k = (a[1], a[0]) if trans_a else (a[0], a[1])
                n = b[0] if any(x.name == "transB" and x.i for x in node.attribute) else b[1]
                macs += m * k * n
            else:
                a2 = a if len(a) > 1 else (1,) + a
                b2 = b if len(b) > 1 else b + (1,)
                batch = np.broadcast_shapes(a2[:-2], b2[:-2])
                macs += int(np.prod(batch, dtype=np.int64)) * a2[-2] * a2[-1] * b2[-1]
    return int(macs), unknown


def onnx_gflop(path: str | Path, input_shape: tuple[int, ...]) -> float:
    """GFLOP (2 x MACs / 1e9) of one call of the ONNX model on ``input_shape``.

    ``input_shape`` is the full input shape (e.g. (1, 3, 512, 512)); it must fit the
    graph's fixed axes. Raises ``ArtifactError`` when some Conv/MatMul shapes stay unknown.
    """
    import onnx

    proto = onnx.load(str(path), load_external_data=False)
    macs, unknown = count_macs(proto, tuple(input_shape))
    if unknown:
        raise ArtifactError(f"cannot count FLOPs of '{path}': shapes unknown at {', '.join(unknown[:3])}")
    return 2.0 * macs / 1e9
