"""FP16 and INT8 ONNX: structure, onnxruntime runs, metadata, cache, fidelity, fallback."""

import json
import shutil

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from bisenet_deploy.calibration.int8 import qdq_problems
from bisenet_deploy.calibration.precision import PrecisionOptions, make_precisions
from bisenet_deploy.calibration.ranges import CalibrationMethod
from bisenet_deploy.export.metadata import read_metadata
from bisenet_deploy.runtime import processing
from bisenet_deploy.spec import CALIBRATION_KEY, METADATA_KEY, PRECISION_KEY, ModelSpec

from .conftest import TINY

VARIANTS = ("fixed", "dynamic")
FAST = dict(calib_count=2, val_count=1, progress=False)


def _load(path):
    return onnx.load(str(path))


def _inits(model):
    return {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}


def _producers(model):
    return {o: n for n in model.graph.node for o in n.output}


def _session(path, optimized=None):
    options = ort.SessionOptions()
    options.log_severity_level = 3
    if optimized is not None:
        options.optimized_model_filepath = str(optimized)
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _spec(model):
    return ModelSpec.from_json(read_metadata(model)[METADATA_KEY])


def _run(path, frames, size=None):
    """Outputs for ``frames``: one batch on a dynamic-batch model, else one frame at a time."""
    session = _session(path)
    spec = _spec(_load(path))
    name = session.get_inputs()[0].name
    if "batch" in spec.dynamic_axes:
        return session.run(None, {name: processing.preprocess(frames, spec, size)})[0]
    return np.concatenate([session.run(None, {name: processing.preprocess([f], spec, size)})[0] for f in frames])


@pytest.mark.parametrize("variant", VARIANTS)
def test_int8_follows_the_tensorrt_qdq_rules(precision_models, variant):
    model = _load(precision_models[variant]["int8"])
    inits, producers = _inits(model), _producers(model)
    assert [o.version for o in model.opset_import if o.domain in ("", "ai.onnx")] == [17]
    qdq = [n for n in model.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")]
    assert len(qdq) > 40
    for node in qdq:
        zero = inits[node.input[2]]
        assert zero.dtype == np.int8 and not zero.any(), node.name
        assert inits[node.input[1]].dtype == np.float32 and (inits[node.input[1]] > 0).all()
        if node.op_type == "DequantizeLinear" and node.input[0] in inits:
            assert inits[node.input[0]].dtype == np.int8, "only int8 constants are dequantized (no int32 bias)"
    int8_convs = 0
    for conv in (n for n in model.graph.node if n.op_type == "Conv"):
        if len(conv.input) > 2 and conv.input[2]:
            assert conv.input[2] in inits and inits[conv.input[2]].dtype == np.float32, "bias stays float"
        weight = producers.get(conv.input[1])
        if weight is None:
            assert inits[conv.input[1]].dtype == np.float32  # a convolution kept in FP32
            continue
        assert weight.op_type == "DequantizeLinear"
        axis = next((a.i for a in weight.attribute if a.name == "axis"), 1)
        q, scale = inits[weight.input[0]], inits[weight.input[1]]
        assert axis == 0 and q.dtype == np.int8 and scale.shape == (q.shape[0],)
        assert -127 <= q.min() and q.max() <= 127 and np.abs(q).max() > 63  # symmetric, all 8 bits by default
        int8_convs += 1
    report = precision_models[variant]["outcome"].report["models"]["int8"]
    assert int8_convs == report["int8_conv_count"] >= 20
    assert qdq_problems(model, 17) == []


def test_preprocessing_and_argmax_stay_untouched(precision_models):
    fp32 = _load(precision_models["dynamic"]["fp32"])
    wrapper_nodes = [n for n in fp32.graph.node if not n.name.startswith("/model/")]
    assert {"Cast", "Mul", "Add", "ArgMax"} <= {n.op_type for n in wrapper_nodes}
    for precision in ("fp16", "int8"):
        model = _load(precision_models["dynamic"][precision])
        by_name = {n.name: n for n in model.graph.node}
        producers = _producers(model)
        for node in wrapper_nodes:
            assert by_name[node.name] == node, f"{precision}: {node.name} changed"
            for tensor in node.input:
                p = producers.get(tensor)
                assert p is None or p.op_type not in ("QuantizeLinear", "DequantizeLinear"), node.name
        assert model.graph.input[0].type.tensor_type.elem_type == TensorProto.UINT8
        assert model.graph.output[0].type.tensor_type.elem_type == TensorProto.INT32


def test_qdq_checker_catches_what_tensorrt_rejects(precision_models):
    good = _load(precision_models["fixed"]["int8"])
    asymmetric = onnx.ModelProto()
    asymmetric.CopyFrom(good)
    q = next(n for n in asymmetric.graph.node if n.op_type == "QuantizeLinear")
    zero = next(i for i in asymmetric.graph.initializer if i.name == q.input[2])
    zero.CopyFrom(numpy_helper.from_array(np.array(3, np.int8), zero.name))
    assert any("non-zero zero point" in p for p in qdq_problems(asymmetric, 17))

    bias_dq = onnx.ModelProto()
    bias_dq.CopyFrom(good)
    conv = next(n for n in bias_dq.graph.node if n.op_type == "Conv" and len(n.input) > 2)
    bias = numpy_helper.to_array(next(i for i in bias_dq.graph.initializer if i.name == conv.input[2]))
    bias_dq.graph.initializer.extend([
        numpy_helper.from_array(np.round(bias * 100).astype(np.int32), "b_int32"),
        numpy_helper.from_array(np.full(bias.shape, 0.01, np.float32), "b_scale"),
        numpy_helper.from_array(np.zeros(bias.shape, np.int32), "b_zero"),
    ])
    dq = helper.make_node("DequantizeLinear", ["b_int32", "b_scale", "b_zero"], ["b_dq"], axis=0)
    bias_dq.graph.node.insert(0, dq)
    conv.input[2] = "b_dq"
    problems = qdq_problems(bias_dq, 17)
    assert any("bias is quantized" in p for p in problems) and any("int32" in p for p in problems)
    assert any("opset" in p for p in qdq_problems(good, 13))


@pytest.mark.parametrize("variant", VARIANTS)
def test_fp16_keeps_fp32_io_and_stays_close(precision_models, photos, variant):
    paths = precision_models[variant]
    model = _load(paths["fp16"])
    fp32 = _load(paths["fp32"])
    def io_types(m):
        return [v.type.tensor_type.elem_type for v in list(m.graph.input) + list(m.graph.output)]

    assert io_types(model) == io_types(fp32)
    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    inits = _inits(model)
    assert all(inits[c.input[1]].dtype == np.float16 for c in convs)
    frames = [f for _, f in photos[:3]]
    ref, half = _run(paths["fp32"], frames), _run(paths["fp16"], frames)
    assert half.dtype == ref.dtype and half.shape == ref.shape
    if variant == "fixed":
        assert np.abs(half - ref).max() <= 2e-2 * np.abs(ref).max()
    assert (half.argmax(1) == ref.argmax(1)).mean() if variant == "fixed" else (half == ref).mean() >= 0.98
    if variant == "dynamic":
        other = _run(paths["fp16"], frames[:2], size=(96, 64))
        assert other.shape == (2, 96, 64)


@pytest.mark.parametrize("variant", VARIANTS)
def test_int8_runs_on_onnxruntime_int8_kernels(precision_models, photos, tmp_path, variant):
    paths = precision_models[variant]
    optimized = tmp_path / "optimized.onnx"
    _session(paths["int8"], optimized)
    ops = [n.op_type for n in onnx.load(str(optimized), load_external_data=False).graph.node]
    # Every INT8 convolution became onnxruntime's QLinearConv: the placement fuses on a CPU.
    assert ops.count("QLinearConv") == precision_models[variant]["outcome"].report["models"]["int8"]["int8_conv_count"]
    frames = [f for _, f in photos[:2]]
    ref, out = _run(paths["fp32"], frames), _run(paths["int8"], frames)
    assert out.shape == ref.shape and out.dtype == ref.dtype
    if variant == "fixed":  # untrained weights: labels are near ties, so compare the logits
        assert np.corrcoef(out.ravel(), ref.ravel())[0, 1] > 0.9
    else:
        assert _run(paths["int8"], frames, size=(96, 64)).shape == (2, 96, 64)


@pytest.mark.parametrize("precision", ["fp16", "int8"])
def test_metadata_records_precision_and_calibration(precision_models, precision):
    fp32 = read_metadata(_load(precision_models["fixed"]["fp32"]))
    meta = read_metadata(_load(precision_models["fixed"][precision]))
    assert ModelSpec.from_json(meta[METADATA_KEY]) == ModelSpec.from_json(fp32[METADATA_KEY])
    assert meta[PRECISION_KEY] == precision
    calibration = json.loads(meta[CALIBRATION_KEY])
    assert calibration["count"] == 6 and calibration["skipped"] == 0 and len(calibration["sha256"]) == 64
    assert calibration["method"]["name"] == ("entropy" if precision == "int8" else "absmax (FP16 overflow check)")
    assert calibration.get("weight_bits") == (8 if precision == "int8" else None)  # 8 bits by default


def test_fidelity_report_is_written_and_held_out(precision_models):
    outcome = precision_models["fixed"]["outcome"]
    saved = json.loads(outcome.report_path.read_text())
    assert saved == json.loads(json.dumps(outcome.report))
    assert saved["validation"]["held_out"] and saved["validation"]["count"] == 4
    assert saved["validation"]["sha256"] != saved["calibration"]["sha256"]
    for precision in ("fp16", "int8"):
        fid = saved["models"][precision]["fidelity"]
        assert 0 <= fid["label_agreement"] <= 100 and 0 <= fid["miou_vs_fp32"] <= 100
        assert fid["max_abs_logit_diff"] >= fid["mean_abs_logit_diff"] > 0
    mean_diff = {p: saved["models"][p]["fidelity"]["mean_abs_logit_diff"] for p in ("fp16", "int8")}
    assert mean_diff["fp16"] < mean_diff["int8"]


def test_calibration_cache_is_reused_and_invalidated(precision_models, tmp_path):
    path = tmp_path / "m.onnx"
    shutil.copy(precision_models["fixed"]["fp32"], path)

    def run(**changes):
        log = []
        options = PrecisionOptions(precisions=("int8",), **{**FAST, **changes})
        outcome = make_precisions(path, options, log=log.append)
        return outcome.report["calibration"]["cache"], " | ".join(log)

    assert run()[0] == "computed"
    first = path.with_name("m.int8.onnx").read_bytes()
    state, log = run()
    assert state == "reused" and "reused calibration cache m.calib.json" in log
    assert path.with_name("m.int8.onnx").read_bytes() == first
    state, log = run(seed=5)
    assert state == "computed" and "stale (data changed)" in log
    state, log = run(seed=5, method=CalibrationMethod("percentile", 99.9))
    assert state == "computed" and "stale (method changed)" in log
    model = onnx.load(str(path))
    weight = next(i for i in model.graph.initializer if i.dims and len(i.dims) == 4)
    weight.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(weight) * 1.5, weight.name))
    onnx.save(model, str(path))
    state, log = run(seed=5, method=CalibrationMethod("percentile", 99.9))
    assert state == "computed" and "stale (model changed)" in log


def test_int8_is_deterministic(precision_models, tmp_path):
    a, b = tmp_path / "a" / "m.onnx", tmp_path / "b" / "m.onnx"
    for path in (a, b):
        path.parent.mkdir()
        shutil.copy(precision_models["fixed"]["fp32"], path)
        make_precisions(path, PrecisionOptions(precisions=("int8",), use_cache=False, **FAST))
    assert a.with_name("m.int8.onnx").read_bytes() == b.with_name("m.int8.onnx").read_bytes()


def test_fp16_keeps_overflowing_nodes_in_fp32(precision_models, photos, tmp_path):
    """Scale the head so its FP32 output exceeds the FP16 range: calibration must see it."""
    model = _load(precision_models["fixed"]["fp32"])
    head = [n for n in model.graph.node if n.op_type == "Conv"][-1]
    for init in model.graph.initializer:
        if init.name in head.input[1:]:
            init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init) * 3e4, init.name))
    path = tmp_path / "hot.onnx"
    onnx.save(model, str(path))
    outcome = make_precisions(path, PrecisionOptions(precisions=("fp16",), **FAST))
    kept = outcome.report["models"]["fp16"]["fp32_nodes"]
    assert head.name in kept and "FP16 max" in kept[head.name]
    assert read_metadata(_load(outcome.paths["fp16"]))[PRECISION_KEY] == "mixed"
    frames = [f for _, f in photos[:2]]
    ref, half = _run(path, frames), _run(outcome.paths["fp16"], frames)
    assert np.abs(ref).max() > 65504 and np.isfinite(half).all()
    assert np.abs(half - ref).max() <= 2e-2 * np.abs(ref).max()


def test_ground_truth_miou_in_the_report(precision_models, photos, tmp_path):
    import cv2

    images, labels = tmp_path / "img", tmp_path / "lbl"
    images.mkdir()
    labels.mkdir()
    frames = [processing.resize_bilinear(f, TINY) for _, f in photos[:3]]
    fp32 = precision_models["fixed"]["fp32"]
    truth = processing.labels_from_output(_run(fp32, frames), _spec(_load(fp32)))
    for i, (frame, label) in enumerate(zip(frames, truth)):
        cv2.imwrite(str(images / f"{i}.png"), frame)
        cv2.imwrite(str(labels / f"{i}.png"), label)
    path = tmp_path / "m.onnx"
    shutil.copy(precision_models["fixed"]["fp32"], path)
    options = PrecisionOptions(precisions=("int8",), val_images=images, val_labels=labels, **{**FAST, "val_count": 3})
    report = make_precisions(path, options).report
    # Labels equal to the FP32 predictions: FP32 scores 100 against them, INT8 its FP32 mIoU.
    assert report["fp32_miou_vs_ground_truth"] == pytest.approx(100.0)
    fid = report["models"]["int8"]["fidelity"]
    assert fid["miou_vs_ground_truth"] == pytest.approx(fid["miou_vs_fp32"])
    assert report["validation"]["ground_truth"] and report["validation"]["count"] == 3


def test_int8_fallback_moves_sensitive_convs_to_fp32(precision_models, photos, tmp_path):
    """Untrained weights make one class win everywhere; centring the head's bias on the
    photos gives near-tie logits, where INT8 rounding flips labels and fallback can help."""
    model = _load(precision_models["fixed"]["fp32"])
    logits = _run(precision_models["fixed"]["fp32"], [f for _, f in photos[:4]])
    head = [n for n in model.graph.node if n.op_type == "Conv"][-1]
    bias = next(i for i in model.graph.initializer if i.name == head.input[2])
    bias.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(bias) - logits.mean(axis=(0, 2, 3)), bias.name))
    path = tmp_path / "m.onnx"
    onnx.save(model, str(path))
    options = PrecisionOptions(
        precisions=("int8",), int8_fallback="auto", target_agreement=100.0, method=CalibrationMethod("minmax"), **FAST
    )
    outcome = make_precisions(path, options)
    info = outcome.report["models"]["int8"]
    fallback = info["fallback"]
    assert fallback["agreement_before"] < 100.0 and not fallback["met"]
    assert fallback["kept_fp32"] and set(fallback["kept_fp32"]) <= set(info["fp32_convs"])
    assert fallback["agreement_after"] > fallback["agreement_before"]
    gains = {s["conv"]: s["agreement_gain"] for s in fallback["sensitivity"]}
    assert all(gains[c] > 0 for c in fallback["kept_fp32"])
    assert len(gains) == info["int8_conv_count"] + len(fallback["kept_fp32"])
    assert read_metadata(_load(outcome.paths["int8"]))[PRECISION_KEY] == "mixed"
    assert qdq_problems(_load(outcome.paths["int8"]), 17) == []


def test_seven_bit_weights_avoid_onnxruntime_int16_saturation(precision_models, photos, tmp_path):
    """onnxruntime's fused int8 convolution on AVX2 CPUs sums uint8 x int8 pairs in saturating
    int16. The fused model must compute what its Q/DQ graph says (the same file run with graph
    optimizations off, i.e. as float Q/DQ arithmetic): with 7-bit weights it does up to
    requantization rounding; 8-bit weights (TensorRT's choice) drift further on such CPUs."""
    frames = [f for _, f in photos[:2]]

    def logits(path, level):
        options = ort.SessionOptions()
        options.log_severity_level = 3
        options.graph_optimization_level = level
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        spec = _spec(_load(path))
        return np.concatenate([session.run(None, {"input": processing.preprocess([f], spec)})[0] for f in frames])

    def drift(path):
        fused = logits(path, ort.GraphOptimizationLevel.ORT_ENABLE_ALL)
        emulated = logits(path, ort.GraphOptimizationLevel.ORT_DISABLE_ALL)
        return float(np.abs(fused - emulated).mean() / np.abs(emulated).mean())

    seven = tmp_path / "seven.onnx"
    shutil.copy(precision_models["fixed"]["fp32"], seven)
    outcome = make_precisions(seven, PrecisionOptions(precisions=("int8",), int8_weight_bits=7, **FAST))
    seven_drift, eight_drift = drift(outcome.paths["int8"]), drift(precision_models["fixed"]["int8"])
    print(f"relative mean |fused - emulated|: 7-bit {seven_drift:.4f}, 8-bit {eight_drift:.4f}")
    assert seven_drift < 0.08  # requantization rounding through ~20 layers of a random model
    if not _cpu_has_vnni():  # VNNI sums in int32: no saturation for either
        assert seven_drift < 0.5 * eight_drift


def _cpu_has_vnni() -> bool:
    from bisenet_deploy.machine import cpu_flags, has_int8_dot_product

    flags = cpu_flags()
    return has_int8_dot_product(flags) or not flags  # unknown CPU: do not assume saturation
