"""``--spec`` for a foreign ONNX (no ModelSpec in its metadata) in ``bisenet-infer`` (issue 23):
the masks are those of the given normalization and colour order, computed here independently;
without it the model is refused with one line naming ``--spec``; bad specs are one line; a
rerun with another spec into the same folder is refused like another model."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
from PIL import Image

from bisenet_deploy.cli.infer import main as infer

from .tiny_onnx import tiny_onnx

FIELDS = {"num_classes": 4, "color_order": "RGB", "mean": [0.2, 0.5, 0.7], "std": [0.3, 0.2, 0.1]}


def _expected(model, frame):
    """Labels by hand: RGB, /255, (x - mean) / std, NCHW, argmax (frames at network size: no resize)."""
    import onnxruntime as ort

    x = frame[..., ::-1].astype(np.float32) / 255.0
    x = (x - np.array(FIELDS["mean"], np.float32)) / np.array(FIELDS["std"], np.float32)
    logits = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"]).run(
        None, {"input": x.transpose(2, 0, 1)[None]})[0]
    return logits[0].argmax(0).astype(np.uint8)


@pytest.fixture()
def foreign(tmp_path):
    model = tiny_onnx(tmp_path / "foreign.onnx", metadata=False)
    rng = np.random.default_rng(3)
    # asymmetric in colour: a channel swap or a wrong mean cannot give the same labels
    frame = np.clip(rng.normal((40, 120, 220), 50, (64, 128, 3)), 0, 255).astype(np.uint8)
    cv2.imwrite(str(tmp_path / "a.png"), frame)
    return model, tmp_path / "a.png", frame


def _one_error_line(err: str) -> str:
    lines = [ln for ln in err.strip().splitlines() if "error" in ln]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino", None])  # None: the default (auto with OpenVINO)
def test_a_foreign_onnx_runs_with_the_given_spec(foreign, tmp_path, capsys, backend):
    if backend == "openvino":
        pytest.importorskip("openvino")
    model, image, frame = foreign
    out = tmp_path / "out"
    extra = ["--backend", backend] if backend else []
    assert infer([str(model), str(image), "-o", str(out), "--spec", json.dumps(FIELDS), "-q", *extra]) == 0
    with Image.open(out / "a.png") as im:  # a palette PNG: the pixel values are the class ids
        mask = np.asarray(im)
    expected = _expected(model, frame)
    assert len(np.unique(expected)) > 1  # the check can tell labels apart
    np.testing.assert_array_equal(mask, expected)
    assert json.loads((out / ".bisenet-infer.json").read_text())["given_spec"] == FIELDS


def test_a_foreign_onnx_without_a_spec_is_one_line_naming_it(foreign, tmp_path, capsys):
    model, image, _ = foreign
    assert infer([str(model), str(image), "-o", str(tmp_path / "out"), "-q"]) != 0
    line = _one_error_line(capsys.readouterr().err)
    assert "carries no ModelSpec" in line and "--spec" in line
    assert not (tmp_path / "out" / "a.png").exists()


def test_spec_is_refused_for_a_model_that_carries_one(tmp_path, capsys):
    model = tiny_onnx(tmp_path / "own.onnx")
    cv2.imwrite(str(tmp_path / "a.png"), np.zeros((8, 8, 3), np.uint8))
    assert infer([str(model), str(tmp_path / "a.png"), "-o", str(tmp_path / "out"), "-q", "--backend", "onnxruntime",
                  "--spec", '{"num_classes": 4}']) != 0
    assert "carries its own ModelSpec" in _one_error_line(capsys.readouterr().err)


@pytest.mark.parametrize("own_spec", [True, False])
def test_the_spec_refusal_comes_before_any_backend_opens(tmp_path, capsys, monkeypatch, own_spec):
    """Decided from the ONNX metadata: no backend opened, no `auto` probe line, the refusal is
    the only line (it came after ~2 s of probing and the probe's line)."""
    from bisenet_deploy.runtime import choice

    def no_open(*args, **kwargs):
        raise AssertionError("a backend was opened before the refusal")

    monkeypatch.setattr(choice, "open_model", no_open)
    model = tiny_onnx(tmp_path / "m.onnx", metadata=own_spec)
    cv2.imwrite(str(tmp_path / "a.png"), np.zeros((8, 8, 3), np.uint8))
    args = [str(model), str(tmp_path / "a.png"), "-o", str(tmp_path / "out")]
    assert infer([*args, "--spec", '{"num_classes": 4}'] if own_spec else args) != 0
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err
    assert ("carries its own ModelSpec" if own_spec else "carries no ModelSpec") in err


@pytest.mark.parametrize("text, why", [
    ('{"num_classes": 4', "not valid JSON"),
    ('{"num_class": 4}', "unknown ModelSpec field(s) num_class"),
    ('{"num_classes": 0}', "not a valid ModelSpec"),
    ('{"num_classes": 4, "color_order": "RBG"}', "not a valid ModelSpec"),
    ("file:[4]", "must be a JSON object"),  # a .json file that holds no object
    ('missing.json', "neither"),
])
def test_bad_specs_are_one_line(foreign, tmp_path, capsys, text, why):
    model, image, _ = foreign
    if text.startswith("file:"):
        (tmp_path / "spec.json").write_text(text[5:])
        text = str(tmp_path / "spec.json")
    with pytest.raises(SystemExit) as exit_:
        infer([str(model), str(image), "-o", str(tmp_path / "out"), "--spec", text])
    assert exit_.value.code != 0
    line = _one_error_line(capsys.readouterr().err)
    assert line.startswith("bisenet-infer: error: argument --spec:") and why in line, line
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("stride", [8, 2])
def test_an_output_stride_the_model_does_not_have_is_refused(foreign, tmp_path, capsys, stride):
    """The tiny model's output has its input's size: a --spec claiming stride 8 is one line."""
    model, image, _ = foreign
    assert infer([str(model), str(image), "-o", str(tmp_path / "out"), "-q", "--backend", "onnxruntime",
                  "--spec", json.dumps({**FIELDS, "output_stride": stride})]) != 0
    line = _one_error_line(capsys.readouterr().err)
    assert f"output_stride {stride}" in line, line
    assert not (tmp_path / "out" / "a.png").exists()


def test_another_spec_into_the_same_folder_is_refused_like_another_model(foreign, tmp_path, capsys):
    model, image, _ = foreign
    out = tmp_path / "out"
    args = [str(model), str(image), "-o", str(out), "-q", "--backend", "onnxruntime"]
    assert infer([*args, "--spec", json.dumps(FIELDS)]) == 0
    before = (out / "a.png").read_bytes()
    other = {**FIELDS, "color_order": "BGR"}
    assert infer([*args, "--spec", json.dumps(other)]) != 0
    line = _one_error_line(capsys.readouterr().err)
    assert "holds results of another run" in line and "--spec" in line and "--overwrite" in line
    assert (out / "a.png").read_bytes() == before  # nothing replaced
    assert infer([*args, "--spec", json.dumps(FIELDS)]) == 0  # the same spec: its results are kept
    assert infer([*args, "--spec", json.dumps(other), "--overwrite"]) == 0
    assert json.loads((out / ".bisenet-infer.json").read_text())["given_spec"]["color_order"] == "BGR"


def test_spec_for_a_served_model_is_refused(tmp_path, capsys):
    cv2.imwrite(str(tmp_path / "a.png"), np.zeros((8, 8, 3), np.uint8))
    assert infer(["grpc://127.0.0.1:1/bisenet", str(tmp_path / "a.png"), "-o", str(tmp_path / "out"),
                  "--spec", '{"num_classes": 4}']) != 0
    assert "a served model (URL)" in _one_error_line(capsys.readouterr().err)
