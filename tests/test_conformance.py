"""The conformance matrix (issue 23): every artifact form bisenet-export emits, on every CPU
backend and mode, through every public Segmenter output, gives the labels of the onnxruntime
FP32 reference on the same frames, or is refused with one line that says why.

* Forms: fixed / dynamic H,W / dynamic batch / fixed batch 2 / all dynamic; with and without
  ``--fuse-preprocess`` (frames BGR and RGB) and ``--argmax``; FP32, FP16, INT8; networks
  whose spec says RGB and BGR. Each is exported once per session from the shipped demo
  network (trained on coloured shapes) at 64x128, and run on coloured-shapes scenes, so a
  channel swap anywhere changes many labels (checked below: the matrix cannot pass a swap).
* Backends: onnxruntime; OpenVINO with in-graph and with host pre/post; ``auto``.
* Outputs: ``seg(frame)``, ``predict_batch``, ``logits`` and ``probabilities``.
* Exact for FP32 forms: identical labels wherever the reference's top two logits are more
  than ``TIE`` apart (two correct float implementations may order a near-tie either way).
  FP16 / INT8 forms: the precision's agreement threshold (``compare.PRECISION_AGREEMENT``)
  with the file's own exact arithmetic (onnxruntime, graph optimizations off: what ``auto``
  checks too), and ``REDUCED_FLOOR`` with the FP32 reference (well above what a channel
  swap gives).
"""

from __future__ import annotations

import numpy as np
import pytest

from bisenet_deploy.compare import PRECISION_AGREEMENT
from bisenet_deploy.errors import ArtifactError
from bisenet_deploy.runtime import Segmenter, processing

from .conftest import TINY

DEMO = __import__("pathlib").Path(__file__).resolve().parents[1] / "bisenet_deploy" / "assets" / "demo_shapes_r18.pth"
SCENE_SEED = 5

pytest.importorskip("onnxruntime")
try:
    import openvino  # noqa: F401

    HAVE_OPENVINO = True
except ImportError:
    HAVE_OPENVINO = False

#: reference logits this close at the top are near-ties, which two exact implementations may order either way
TIE = 1e-3
#: label agreement (%) with the FP32 reference that a reduced-precision form keeps on every backend
REDUCED_FLOOR = {"fp16": 99.0, "int8": 95.0}

#: form -> (export options, spec colour order, precisions)
FORMS = {
    # the family's own full-size graph: the RGB reference, so every low-resolution form (the
    # default) is held to the labels and scores of the full upsample + argmax
    "full-size": (dict(full_size_output=True), "RGB", ("fp32",)),
    "fixed": (dict(), "RGB", ("fp32", "int8")),
    "dynamic-hw": (dict(dynamic=("height", "width")), "RGB", ("fp32", "fp16")),
    "batch2": (dict(batch=2), "RGB", ("fp32",)),
    "dynamic-batch-argmax": (dict(dynamic=("batch",), argmax=True), "RGB", ("fp32",)),
    "fused-bgr": (dict(fuse_preprocess=True), "RGB", ("fp32",)),
    "fused-rgb-argmax-dynamic": (dict(fuse_preprocess=True, frame_color_order="RGB", argmax=True,
                                      dynamic=("batch", "height", "width")), "RGB", ("fp32", "int8")),
    "bgr-net-dynamic-hw": (dict(dynamic=("height", "width")), "BGR", ("fp32",)),
    "bgr-net-fused-argmax": (dict(fuse_preprocess=True, argmax=True), "BGR", ("fp32",)),
}
ARTIFACTS = [(form, precision) for form, (_, _, precisions) in FORMS.items() for precision in precisions]
BACKENDS = {
    "onnxruntime": dict(backend="onnxruntime"),
    "openvino": dict(backend="openvino"),
    "openvino/host": dict(backend="openvino", backend_options={"prepost": "host"}),
    "auto": dict(backend="auto"),
}


def demo_model():
    """The shipped demo network (trained on coloured shapes: its classes are colours, so a
    channel swap changes its labels) and its spec at the tiny size. A trained network,
    because an untrained one's logit margins are below INT8's resolution: its INT8 copy
    disagrees with itself across kernels, and nothing about backends could be learnt."""
    from bisenet_deploy.model.checkpoint import load_checkpoint

    loaded = load_checkpoint(DEMO)
    spec = loaded.spec.replace(input_size=TINY, dynamic_axes=(), input_layout="NCHW", output_kind="logits")
    return loaded.model, spec


def conformance_frames() -> list[np.ndarray]:
    """Two coloured-shapes scenes, one at the network size and one larger (resized by every
    runner): colour is what decides their labels, so a swap cannot pass."""
    from bisenet_deploy.datasets.shapes import background_photos, render_scene

    rng = np.random.default_rng(SCENE_SEED)
    photos = background_photos("heldout")
    return [render_scene(rng, photos, size, zoom=0.5).image for size in (TINY, (96, 192))]


@pytest.fixture(scope="session")
def conformance(tmp_path_factory):
    """{(form, precision): path}, the references {colour order: path}, and the frames; each
    artifact exported (and converted) once."""
    import cv2

    from bisenet_deploy.calibration.precision import PrecisionOptions, make_precisions
    from bisenet_deploy.export.onnx import ExportOptions, export_onnx
    frames = conformance_frames()
    model, spec = demo_model()
    root = tmp_path_factory.mktemp("conformance")
    calib = root / "calib"  # calibrated on the frames it is checked on: the matrix is about backends
    calib.mkdir()
    for i, frame in enumerate(frames):
        cv2.imwrite(str(calib / f"frame{i}.png"), frame)
    paths: dict = {}
    references: dict = {}
    for form, (options, order, precisions) in FORMS.items():
        path = root / f"{form}.onnx"
        export_onnx(model, spec.replace(color_order=order), path,
                    ExportOptions(size=TINY, **options))
        paths[(form, "fp32")] = path
        reduced = tuple(p for p in precisions if p != "fp32")
        if reduced:
            outcome = make_precisions(path, PrecisionOptions(precisions=reduced, calib=calib, calib_count=2, int8_weight_bits=7,
                                                             val_count=2, progress=False), log=lambda line: None)
            for p in reduced:
                paths[(form, p)] = outcome.paths[p]
    # the reference is onnxruntime FP32 on a logits form of each network (those cells pass by definition)
    references["RGB"], references["BGR"] = paths[("full-size", "fp32")], paths[("bgr-net-dynamic-hw", "fp32")]
    return {"paths": paths, "references": references, "frames": frames}


@pytest.fixture(scope="module", autouse=True)
def short_probe():
    """``auto`` probes each artifact for the shortest time its rules allow (MIN_CALLS rounds):
    the matrix checks what it chooses, not how fast."""
    from bisenet_deploy.runtime import choice

    before = choice.PROBE_SECONDS
    choice.PROBE_SECONDS = 0.0
    yield
    choice.PROBE_SECONDS = before


def _reference(conformance, order: str, path=None):
    """(network-size labels, near-tie mask, frame-size masks, probabilities) of the
    onnxruntime FP32 reference for each frame (``path``: of that file's exact arithmetic)."""
    key = ("_ref", order, path)
    if key not in conformance:
        from bisenet_deploy.runtime.backends.onnxruntime import OnnxRuntimeBackend

        file = path or conformance["references"][order]
        seg = Segmenter(OnnxRuntimeBackend(file, device="cpu", optimization="disable" if path else "all"))
        out = []
        for frame in conformance["frames"]:
            if seg.spec.output_kind == "labels":  # an --argmax file's own arithmetic: labels only
                mask = seg(frame)
                out.append((None, np.zeros(seg.spec.input_size, bool), mask, None))
                continue
            logits = seg.logits(frame)
            top2 = np.sort(logits, axis=0)[-2:]
            out.append((processing.argmax_channels(logits[None])[0], (top2[1] - top2[0]) <= TIE, seg(frame),
                        seg.probabilities(frame)))
        seg.close()
        conformance[key] = out
    return conformance[key]


def _agreement(labels: np.ndarray, truth: np.ndarray, ties: np.ndarray | None) -> float:
    """% of pixels with the reference's label; FP32 (``ties`` given): near-ties excluded."""
    assert labels.shape == truth.shape, (labels.shape, truth.shape)
    same = labels == truth
    if ties is not None:
        same = same | ties
    return 100.0 * float(same.mean())


def _check(name: str, labels, truth, ties, threshold: float, failures: list[str]) -> None:
    """Exact (near-ties aside) when ``threshold`` is 100, else that share of every pixel."""
    agreement = _agreement(labels, truth, ties if threshold >= 100.0 else None)
    if agreement < threshold:
        failures.append(f"{name}: {agreement:.2f}% of the reference labels (needs {threshold}%)")


@pytest.mark.parametrize("backend", list(BACKENDS))
@pytest.mark.parametrize("form,precision", ARTIFACTS, ids=[f"{f}-{p}" for f, p in ARTIFACTS])
def test_every_output_gives_the_reference_labels_or_one_line_why(conformance, form, precision, backend):
    if backend != "onnxruntime" and not HAVE_OPENVINO:
        pytest.skip("OpenVINO is not installed")
    path = conformance["paths"][(form, precision)]
    options, order, _ = FORMS[form]
    frames = conformance["frames"]
    failures: list[str] = []
    # (reference, threshold): FP32 against the FP32 reference exactly; reduced precisions against
    # the file's own exact arithmetic at the precision's threshold and the FP32 reference's floor
    checks = [("FP32 reference", _reference(conformance, order), 100.0)]
    if precision != "fp32":
        checks = [("FP32 reference", checks[0][1], REDUCED_FLOOR[precision]),
                  ("file's exact arithmetic", _reference(conformance, order, path), PRECISION_AGREEMENT[precision])]
    with Segmenter(path, **BACKENDS[backend]) as seg:
        where = f"{form} {precision} on {backend} ({seg.backend.name}" + \
            f"{'/' + seg.backend.prepost if hasattr(seg.backend, 'prepost') else ''})"
        single = [seg(frame) for frame in frames]
        batch = seg.predict_batch(frames + frames[:1])  # odd: a fixed batch of 2 pads the last
        scores = []
        for frame in frames:
            if options.get("argmax"):
                for method in (seg.logits, seg.probabilities):
                    with pytest.raises(ArtifactError, match="--argmax") as refused:
                        method(frame)
                    assert "\n" not in str(refused.value)
                continue
            logits, probs = seg.logits(frame), seg.probabilities(frame)
            assert logits.shape == (seg.spec.num_classes, *TINY) and logits.dtype == np.float32
            assert probs.shape == (seg.spec.num_classes, *frame.shape[:2]) and np.allclose(probs.sum(0), 1.0, atol=1e-4)
            scores.append((processing.argmax_channels(logits[None])[0], probs.argmax(0)))
        for against, refs, threshold in checks:
            tag = f"{where} vs the {against}"
            for i, (frame, (net, ties, masks, prob)) in enumerate(zip(frames, refs)):
                frame_ties = _frame_ties(ties, frame)
                _check(f"{tag}: frame {i} labels", single[i], masks, frame_ties, threshold, failures)
                _check(f"{tag}: batch item {i} labels", batch[i], masks, frame_ties, threshold, failures)
                if scores and net is not None:
                    _check(f"{tag}: frame {i} logits", scores[i][0], net, ties, threshold, failures)
                    top = np.sort(prob, 0)
                    _check(f"{tag}: frame {i} probabilities", scores[i][1], prob.argmax(0),
                           frame_ties | ((top[-1] - top[-2]) <= TIE), threshold, failures)
            _check(f"{tag}: batch item 2 labels", batch[2], refs[0][2], _frame_ties(refs[0][1], frames[0]),
                   threshold, failures)
    assert not failures, "\n".join(failures)


def _frame_ties(ties: np.ndarray, frame: np.ndarray) -> np.ndarray:
    """Near-ties at the frame's resolution (nearest neighbour, as the labels are upscaled)."""
    return processing.resize_labels(ties.astype(np.uint8), frame.shape[:2]).astype(bool)


def test_a_channel_swap_cannot_pass_the_matrix(conformance):
    """The frames and the model are colour-sensitive enough that feeding RGB where the
    network wants BGR fails even the reduced precisions' floor."""
    refs = _reference(conformance, "RGB")
    seg = Segmenter(conformance["references"]["RGB"], backend="onnxruntime")
    for frame, (_, _, masks, _) in zip(conformance["frames"], refs):
        swapped = seg(np.ascontiguousarray(frame[:, :, ::-1]))
        assert _agreement(swapped, masks, None) < min(REDUCED_FLOOR.values())
    seg.close()
