"""Low-resolution exports (issue 21): the exact label stage against the full upsample + argmax.

* ``runtime.upsampling`` against ``F.interpolate`` + argmax for every rule a family uses
  (align_corners true / false, resized to the input or by a factor, size vs scale-factor
  coordinates), odd sizes that are not multiples of the stride, binary thresholds, and
  maps with many class boundaries: labels identical wherever the reference's top two scores
  are not tied within float rounding.
* Every family's ``low_resolution()`` + ``upsample_rule`` against its own full forward
  (1x1 conv moved before the upsample, log-softmax heads, TorchSeg's probabilities), batch 2.
* Real exports of a tiny model: the default artifact's outputs are 1/8 size, the labels of
  every CPU backend equal the ``--full-size-output`` artifact's, scores full size on request.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from bisenet_deploy.runtime import processing
from bisenet_deploy.runtime.upsampling import upsampled_labels, upsampled_scores
from bisenet_deploy.spec import ModelSpec, SpecError, Upsample

#: reference top-two gaps up to this (relative to the score scale) are float ties
EPS = 1e-5


def _torch_up(scores: np.ndarray, size, rule: Upsample) -> np.ndarray:
    t = torch.from_numpy(scores)
    if rule.coordinates == "factor":
        return F.interpolate(t, scale_factor=rule.factor, mode="bilinear", align_corners=rule.align_corners).numpy()
    return F.interpolate(t, size=tuple(size), mode="bilinear", align_corners=rule.align_corners).numpy()


def assert_exact(labels: np.ndarray, ref_scores: np.ndarray, threshold: float | None = None) -> None:
    """``labels`` (N, H, W) equal the argmax (or threshold) of ``ref_scores`` (N, C, H, W)
    wherever the reference is not tied within float rounding."""
    scale = max(1.0, float(np.abs(ref_scores).max()))
    if threshold is not None:
        ref = (ref_scores[:, 0] > threshold).astype(np.uint8)
        tie = np.abs(ref_scores[:, 0] - threshold) <= EPS * scale
    else:
        ref = ref_scores.argmax(1)
        top = np.sort(ref_scores, axis=1)
        tie = (top[:, -1] - top[:, -2]) <= EPS * scale
    assert labels.shape == ref.shape
    wrong = (labels != ref) & ~tie
    assert not wrong.any(), f"{int(wrong.sum())} labels differ where the reference is not tied"


def _smooth(rng, n: int, c: int, h: int, w: int, blob: int) -> np.ndarray:
    """Scores whose argmax has regions about ``blob`` cells wide (many mixed cells when small)."""
    coarse = torch.from_numpy(rng.standard_normal((n, c, h // blob + 2, w // blob + 2)).astype(np.float32) * 4)
    return F.interpolate(coarse, size=(h, w), mode="bicubic", align_corners=False).numpy()


RULES = [
    (Upsample(align_corners=False), "input"),
    (Upsample(align_corners=True), "input"),
    (Upsample(align_corners=True, target="factor", then="log_softmax"), "factor"),
    (Upsample(align_corners=False, target="factor", coordinates="factor"), "factor"),
]


@pytest.mark.parametrize("rule,target", RULES, ids=["half-pixel", "align-corners", "factor-align", "scale-factor"])
@pytest.mark.parametrize("classes", [19, 4, 1])
def test_label_stage_equals_full_upsample_then_argmax(rule, target, classes):
    rng = np.random.default_rng(classes)
    # odd input sides (not multiples of 8), and a 1-row / 1-column edge case
    for (h, w), blob in (((9, 13), 1), ((17, 26), 3), ((1, 7), 1)):
        scores = _smooth(rng, 2, classes, h, w, blob)
        size = (h * 8 - 3, w * 8 + 5) if target == "input" else (h * 8, w * 8)
        ref = _torch_up(scores, size, rule)
        threshold = 0.25 if classes == 1 else None
        spec = ModelSpec(num_classes=classes, input_size=size, upsample=rule, output_stride=8,
                         binary_threshold=threshold or 0.0)
        labels = processing.labels_from_output(scores, spec)
        assert_exact(labels, ref, threshold)
        assert labels.shape == (2, *ref.shape[-2:]) and labels.dtype == np.uint8
        full = upsampled_scores(scores, ref.shape[-2:], rule)
        if rule.then == "log_softmax":
            ref = F.log_softmax(torch.from_numpy(ref), dim=1).numpy()
        assert full.shape == ref.shape and np.abs(full - ref).max() < 1e-4


def test_label_stage_fails_for_a_wrong_rule():
    """The comparison above can fail: align_corners swapped gives other labels."""
    rng = np.random.default_rng(3)
    scores = _smooth(rng, 1, 7, 16, 16, 2)
    ref = _torch_up(scores, (128, 128), Upsample(align_corners=True))
    labels = processing.labels_from_output(scores, ModelSpec(num_classes=7, input_size=(128, 128),
                                                             upsample=Upsample(align_corners=False), output_stride=8))
    with pytest.raises(AssertionError, match="labels differ"):
        assert_exact(labels, ref)


def test_mixed_cells_with_three_candidates_use_every_class():
    """A class that is the argmax at no corner can still win between them (the middle of
    a cell): the stage must not only look at the corners' own labels."""
    scores = np.zeros((1, 3, 1, 2), np.float32)
    scores[0, 0] = [10, 0]
    scores[0, 1] = [0, 10]
    scores[0, 2] = [6, 6]
    rule = Upsample(align_corners=True)
    labels = upsampled_labels(scores[0], processing.argmax_channels(scores)[0], (1, 9), rule)
    ref = _torch_up(scores, (1, 9), rule)
    assert 2 in labels
    assert_exact(labels[None], ref)


@pytest.mark.parametrize("rule,target", RULES, ids=["half-pixel", "align-corners", "factor-align", "scale-factor"])
def test_cells_where_many_classes_compete_keep_every_candidate(rule, target):
    """Near-flat scores (many classes within reach in one cell): the cells with three or more
    candidates go through their own path, which interpolates only those candidates."""
    rng = np.random.default_rng(7)
    scores = (rng.standard_normal((1, 19, 12, 17)) * 0.05).astype(np.float32)
    size = (12 * 8 - 5, 17 * 8 - 1) if target == "input" else (96, 136)
    flat = scores[0].reshape(19, -1)
    assert (np.sort(flat, axis=0)[-3] > flat.min(axis=0)).all()  # third class within reach everywhere
    spec = ModelSpec(num_classes=19, input_size=size, upsample=rule, output_stride=8)
    assert_exact(processing.labels_from_output(scores, spec), _torch_up(scores, size, rule))


def test_spec_round_trips_the_rule_and_old_specs_load_as_full_size():
    spec = ModelSpec(upsample=Upsample(align_corners=True, target="factor", then="log_softmax"), output_stride=8)
    assert ModelSpec.from_json(spec.to_json()) == spec
    old = ModelSpec().to_dict()
    del old["upsample"]
    assert ModelSpec.from_dict(old).upsample is None
    with pytest.raises(SpecError, match="upsample"):
        ModelSpec(upsample={"mode": "nearest"})
    with pytest.raises(SpecError, match="labels"):
        ModelSpec(upsample=Upsample(), output_kind="labels")


def _families():
    from bisenet_deploy.model.bisenet import BiSeNet
    from bisenet_deploy.model.coincheung_v1 import CoinCheungBiSeNetV1
    from bisenet_deploy.model.coincheung_v2 import CoinCheungBiSeNetV2
    from bisenet_deploy.model.ooooverflow import OoooverflowBiSeNet
    from bisenet_deploy.model.torchseg import TorchSegBiSeNet

    return {
        # name: (builder, input size)
        "seed-1x1-after-upsample-odd": (lambda: BiSeNet(num_classes=5, variant="seed"), (43, 69)),
        "seed-binary": (lambda: BiSeNet(num_classes=1), (32, 64)),
        "coincheung-v1-bilinear": (lambda: CoinCheungBiSeNetV1(6), (32, 64)),
        "coincheung-v1-legacy": (lambda: CoinCheungBiSeNetV1(6, head="legacy", fusion="mlp"), (32, 64)),
        "coincheung-v2": (lambda: CoinCheungBiSeNetV2(4), (32, 64)),
        "ooooverflow-1x1-after-upsample": (lambda: OoooverflowBiSeNet(5), (32, 64)),
        "torchseg-log-softmax": (lambda: TorchSegBiSeNet(5, "R18"), (32, 64)),
        "torchseg-speed-probabilities-odd": (lambda: TorchSegBiSeNet(5, "R18.speed"), (37, 61)),
    }


@pytest.mark.parametrize("family", list(_families()))
def test_each_family_low_resolution_head_gives_its_full_labels(family):
    build, size = _families()[family]
    torch.manual_seed(0)
    model = build().eval()
    rule = model.upsample_rule
    x = torch.randn(2, 3, *size)
    with torch.no_grad():
        full = model(x).numpy()
        low = model.low_resolution(x).numpy()
    assert full.shape[-2:] == tuple(size) and low.shape[-2:] == tuple(-(-d // 8) for d in size)
    classes = full.shape[1]
    spec = ModelSpec(num_classes=classes, input_size=size, upsample=rule, output_stride=8)
    threshold = spec.binary_threshold if classes == 1 else None
    assert_exact(processing.labels_from_output(low, spec), full, threshold)
    # the scores a consumer reconstructs are the head's own (conv moved: rounding only)
    scores = processing.scores_from_output(low, spec)
    assert scores.shape == full.shape
    assert np.abs(scores - full).max() <= 1e-4 * max(1.0, float(np.abs(full).max()))


def test_pixelshuffle_and_native_heads_have_no_rule():
    from bisenet_deploy.model.coincheung_v1 import CoinCheungBiSeNetV1
    from bisenet_deploy.model.torchseg import TorchSegBiSeNet

    assert CoinCheungBiSeNetV1(3, head="pixelshuffle").upsample_rule is None
    assert TorchSegBiSeNet(3, "R18.speed", native=True).upsample_rule is None


# --- real exports ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    """The demo network at 64x128 (any size with dynamic H, W and batch), exported with the
    default (low resolution) and with --full-size-output."""
    pytest.importorskip("onnxruntime")
    from bisenet_deploy.export.onnx import ExportOptions, export_onnx
    from bisenet_deploy.model.demo import demo_model

    from .conftest import TINY

    loaded = demo_model()
    spec = loaded.spec.replace(input_size=TINY)
    root = tmp_path_factory.mktemp("lowres")
    paths = {}
    for name, full in (("low", False), ("full", True)):
        paths[name] = root / f"{name}.onnx"
        export_onnx(loaded.model, spec, paths[name], ExportOptions(size=TINY, full_size_output=full,
                                                                   dynamic=("batch", "height", "width")))
    return paths


BACKENDS = {
    "onnxruntime": dict(backend="onnxruntime"),
    "openvino": dict(backend="openvino"),
    "openvino/host": dict(backend="openvino", backend_options={"prepost": "host"}),
    "auto": dict(backend="auto"),
}


@pytest.mark.parametrize("backend", list(BACKENDS))
def test_low_resolution_export_gives_the_full_size_labels_on_every_backend(exports, backend):
    from bisenet_deploy.runtime import Segmenter

    from .conftest import TINY

    if backend != "onnxruntime":
        pytest.importorskip("openvino")
    rng = np.random.default_rng(1)
    frames = [(rng.random((90, 150, 3)) * 255).astype(np.uint8), (rng.random((64, 128, 3)) * 255).astype(np.uint8)]
    with Segmenter(exports["full"], backend="onnxruntime") as ref, Segmenter(exports["low"], **BACKENDS[backend]) as seg:
        assert seg.spec.upsample is not None and seg.spec.output_stride == 8
        assert ref.spec.upsample is None
        low_out = seg.backend.outputs[0].shape
        assert low_out[1] == seg.spec.num_classes
        ref_scores = [ref.logits(f) for f in frames]
        for frame, got, want, scores in zip(frames, seg.predict_batch(frames), ref.predict_batch(frames), ref_scores):
            top = np.sort(scores, axis=0)
            tie = processing.resize_labels(((top[-1] - top[-2]) <= EPS * 10).astype(np.uint8), frame.shape[:2])
            assert got.shape == frame.shape[:2] and not ((got != want) & (tie == 0)).any()
        for frame, want in zip(frames, ref_scores):
            mask = seg(frame)
            assert mask.shape == frame.shape[:2]
            logits = seg.logits(frame)
            assert logits.shape == want.shape == (seg.spec.num_classes, *TINY)
            assert np.abs(logits - want).max() < 1e-3
            assert seg.probabilities(frame).shape == (seg.spec.num_classes, *frame.shape[:2])
        labels, logits = seg.network_outputs(frames)
        assert labels.shape == (2, *TINY) and logits.shape == (2, seg.spec.num_classes, *TINY)
        assert_exact(labels, np.stack(ref_scores))


def test_low_resolution_output_is_one_64th_of_the_scores(exports):
    from bisenet_deploy.runtime.backends.onnxruntime import OnnxRuntimeBackend

    from .conftest import TINY

    x = processing.preprocess([np.zeros((*TINY, 3), np.uint8)] * 2, ModelSpec(input_size=TINY))
    with OnnxRuntimeBackend(exports["low"], device="cpu") as low, OnnxRuntimeBackend(exports["full"], device="cpu") as full:
        a, b = low.infer(x), full.infer(x)
    assert a.shape[-2:] == (TINY[0] // 8, TINY[1] // 8) and b.shape[-2:] == TINY
    assert b.nbytes == 64 * a.nbytes


def test_full_size_flag_is_an_export_option_and_refused_for_an_onnx_input(tmp_path, capsys):
    from bisenet_deploy.cli import export as cli

    assert cli.build_parser().parse_args(["m.pth", "--full-size-output"]).full_size_output
    onnx_file = tmp_path / "m.onnx"
    onnx_file.write_bytes(b"")
    code = cli.main([str(onnx_file), "--full-size-output", "--precision", "fp16"])
    err = capsys.readouterr().err.strip()
    assert code != 0 and "--full-size-output" in err and "\n" not in err


@pytest.mark.parametrize("scores", ["logits", "probabilities"])
def test_confidence_is_the_top_probability_of_the_upsampled_scores(scores):
    """Nav2's confidence image from a low-resolution output: the winning class's probability
    of the full-size scores (softmax does not commute with interpolation, so upsampling the
    low-resolution confidence would be wrong near class boundaries)."""
    from bisenet_deploy.runtime.confidence import top_probability

    rng = np.random.default_rng(3)
    low = _smooth(rng, 2, 4, 8, 12, 2)
    if scores == "probabilities":
        low = torch.softmax(torch.from_numpy(low), 1).numpy()
    rule = Upsample(align_corners=False, scores=scores)
    spec = ModelSpec(num_classes=4, input_size=(64, 96), upsample=rule, output_stride=8)
    full = _torch_up(low, (64, 96), rule)
    expected = full.max(1) if scores == "probabilities" else torch.softmax(torch.from_numpy(full), 1).numpy().max(1)
    got = top_probability(low, spec)
    assert got.shape == (2, 64, 96)
    np.testing.assert_allclose(got, expected, atol=2e-6)


def test_inspect_says_the_scores_are_low_resolution_and_how_they_are_upsampled(exports):
    from bisenet_deploy.inspection import format_inspection, inspect_artifact

    low = format_inspection(inspect_artifact(exports["low"]))
    full = format_inspection(inspect_artifact(exports["full"]))
    assert "at 1/8 of the input, upsampled at run time (bilinear, align_corners=" in low
    assert "upsampled at run time" not in full


def test_native_resolution_and_full_size_output_contradict_each_other(tmp_path, capsys):
    from bisenet_deploy.cli import export as cli

    code = cli.main(["ckpt.pth", "--native-resolution", "--full-size-output", "-o", str(tmp_path / "m.onnx")])
    err = capsys.readouterr().err.strip()
    assert code != 0 and "--native-resolution" in err and "--full-size-output" in err and "\n" not in err
    assert list(tmp_path.iterdir()) == []


def test_a_probability_head_gives_the_same_probabilities_in_both_export_forms(tmp_path):
    """TorchSeg's .speed head resizes softmax probabilities: the full-size artifact's
    ``probabilities()`` and confidence are those values as they are (no second softmax), equal
    to the low-resolution artifact's and to the PyTorch head's."""
    pytest.importorskip("onnxruntime")
    from bisenet_deploy.export.onnx import ExportOptions, export_onnx
    from bisenet_deploy.model.torchseg import TorchSegBiSeNet
    from bisenet_deploy.runtime import Segmenter
    from bisenet_deploy.runtime.confidence import top_probability

    torch.manual_seed(0)
    model = TorchSegBiSeNet(5, "R18.speed").eval()
    size = (48, 80)
    spec = ModelSpec(arch="torchseg", num_classes=5, input_size=size)
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 256, (*size, 3), dtype=np.uint8)
    with torch.no_grad():
        expected = model(torch.from_numpy(processing.preprocess([frame], spec)))[0].numpy()
    got = {}
    for name, full in (("low", False), ("full", True)):
        path = tmp_path / f"{name}.onnx"
        export_onnx(model, spec, path, ExportOptions(size=size, full_size_output=full))
        with Segmenter(path, backend="onnxruntime") as seg:
            assert seg.spec.scores_are_probabilities
            got[name] = seg.probabilities(frame)
            top = top_probability(seg.infer(seg.preprocess([frame])), seg.spec)[0]
        np.testing.assert_allclose(got[name], expected, atol=1e-4)
        np.testing.assert_allclose(top, expected.max(axis=0), atol=1e-4)
    np.testing.assert_allclose(got["low"], got["full"], atol=1e-4)
