"""Every ONNX we emit parses and builds with NVIDIA TensorRT-RTX (strongly typed, no GPU).

Covers FP32, FP16 and INT8, a fixed model (float NCHW in, logits out) and a dynamic one
(batch/height/width dynamic, uint8 frames in, in-graph argmax). The parser rejects the Q/DQ
patterns TensorRT rejects, which the last test shows on purpose.
"""

import onnx
import pytest
from onnx import numpy_helper

from .trt_rtx import BuildError, build_with_tensorrt_rtx


@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
@pytest.mark.parametrize("variant", ["fixed", "dynamic"])
def test_emitted_onnx_builds_with_tensorrt_rtx(precision_models, variant, precision):
    size = build_with_tensorrt_rtx(precision_models[variant][precision])
    assert size > 1_000_000  # a real engine with the weights in it


def test_int8_engine_keeps_int8_weights(precision_models):
    """The INT8 engine is far smaller than the FP32 one: TensorRT took the int8 weights."""
    fp32 = build_with_tensorrt_rtx(precision_models["fixed"]["fp32"])
    int8 = build_with_tensorrt_rtx(precision_models["fixed"]["int8"])
    assert int8 < 0.5 * fp32


def test_tensorrt_rtx_rejects_an_asymmetric_zero_point(precision_models, tmp_path):
    model = onnx.load(str(precision_models["fixed"]["int8"]))
    q = next(n for n in model.graph.node if n.op_type == "QuantizeLinear")
    zero = next(i for i in model.graph.initializer if i.name == q.input[2])
    zero.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(zero) + 3, zero.name))
    path = tmp_path / "asymmetric.onnx"
    onnx.save(model, str(path))
    with pytest.raises(BuildError, match="zero point"):
        build_with_tensorrt_rtx(path)


def test_dynamic_low_resolution_onnx_builds_with_tensorrt_rtx(model5, tmp_path):
    """The default export (scores at 1/8, their own dynamic output sides) with fused
    preprocessing and every axis dynamic: the ``fixed`` models above cover the fixed
    low-resolution form in each precision."""
    from bisenet_deploy.export.onnx import ExportOptions, export_onnx
    from bisenet_deploy.spec import ModelSpec

    from .conftest import TINY

    path = tmp_path / "low.onnx"
    result = export_onnx(model5, ModelSpec(num_classes=5, input_size=TINY), path,
                         ExportOptions(size=TINY, dynamic=("batch", "height", "width"), fuse_preprocess=True))
    assert result.spec.upsample is not None and result.spec.output_stride == 8
    assert build_with_tensorrt_rtx(path) > 1_000_000
