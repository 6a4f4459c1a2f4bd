"""Tiny hand-built ONNX segmentation graphs in FP32, FP16 (explicit casts) and INT8 (Q/DQ).

Conv3x3 -> ReLU -> Conv1x1 with 4 classes, input 1x3x64x128 (or dynamic N, H, W): small
enough that a TensorRT-RTX build takes a fraction of a second. The FP16 graph casts the
float32 input to float16 and the logits back, like the precision step does; the INT8 graph
has symmetric int8 Q/DQ (zero point 0) on activations and per-channel int8 weights, bias
not quantized. Each file carries a ModelSpec and the precision in its metadata.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bisenet_deploy.spec import METADATA_KEY, PRECISION_KEY, ModelSpec

CLASSES = 4
SIZE = (64, 128)


def tiny_spec(dynamic: bool = False) -> ModelSpec:
    return ModelSpec(num_classes=CLASSES, input_size=SIZE, dynamic_axes=("batch", "height", "width") if dynamic else ())


def tiny_onnx(path: Path, precision: str = "fp32", dynamic: bool = False, metadata: bool = True, seed: int = 0) -> Path:
    import onnx
    from onnx import TensorProto as T
    from onnx import helper as h
    from onnx import numpy_helper as nh

    rng = np.random.default_rng(seed)
    n, hh, ww = ("N", "H", "W") if dynamic else (1, *SIZE)
    inits, nodes = [], []
    weights = {
        "c1": (rng.normal(0, 0.3, (8, 3, 3, 3)), rng.normal(0, 0.1, 8)),
        "c2": (rng.normal(0, 0.3, (CLASSES, 8, 1, 1)), rng.normal(0, 0.1, CLASSES)),
    }
    ftype = np.float16 if precision == "fp16" else np.float32
    x = "input"
    if precision == "fp16":
        nodes.append(h.make_node("Cast", [x], ["input_fp16"], to=T.FLOAT16))
        x = "input_fp16"

    def conv(x: str, name: str, out: str, **attrs) -> None:
        w, b = (a.astype(ftype) for a in weights[name])
        if precision == "int8":
            scale = (np.abs(w).reshape(len(w), -1).max(1) / 127).astype(np.float32)
            wq = np.clip(np.round(w / scale[:, None, None, None]), -127, 127).astype(np.int8)
            inits.extend([nh.from_array(wq, f"{name}_wq"), nh.from_array(scale, f"{name}_ws"),
                          nh.from_array(np.zeros(len(w), np.int8), f"{name}_wz"),
                          nh.from_array(np.array(0.05, np.float32), f"{name}_xs"),
                          nh.from_array(np.array(0, np.int8), f"{name}_xz")])
            w_in = [f"{name}_wq", f"{name}_ws", f"{name}_wz"]
            nodes.append(h.make_node("DequantizeLinear", w_in, [f"{name}_w"], axis=0))
            nodes.append(h.make_node("QuantizeLinear", [x, f"{name}_xs", f"{name}_xz"], [f"{name}_xq"]))
            nodes.append(h.make_node("DequantizeLinear", [f"{name}_xq", f"{name}_xs", f"{name}_xz"], [f"{name}_xd"]))
            x = f"{name}_xd"
        else:
            inits.append(nh.from_array(w, f"{name}_w"))
        inits.append(nh.from_array(b, f"{name}_b"))
        nodes.append(h.make_node("Conv", [x, f"{name}_w", f"{name}_b"], [out], name=name, **attrs))

    conv(x, "c1", "h1", pads=[1, 1, 1, 1])
    nodes.append(h.make_node("Relu", ["h1"], ["r1"], name="relu1"))
    conv("r1", "c2", "logits_fp16" if precision == "fp16" else "logits")
    if precision == "fp16":
        nodes.append(h.make_node("Cast", ["logits_fp16"], ["logits"], to=T.FLOAT))
    graph = h.make_graph(
        nodes, "tiny_seg",
        [h.make_tensor_value_info("input", T.FLOAT, [n, 3, hh, ww])],
        [h.make_tensor_value_info("logits", T.FLOAT, [n, CLASSES, hh, ww])],
        inits,
    )
    model = h.make_model(graph, opset_imports=[h.make_opsetid("", 17)])
    model.ir_version = 8
    if metadata:
        for key, value in ((METADATA_KEY, tiny_spec(dynamic).to_json()), (PRECISION_KEY, precision)):
            prop = model.metadata_props.add()
            prop.key, prop.value = key, value
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(path))
    return path


def unsupported_op_onnx(path: Path) -> Path:
    """A valid ONNX file whose second node is an operator TensorRT does not know."""
    import onnx
    from onnx import TensorProto as T
    from onnx import helper as h

    graph = h.make_graph(
        [h.make_node("Relu", ["input"], ["a"], name="relu0"),
         h.make_node("FancyOp", ["a"], ["logits"], name="fancy_1", domain="example.custom")],
        "unsupported",
        [h.make_tensor_value_info("input", T.FLOAT, [1, 3, 8, 8])],
        [h.make_tensor_value_info("logits", T.FLOAT, [1, 3, 8, 8])],
    )
    model = h.make_model(graph, opset_imports=[h.make_opsetid("", 17), h.make_opsetid("example.custom", 1)])
    model.ir_version = 8
    onnx.save(model, str(path))
    return path
