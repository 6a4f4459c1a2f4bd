"""ONNX graph plumbing shared by the FP16 and INT8 passes (onnx + numpy, no torch).

The one idea here is the **network body**: the nodes between the network's input tensor and
its logits. In-graph preprocessing (uint8 frames -> Cast -> channel swap -> Transpose ->
Mul/Add) and postprocessing (ArgMax / threshold -> Cast to int32) are outside it, so both
passes leave them in FP32 exactly as exported.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import TensorProto, numpy_helper

from ..errors import ExportError

#: Ops the exporter emits for in-graph preprocessing (fused uint8 input).
PREPROCESS_OPS = frozenset({"Cast", "Gather", "Transpose", "Mul", "Add", "Sub", "Div"})
#: Ops the exporter emits after the logits (in-graph argmax or binary threshold).
POSTPROCESS_OPS = frozenset({"ArgMax", "Cast", "Greater", "Gather", "Slice", "Squeeze", "Unsqueeze", "Identity"})


@dataclass
class GraphIndex:
    """Who produces and who consumes each tensor of a graph, and its constants."""

    graph: onnx.GraphProto
    producer: dict[str, onnx.NodeProto] = field(default_factory=dict)
    consumers: dict[str, list[onnx.NodeProto]] = field(default_factory=dict)
    initializers: dict[str, TensorProto] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.initializers = {i.name: i for i in self.graph.initializer}
        for node in self.graph.node:
            for name in node.output:
                self.producer[name] = node
            for name in node.input:
                if name:
                    self.consumers.setdefault(name, []).append(node)

    def is_constant(self, name: str) -> bool:
        node = self.producer.get(name)
        return name in self.initializers or (node is not None and node.op_type == "Constant")

    def array(self, name: str) -> np.ndarray:
        return numpy_helper.to_array(self.initializers[name])

    @property
    def output_names(self) -> list[str]:
        return [o.name for o in self.graph.output]


@dataclass(frozen=True)
class NetworkBody:
    """The network proper: its input tensor, its logits tensor and the nodes in between."""

    input: str
    logits: str
    nodes: frozenset[str]  # node names


def ensure_node_names(graph: onnx.GraphProto) -> None:
    """Give every node a unique name (the passes refer to nodes by name)."""
    seen: set[str] = set()
    for i, node in enumerate(graph.node):
        name = node.name or f"{node.op_type}_{i}"
        while name in seen:
            name = f"{name}_{i}"
        node.name = name
        seen.add(name)


def _first_conv(graph: onnx.GraphProto) -> onnx.NodeProto:
    for node in graph.node:
        if node.op_type in ("Conv", "ConvTranspose"):
            return node
    raise ExportError("the ONNX graph has no convolution; is it a segmentation network?")


def network_body(graph: onnx.GraphProto, index: GraphIndex | None = None) -> NetworkBody:
    """Find the network body (see module docstring); node names must be set."""
    index = index or GraphIndex(graph)
    start = _first_conv(graph).input[0]
    # The logits: walk back from the graph output over the postprocessing ops.
    logits = graph.output[0].name
    while logits in index.producer and index.producer[logits].op_type in POSTPROCESS_OPS:
        inputs = [t for t in index.producer[logits].input if t and not index.is_constant(t)]
        if len(inputs) != 1:
            break
        logits = inputs[0]
    forward = _reachable(start, index, downstream=True)
    backward = _reachable(logits, index, downstream=False)
    nodes = frozenset(n.name for n in graph.node if n.name in forward and n.name in backward)
    if not nodes:
        raise ExportError("cannot find the network between the input and the logits in this ONNX graph")
    return NetworkBody(input=start, logits=logits, nodes=nodes)


def _reachable(tensor: str, index: GraphIndex, downstream: bool) -> set[str]:
    """Names of the nodes reachable from ``tensor`` (following data flow either way)."""
    seen: set[str] = set()
    stack = [tensor]
    visited_tensors: set[str] = set()
    while stack:
        name = stack.pop()
        if name in visited_tensors:
            continue
        visited_tensors.add(name)
        if downstream:
            nodes = index.consumers.get(name, [])
        else:
            nodes = [index.producer[name]] if name in index.producer else []
        for node in nodes:
            if node.name in seen:
                continue
            seen.add(node.name)
            stack.extend(node.output if downstream else [t for t in node.input if t])
    return seen


def toposort(graph: onnx.GraphProto) -> None:
    """Reorder nodes so that every node comes after the producers of its inputs (stable)."""
    available = {i.name for i in graph.input} | {i.name for i in graph.initializer} | {""}
    pending = list(graph.node)
    ordered: list[onnx.NodeProto] = []
    while pending:
        remaining = []
        for node in pending:
            if all(t in available for t in node.input):
                ordered.append(node)
                available.update(node.output)
            else:
                remaining.append(node)
        if len(remaining) == len(pending):
            raise ExportError(f"graph has a cycle or a missing input near node '{remaining[0].name}'")
        pending = remaining
    del graph.node[:]
    graph.node.extend(ordered)


def prune_initializers(graph: onnx.GraphProto) -> None:
    """Drop initializers no node uses any more (e.g. FP32 weights replaced by INT8 ones)."""
    used = {t for node in graph.node for t in node.input} | {o.name for o in graph.output}
    keep = [i for i in graph.initializer if i.name in used]
    del graph.initializer[:]
    graph.initializer.extend(keep)


def _inferred(model: onnx.ModelProto) -> onnx.ModelProto:
    """Shape inference on a copy whose large weights are declared, not stored: inference
    only needs their shapes, and serializing tens of MB of weights dominated its cost. Small
    constants (shapes, scales, sizes) keep their values, which inference may need."""
    light = onnx.ModelProto()
    light.CopyFrom(model)
    graph = light.graph
    kept, declared = [], []
    for init in graph.initializer:
        if len(init.raw_data) > 4096:
            declared.append(onnx.helper.make_tensor_value_info(init.name, init.data_type, list(init.dims)))
        else:
            kept.append(init)
    del graph.initializer[:]
    graph.initializer.extend(kept)
    graph.input.extend(declared)
    return onnx.shape_inference.infer_shapes(light)


def _value_infos(model: onnx.ModelProto) -> list[onnx.ValueInfoProto]:
    inferred = _inferred(model)
    return list(inferred.graph.value_info) + list(inferred.graph.input) + list(inferred.graph.output)


def tensor_types(model: onnx.ModelProto) -> dict[str, int]:
    """Element type of every tensor that shape inference can type."""
    types = {vi.name: vi.type.tensor_type.elem_type for vi in _value_infos(model) if vi.type.HasField("tensor_type")}
    for init in model.graph.initializer:
        types[init.name] = init.data_type
    return types


def tensor_shapes(model: onnx.ModelProto) -> dict[str, tuple[int | None, ...]]:
    """Shape of every tensor shape inference can tell (``None`` for unknown dimensions)."""
    shapes = {}
    for vi in _value_infos(model):
        if vi.type.HasField("tensor_type") and vi.type.tensor_type.HasField("shape"):
            dims = vi.type.tensor_type.shape.dim
            shapes[vi.name] = tuple(d.dim_value if d.HasField("dim_value") else None for d in dims)
    return shapes


def graph_sha256(model: onnx.ModelProto) -> str:
    """Hash of the graph itself (nodes, weights, I/O), not of metadata or doc strings.

    Used to key the calibration cache: re-exporting the same checkpoint gives the same hash
    even though tool versions in the metadata may differ.
    """
    return hashlib.sha256(model.graph.SerializeToString(deterministic=True)).hexdigest()


def with_outputs(model: onnx.ModelProto, names: Iterable[str]) -> onnx.ModelProto:
    """A copy of ``model`` that also returns the given intermediate float32 tensors."""
    out = onnx.ModelProto()
    out.CopyFrom(model)
    present = {o.name for o in out.graph.output}
    for name in names:
        if name not in present:
            out.graph.output.append(onnx.helper.make_tensor_value_info(name, TensorProto.FLOAT, None))
            present.add(name)
    return out


def unique_name(base: str, taken: set[str]) -> str:
    name, i = base, 1
    while name in taken:
        i += 1
        name = f"{base}_{i}"
    taken.add(name)
    return name


def all_names(graph: onnx.GraphProto) -> set[str]:
    """Every tensor and node name in use (to create new ones without clashes)."""
    names = {i.name for i in graph.initializer} | {i.name for i in graph.input}
    for node in graph.node:
        names.update(node.output)
        names.update(t for t in node.input if t)
        names.add(node.name)
    return names
