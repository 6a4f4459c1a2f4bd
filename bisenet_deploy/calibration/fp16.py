"""FP16: the network body in half precision, FP32 at its boundary (ONNX -> ONNX).

The graph keeps its FP32 input and output (and its in-graph preprocessing and ArgMax, which
are outside the network body): one Cast to FP16 where the body starts, one Cast back to
FP32 where a tensor leaves it, and the graph output keeps its name. Weights become FP16.
Inputs that ONNX requires in FP32 (Resize ``scales``) stay FP32.

Which nodes stay FP32 is decided by measurement, not by a fixed list: calibration records
the largest |value| each node produces in FP32, and a node whose output comes within a
factor of two of the FP16 maximum (65504) is kept in FP32 (with its reason in the report).
Trained BiSeNets stay far below that; the fidelity report then shows what FP16 costs.
Users may keep more nodes in FP32 by op type or node name (``--fp16-keep``).
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from ..errors import ExportError
from .graph import (
    GraphIndex,
    all_names,
    ensure_node_names,
    network_body,
    prune_initializers,
    tensor_types,
    toposort,
    unique_name,
)

FP16_MAX = 65504.0
#: A node is kept in FP32 when its FP32 output reaches this fraction of the FP16 range:
#: calibration data rarely shows the true maximum, so leave headroom.
OVERFLOW_FRACTION = 0.5
#: (op, input index) that ONNX only accepts in FP32.
FP32_ONLY_INPUTS = frozenset({("Resize", 1), ("Resize", 2), ("Upsample", 1)})


def body_float_tensors(model: onnx.ModelProto) -> list[str]:
    """FP32 tensors produced inside the network body (what the overflow check observes)."""
    graph = model.graph
    ensure_node_names(graph)
    body = network_body(graph)
    types = tensor_types(model)
    return sorted(
        t for n in graph.node if n.name in body.nodes and n.op_type != "Constant"
        for t in n.output if types.get(t) == TensorProto.FLOAT
    )


def overflow_nodes(model: onnx.ModelProto, absmax: dict[str, float]) -> dict[str, str]:
    """Body nodes whose measured FP32 output would not fit FP16 (with headroom) -> why."""
    limit = FP16_MAX * OVERFLOW_FRACTION
    keep = {}
    for node in model.graph.node:
        peak = max((absmax.get(t, 0.0) for t in node.output), default=0.0)
        if peak > limit:
            keep[node.name] = f"output reaches |{peak:.4g}| in FP32 on the calibration data (FP16 max {FP16_MAX:g})"
    return keep


def nodes_matching(model: onnx.ModelProto, patterns: Iterable[str]) -> dict[str, str]:
    """Nodes whose op type or name is in ``patterns`` (``--fp16-keep``) -> why."""
    patterns = set(patterns)
    return {n.name: "kept in FP32 on request" for n in model.graph.node if n.op_type in patterns or n.name in patterns}


def _to_fp16(tensor: TensorProto, name: str) -> TensorProto:
    array = numpy_helper.to_array(tensor)
    if np.any(np.abs(array) > FP16_MAX):
        raise ExportError(f"constant '{tensor.name}' has values beyond the FP16 range; keep its node in FP32")
    return numpy_helper.from_array(array.astype(np.float16), name)


def convert_fp16(model: onnx.ModelProto, keep_fp32: Iterable[str] = ()) -> onnx.ModelProto:
    """A new model whose network body runs in FP16, except the nodes in ``keep_fp32``."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    ensure_node_names(graph)
    index = GraphIndex(graph)
    body = network_body(graph, index)
    types = tensor_types(out)
    keep = set(keep_fp32)
    half_nodes = {n.name for n in graph.node if n.name in body.nodes and n.name not in keep}
    names = all_names(graph)
    half: dict[str, str] = {}  # fp32 tensor name -> its fp16 version
    produced_half: set[str] = set()  # tensors whose producer now writes FP16
    new_nodes: list[onnx.NodeProto] = []

    def is_float(name: str) -> bool:
        return types.get(name) == TensorProto.FLOAT

    # Outputs of converted nodes become FP16 under new names; the old name, where still
    # needed, is produced by a Cast back to FP32 below.
    for node in graph.node:
        if node.name not in half_nodes:
            continue
        _retype_attributes(node)
        for slot, name in enumerate(node.output):
            if is_float(name):
                half[name] = unique_name(f"{name}_fp16", names)
                node.output[slot] = half[name]
                produced_half.add(name)

    def fp16_version(name: str) -> str:
        if name in half:
            return half[name]
        if name in index.initializers:
            half[name] = unique_name(f"{name}_fp16", names)
            graph.initializer.append(_to_fp16(index.initializers[name], half[name]))
        else:
            half[name] = unique_name(f"{name}_fp16", names)
            cast = unique_name(f"{name}_to_fp16", names)
            new_nodes.append(helper.make_node("Cast", [name], [half[name]], name=cast, to=TensorProto.FLOAT16))
        return half[name]

    casts_back: set[str] = set()

    def fp32_version(name: str) -> str:
        if name in produced_half and name not in casts_back:
            casts_back.add(name)
            cast = unique_name(f"{name}_to_fp32", names)
            new_nodes.append(helper.make_node("Cast", [half[name]], [name], name=cast, to=TensorProto.FLOAT))
        return name

    for node in list(graph.node):
        for slot, name in enumerate(node.input):
            if not name or not is_float(name):
                continue
            wants_half = node.name in half_nodes and (node.op_type, slot) not in FP32_ONLY_INPUTS
            node.input[slot] = fp16_version(name) if wants_half else fp32_version(name)
    for output in graph.output:
        if is_float(output.name):
            fp32_version(output.name)

    graph.node.extend(new_nodes)
    toposort(graph)
    prune_initializers(graph)
    del graph.value_info[:]
    try:
        out = onnx.shape_inference.infer_shapes(out, check_type=True, strict_mode=True)
        onnx.checker.check_model(out, full_check=True)
    except Exception as exc:  # noqa: BLE001 - the checker raises several types
        raise ExportError(f"FP16 model fails onnx.checker: {str(exc).strip().splitlines()[0]}") from exc
    return out


def _retype_attributes(node: onnx.NodeProto) -> None:
    """Attributes that carry an FP32 type or value inside a converted node."""
    for attr in node.attribute:
        if node.op_type == "Cast" and attr.name == "to" and attr.i == TensorProto.FLOAT:
            attr.i = TensorProto.FLOAT16
        elif node.op_type in ("Constant", "ConstantOfShape") and attr.name == "value" and (
            attr.t.data_type == TensorProto.FLOAT
        ):
            attr.t.CopyFrom(_to_fp16(attr.t, attr.t.name))


def fp16_summary(model: onnx.ModelProto) -> dict:
    """Counts for reports: FP16 and FP32 nodes in the converted graph."""
    types = tensor_types(model)
    nodes = [n for n in model.graph.node if n.op_type != "Cast"]
    half = sum(1 for n in nodes if any(types.get(t) == TensorProto.FLOAT16 for t in n.output))
    casts = sum(1 for n in model.graph.node if n.op_type == "Cast")
    return {"fp16_node_count": half, "cast_count": casts}
