"""``bisenet-bench`` end to end on tiny (64x128) models with few iterations: every field is
emitted and consistent, JSON/CSV/markdown round-trip, sweeps skip fixed-size artifacts,
reference fallback, sustained mode with Jetson facts off a fake sysfs tree."""

from __future__ import annotations

import json

import numpy as np
import pytest

from bisenet_deploy.benchmarks import report
from bisenet_deploy.benchmarks.harness import TIMED
from bisenet_deploy.cli.bench import main

from .conftest import TINY
from .test_bench_parts import make_fake_jetson

FAST = ["--iterations", "2", "--warmup", "1", "--warmup-max", "2", "--max-images", "2", "--peak-gflops", "100", "-q",
        "--backend", "onnxruntime"]


@pytest.fixture(scope="module")
def bench_models(checkpoint5, tmp_path_factory):
    """model5 exported through load_checkpoint, so the ONNX metadata records the checkpoint."""
    from bisenet_deploy.export.onnx import ExportOptions, export_onnx
    from bisenet_deploy.model.checkpoint import load_checkpoint

    loaded = load_checkpoint(checkpoint5)
    folder = tmp_path_factory.mktemp("bench")
    paths = {}
    for name, options in {
        "plain": ExportOptions(size=TINY),
        "argmax": ExportOptions(size=TINY, argmax=True),
        "dynamic": ExportOptions(size=TINY, dynamic=("batch", "height", "width")),
    }.items():
        paths[name] = folder / f"{name}.onnx"
        export_onnx(loaded.model, loaded.spec, paths[name], options)
    return paths


def test_onnx_flops_equal_torch_flop_counter(model5, bench_models):
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from bisenet_deploy.benchmarks.flops import onnx_gflop
    from bisenet_deploy.errors import UserError

    for shape, path in (((1, 3, *TINY), bench_models["plain"]), ((2, 3, 96, 160), bench_models["dynamic"])):
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            model5.low_resolution(torch.zeros(shape))  # what the default (1/8 output) graph computes
        assert onnx_gflop(path, shape) == pytest.approx(counter.get_total_flops() / 1e9, rel=1e-9)
    with pytest.raises(UserError, match="fixed to 1x3x64x128"):
        onnx_gflop(bench_models["plain"], (1, 3, 96, 160))


def test_bench_emits_every_field_and_round_trips(bench_models, tmp_path, capsys):
    out = {k: tmp_path / f"r.{k}" for k in ("json", "csv", "md", "png")}
    code = main([str(bench_models["plain"]), "--onnx", str(bench_models["argmax"]), "--onnx",
                 str(bench_models["dynamic"]), "--torch-variant", "fp16", "--sizes", "64x128,96x160",
                 "--json", str(out["json"]), "--csv", str(out["csv"]), "--markdown", str(out["md"]),
                 "--plot", str(out["png"]), *FAST])
    assert code == 1  # the fp16 row asked for cannot run on a CPU: the report is written, the exit says so
    stdout, stderr = capsys.readouterr()
    assert stderr.strip().splitlines()[-1].startswith("bisenet-bench: error: 1 of the models asked for did not run: "
                                                      "torch fp16")
    for text in ("device", "versions", "timed", "== 64x128, batch 1", "== 96x160, batch 1", "Segmenter overhead"):
        assert text in stdout

    result = report.load_json(out["json"])
    protocol = result["protocol"]
    assert protocol["system"]["cpu"]["model"] and protocol["system"]["cpu"]["usable_cpus"] >= 1
    assert {"torch", "onnxruntime", "numpy", "opencv"} <= set(protocol["system"]["versions"])
    assert protocol["settings"]["threads"] >= 1 and protocol["settings"]["iterations"] == 2
    assert protocol["timed"] == TIMED
    assert protocol["reference"]["name"] == "torch fp32"
    assert any("found through the artifact's metadata" in n for n in protocol["reference"]["notes"])
    assert protocol["cpu_peak_gflops"] == {"value": 100.0, "source": "--peak-gflops"}
    variant = next(c for c in result["contestants"] if c["name"] == "torch fp16")
    assert "CUDA" in variant["error"]

    small, large = result["cells"]
    assert [r["name"] for r in small["rows"]] == ["torch fp32", "ort fp32 [plain.onnx]", "ort fp32 argmax",
                                                  "ort fp32 [dynamic.onnx]"]
    assert [r["name"] for r in large["rows"]] == ["torch fp32", "ort fp32 [dynamic.onnx]"]
    skipped = {s["name"]: s["reason"] for s in large["skipped"]}
    assert "fixed input size 64x128" in skipped["ort fp32 [plain.onnx]"]
    assert "fixed input size 64x128" in skipped["ort fp32 argmax"]
    assert "CUDA" in skipped["torch fp16"]

    for cell in (small, large):
        # one network, one figure, except that the --argmax graph (full-size head) runs the
        # final C x C 1x1 conv at full size and the default graphs at 1/8: 0.05 % here
        gflops = [r["gflop"] for r in cell["rows"]]
        assert min(gflops) > 0 and max(gflops) / min(gflops) - 1 < 1e-3
        assert len({r["gflop"] for r in cell["rows"] if "argmax" not in r["name"]}) == 1
        for row in cell["rows"]:
            lat = row["latency_ms"]
            assert set(lat) == {"count", "mean", "median", "p90", "p99", "min", "max", "std"}
            assert lat["count"] == row["iterations"] == len(row["samples_ms"]) == cell["rounds"] == 2
            assert lat["median"] == pytest.approx(np.median(row["samples_ms"]), abs=1e-3)
            assert lat["min"] <= lat["median"] <= lat["p90"] <= lat["p99"] <= lat["max"]
            assert row["fps"] == pytest.approx(1e3 / lat["median"])
            assert row["throughput_fps"] == pytest.approx(2e3 / sum(row["samples_ms"]), rel=1e-3)
            stages = row["stages_ms"]
            assert {"preprocess", "compute", "postprocess", "infer", "e2e"} <= set(stages)
            # every call's e2e contains its infer, which contains its compute: so do the medians
            assert stages["e2e"] >= stages["infer"] >= stages["compute"] > 0
            assert row["segmenter_overhead_pct"] >= 0
            assert row["speedup"] > 0 and row["speedup_infer"] > 0
            assert row["file_mb"] > 1 and row["host_mb"] is not None and row["gpu_mb"] is None
            assert row["peak_fraction"] == pytest.approx(row["gflops_achieved"] / 100.0)
            assert row["warmup_runs"] >= 1 and row["device"] == "cpu"
            if row["role"] == "reference":
                assert row["speedup"] == 1.0 and row["fidelity"] is None
                continue
            fid = row["fidelity"]
            assert fid["images"] == 2 and fid["label_agreement"] >= 99.9 and fid["miou_vs_reference"] >= 99.0
            if "argmax" in row["name"]:
                assert fid["max_abs_diff"] is None
            else:
                assert fid["max_abs_diff"] < 1e-3
    assert result["postprocess_probe"]["logits"] == "1x5x64x128 float32"
    assert isinstance(result["verdicts"], list)

    # JSON -> CSV and markdown re-derive exactly what the run wrote; CSV reads back typed.
    assert report.read_csv(out["csv"]) == report.flat_rows(result)
    assert out["csv"].read_text() == report.to_csv(result)
    assert out["md"].read_text() == report.format_markdown(result)
    assert json.loads(report.to_json(result)) == result
    assert out["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_fp32_onnx_is_the_reference_without_checkpoint_and_sustained_mode(bench_models, tmp_path, capsys):
    import onnx

    from bisenet_deploy.export.onnx import read_metadata, set_metadata
    from bisenet_deploy.spec import METADATA_KEY, ModelSpec

    # As if exported on another machine: the recorded checkpoint is not here.
    for name in ("dynamic", "argmax"):
        proto = onnx.load(str(bench_models[name]))
        spec = ModelSpec.from_json(read_metadata(proto)[METADATA_KEY])
        spec = spec.replace(extra=dict(spec.extra, checkpoint_path="/elsewhere/model5.pth"))
        set_metadata(proto, {METADATA_KEY: spec.to_json()})
        onnx.save(proto, str(tmp_path / f"{name}.onnx"))
    moved = tmp_path / "dynamic.onnx"
    jetson = make_fake_jetson(tmp_path / "jetson", locked=False)

    code = main([str(moved), str(tmp_path / "argmax.onnx"), "--duration", "1.5", "--window", "0.5",
                 "--sysfs-root", str(jetson), "--json", str(tmp_path / "s.json"), *FAST])
    assert code == 0
    stdout = capsys.readouterr().out
    assert "FPS over time" in stdout and "power mode 30W" in stdout
    result = report.load_json(tmp_path / "s.json")
    notes = " ".join(result["protocol"]["reference"]["notes"])
    assert "not on this machine" in notes and "FP32 ONNX model" in notes and str(moved) in notes
    (cell,) = result["cells"]
    ref, argmax = cell["rows"]
    assert ref["role"] == "reference" and ref["artifact"] == str(moved)
    assert argmax["fidelity"]["label_agreement"] >= 99.9
    assert result["protocol"]["settings"]["duration_s"] == 1.5 and result["protocol"]["settings"]["iterations"] is None
    assert cell["rounds"] >= 1 and len(ref["samples_ms"]) == len(argmax["samples_ms"]) == cell["rounds"]
    assert ref["windows"] and all(w["fps"] > 0 and w["count"] >= 1 for w in ref["windows"])
    assert sum(w["count"] for w in ref["windows"]) == cell["rounds"]
    assert cell["thermal"] and cell["thermal"][0]["gpu_mhz"] == 306.0
    assert cell["thermal"][0]["temperatures_c"]["cpu-thermal"] == 45.5
    jet = result["protocol"]["system"]["jetson"]
    assert jet["power_mode"]["name"] == "30W" and jet["clocks_locked"] is False
    assert any("jetson_clocks" in v["text"] and v["level"] == "warning" for v in result["verdicts"])


def test_demo_mode_benchmarks_the_builtin_model(capsys):
    code = main(["--demo", "--sizes", "64x128", "--iterations", "1", "--warmup", "1", "--warmup-max", "1",
                 "--peak-gflops", "100", "-q"])
    assert code == 0
    stdout = capsys.readouterr().out
    assert "torch fp32 (ref)" in stdout and "built-in demo model" in stdout


def test_bad_input_fails_with_one_line_before_timing(bench_models, tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    cases = [
        ([str(tmp_path / "missing.onnx")], "not found"),
        (["--demo", "--checkpoint", str(tmp_path / "x.pth")], "--demo and --checkpoint"),
        ([], "nothing to benchmark"),
        ([str(bench_models["plain"]), "--json", str(tmp_path / "file/r.json")], "is a file, not a folder"),
    ]
    for argv, message in cases:
        code = main(argv + ["-q"])
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 2, argv
        assert len(err) == 1 and err[0].startswith("bisenet-bench: error:") and message in err[0], err


@pytest.mark.gpu
def test_torch_cuda_graph_replays_the_eager_result(checkpoint5):
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    from bisenet_deploy.runtime.backends.torch import TorchBackend

    batch = np.random.default_rng(0).standard_normal((1, 3, *TINY), dtype=np.float32)
    eager = TorchBackend(checkpoint5, device="cuda").infer(batch)
    graphed = TorchBackend(checkpoint5, device="cuda", cuda_graph=True)
    for _ in range(2):  # capture, then replay
        out = graphed.infer(batch)
        np.testing.assert_allclose(out, eager, atol=1e-3)
    assert set(graphed.last_stage_times) == {"h2d", "compute", "d2h"}


def test_fixed_size_exports_of_one_model_form_one_backend_across_sizes(export_model5, tmp_path):
    small, large = export_model5(), export_model5(size=(96, 160))  # no checkpoint recorded
    code = main([str(small), str(large), "--sizes", "64x128,96x160", "--json", str(tmp_path / "r.json"), *FAST])
    assert code == 0
    result = report.load_json(tmp_path / "r.json")
    first, second = result["cells"]
    assert [r["name"] for r in first["rows"]] == ["ort fp32"] == [r["name"] for r in second["rows"]]
    assert first["rows"][0]["artifact"] == str(small) and second["rows"][0]["artifact"] == str(large)
    assert first["gflop_source"] == f"counted from {small.name}" and second["gflop_source"] == f"counted from {large.name}"
    # the reference (the FP32 ONNX model at 64x128) cannot run at 96x160: no ratios there
    assert first["rows"][0]["role"] == "reference" and first["rows"][0]["speedup"] == 1.0
    assert second["rows"][0]["speedup"] is None and second["rows"][0]["fidelity"] is None


def test_an_engine_that_cannot_run_here_is_listed_with_its_reason_and_build_time(export_model5, tmp_path):
    from bisenet_deploy.fileio import sha256_file
    from bisenet_deploy.spec import ModelSpec
    from bisenet_deploy.trt.sidecar import EngineSidecar

    engine = tmp_path / "model.int8.engine"
    engine.write_bytes(b"not a real engine: no GPU and no TensorRT runtime on CI machines")
    EngineSidecar(engine_sha256=sha256_file(engine), spec=ModelSpec(num_classes=5, input_size=TINY), precision="int8",
                  tensorrt={"package": "tensorrt", "version": "0.0"}, build_seconds=12.5).write(engine)
    code = main([str(export_model5()), "--engine", str(engine), "--json", str(tmp_path / "r.json"), *FAST])
    assert code == 1  # an engine asked for that did not run: the report is written, the exit code says so
    result = report.load_json(tmp_path / "r.json")
    trt = next(c for c in result["contestants"] if c["kind"] == "tensorrt")
    assert trt["error"] and trt["build_seconds"] == 12.5 and trt["sidecar_precision"] == "int8"
    assert trt["name"] == "trt int8" and trt["precision"] == "int8"  # its real precision, though it cannot run
    assert [n["name"] for n in result["not_run"]] == ["trt int8"]
    (cell,) = result["cells"]
    assert [r["backend"] for r in cell["rows"]] == ["onnxruntime"]
    assert any(s["artifact"] == engine.name and s["reason"] == trt["error"] for s in cell["skipped"])


def _onnx_with_spec(src, dst, **changes):
    """A copy of ``src`` whose ModelSpec is changed (``None`` drops all metadata)."""
    import onnx

    from bisenet_deploy.export.onnx import read_metadata, set_metadata
    from bisenet_deploy.spec import METADATA_KEY, ModelSpec

    proto = onnx.load(str(src))
    if changes.get("drop"):
        del proto.metadata_props[:]
    else:
        spec = ModelSpec.from_json(read_metadata(proto)[METADATA_KEY]).replace(**changes)
        set_metadata(proto, {METADATA_KEY: spec.to_json()})
    onnx.save(proto, str(dst))
    return dst


def test_artifacts_that_cannot_run_give_one_line_and_exit_1(bench_models, tmp_path, capsys):
    bare = _onnx_with_spec(bench_models["plain"], tmp_path / "bare.onnx", drop=True)
    three = _onnx_with_spec(bench_models["plain"], tmp_path / "three.onnx", num_classes=3, class_names=("a", "b", "c"))
    assert main([str(bare), *FAST]) == 2  # nothing else to time: one line, no traceback
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "carries no ModelSpec" in err[0]

    code = main([str(bench_models["plain"]), str(bare), str(three), "--json", str(tmp_path / "r.json"), *FAST])
    assert code == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("bisenet-bench: error: 2 of the models asked for did not run")
    result = report.load_json(tmp_path / "r.json")
    reasons = {n["path"]: n["reason"] for n in result["not_run"]}
    assert "carries no ModelSpec" in reasons[str(bare)]
    assert "returns 5 channels, the spec says 3 classes" in reasons[str(three)]
    three_row = next(c for c in result["contestants"] if c["path"] == str(three))
    assert three_row["precision"] == "fp32"  # read from its metadata although it could not run
    assert [r["name"] for r in result["cells"][0]["rows"]] == ["torch fp32", "ort fp32"]


def test_no_reference_times_only_the_named_artifacts(bench_models, tmp_path):
    code = main([str(bench_models["plain"]), str(bench_models["dynamic"]), "--no-reference",
                 "--json", str(tmp_path / "r.json"), *FAST])
    assert code == 0
    result = report.load_json(tmp_path / "r.json")
    assert all(c["kind"] == "onnxruntime" for c in result["contestants"])
    assert result["protocol"]["reference"]["name"] == "ort fp32 [plain.onnx]"
    rows = result["cells"][0]["rows"]
    assert rows[0]["speedup"] == 1.0 and rows[1]["fidelity"]["label_agreement"] >= 99.9


def test_labels_give_miou_against_ground_truth_for_every_row(bench_models, tmp_path, photos):
    import cv2

    from bisenet_deploy.runtime import Segmenter

    images, labels = tmp_path / "img", tmp_path / "lbl"
    images.mkdir(), labels.mkdir()
    seg = Segmenter(bench_models["plain"], output_size="network")
    for i, (_, photo) in enumerate(photos[:2]):
        cv2.imwrite(str(images / f"p{i}.jpg"), photo)
        cv2.imwrite(str(labels / f"p{i}.png"), seg(cv2.imread(str(images / f"p{i}.jpg"))))  # its own labels
    code = main([str(bench_models["plain"]), "--images", str(images), "--labels", str(labels),
                 "--markdown", str(tmp_path / "r.md"), "--csv", str(tmp_path / "r.csv"),
                 "--json", str(tmp_path / "r.json"), *FAST])
    assert code == 0
    rows = {r["name"]: r for r in report.load_json(tmp_path / "r.json")["cells"][0]["rows"]}
    assert rows["ort fp32"]["fidelity"]["miou_vs_labels"] == pytest.approx(100.0)
    assert 95.0 <= rows["torch fp32"]["fidelity"]["miou_vs_labels"] <= 100.0  # the reference has one too
    (labels / "p1.png").unlink()
    assert main([str(bench_models["plain"]), "--images", str(images), "--labels", str(labels), *FAST]) == 2

    # markdown: a line right after a table is blank or another table row, never a stray "row"
    lines = (tmp_path / "r.md").read_text().splitlines()
    for prev, line in zip(lines, lines[1:]):
        if prev.startswith("|"):
            assert line == "" or line.startswith("|"), line
    assert "### Columns" in "\n".join(lines) and "- thru FPS:" in "\n".join(lines)
    # CSV rows say where and when they were measured, so files from several machines concatenate
    csv_rows = report.read_csv(tmp_path / "r.csv")
    assert all(r["created"] and r["cpu"] and r["version.bisenet_deploy"] for r in csv_rows)
