"""INT8 as explicit Q/DQ: placement, insertion and a structural check (ONNX -> ONNX).

What TensorRT requires (it rejects anything else while parsing): QuantizeLinear /
DequantizeLinear with int8 data and zero point 0 (symmetric), scales that are build-time
constants, weights quantized per output channel (axis 0), biases left in float (no int32
bias DQ). The opset stays what the model has (per-channel DQ needs >= 13).

Placement. TensorRT fuses Q/DQ into convolutions, residual adds and activations wherever it
finds them; onnxruntime on a CPU only runs an int8 kernel where a whole
``DQ -> op -> Q`` group is present, with one consumer per Q (on x86 it turns int8 Q/DQ pairs
into uint8 ones first, and only pairs whose Q has a single consumer). A TensorRT-only
placement (Q/DQ on convolution inputs) therefore runs *slower* than FP32 in onnxruntime: every
weight is dequantized on every run and the convolution stays float. The placement here
satisfies both:

* **int8 nodes**: every Conv in the network body (except those kept in FP32, below); every
  Relu / Add that is fed by an int8 node *and* leads through such nodes to an int8 Conv
  (the residual path of a ResNet block); and every MaxPool / Resize / Concat that leads to
  one. Their data inputs get Q/DQ.
* **one scale through movement ops**: MaxPool, Resize and Concat only move or interpolate
  values, so their inputs are quantized with the range of what they produce (followed
  through Resize -> Concat): the Concat in front of the feature-fusion convolution then
  costs no more than quantizing its output, which that convolution needs anyway, and
  onnxruntime runs them on int8 data without requantizing.
* **conv outputs**: the output of an int8 Conv with a single consumer gets Q/DQ too, so the
  group ``DQ -> Conv -> Q`` is complete (onnxruntime's QLinearConv). Where that consumer is
  a ReLU, the pair uses the ReLU output's range: negative values clip, which the ReLU would
  zero anyway, and the surviving values keep the resolution TensorRT's placement gives them.
* **one Q/DQ pair per consumer**: a tensor that feeds several int8 nodes gets its own pair
  for each. onnxruntime's common-subexpression pass merges identical pairs (and a merged Q
  has several consumers again), so the pairs of one tensor differ by one float32 ulp in
  scale (a relative 6e-8: numerically the same range).
* **Relu between Q/DQ pairs is written as LeakyRelu(alpha=0)**: identical values, but
  onnxruntime has an int8 kernel for LeakyRelu and none for Relu. TensorRT fuses either
  into the convolution.
* **kept in FP32**: convolutions on globally pooled (1 x 1) features (attention branches:
  int8 saves nothing there and costs accuracy) and the head convolution that computes the
  logits, also when an upsampling follows it (a Q on its output would round the class
  scores; without one onnxruntime cannot fuse it). In-graph preprocessing and ArgMax are outside the body and untouched.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from ..errors import ExportError
from ..export.metadata import opset_of
from .graph import (
    GraphIndex,
    all_names,
    ensure_node_names,
    network_body,
    prune_initializers,
    tensor_shapes,
    tensor_types,
    toposort,
    unique_name,
)
from .ranges import TensorRanges

#: Elementwise ops that run in INT8 between quantized convolutions (residual path).
ARITH_OPS = ("Relu", "Add")
#: Ops that only move or interpolate values: they share one scale with what they feed, so
#: they run on int8 data with no requantization (and onnxruntime drops their Q/DQ).
MOVEMENT_OPS = ("MaxPool", "Resize", "Concat")
MIN_QDQ_OPSET = 13  # per-channel DequantizeLinear (axis) needs opset 13
#: Weights use all 8 bits by default: exact for TensorRT, OpenVINO and onnxruntime on CPUs
#: with VNNI/AMX (int32 accumulation). ``weight_bits=7`` (-63..63) is for onnxruntime on x86
#: CPUs without VNNI (AVX2): its int8 convolution multiplies uint8 activations (int8 shifted
#: by 128) by int8 weights in pairs summed into int16 with saturation (VPMADDUBSW):
#: 255 * 127 * 2 overflows, 255 * 63 * 2 cannot. Measured on a randomized BiSeNet there:
#: 8-bit weights lost ~10 points of label agreement to saturation, 7-bit ones none; on the
#: trained demo model 99.51% (8-bit) vs 99.82% (7-bit). On a VNNI Xeon the demo model gave
#: 99.855% (8-bit) vs 99.836% (7-bit). onnxruntime warns when it opens an 8-bit model on a
#: CPU without VNNI (``runtime.backends.onnxruntime``).
DEFAULT_WEIGHT_BITS = 8


class Edge(NamedTuple):
    """One Q/DQ pair: on ``tensor`` where ``consumer`` reads it at input ``slot``, with the
    range calibration measured for ``range_of`` (the tensor itself, or what a movement op
    produces)."""

    tensor: str
    consumer: str
    slot: int
    range_of: str


@dataclass
class Int8Plan:
    """Which nodes run in INT8 and which tensor edges get a Q/DQ pair."""

    convs: list[str]
    glue: list[str]
    edges: list[Edge]
    fp32_nodes: dict[str, str] = field(default_factory=dict)  # conv kept in FP32 -> why

    @property
    def tensors(self) -> list[str]:
        """Tensors whose ranges calibration must measure."""
        return sorted({e.range_of for e in self.edges})


def quantizable_convs(model: onnx.ModelProto) -> list[str]:
    """Convolutions in the network body with constant 4-D weights, in graph order."""
    graph = model.graph
    ensure_node_names(graph)
    index = GraphIndex(graph)
    body = network_body(graph, index)
    return [
        n.name
        for n in graph.node
        if n.op_type == "Conv" and n.name in body.nodes and n.input[1] in index.initializers
        and len(index.initializers[n.input[1]].dims) == 4
    ]


def head_convs(graph: onnx.GraphProto, index: GraphIndex, logits: str) -> set[str]:
    """The convolutions that compute the logits: reached walking back from the logits
    tensor through anything but another convolution (e.g. the upsampling after a head)."""
    heads, stack, seen = set(), [logits], set()
    while stack:
        node = index.producer.get(stack.pop())
        if node is None or node.name in seen:
            continue
        seen.add(node.name)
        if node.op_type in ("Conv", "ConvTranspose"):
            heads.add(node.name)
        else:
            stack.extend(t for t in node.input if t and not index.is_constant(t))
    return heads


def default_fp32_convs(model: onnx.ModelProto) -> dict[str, str]:
    """Convolutions that stay FP32 unless asked otherwise, with the reason."""
    graph = model.graph
    index = GraphIndex(graph)
    body = network_body(graph, index)
    shapes = tensor_shapes(model)
    heads = head_convs(graph, index, body.logits)
    keep = {}
    for node in graph.node:
        if node.name not in body.nodes or node.op_type != "Conv":
            continue
        shape = shapes.get(node.output[0], ())
        if len(shape) == 4 and shape[2] == 1 and shape[3] == 1:
            keep[node.name] = "works on globally pooled 1x1 features (attention): INT8 saves nothing there"
        elif node.name in heads:
            keep[node.name] = (
                "computes the logits: rounding its output would land on the class scores, and without "
                "a Q after it onnxruntime cannot fuse it anyway"
            )
    return keep


def _data_inputs(node: onnx.NodeProto) -> list[str]:
    inputs = node.input[:1] if node.op_type in ("MaxPool", "Resize") else node.input
    return [t for t in inputs if t]


def plan_int8(model: onnx.ModelProto, fp32_convs: dict[str, str] | None = None) -> Int8Plan:
    """Decide the Q/DQ placement (see module docstring); ``fp32_convs`` maps convolution
    names kept in FP32 to the reason (default: ``default_fp32_convs``)."""
    graph = model.graph
    ensure_node_names(graph)
    index = GraphIndex(graph)
    body = network_body(graph, index)
    fp32 = default_fp32_convs(model) if fp32_convs is None else dict(fp32_convs)
    convs = [c for c in quantizable_convs(model) if c not in fp32]
    conv_set = set(convs)
    nodes = [n for n in graph.node if n.name in body.nodes]
    by_name = {n.name: n for n in nodes}
    types = tensor_types(model)
    # Float activations only: the shape arithmetic of dynamic graphs (int64 Concat feeding
    # Resize sizes) is not quantized.
    candidates = {
        n.name for n in nodes
        if n.op_type in ARITH_OPS + MOVEMENT_OPS
        and all(types.get(t) == TensorProto.FLOAT and not index.is_constant(t) for t in _data_inputs(n))
    }

    def users(node: onnx.NodeProto) -> list[onnx.NodeProto]:
        """Nodes that read ``node``'s output as data (not as a shape or size)."""
        return [c for t in node.output for c in index.consumers.get(t, []) if t in _data_inputs(c)]

    # Backward: does a glue node lead, through glue nodes only, to an int8 conv?
    reaches: dict[str, bool] = {}
    for node in reversed(nodes):
        if node.name in candidates:
            reaches[node.name] = any(c.name in conv_set or reaches.get(c.name, False) for c in users(node))
    # Forward: arithmetic glue must also be fed by an int8 node (else it has nothing to fuse
    # with); movement ops only need to feed one.
    int8_nodes = set(conv_set)
    glue = []
    for node in nodes:
        if node.name not in candidates or not reaches[node.name]:
            continue
        fed = any(index.producer[t].name in int8_nodes for t in _data_inputs(node) if t in index.producer)
        if node.op_type in MOVEMENT_OPS or fed:
            int8_nodes.add(node.name)
            glue.append(node.name)

    def range_source(node: onnx.NodeProto) -> str:
        """A movement op's inputs use the range of what it produces, followed through a chain
        of movement ops (Resize -> Concat): one scale from end to end, no requantization."""
        following = users(node)
        if len(following) == 1 and following[0].op_type in MOVEMENT_OPS and following[0].name in int8_nodes:
            return range_source(following[0])
        return node.output[0]

    edges: list[Edge] = []
    seen = set()

    def add(tensor: str, consumer: onnx.NodeProto, slot: int) -> None:
        if (tensor, consumer.name, slot) in seen:
            return
        seen.add((tensor, consumer.name, slot))
        if consumer.op_type in MOVEMENT_OPS and consumer.name in int8_nodes:
            source = range_source(consumer)
        elif consumer.op_type == "Relu":
            # The ReLU zeroes whatever the quantizer clips on the negative side, so its input
            # needs only the range of its output: full resolution for the values that survive.
            source = consumer.output[0]
        else:
            source = tensor
        edges.append(Edge(tensor, consumer.name, slot, source))

    outputs = set(index.output_names)
    for node in nodes:
        if node.name in conv_set:
            add(node.input[0], node, 0)
        elif node.name in int8_nodes:
            data = node.input[:1] if node.op_type in ("MaxPool", "Resize") else node.input
            for slot, tensor in enumerate(data):
                if tensor:
                    add(tensor, node, slot)
    for name in convs:
        out = by_name[name].output[0]
        following = index.consumers.get(out, [])
        if len(following) == 1 and out not in outputs and following[0].name in body.nodes:
            add(out, following[0], list(following[0].input).index(out))
    position = {n.name: i for i, n in enumerate(nodes)}
    edges.sort(key=lambda e: (position[e.consumer], e.slot))
    return Int8Plan(convs=convs, glue=glue, edges=edges, fp32_nodes=fp32)


def _nudged(scale: float, steps: int) -> np.ndarray:
    value = np.float32(scale)
    for _ in range(steps):
        value = np.nextafter(value, np.float32(np.inf), dtype=np.float32)
    return np.array(value, dtype=np.float32)


def weight_scales(weight: np.ndarray, bits: int = DEFAULT_WEIGHT_BITS) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric per-output-channel int8 weights (range +-(2**(bits-1) - 1)) and scales."""
    limit = 2 ** (bits - 1) - 1
    amax = np.abs(weight.reshape(weight.shape[0], -1)).max(axis=1).astype(np.float64)
    scale = np.where(amax > 0, amax / limit, 1.0).astype(np.float32)
    shape = (-1,) + (1,) * (weight.ndim - 1)
    q = np.clip(np.round(weight / scale.reshape(shape)), -limit, limit).astype(np.int8)
    return q, scale


def quantize_int8(
    model: onnx.ModelProto,
    plan: Int8Plan,
    ranges: TensorRanges,
    weight_bits: int = DEFAULT_WEIGHT_BITS,
    check: bool = True,
) -> onnx.ModelProto:
    """A new model with the Q/DQ pairs of ``plan`` (scales from ``ranges``) inserted and
    int8 weights of ``weight_bits`` (7 or 8, see ``DEFAULT_WEIGHT_BITS``); ``check=False``
    skips onnx.checker (for search loops that only run the model)."""
    if weight_bits not in (7, 8):
        raise ExportError(f"INT8 weights use 7 or 8 bits, not {weight_bits}")
    opset = opset_of(model)
    if opset < MIN_QDQ_OPSET:
        raise ExportError(f"INT8 needs opset >= {MIN_QDQ_OPSET} (per-channel weights); this model has opset {opset}")
    out = onnx.ModelProto()
    out.CopyFrom(model)
    graph = out.graph
    ensure_node_names(graph)
    index = GraphIndex(graph)
    by_name = {n.name: n for n in graph.node}
    names = all_names(graph)
    new_nodes: list[onnx.NodeProto] = []
    zero_points: dict[str, str] = {}
    pairs = Counter()

    def unique(base: str) -> str:
        return unique_name(base, names)

    for tensor, consumer, slot, source in plan.edges:
        if source not in ranges.amax:
            raise ExportError(f"no calibration range for tensor '{source}' (stale cache?)")
        step = pairs[tensor]
        pairs[tensor] += 1
        scale = numpy_helper.from_array(_nudged(ranges.scale(source), step), unique(f"{tensor}_qscale{step}"))
        if tensor not in zero_points:
            zp = numpy_helper.from_array(np.array(0, dtype=np.int8), unique(f"{tensor}_qzero"))
            graph.initializer.append(zp)
            zero_points[tensor] = zp.name
        graph.initializer.append(scale)
        q_out, dq_out = unique(f"{tensor}_q{step}"), unique(f"{tensor}_dq{step}")
        params = [scale.name, zero_points[tensor]]
        q_name, dq_name = unique(f"{tensor}_Q{step}"), unique(f"{tensor}_DQ{step}")
        new_nodes.append(helper.make_node("QuantizeLinear", [tensor, *params], [q_out], name=q_name))
        new_nodes.append(helper.make_node("DequantizeLinear", [q_out, *params], [dq_out], name=dq_name))
        by_name[consumer].input[slot] = dq_out

    int8_weights: dict[str, tuple[str, str, str]] = {}
    for name in plan.convs:
        conv = by_name[name]
        weight = conv.input[1]
        if weight not in int8_weights:
            q, scale = weight_scales(index.array(weight), weight_bits)
            q_init = numpy_helper.from_array(q, unique(f"{weight}_int8"))
            s_init = numpy_helper.from_array(scale, unique(f"{weight}_scale"))
            z_init = numpy_helper.from_array(np.zeros(q.shape[0], dtype=np.int8), unique(f"{weight}_zero"))
            graph.initializer.extend([q_init, s_init, z_init])
            int8_weights[weight] = (q_init.name, s_init.name, z_init.name)
        dq_out = unique(f"{weight}_dq")
        dq_name = unique(f"{name}_weight_DQ")
        dq = helper.make_node("DequantizeLinear", list(int8_weights[weight]), [dq_out], name=dq_name, axis=0)
        new_nodes.append(dq)
        conv.input[1] = dq_out

    for name in plan.glue:
        node = by_name[name]
        if node.op_type == "Relu":
            node.op_type = "LeakyRelu"
            node.attribute.append(helper.make_attribute("alpha", 0.0))

    graph.node.extend(new_nodes)
    toposort(graph)
    prune_initializers(graph)
    if not check:
        return out
    try:
        onnx.checker.check_model(out, full_check=True)
    except Exception as exc:  # noqa: BLE001 - the checker raises several types
        raise ExportError(f"INT8 model fails onnx.checker: {str(exc).strip().splitlines()[0]}") from exc
    return out


def qdq_problems(model: onnx.ModelProto, opset: int | None = None) -> list[str]:
    """What TensorRT would reject (or we promised not to do) in a Q/DQ model; [] if fine."""
    problems = []
    graph = model.graph
    index = GraphIndex(graph)
    if opset is not None and opset_of(model) != opset:
        problems.append(f"opset is {opset_of(model)}, expected {opset}")
    for node in graph.node:
        if node.op_type not in ("QuantizeLinear", "DequantizeLinear"):
            continue
        where = f"{node.op_type} '{node.name}'"
        if len(node.input) < 3 or not node.input[2]:
            problems.append(f"{where} has no zero point (it would default to uint8)")
            continue
        if node.input[1] not in index.initializers or node.input[2] not in index.initializers:
            problems.append(f"{where}: scale and zero point must be constant initializers")
            continue
        scale, zero = index.array(node.input[1]), index.array(node.input[2])
        if zero.dtype != np.int8:
            problems.append(f"{where}: zero point is {zero.dtype}, expected int8")
        if np.any(zero != 0):
            problems.append(f"{where}: non-zero zero point (asymmetric)")
        if scale.dtype != np.float32 or not np.all(np.isfinite(scale)) or np.any(scale <= 0):
            problems.append(f"{where}: scales must be positive finite float32")
        axis = next((a.i for a in node.attribute if a.name == "axis"), 1)
        if node.op_type == "DequantizeLinear" and node.input[0] in index.initializers:
            data = index.array(node.input[0])
            if data.dtype != np.int8:
                problems.append(f"{where}: dequantizes {data.dtype} constants (TensorRT takes int8 only)")
            elif scale.ndim == 1 and (axis != 0 or scale.shape[0] != data.shape[0]):
                problems.append(f"{where}: per-channel weights must use axis 0 with one scale per output channel")
        if node.op_type == "QuantizeLinear":
            users = index.consumers.get(node.output[0], [])
            if not users or any(u.op_type != "DequantizeLinear" for u in users):
                problems.append(f"{where}: a Q must feed DequantizeLinear nodes only")
    for node in graph.node:
        if node.op_type != "Conv":
            continue
        weight = index.producer.get(node.input[1])
        if weight is not None and weight.op_type == "DequantizeLinear":
            if index.array(weight.input[1]).ndim != 1:
                problems.append(f"Conv '{node.name}': weights not quantized per output channel")
        elif node.input[1] not in index.initializers:
            problems.append(f"Conv '{node.name}': weights are neither a constant nor a DequantizeLinear of one")
        if len(node.input) > 2 and node.input[2]:
            bias = index.producer.get(node.input[2])
            if bias is not None and bias.op_type == "DequantizeLinear":
                problems.append(f"Conv '{node.name}': bias is quantized (TensorRT rejects int32 bias DQ)")
    return problems


def int8_summary(model: onnx.ModelProto) -> dict:
    """Counts for reports: Q/DQ nodes, int8 convolutions and FP32 convolutions."""
    index = GraphIndex(model.graph)
    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    int8 = [n for n in convs if (p := index.producer.get(n.input[1])) is not None and p.op_type == "DequantizeLinear"]
    ops = Counter(n.op_type for n in model.graph.node)
    return {
        "quantize_nodes": ops["QuantizeLinear"],
        "dequantize_nodes": ops["DequantizeLinear"],
        "int8_conv_count": len(int8),
        "fp32_conv_count": len(convs) - len(int8),
    }
