"""The engine builder, run for real (TensorRT-RTX builds without a GPU), and `bisenet-export --engine`."""

from __future__ import annotations

import hashlib
import json

import pytest

from bisenet_deploy.cli.export import main
from bisenet_deploy.errors import UserError
from bisenet_deploy.fileio import sha256_file
from bisenet_deploy.trt import compat
from bisenet_deploy.trt.builder import EngineOptions, build_engine, engine_path_for
from bisenet_deploy.trt.loading import flavour, logger_for
from bisenet_deploy.trt.onnx_facts import read_onnx_facts
from bisenet_deploy.trt.sidecar import EngineSidecar, sidecar_path
from tests.tiny_onnx import tiny_onnx, tiny_spec, unsupported_op_onnx
from tests.trt_fixtures import builder_module

QUIET = EngineOptions(progress=False)
# Builder tests run here with TensorRT-RTX and, selected by scripts/gpu_check.sh's
# -m "gpu or tensorrt", against the real TensorRT on a GPU machine (builder_module prefers it).
pytestmark = pytest.mark.tensorrt


@pytest.fixture(scope="module")
def trt():
    return builder_module()


def run_cli(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def one_line_error(code, err, expected=2):
    assert code == expected, err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("bisenet-export: error: "), err
    return lines[0]


@pytest.mark.parametrize("dynamic", [False, True], ids=["fixed", "dynamic"])
@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
def test_builds_engine_and_sidecar(trt, tmp_path, precision, dynamic):
    onnx = tiny_onnx(tmp_path / f"tiny.{precision}.onnx", precision, dynamic)
    build = build_engine(onnx, options=QUIET, trt=trt)

    assert build.engine_path == tmp_path / f"tiny.{precision}.engine"
    data = build.engine_path.read_bytes()
    side = EngineSidecar.read(build.engine_path)
    assert side.engine_sha256 == hashlib.sha256(data).hexdigest()
    assert side.precision == precision and side.spec == tiny_spec(dynamic)
    assert side.onnx["path"] == onnx.name and side.onnx["sha256"] == sha256_file(onnx)
    assert side.tensorrt == {"package": flavour(trt), "version": trt.__version__,
                             "strongly_typed": compat.network_flags(trt)[1]}
    # Precision comes from the ONNX: strongly typed builds add no precision flags.
    implied = [] if side.tensorrt["strongly_typed"] else list(compat.PRECISION_FLAGS[precision])
    assert side.build["precision_flags"] == implied
    # TensorRT 8.6 (weakly typed): FP16 builds obey the ONNX's FP32 layers.
    obey = not side.tensorrt["strongly_typed"] and precision == "fp16"
    assert side.build["precision_constraints"] == ("obey" if obey else None)
    can_target = hasattr(trt.Builder(logger_for(trt)).create_builder_config(), "set_compute_capability")
    assert side.build["portable_across_gpus"] == can_target
    if dynamic:
        assert side.build["profile"] == {"min": "1x3x32x64", "opt": "1x3x64x128", "max": "4x3x128x256"}
    else:
        assert "profile" not in side.build
    assert side.rebuild_command.startswith(f"bisenet-export {onnx.name} --engine -o {build.engine_path.name}")
    runtime = trt.Runtime(logger_for(trt))
    if hasattr(runtime, "get_engine_validity"):  # the engine header must at least be well formed
        _, diagnostics = runtime.get_engine_validity(data)
        assert not int(diagnostics) & int(trt.EngineInvalidityDiagnostics.MALFORMED_ENGINE)


def test_precision_from_the_graph_when_metadata_is_missing(trt, tmp_path):
    onnx = tiny_onnx(tmp_path / "plain.onnx", "int8", metadata=False)
    build = build_engine(onnx, options=QUIET, trt=trt)
    assert build.engine_path.name == "plain.int8.engine"
    assert build.sidecar.precision == "int8" and build.sidecar.onnx["precision_source"] == "graph"
    assert build.sidecar.spec is None and any("no ModelSpec" in n for n in build.notes)
    assert read_onnx_facts(tiny_onnx(tmp_path / "h.onnx", "fp16", metadata=False)).precision == "fp16"


def test_engine_names_follow_precision(tmp_path):
    assert engine_path_for(tmp_path / "model.onnx", "fp32") == tmp_path / "model.fp32.engine"
    assert engine_path_for(tmp_path / "model.int8.onnx", "int8") == tmp_path / "model.int8.engine"


def test_checkpoint_to_engine_in_one_command(trt, checkpoint5, tmp_path, capsys):
    out = tmp_path / "seg.onnx"
    code, stdout, err = run_cli(capsys, checkpoint5, "-o", out, "--size", "64x128", "--no-verify", "--engine", "-q",
                                "--tensorrt", flavour(trt))
    assert code == 0, err
    engine = tmp_path / "seg.fp32.engine"
    side = EngineSidecar.read(engine)
    assert side.spec == read_onnx_facts(out).spec and side.spec.num_classes == 5
    assert f"wrote {engine}" in stdout and sidecar_path(engine).name in stdout


def test_engine_from_onnx_with_build_options(trt, tmp_path, capsys):
    onnx = tiny_onnx(tmp_path / "m.fp16.onnx", "fp16", dynamic=True)
    engine = tmp_path / "custom.engine"
    code, stdout, err = run_cli(
        capsys, onnx, "--engine", "-o", engine, "--min-shape", "1x3x32x32", "--opt-shape", "2x3x64x64",
        "--max-shape", "2x3x96x160", "--opt-level", "1", "--workspace", "64", "--tensorrt", flavour(trt), "-q",
    )
    assert code == 0, err
    build = EngineSidecar.read(engine).build
    assert build["profile"] == {"min": "1x3x32x32", "opt": "2x3x64x64", "max": "2x3x96x160"}
    assert build["workspace_mb"] == 64 and build["workspace_api"] == "set_memory_pool_limit"
    assert build["optimization_level"] == 1
    shapes = "--min-shape 1x3x32x32 --opt-shape 2x3x64x64 --max-shape 2x3x96x160"
    assert shapes in EngineSidecar.read(engine).rebuild_command


def test_parser_error_names_the_node_and_keeps_existing_engine(trt, tmp_path, capsys):
    onnx = unsupported_op_onnx(tmp_path / "odd.onnx")
    engine = tmp_path / "odd.engine"
    engine.write_bytes(b"ftrt keep me")  # an earlier engine (header tag)
    code, _, err = run_cli(capsys, onnx, "--engine", "-o", engine, "--tensorrt", flavour(trt), "-q")
    line = one_line_error(code, err)
    assert "cannot parse" in line and "'fancy_1'" in line and "FancyOp" in line
    assert engine.read_bytes() == b"ftrt keep me" and not sidecar_path(engine).exists()


@pytest.mark.parametrize("content", [b"\x00\x01garbage" * 40, b""], ids=["garbage", "empty"])
def test_corrupt_onnx_gives_one_line(trt, tmp_path, capsys, content):
    onnx = tmp_path / "broken.onnx"
    onnx.write_bytes(content)
    code, _, err = run_cli(capsys, onnx, "--engine", "--tensorrt", flavour(trt), "-q")
    assert "is not an ONNX model" in one_line_error(code, err)


def test_timing_cache_written_and_reused(trt, tmp_path):
    onnx = tiny_onnx(tmp_path / "t.onnx")
    cache = tmp_path / "build.timing-cache"
    first = build_engine(onnx, options=EngineOptions(progress=False, timing_cache=cache), trt=trt)
    if not first.sidecar.build["timing_cache"]["effective"]:  # TensorRT-RTX: tests/test_trt_timing_cache.py
        assert not cache.exists()
        pytest.skip(f"{flavour(trt)} ignores timing caches: nothing written")
    assert cache.is_file() and cache.stat().st_size == first.sidecar.build["timing_cache"]["saved_bytes"] > 0
    assert first.sidecar.build["timing_cache"]["loaded_bytes"] == 0
    size = cache.stat().st_size
    second = build_engine(onnx, options=EngineOptions(progress=False, timing_cache=cache), trt=trt)
    record = second.sidecar.build["timing_cache"]
    assert record["loaded_bytes"] == size and record["accepted"] is True
    off = build_engine(onnx, tmp_path / "off.engine", EngineOptions(progress=False, timing_cache=None), trt=trt)
    assert "timing_cache" not in off.sidecar.build


def test_progress_shows_build_phases(trt, tmp_path, capsys):
    build = build_engine(tiny_onnx(tmp_path / "p.onnx"), options=EngineOptions(), trt=trt)
    err = capsys.readouterr().err
    if build.sidecar.build["progress_monitor"]:
        assert "Building engine" in err or "Cloning network" in err
    else:
        pytest.skip("this TensorRT has no IProgressMonitor")


@pytest.mark.parametrize(
    "options, message",
    [
        (EngineOptions(min_shape=(1, 3, 64, 128), opt_shape=(1, 3, 64, 128), max_shape=(1, 3, 64, 128)), "is static"),
        (EngineOptions(dla_core=0), "DLA"),
        (EngineOptions(optimization_level=9), "0..5"),
    ],
    ids=["shapes-on-static", "dla", "opt-level"],
)
def test_bad_build_options(trt, tmp_path, options, message):
    if options.dla_core is not None and getattr(trt.Builder(logger_for(trt)), "num_DLA_cores", 0):
        pytest.skip("this machine has DLA cores")
    onnx = tiny_onnx(tmp_path / "s.onnx")
    with pytest.raises(UserError, match=message):
        build_engine(onnx, options=options, trt=trt)
    assert not (tmp_path / "s.fp32.engine").exists()


def test_compute_capability_targets(trt, tmp_path):
    onnx = tiny_onnx(tmp_path / "cc.onnx")
    config = trt.Builder(logger_for(trt)).create_builder_config()
    if not hasattr(config, "set_compute_capability"):
        with pytest.raises(UserError, match="needs TensorRT-RTX"):
            build_engine(onnx, options=EngineOptions(progress=False, compute_capabilities=("8.6",)), trt=trt)
        return
    build = build_engine(onnx, options=EngineOptions(progress=False, compute_capabilities=("8.6", "8.9")), trt=trt)
    assert build.sidecar.target_compute_capabilities == ["8.6", "8.9"]
    assert build.sidecar.build["targets"] == "compute capabilities 8.6, 8.9 (--compute-capability)"
    assert "--compute-capability 8.6,8.9" in build.sidecar.rebuild_command
    # The default targets: [] in the list, and the sidecar says in words what [] means.
    default = build_engine(onnx, tmp_path / "default.engine", EngineOptions(progress=False), trt=trt)
    assert default.sidecar.target_compute_capabilities == []
    assert "default set (target_compute_capabilities [] means this set" in default.sidecar.build["targets"]
    with pytest.raises(UserError, match="choose from .*8.6"):
        build_engine(onnx, options=EngineOptions(progress=False, compute_capabilities=("7.0",)), trt=trt)


def test_layer_report_needs_a_gpu_or_is_written(trt, tmp_path):
    build = build_engine(tiny_onnx(tmp_path / "l.onnx"), options=QUIET, trt=trt)
    if build.sidecar.gpu is None or (build.layers_path is None and flavour(trt) == "tensorrt_rtx"):
        # No GPU to load the engine on (or one TensorRT-RTX does not target): said, not hidden.
        assert build.layers_path is None and any("layer report skipped" in n for n in build.notes)
    else:
        report = json.loads(build.layers_path.read_text())
        assert report.get("Layers") and build.sidecar.build["layer_report"] == build.layers_path.name


def test_engine_options_need_engine(checkpoint5, tmp_path, capsys):
    code, _, err = run_cli(capsys, checkpoint5, "-o", tmp_path / "m.onnx", "--dla", "0")
    assert "--dla is a TensorRT build option; add --engine" in one_line_error(code, err)
    assert not (tmp_path / "m.onnx").exists()


@pytest.mark.slow
@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
def test_builds_argmax_and_fused_preprocess_engines(trt, precision_models, precision, tmp_path):
    """``--argmax --fuse-preprocess`` exports (uint8 NHWC frames in, int32 labels out, dynamic
    batch/height/width) build through the project's builder at every precision."""
    onnx = precision_models["dynamic"][precision]
    build = build_engine(onnx, tmp_path / f"seg.{precision}.engine", QUIET, trt=trt)
    side = EngineSidecar.read(build.engine_path)
    assert side.precision == precision
    assert side.spec.input_layout == "NHWC_UINT8" and side.spec.output_kind == "labels"
    assert side.build["input"]["shape"] == "?x?x?x3"
    assert side.build["profile"] == {"min": "1x32x64x3", "opt": "1x64x128x3", "max": "4x128x256x3"}
    implied = [] if side.tensorrt["strongly_typed"] else list(compat.PRECISION_FLAGS[precision])
    assert side.build["precision_flags"] == implied
    assert side.build["capture_flags"] == (
        ["REQUIRE_USER_ALLOCATION"] if hasattr(trt.BuilderFlag, "REQUIRE_USER_ALLOCATION") else []
    )


def test_tensorrt_build_without_a_visible_gpu_is_refused(tmp_path, monkeypatch):
    """TensorRT builds for the GPU it runs on: no GPU identity, no engine (not ``gpu: null``)."""
    from types import SimpleNamespace

    from bisenet_deploy.errors import ExportError
    from bisenet_deploy.trt import builder

    monkeypatch.setattr(builder, "gpu_problem", lambda device: "cuda-python is not installed")
    lines = []
    with pytest.raises(ExportError, match="cannot identify the GPU this engine is built for: cuda-python"):
        builder._build_gpu(SimpleNamespace(__name__="tensorrt"), lines.append)
    assert builder._build_gpu(SimpleNamespace(__name__="tensorrt_rtx"), lines.append) is None
    assert len(lines) == 1 and "no GPU visible (cuda-python is not installed)" in lines[0]


def test_a_named_timing_cache_never_replaces_a_model_or_this_builds_files(trt, tmp_path):
    """A --timing-cache is written after the build: naming the input ONNX, the engine, its
    sidecar or another model must be refused before anything is written."""
    onnx = tiny_onnx(tmp_path / "m.onnx")
    before = onnx.read_bytes()
    other = tmp_path / "other.onnx"
    other.write_bytes(before)
    engine = tmp_path / "m.engine"
    from bisenet_deploy.trt.artifacts import check_timing_cache_path

    for named in (onnx, other, engine, tmp_path / "m.engine.json"):
        with pytest.raises(UserError, match="would overwrite"):
            check_timing_cache_path(named, onnx, engine)  # the guard, also where TensorRT ignores the cache
        if flavour(trt) == "tensorrt":  # where the cache is written, the build refuses before building
            with pytest.raises(UserError, match="would overwrite"):
                build_engine(onnx, engine, EngineOptions(progress=False, timing_cache=named), trt=trt)
    assert onnx.read_bytes() == before and other.read_bytes() == before and not engine.exists()


def test_engines_compute_fp32_math_in_fp32_not_tf32(trt, tmp_path, capsys):
    """TF32 is on by default in TensorRT: every engine clears it (recorded), also for the FP32
    layers of an fp16 one; --tf32 keeps it for any precision, never refused after work."""
    fp32 = build_engine(tiny_onnx(tmp_path / "m.onnx"), options=QUIET, trt=trt)
    fp16 = build_engine(tiny_onnx(tmp_path / "m.fp16.onnx", "fp16"), options=QUIET, trt=trt)
    assert fp32.sidecar.build["tf32"] is False and fp16.sidecar.build["tf32"] is False
    fast = build_engine(tmp_path / "m.onnx", tmp_path / "fast.engine", EngineOptions(progress=False, allow_tf32=True),
                        trt=trt)
    assert fast.sidecar.build["tf32"] is True and fast.sidecar.rebuild_command.endswith(" --tf32" + (
        f" --tensorrt {flavour(trt)}" if flavour(trt) != "tensorrt" else ""))
    code, _, err = run_cli(capsys, tmp_path / "m.fp16.onnx", "--engine", "--tf32", "--tensorrt", flavour(trt), "-q")
    assert code == 0, err
    assert EngineSidecar.read(tmp_path / "m.fp16.engine").build["tf32"] is True


def test_default_timing_cache_leaves_nothing_next_to_the_outputs(trt, tmp_path, monkeypatch):
    """The default (auto) cache lives in the user's cache folder, one per TensorRT and GPU, and
    is not written at all where TensorRT ignores it (TensorRT-RTX)."""
    monkeypatch.setenv("BISENET_DEPLOY_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "out"
    out.mkdir()
    onnx = tiny_onnx(out / "m.onnx")
    build = build_engine(onnx, options=QUIET, trt=trt)
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["m.onnx", "m.fp32.engine", "m.fp32.engine.json"] + ([build.layers_path.name] if build.layers_path else []))
    record = build.sidecar.build["timing_cache"]
    cached = list((tmp_path / "cache").rglob("*.timing-cache"))
    if record["effective"]:
        assert [str(p) for p in cached] == [record["path"]] and record["saved_bytes"] > 0
    else:
        assert cached == [] and record["saved_bytes"] == 0
