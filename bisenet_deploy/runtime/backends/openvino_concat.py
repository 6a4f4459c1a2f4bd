"""An OpenVINO workaround: INT8 convolutions over a Concat, rewritten as one convolution per
Concat input and their sum, in the ``ov.Model`` before it is compiled (the file is untouched).

Why: OpenVINO's CPU plugin (2026.4, seen on AVX-512/VNNI) computes an int8 convolution whose
input is a Concat of int8 tensors wrongly. In a graph ``Q/DQ(a), Q/DQ(b) -> Concat -> Q/DQ ->
Conv(int8 W)`` with 128 + 256 channels, 92% of the outputs were off the file's exact Q/DQ
arithmetic (onnxruntime with graph optimizations off), by up to 28 quantization steps; written
as ``Conv(Q/DQ(a), W[:, :128]) + Conv(Q/DQ(b), W[:, 128:])`` it is within one step (rounding)
in under 0.1%. In BiSeNet that convolution is the feature-fusion module's: on the demo INT8
model it cost OpenVINO 1.2 points of label agreement with onnxruntime on the same file.

The rewrite is exact arithmetic: a convolution over concatenated channels is the sum of the
convolutions over each part (up to float summation order), and the per-tensor (scalar)
quantize/dequantize steps between the Concat and the convolution are applied to each part
instead. The file keeps the concatenated form because onnxruntime and TensorRT fuse it into
their int8 kernels (the split partial sums have no Q after them, so onnxruntime would run
them in FP32).
"""

from __future__ import annotations

from typing import Any

import numpy as np

#: elementwise ops that may sit between the Concat and the convolution (Q/DQ as OpenVINO reads them)
_CHAIN = ("FakeQuantize", "Convert", "Subtract", "Multiply")


def _single_consumer(node: Any) -> bool:
    return len(node.output(0).get_target_inputs()) == 1


def _constant_like(output: Any) -> bool:
    """A Constant, possibly through Convert/Reshape (OpenVINO's form of a zero point or scale)."""
    node = output.get_node()
    while node.get_type_name() in ("Convert", "Reshape"):
        node = node.input_value(0).get_node()
    return node.get_type_name() == "Constant"


def _size(output: Any) -> int | None:
    shape = output.get_partial_shape()
    if not shape.is_static:
        return None
    return int(np.prod([d.get_length() for d in shape], dtype=np.int64))


def _chain(start: Any, ok_side) -> list[Any] | None:  # noqa: ANN001 - a predicate on side inputs
    """The _CHAIN nodes from ``start`` up along input 0, nearest first, when every other input
    is a constant ``ok_side`` accepts; None when one is not."""
    nodes, node = [], start
    while node.get_type_name() in _CHAIN:
        if not _single_consumer(node) or not all(_constant_like(v) and ok_side(v) for v in node.input_values()[1:]):
            return None
        nodes.append(node)
        node = node.input_value(0).get_node()
    return nodes


def _rebuild(ops: Any, x: Any, chain: list[Any]) -> Any:
    """``chain`` (nearest the convolution first) applied to ``x``, from the far end down."""
    for node in reversed(chain):
        kind, side, attrs = node.get_type_name(), node.input_values()[1:], node.get_attributes()
        if kind == "FakeQuantize":
            x = ops.fake_quantize(x, *side, attrs["levels"], attrs.get("auto_broadcast", "numpy")).output(0)
        elif kind == "Convert":
            x = ops.convert(x, attrs["destination_type"]).output(0)
        elif kind == "Subtract":
            x = ops.subtract(x, side[0]).output(0)
        else:
            x = ops.multiply(x, side[0]).output(0)
    return x


def _per_output_channel(output: Any) -> bool:
    """A weight-side constant that does not vary along the input channels (axis 1)."""
    shape = output.get_partial_shape()
    return shape.is_static and (len(shape) < 2 or shape[1].get_length() == 1)


def split_int8_concat_convs(model: Any) -> list[str]:
    """Rewrite, in place, each Convolution whose input is a channel Concat (through scalar
    Q/DQ steps) and whose weights are int8 constants; returns the names of those rewritten."""
    import openvino.opset13 as ops

    done = []
    for conv in [op for op in model.get_ordered_ops() if op.get_type_name() == "Convolution"]:
        data_chain = _chain(conv.input_value(0).get_node(), lambda v: _size(v) == 1)
        weight_chain = _chain(conv.input_value(1).get_node(), _per_output_channel)
        if data_chain is None or weight_chain is None:
            continue
        concat = (data_chain[-1].input_value(0) if data_chain else conv.input_value(0)).get_node()
        weight = (weight_chain[-1].input_value(0) if weight_chain else conv.input_value(1)).get_node()
        if concat.get_type_name() != "Concat" or not _single_consumer(concat) or weight.get_type_name() != "Constant":
            continue
        rank = len(concat.get_output_partial_shape(0))
        if concat.get_attributes().get("axis") not in (1, 1 - rank) or weight.get_element_type().get_type_name() != "i8":
            continue
        parts = concat.input_values()
        channels = [p.get_partial_shape()[1] for p in parts]
        w = weight.get_data()
        if not all(c.is_static for c in channels) or sum(c.get_length() for c in channels) != w.shape[1]:
            continue
        attrs = conv.get_attributes()
        total, start = None, 0
        for part, c in zip(parts, channels):
            w_part = ops.constant(np.ascontiguousarray(w[:, start:start + c.get_length()])).output(0)
            start += c.get_length()
            y = ops.convolution(_rebuild(ops, part, data_chain), _rebuild(ops, w_part, weight_chain),
                                attrs["strides"], attrs["pads_begin"], attrs["pads_end"], attrs["dilations"],
                                attrs["auto_pad"]).output(0)
            total = y if total is None else ops.add(total, y).output(0)
        total.get_node().set_friendly_name(conv.get_friendly_name())
        conv.output(0).replace(total)
        done.append(conv.get_friendly_name())
    if done:
        model.validate_nodes_and_infer_types()
    return done
