"""A named --timing-cache: ignored (and not written) where TensorRT-RTX ignores it; where it
works, never replaces a file that is not a timing cache and never creates folders."""

from __future__ import annotations

import pytest

from bisenet_deploy.cli.export import main
from bisenet_deploy.errors import UserError
from bisenet_deploy.trt import builder as builder_mod
from bisenet_deploy.trt.builder import EngineOptions, build_engine
from bisenet_deploy.trt.loading import flavour
from tests.tiny_onnx import tiny_onnx
from tests.trt_fixtures import builder_module

pytestmark = pytest.mark.tensorrt


@pytest.fixture(scope="module")
def trt():
    return builder_module()


def _effective(trt) -> bool:
    config = trt.Builder(builder_mod.logger_for(trt)).create_builder_config()
    return builder_mod.compat.attach_timing_cache(config, b"")[2]


def test_both_cache_options_conflict(tmp_path, capsys):
    onnx = tiny_onnx(tmp_path / "m.onnx")
    code = main([str(onnx), "--engine", "--timing-cache", str(tmp_path / "tc.bin"), "--no-timing-cache", "-q"])
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert code == 2 and len(lines) == 1 and "--timing-cache and --no-timing-cache conflict" in lines[0]
    assert not (tmp_path / "m.fp32.engine").exists()


def test_a_cache_tensorrt_ignores_is_said_once_and_never_written(trt, tmp_path):
    if _effective(trt):
        pytest.skip(f"{flavour(trt)} uses timing caches")
    onnx = tiny_onnx(tmp_path / "m.onnx")
    garbage = tmp_path / "tc.bin"
    garbage.write_bytes(b"not a cache")
    lines: list[str] = []
    for cache in (tmp_path / "new.bin", garbage, tmp_path / "nodir" / "x" / "tc.bin"):
        lines.clear()
        build = build_engine(onnx, tmp_path / "m.engine", EngineOptions(progress=False, timing_cache=cache),
                             trt=trt, log=lines.append)
        said = [ln for ln in lines if "ignored" in ln]
        assert len(said) == 1 and said[0].startswith("note: --timing-cache") and "nothing read or written" in said[0]
        record = build.sidecar.build["timing_cache"]
        assert record["effective"] is False and record["accepted"] is False and record["saved_bytes"] == 0
    assert not (tmp_path / "new.bin").exists() and garbage.read_bytes() == b"not a cache"
    assert not (tmp_path / "nodir").exists()


def test_a_working_cache_refuses_a_foreign_file_and_a_missing_folder(trt, tmp_path):
    if not _effective(trt):
        pytest.skip(f"{flavour(trt)} ignores timing caches")
    onnx = tiny_onnx(tmp_path / "m.onnx")
    garbage = tmp_path / "tc.bin"
    garbage.write_bytes(b"not a cache")
    with pytest.raises(UserError, match="is not a timing cache"):
        build_engine(onnx, options=EngineOptions(progress=False, timing_cache=garbage), trt=trt)
    with pytest.raises(UserError, match="does not exist"):
        build_engine(onnx, options=EngineOptions(progress=False, timing_cache=tmp_path / "nodir" / "tc.bin"), trt=trt)
    assert garbage.read_bytes() == b"not a cache" and not (tmp_path / "nodir").exists()


def test_the_cache_guard_refuses_a_missing_folder_without_tensorrt(tmp_path):
    """The check a working TensorRT runs before its build (checked here without one)."""
    from bisenet_deploy.trt.artifacts import check_timing_cache_path

    onnx, engine = tmp_path / "m.onnx", tmp_path / "m.engine"
    with pytest.raises(UserError, match="folder '.*nodir/x' does not exist"):
        check_timing_cache_path(tmp_path / "nodir" / "x" / "tc.bin", onnx, engine)
    check_timing_cache_path(tmp_path / "tc.bin", onnx, engine)  # a new file in an existing folder
    assert not (tmp_path / "nodir").exists()
