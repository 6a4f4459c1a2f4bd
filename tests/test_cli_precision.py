"""``bisenet-export --precision``: from a checkpoint or an exported ONNX, and bad data."""

import json
import shutil
from pathlib import Path

import cv2
import onnx
import pytest

from bisenet_deploy.cli.export import main
from bisenet_deploy.export.metadata import read_metadata
from bisenet_deploy.spec import PRECISION_KEY

SMALL = ["--calib-count", "3", "--val-count", "2", "-q"]


def run(capsys, *argv):
    code = main(list(map(str, argv)))
    out, err = capsys.readouterr()
    return code, out, err


def _one_line_error(code, err, expected_code=2):
    assert code == expected_code
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("bisenet-export: error: "), err
    return lines[0]


@pytest.fixture()
def calib_folder(tmp_path, photos):
    folder = tmp_path / "calib" / "nested"
    folder.mkdir(parents=True)
    for name, image in photos[:4]:
        cv2.imwrite(str(folder / f"{name}.png"), cv2.resize(image, (128, 96)))
    return folder.parent


def test_checkpoint_to_all_three_precisions(checkpoint5, calib_folder, tmp_path, capsys):
    out = tmp_path / "seg.onnx"
    code, stdout, _ = run(
        capsys, checkpoint5, "-o", out, "--size", "64x128", "--no-verify",
        "--precision", "fp32,fp16,int8", "--calib", calib_folder, *SMALL,
    )
    assert code == 0, stdout
    written = {"fp32": out, "fp16": tmp_path / "seg.fp16.onnx", "int8": tmp_path / "seg.int8.onnx"}
    for precision, path in written.items():
        assert read_metadata(onnx.load(str(path), load_external_data=False))[PRECISION_KEY] == precision
    report = json.loads((tmp_path / "seg.fidelity.json").read_text())
    assert set(report["models"]) == {"fp16", "int8"}
    assert report["calibration"]["source"] == f"folder {calib_folder}" and report["calibration"]["count"] == 3
    assert (tmp_path / "seg.calib.json").is_file()
    assert "fp16: label agreement" in stdout and "int8: label agreement" in stdout and "seg.fidelity.json" in stdout


def test_existing_onnx_to_int8_with_output_base(precision_models, tmp_path, capsys):
    src = tmp_path / "model.onnx"
    shutil.copy(precision_models["dynamic"]["fp32"], src)
    base = tmp_path / "out" / "robot.onnx"
    code, _, err = run(capsys, src, "--precision", "int8", "-o", base, "--calib", tmp_path / "nope", *SMALL)
    assert "does not exist" in _one_line_error(code, err)
    assert not base.parent.exists()  # a failed run leaves no folder behind
    for cache in ("computed", "reused"):  # the missing output folder is created
        code, stdout, _ = run(capsys, src, "--precision", "int8", "-o", base, *SMALL)
        assert code == 0 and "int8: label agreement" in stdout
        assert json.loads(base.with_name("robot.fidelity.json").read_text())["calibration"]["cache"] == cache
    assert base.with_name("robot.int8.onnx").is_file() and not base.with_name("robot.fp16.onnx").exists()
    assert not base.exists()  # the FP32 source stays where it is


def test_reduced_precision_input_is_refused(precision_models, capsys):
    code, _, err = run(capsys, precision_models["fixed"]["int8"], "--precision", "int8", *SMALL)
    assert "already reduced to int8" in _one_line_error(code, err)


@pytest.mark.parametrize("kind", ["missing", "empty", "unreadable", "text-file", "float-npy"])
def test_bad_calibration_sources_give_one_line_and_keep_outputs(precision_models, tmp_path, capsys, kind):
    import numpy as np

    src = tmp_path / "model.onnx"
    shutil.copy(precision_models["fixed"]["fp32"], src)
    existing = tmp_path / "model.int8.onnx"
    existing.write_bytes(b"keep me")
    calib = tmp_path / "calib"
    if kind == "empty":
        calib.mkdir()
    elif kind == "unreadable":
        calib.mkdir()
        for i in range(3):
            (calib / f"{i}.jpg").write_bytes(b"not a jpeg at all")
    elif kind == "text-file":
        calib = tmp_path / "frames.txt"
        calib.write_text("frame list")
    elif kind == "float-npy":
        calib = tmp_path / "frames.npy"
        np.save(calib, np.zeros((2, 8, 8, 3), np.float32))
    code, _, err = run(capsys, src, "--precision", "int8", "--calib", calib, *SMALL)
    message = _one_line_error(code, err)
    expected = {
        "missing": "does not exist",
        "empty": "no images",
        "unreadable": "none of the 3 items",
        "text-file": "not a folder of images",
        "float-npy": "expected uint8 frames",
    }[kind]
    assert expected in message
    assert existing.read_bytes() == b"keep me"


def test_precision_copies_then_engines(precision_models, tmp_path, capsys):
    pytest.importorskip("tensorrt_rtx", reason="needs NVIDIA TensorRT-RTX (pip install 'bisenet-deploy[rtx]')")
    src = tmp_path / "model.onnx"
    shutil.copy(precision_models["fixed"]["fp32"], src)
    code, stdout, _ = run(capsys, src, "--precision", "int8", "--engine", "--tensorrt", "tensorrt_rtx", *SMALL)
    assert code == 0, stdout
    sidecar = json.loads((tmp_path / "model.int8.engine.json").read_text())
    assert sidecar["precision"] == "int8"
    assert sidecar["calibration"]["method"] == {"name": "entropy"} and sidecar["calibration"]["count"] == 3
    assert not (tmp_path / "model.fp32.engine").exists()  # only the precisions asked for


def test_demo_calibrates_and_measures_on_shapes_scenes(tmp_path, capsys, photos):
    """--demo without --calib/--val-images: the trained demo model is calibrated on shapes
    scenes over training photos and measured against labels on held-out ones."""
    from bisenet_deploy.model.demo import demo_checkpoint_path

    if demo_checkpoint_path() is None:
        pytest.skip("trained demo weights not packaged")
    out = tmp_path / "demo.onnx"
    code, stdout, _ = run(capsys, "--demo", "-o", out, "--size", "128x128", "--precision", "int8", *SMALL)
    assert code == 0, stdout
    report = json.loads((tmp_path / "demo.fidelity.json").read_text())
    # provenance names what the scenes were, not the temporary folder they were written to
    assert "generated shapes scenes" in report["calibration"]["source"]
    assert "bisenet-demo-scenes" not in json.dumps(report)
    assert report["calibration"]["count"] == 3
    assert report["validation"]["ground_truth"] and report["validation"]["held_out"]
    assert report["fp32_miou_vs_ground_truth"] > 30  # the model recognises the scenes' objects
    import tempfile

    assert not list(Path(tempfile.gettempdir()).glob("bisenet-demo-scenes.bisenet-tmp-*"))  # scenes removed
