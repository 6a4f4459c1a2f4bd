"""The GPU check's build half runs here (TensorRT-RTX, no GPU); its run half needs a GPU.
Its reporter merges a run into one file, checked here on a recorded run."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from bisenet_deploy.cli import gpu_check
from bisenet_deploy.trt.loading import flavour
from tests.trt_fixtures import builder_module

ROOT = Path(__file__).resolve().parents[1]


def _reporter():
    spec = importlib.util.spec_from_file_location("gpu_check_report", ROOT / "scripts" / "gpu_check_report.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_labels_form_exports_and_builds_at_every_precision(tmp_path):
    trt = builder_module()
    calib = gpu_check.write_calibration_images(tmp_path / "calib", (64, 128))
    assert len(list(calib.glob("*.png"))) == 16
    code, why = gpu_check.export_with_engine(
        tmp_path, "labels_dynamic", "64x128", *gpu_check.FORMS["labels_dynamic"], "--precision", "fp32,fp16,int8",
        "--calib", str(calib), "--tensorrt", flavour(trt), "--timing-cache", str(tmp_path / "shared.timing-cache"),
    )
    assert code == 0, why
    for precision in gpu_check.PRECISIONS:  # the names run_checks looks for
        assert (tmp_path / f"labels_dynamic.{precision}.engine.json").is_file()
    side = json.loads((tmp_path / "labels_dynamic.int8.engine.json").read_text())
    assert side["spec"]["input_layout"] == "NHWC_UINT8" and side["spec"]["output_kind"] == "labels"


def test_verdict():
    ok = gpu_check.CheckResult("a", "PASS")
    assert gpu_check.verdict([ok, gpu_check.CheckResult("b", "SKIP")]) == (True, "PASS: 1 checks passed (1 skipped: b)")
    passed, line = gpu_check.verdict([ok, gpu_check.CheckResult("c", "FAIL", "x")])
    assert not passed and line.startswith("FAIL: 1 of 2 checks failed (c)")


JUNIT = """<?xml version="1.0" encoding="utf-8"?><testsuites><testsuite name="pytest" tests="3">
<testcase classname="tests.test_tensorrt_runtime" name="test_dynamic_shapes" time="1.5"/>
<testcase classname="tests.test_tensorrt_runtime" name="test_dla_engine_runs_on_its_core" time="0.1">
<skipped type="pytest.skip" message="no DLA cores here">skip</skipped></testcase>
<testcase classname="tests.test_tensorrt_build" name="test_layer_report" time="2.0">
<failure message="AssertionError: no Layers&#10;second line">trace</failure></testcase>
</testsuite></testsuites>"""


def test_report_merges_checks_and_tests_into_one_file(tmp_path, capsys):
    reporter = _reporter()
    checks = {"verdict": "PASS: 1 checks passed", "passed": True, "results": [
        {"name": "fixed.fp16.engine vs onnxruntime fp32 at 1x64x128", "status": "PASS", "detail": "min 99.9%",
         "figures": {"compute_ms_median": 0.4}, "seconds": 3.5}]}
    (tmp_path / "checks.json").write_text(json.dumps(checks))
    (tmp_path / "pytest.xml").write_text(JUNIT)
    assert reporter.main([str(tmp_path), "--seconds", "42"]) == 1  # one test failed
    report = json.loads((tmp_path / "gpu_check_report.json").read_text())
    assert report["verdict"].startswith("FAIL: 2 passed, 1 failed, 1 skipped") and report["wall_seconds"] == 42
    rows = {r["name"]: r for r in report["paths"]}
    assert rows["tests.test_tensorrt_build::test_layer_report"]["detail"] == "AssertionError: no Layers"
    assert rows["tests.test_tensorrt_runtime::test_dla_engine_runs_on_its_core"]["status"] == "SKIP"
    assert rows["fixed.fp16.engine vs onnxruntime fp32 at 1x64x128"]["seconds"] == 3.5
    assert "versions" in report and "gpu_problem" in report and "tensorrt" in report
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checks.json", "gpu_check_report.json", "pytest.xml"]
    assert "report:" in capsys.readouterr().out


def test_report_without_a_run_fails():
    reporter = _reporter()
    assert [r["status"] for r in reporter.pytest_paths(Path("/nonexistent/pytest.xml"))] == ["FAIL"]


def test_without_a_gpu_the_script_writes_a_report_that_says_why(tmp_path):
    """scripts/gpu_check.sh on a machine without a usable GPU: one line on stderr, exit 2,
    and still the report file a user attaches, whose verdict says why nothing ran."""
    import os
    import subprocess
    import sys

    from tests.trt_fixtures import gpu_problem

    if gpu_problem() is None:
        pytest.skip("this machine has a GPU: the script would run every path")
    env = dict(os.environ, PYTHON=sys.executable)
    run = subprocess.run(["bash", str(ROOT / "scripts" / "gpu_check.sh"), "out"], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 2, run.stderr
    lines = [ln for ln in run.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("gpu_check.sh: nothing checked: "), lines
    report = json.loads((tmp_path / "out" / "gpu_check_report.json").read_text())
    assert report["verdict"] == "NOT RUN: " + lines[0].split("nothing checked: ", 1)[1]
    assert report["passed"] is False and report["ran"] is False and report["paths"] == []
    assert "versions" in report and report["gpu_problem"]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["gpu_check_report.json"]


@pytest.mark.parametrize("layers, status", [([{"Name": "conv", "LayerType": "CaskConvolution"}], "FAIL"), (None, "FAIL")],
                         ids=["all-on-gpu", "no-report"])
def test_dla_check_fails_when_no_layer_runs_on_dla(tmp_path, monkeypatch, layers, status):
    """A DLA engine whose layers all fell back to the GPU (or without a layer report) fails
    the DLA path even though it builds and runs."""
    from types import SimpleNamespace

    from bisenet_deploy.trt import loading

    trt = SimpleNamespace(__name__="tensorrt", __version__="10.3.0", Builder=lambda logger: SimpleNamespace(
        num_DLA_cores=2))
    monkeypatch.setattr(loading, "load_tensorrt", lambda name: trt)
    monkeypatch.setattr(loading, "logger_for", lambda trt, verbose=False: None)

    def export(out_dir, name, *args):
        engine = out_dir / f"{name}.fp16.engine"
        engine.write_bytes(b"ftrt")
        if layers is not None:
            (out_dir / f"{engine.name}.layers.json").write_text(json.dumps({"Layers": layers}))
        return 0, ""

    monkeypatch.setattr(gpu_check, "export_with_engine", export)
    monkeypatch.setattr(gpu_check, "agreement_check", lambda *a: pytest.fail("must not get this far"))
    result = gpu_check.dla_check(tmp_path, "64x128", None, (64, 128), "tensorrt", tmp_path / "c")
    assert result.status == status and "no layer runs on DLA core 0" in result.detail


def test_engine_agreement_goes_through_the_one_comparator(tmp_path):
    """The run half's verdict, on a CPU: an onnxruntime run as the 'engine' (the same
    ``_outputs`` runner the check uses) agrees with itself; one frame with other labels fails
    the per-frame threshold even when the mean would pass."""
    import numpy as np

    from bisenet_deploy.runtime.backends.onnxruntime import OnnxRuntimeBackend

    from .tiny_onnx import tiny_onnx

    frames = gpu_check.check_frames((64, 128), count=4)
    assert len(frames) == 4
    with OnnxRuntimeBackend(tiny_onnx(tmp_path / "m.onnx", dynamic=True), device="cpu") as backend:
        expected = gpu_check._outputs(backend, frames, (64, 128), batch=2)
        swapped = gpu_check._outputs(backend, [f[..., ::-1] for f in frames], (64, 128), batch=2)
    assert expected[0].shape == (4, 64, 128) and expected[1].shape[:2] == (4, 4)
    status, detail, figures = gpu_check.agreement_figures(expected, expected, 99.0)
    assert status == "PASS" and figures["min_agreement"] == 100.0 and figures["max_abs_diff"] == 0.0
    got = (expected[0].copy(), None)
    got[0][1] = np.where(got[0][1] == 0, 1, 0)  # one frame entirely wrong: mean 75 %, min 0 %
    status, detail, figures = gpu_check.agreement_figures(expected, got, 70.0)
    assert status == "FAIL" and figures["min_agreement"] == 0.0 and figures["mean_agreement"] == 75.0, detail
    assert gpu_check.agreement_figures(expected, swapped, 99.0)[0] == "FAIL"  # frames' channels swapped


def test_script_options_help_unknown_and_an_output_it_cannot_make(tmp_path):
    """--help prints the usage (and creates nothing), an unknown option or an output folder
    that cannot be made is one line and exit 2: all decided before anything runs."""
    import subprocess

    def run(*args):
        return subprocess.run(["bash", str(ROOT / "scripts" / "gpu_check.sh"), *args], cwd=tmp_path,
                              capture_output=True, text=True, timeout=60)

    shown = run("--help")
    assert shown.returncode == 0 and "usage: scripts/gpu_check.sh [OUT_DIR]" in shown.stdout
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "afile").write_text("x")
    for args, message in ((["--bogus"], "unknown option '--bogus'"), (["afile/out"], "cannot create or write"),
                          (["--size"], "--size needs a value")):
        done = run(*args)
        lines = [ln for ln in done.stderr.splitlines() if ln.strip()]
        assert done.returncode == 2 and len(lines) == 1 and lines[0].startswith("gpu_check.sh: error: "), done.stderr
        assert message in lines[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile"]
