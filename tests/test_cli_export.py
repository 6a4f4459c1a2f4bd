import shutil
import subprocess
import sys

import pytest

from bisenet_deploy.cli.export import main

SIZE = ["--size", "64x128"]


def run(capsys, *argv):
    code = main(list(map(str, argv)))
    out, err = capsys.readouterr()
    return code, out, err


def test_export_checkpoint_writes_verified_onnx(checkpoint5, tmp_path, capsys):
    out = tmp_path / "m.onnx"
    code, stdout, _ = run(capsys, checkpoint5, "-o", out, *SIZE)
    assert code == 0
    assert out.is_file() and (tmp_path / "m.verify.json").is_file()
    assert "verification PASS" in stdout and "opset 17" in stdout


def test_default_output_is_next_to_checkpoint(checkpoint5, tmp_path, capsys):
    ck = tmp_path / "net.pth"
    shutil.copy(checkpoint5, ck)
    code, stdout, _ = run(capsys, ck, *SIZE, "--no-verify", "--argmax", "--fuse-preprocess", "-q")
    assert code == 0 and (tmp_path / "net.onnx").is_file()
    assert "uint8" in stdout and "labels int32" in stdout and "skipped" in stdout


def test_demo_needs_no_checkpoint_and_says_what_it_is(tmp_path, capsys):
    code, stdout, _ = run(capsys, "--demo", "-o", tmp_path / "demo.onnx", *SIZE, "--dynamic", "batch")
    assert code == 0 and (tmp_path / "demo.onnx").is_file()
    assert "demo" in stdout.lower()
    assert "UNTRAINED" in stdout or "trained" in stdout


def _one_line_error(code, err, expected_code=2):
    assert code == expected_code
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("bisenet-export: error: "), err
    return lines[0]


@pytest.mark.parametrize(
    "content, message",
    [(None, "not found"), (b"\x00\x01\x02garbage" * 50, "not a PyTorch checkpoint"), (b"hello\n", "text file")],
    ids=["missing", "random-bytes", "text"],
)
def test_bad_checkpoints_give_one_line_and_keep_existing_output(tmp_path, capsys, content, message):
    ck = tmp_path / "bad.pth"
    if content is not None:
        ck.write_bytes(content)
    out = tmp_path / "bad.onnx"
    out.write_bytes(b"keep me")
    code, _, err = run(capsys, ck, *SIZE)
    assert message in _one_line_error(code, err)
    assert out.read_bytes() == b"keep me"


def test_keys_from_another_network(tmp_path, capsys):
    import torch
    from torchvision.models import resnet18

    ck = tmp_path / "resnet.pth"
    torch.save(resnet18(weights=None).state_dict(), ck)
    code, _, err = run(capsys, ck, *SIZE)
    assert "not a whole segmentation network" in _one_line_error(code, err)
    assert "context_path.*" in err or "cp.resnet.*" in err


def test_output_folder_missing_is_created_and_a_file_in_the_way_refused(checkpoint5, tmp_path, capsys):
    code, _, _ = run(capsys, checkpoint5, "-o", tmp_path / "missing" / "deeper" / "m.onnx", *SIZE)
    assert code == 0 and (tmp_path / "missing" / "deeper" / "m.onnx").is_file()
    (tmp_path / "file").write_text("x")
    code, _, err = run(capsys, checkpoint5, "-o", tmp_path / "file" / "m.onnx", *SIZE)
    assert "is a file, not a folder" in _one_line_error(code, err)


def test_onnx_given_as_input_and_bad_arguments(tmp_path, capsys):
    (tmp_path / "x.onnx").write_bytes(b"x")
    code, _, err = run(capsys, tmp_path / "x.onnx")
    assert "already an ONNX model" in _one_line_error(code, err)
    code, _, err = run(capsys)
    assert "--demo" in _one_line_error(code, err)


def test_failed_verification_exits_nonzero_and_keeps_old_model(checkpoint5, tmp_path, capsys):
    out = tmp_path / "m.onnx"
    out.write_bytes(b"old")
    code, _, err = run(capsys, checkpoint5, "-o", out, *SIZE, "--atol", "0", "--rtol", "0")
    assert "verification failed" in _one_line_error(code, err, expected_code=3)
    assert out.read_bytes() == b"old"


def test_console_script_help_and_error_exit_code(tmp_path):
    exe = shutil.which("bisenet-export")
    cmd = [exe] if exe else [sys.executable, "-m", "bisenet_deploy.cli.export"]
    help_run = subprocess.run(cmd + ["--help"], capture_output=True, text=True, timeout=120)
    assert help_run.returncode == 0 and "--fuse-preprocess" in help_run.stdout
    bad = subprocess.run(cmd + [str(tmp_path / "missing.pth")], capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr and "not found" in bad.stderr


@pytest.mark.parametrize("argv, message", [
    (["--demo", "--native-resolution"], "--native-resolution describes a checkpoint file"),
    (["--demo", "--variant", "X39.speed", "--arch", "torchseg"], "--arch, --variant describe a checkpoint file"),
    (["--demo", "--frame-order", "RGB"], "--frame-order sets the channel order of the frames a --fuse-preprocess"),
    (["CKPT", "--native-resolution"], "--native-resolution does not apply to bisenet_v1"),
    (["CKPT", "--frame-order", "BGR"], "--frame-order sets the channel order of the frames a --fuse-preprocess"),
    (["CKPT", "--calib", "CKPT"], "--calib does nothing without --precision fp16 or int8"),
    (["CKPT", "--precision", "fp32", "--calib-count", "5"], "--calib-count does nothing without --precision fp16"),
    (["CKPT", "--precision", "fp16", "--calib-method", "minmax"], "--calib-method does nothing without --precision int8"),
    (["CKPT", "--precision", "int8", "--fp16-keep", "Resize"], "--fp16-keep does nothing without --precision fp16"),
    (["CKPT", "--precision", "int8", "--percentile", "99.9"], "--percentile does nothing without --calib-method percentile"),
    (["CKPT", "--precision", "int8", "--int8-target", "50"], "--int8-target does nothing without --int8-fallback auto"),
    (["CKPT", "--val-images", "DIR"], "--val-images does nothing without --precision fp16 or int8"),
    (["CKPT", "--tensorrt", "tensorrt"], "--tensorrt is a TensorRT build option; add --engine"),
    (["CKPT", "--no-verify", "--atol", "0.1", "--verify-images", "DIR"],
     "--verify-images, --atol set how the export is verified; --no-verify skips"),
    # typed out at their defaults: still given, still doing nothing
    (["CKPT", "--calib-method", "entropy"], "--calib-method does nothing without --precision int8"),
    (["CKPT", "--precision", "fp16", "--int8-weight-bits", "8"], "--int8-weight-bits does nothing without"),
    (["CKPT", "--tensorrt", "auto"], "--tensorrt is a TensorRT build option; add --engine"),
    (["CKPT", "--no-verify", "--atol", "0.001"], "--atol sets how the export is verified; --no-verify skips"),
], ids=["demo-native", "demo-variant", "rgb-without-fused-graph", "native-on-bisenet-v1", "bgr-without-fused-graph",
        "calib-fp32", "calib-count-fp32", "int8-option-fp16", "fp16-option-int8", "percentile-entropy",
        "target-no-fallback", "val-fp32", "tensorrt-no-engine", "verify-options-no-verify",
        "default-calib-method", "default-weight-bits", "default-tensorrt", "default-atol"])
def test_options_that_would_do_nothing_are_refused(checkpoint5, tmp_path, capsys, argv, message):
    """An option that cannot act here is refused in one line rather than ignored (an RGB frame
    order on a graph whose host preprocessing takes BGR would have been written into the spec)."""
    out = tmp_path / "m.onnx"
    argv = [{"CKPT": checkpoint5, "DIR": tmp_path}.get(a, a) for a in argv]
    code, _, err = run(capsys, *argv, "-o", out, *SIZE)
    assert message in _one_line_error(code, err)
    assert not out.exists()


def test_rgb_frame_order_needs_a_fused_graph_in_the_api_too(model5, tmp_path):
    from bisenet_deploy.errors import ExportError
    from bisenet_deploy.export.onnx import ExportOptions, export_onnx
    from bisenet_deploy.spec import ModelSpec

    with pytest.raises(ExportError, match="fused preprocessing"):
        export_onnx(model5, ModelSpec(num_classes=5), tmp_path / "m.onnx",
                    ExportOptions(size=(64, 128), frame_color_order="RGB"))
    assert not (tmp_path / "m.onnx").exists()
