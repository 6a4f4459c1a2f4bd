"""Item 5 of issue 23: an unwritable cache, a full disk, numeric options, artifact errors once,
a foreign ONNX's spec from the command line, what bisenet-inspect refuses and shows."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from .tiny_onnx import tiny_onnx


def test_unwritable_cache_is_no_cache_with_one_warning(tmp_path, unwritable_cache, caplog):
    pytest.importorskip("openvino")
    from bisenet_deploy.runtime.segmenter import Segmenter

    model = tiny_onnx(tmp_path / "tiny.onnx")
    frame = np.random.default_rng(0).integers(0, 255, (64, 128, 3), dtype=np.uint8)
    caplog.set_level(logging.WARNING, logger="bisenet_deploy")
    for backend in ("openvino", "auto", "openvino"):
        with Segmenter(model, backend=backend) as seg:
            assert seg.predict(frame).shape == (64, 128)
    warnings = [r for r in caplog.records if "cache" in r.getMessage()]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
    assert "running without a cache" in warnings[0].getMessage()


def test_unwritable_home_in_a_cli(tmp_path):
    pytest.importorskip("openvino")
    home = tmp_path / "home-file"
    home.write_text("")
    env = {k: v for k, v in os.environ.items() if k not in ("BISENET_DEPLOY_CACHE", "XDG_CACHE_HOME")}
    env.update(HOME=str(home), PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    model = tiny_onnx(tmp_path / "tiny.onnx")
    done = subprocess.run([sys.executable, "-m", "bisenet_deploy.cli.bench", str(model), "--backend", "openvino",
                           "--iterations", "2", "--warmup", "1", "--no-reference", "-q"],
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    assert done.stderr.count("running without a cache") == 1, done.stderr


# --- numeric options ---------------------------------------------------------------------------

_BAD_NUMBERS = [
    ("bench", ["m.onnx", "--peak-gflops", "-1"], "--peak-gflops"),
    ("bench", ["m.onnx", "--peak-gflops", "nan"], "--peak-gflops"),
    ("bench", ["m.onnx", "--iterations", "0"], "--iterations"),
    ("bench", ["m.onnx", "--threads", "0"], "--threads"),
    ("bench", ["m.onnx", "--duration", "-5"], "--duration"),
    ("bench", ["m.onnx", "--window", "0"], "--window"),
    ("bench", ["m.onnx", "--warmup", "-1"], "--warmup"),
    ("bench", ["m.onnx", "--warmup-tolerance", "2"], "--warmup-tolerance"),
    ("bench", ["m.onnx", "--max-images", "0"], "--max-images"),
    ("bench", ["m.onnx", "--batch", "1,-4"], "--batch"),
    ("bench", ["m.onnx", "--concurrency", "0"], "--concurrency"),
    ("export", ["m.pth", "--batch", "0"], "--batch"),
    ("export", ["m.pth", "--opset", "-17"], "--opset"),
    ("export", ["m.pth", "--atol", "-1e-3"], "--atol"),
    ("export", ["m.pth", "--rtol", "inf"], "--rtol"),
    ("export", ["m.pth", "--min-agreement", "101"], "--min-agreement"),
    ("export", ["m.pth", "--calib-count", "0"], "--calib-count"),
    ("export", ["m.pth", "--percentile", "100.5"], "--percentile"),
    ("export", ["m.pth", "--calib-seed", "-1"], "--calib-seed"),
    ("export", ["m.pth", "--val-count", "0"], "--val-count"),
    ("export", ["m.pth", "--int8-target", "-3"], "--int8-target"),
    ("export", ["m.pth", "--workspace", "0"], "--workspace"),
    ("export", ["m.pth", "--dla", "-1"], "--dla"),
    ("serve", ["repo", "m.onnx", "-o", "r", "--max-batch", "0"], "--max-batch"),
    ("serve", ["repo", "m.onnx", "-o", "r", "--instances", "-2"], "--instances"),
    ("serve", ["repo", "m.onnx", "-o", "r", "--threads", "-1"], "--threads"),
    ("serve", ["run", "r", "--timeout", "0"], "--timeout"),
]


@pytest.mark.parametrize("command, argv, option", _BAD_NUMBERS, ids=[f"{c}{o}={a[-1]}" for c, a, o in _BAD_NUMBERS])
def test_numeric_options_are_validated(command, argv, option, capsys):
    import importlib

    main = importlib.import_module(f"bisenet_deploy.cli.{command}").main
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert f"error: argument {option}" in err and "Traceback" not in err, err


def test_validators_accept_their_range():
    from bisenet_deploy.cli import common

    assert common.positive_int("3") == 3 and common.nonnegative_int("0") == 0
    assert common.positive_float("0.5") == 0.5 and common.fraction("1") == 1.0 and common.percentile("99.9") == 99.9
    for parse, text in ((common.positive_int, "1.5"), (common.fraction, "-0.1"), (common.positive_float, "x")):
        with pytest.raises(Exception, match="expected|must be"):
            parse(text)


# --- a full disk -------------------------------------------------------------------------------


@pytest.fixture
def full_disk(tmp_path):
    """A 1 MiB tmpfs (root only): every export is larger."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    mount = tmp_path / "full"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    yield mount
    subprocess.run(["umount", str(mount)], check=False)


def test_full_disk_is_one_line_from_export(full_disk, tmp_path, capsys):
    import torch

    from bisenet_deploy.cli import export

    from .conftest import make_model

    torch.save(make_model(3).state_dict(), tmp_path / "m.pth")
    code = export.main([str(tmp_path / "m.pth"), "-o", str(full_disk / "m.onnx"), "--size", "64x128",
                        "--no-verify", "-q"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code != 0
    assert err == [f"bisenet-export: error: no space left on device writing {full_disk / 'm.onnx'}"], err
    assert list(full_disk.iterdir()) == [], "a temporary file outlived the run"


def test_full_disk_behind_a_library_wrapper_is_one_line(capsys):
    import errno

    from bisenet_deploy.cli.common import cli_entry

    @cli_entry("prog")
    def main(argv=None):
        try:
            raise OSError(errno.ENOSPC, "No space left on device", "/data/out.png")
        except OSError as exc:
            raise RuntimeError("writer failed") from exc

    assert main([]) == 1
    assert capsys.readouterr().err == "prog: error: no space left on device writing /data/out.png\n"


# --- bench: one error per artifact, --spec for a foreign ONNX ----------------------------------


def test_bench_says_an_artifact_error_once_and_takes_a_spec(tmp_path, capsys):
    from bisenet_deploy.cli import bench

    model = tiny_onnx(tmp_path / "foreign.onnx", metadata=False)
    assert bench.main([str(model), "--iterations", "1", "--warmup", "1"]) != 0
    err = capsys.readouterr().err
    assert err.count("carries no ModelSpec") == 1, err  # nothing runs: only the final error line says it
    assert "--spec" in err
    good = tiny_onnx(tmp_path / "good.onnx")
    assert bench.main([str(good), str(model), "--backend", "onnxruntime", "--iterations", "1", "--warmup", "1",
                       "--no-reference", "--json", str(tmp_path / "both.json")]) == 1  # one of two did not run
    err = capsys.readouterr().err
    assert err.count("skipped foreign.onnx: 'foreign.onnx' carries no ModelSpec") == 1, err
    spec = tmp_path / "spec.json"
    spec.write_text(json.dumps({"num_classes": 4, "color_order": "BGR", "mean": [0.5, 0.5, 0.5],
                                "std": [0.25, 0.25, 0.25]}))
    out = tmp_path / "r.json"
    assert bench.main([str(model), "--spec", str(spec), "--backend", "onnxruntime", "--iterations", "1",
                       "--warmup", "1", "--no-reference", "-q", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert any(row for cell in result["cells"] for row in cell["rows"])
    with pytest.raises(SystemExit):
        bench.main([str(model), "--spec", '{"num_class": 4}'])
    assert "unknown ModelSpec field(s) num_class" in capsys.readouterr().err


def test_spec_for_takes_the_model_input_size(tmp_path):
    from bisenet_deploy.cli.common import spec_arg, spec_for
    from bisenet_deploy.runtime.backends.onnxruntime import OnnxRuntimeBackend

    fields = spec_arg('{"num_classes": 4}')
    with OnnxRuntimeBackend(tiny_onnx(tmp_path / "f.onnx", metadata=False), device="cpu") as backend:
        assert spec_for(fields, backend).input_size == (64, 128)
    with OnnxRuntimeBackend(tiny_onnx(tmp_path / "d.onnx", metadata=False, dynamic=True), device="cpu") as backend:
        spec = spec_for(fields, backend)
        assert set(spec.dynamic_axes) == {"batch", "height", "width"}


# --- bisenet-inspect ---------------------------------------------------------------------------


def test_inspect_refuses_what_cannot_run(tmp_path, capsys):
    import onnx
    from onnx import TensorProto as T
    from onnx import helper as h

    from bisenet_deploy.cli import inspect

    empty = tmp_path / "empty.onnx"
    empty.write_bytes(b"")
    assert inspect.main([str(empty)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "empty (0 bytes)" in err[0]

    graph = h.make_graph([h.make_node("Add", ["a", "b"], ["y"])], "g",
                         [h.make_tensor_value_info(n, T.FLOAT, [1, 3, 8, 8]) for n in ("a", "b")],
                         [h.make_tensor_value_info("y", T.FLOAT, [1, 3, 8, 8])])
    two = tmp_path / "two.onnx"
    onnx.save(h.make_model(graph), two)
    assert inspect.main([str(two)]) == 1
    out = capsys.readouterr().out
    runners = [ln for ln in out.splitlines() if "runs here" in ln and "tensorrt" not in ln]
    assert runners and all("runs here  no" in ln and "2 inputs" in ln for ln in runners), out


def test_fidelity_reports_merge_and_inspect_shows_them(export_model5, capsys):
    from bisenet_deploy.calibration.precision import PrecisionOptions, fidelity_report_path, make_precisions
    from bisenet_deploy.cli import inspect

    fp32 = export_model5()
    fast = dict(calib_count=2, val_count=1, progress=False)
    make_precisions(fp32, PrecisionOptions(precisions=("fp16",), **fast))
    make_precisions(fp32, PrecisionOptions(precisions=("int8",), **fast))
    report = json.loads(fidelity_report_path(fp32).read_text())
    assert set(report["models"]) == {"fp16", "int8"}, "the int8 run lost the fp16 record"
    assert report["models"]["fp16"]["fidelity"]["label_agreement"] > 90

    assert inspect.main([str(fp32.with_name(fp32.stem + ".fp16.onnx"))]) == 0
    out = capsys.readouterr().out
    assert "fidelity   label agreement" in out and "fidelity.json" in out
    assert inspect.main([str(fp32), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    from bisenet_deploy import __version__

    assert info["producer"] == f"bisenet-deploy {__version__}"
    assert "torch" in info["versions"] and info["fidelity"]["reference"] is True
