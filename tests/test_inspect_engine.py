"""bisenet-inspect on engines that cannot run: corrupt, without sidecar, empty, not an engine.

No TensorRT needed: inspect reads the engine's header and sidecar, never deserializes it.
"""

from __future__ import annotations

import json

import pytest

from bisenet_deploy.cli.inspect import main as inspect
from bisenet_deploy.fileio import sha256_file
from bisenet_deploy.spec import ModelSpec
from bisenet_deploy.trt.sidecar import EngineSidecar

HEADER = b"ftrt"  # TensorRT's serialized-engine tag (TensorRT-RTX writes vtrt)


def _engine_with_sidecar(path, package="tensorrt"):
    path.write_bytes(HEADER + bytes(range(256)) * 4)
    EngineSidecar(engine_sha256=sha256_file(path), spec=ModelSpec(num_classes=5, input_size=(64, 128)),
                  precision="fp16", tensorrt={"package": package, "version": "10.3.0"},
                  rebuild_command=f"bisenet-export m.fp16.onnx --engine -o {path.name}").write(path)
    return path


def test_truncated_engine_with_a_valid_sidecar_is_reported_corrupt(tmp_path, capsys):
    engine = _engine_with_sidecar(tmp_path / "m.fp16.engine")
    engine.write_bytes(engine.read_bytes()[:100])  # a copy cut short
    assert inspect([str(engine)]) == 1
    out = capsys.readouterr().out
    assert "does not match its sidecar" in out and "corrupt, truncated or replaced" in out
    assert "runs here  yes" not in out and "runs here  no  tensorrt: the engine does not match its sidecar" in out
    assert inspect([str(engine), "--json"]) == 1
    info = json.loads(capsys.readouterr().out)
    assert info["matches_sidecar"] is False and not info["runs_here"][0]["ok"]


def test_intact_engine_is_not_flagged(tmp_path, capsys):
    engine = _engine_with_sidecar(tmp_path / "m.fp16.engine")
    inspect([str(engine)])
    out = capsys.readouterr().out
    assert "does not match" not in out and "built      tensorrt 10.3.0" in out


def test_engine_without_sidecar_says_what_is_missing_and_never_none(tmp_path, capsys):
    engine = tmp_path / "m.fp16.engine"
    engine.write_bytes(HEADER + bytes(100))
    assert inspect([str(engine)]) == 1
    out = capsys.readouterr().out
    assert "None" not in out and "built " not in out
    assert "no sidecar 'm.fp16.engine.json' next to it" in out
    # No m.fp16.onnx here: no command naming it, but which ONNX to export first.
    assert f"export {tmp_path / 'm.fp16.onnx'} from its checkpoint first" in out
    assert f"rebuild: bisenet-export {tmp_path / 'm.fp16.onnx'} --engine" not in out


def test_rebuild_names_the_onnx_that_exists(tmp_path, capsys):
    engine = tmp_path / "m.fp32.engine"
    engine.write_bytes(HEADER + bytes(100))
    (tmp_path / "m.onnx").write_bytes(b"onnx")  # an fp32 engine is built from the plain name
    inspect([str(engine)])
    out = capsys.readouterr().out
    assert f"rebuild: bisenet-export {tmp_path / 'm.onnx'} --engine -o {engine}" in out


@pytest.mark.parametrize("content, message", [(b"", "is empty (0 bytes): not a TensorRT engine"),
                                              (b"hello, not an engine", "is not a TensorRT engine")],
                         ids=["empty", "text"])
def test_empty_or_foreign_files_are_refused(tmp_path, capsys, content, message):
    engine = tmp_path / "m.fp16.engine"
    engine.write_bytes(content)
    assert inspect([str(engine)]) == 2
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("bisenet-inspect: error: ") and message in lines[0]


def test_rebuild_hint_of_a_corrupt_engine_names_only_an_onnx_that_exists_and_the_file_inspected(tmp_path, capsys):
    """The sidecar's rebuild command, as the hint of inspect, infer, bench and Segmenter: no
    command with an ONNX that is not there, and ``-o`` the engine looked at (also renamed)."""
    from bisenet_deploy.trt.sidecar import rebuild_hint

    folder = tmp_path / "d"
    folder.mkdir()
    engine = folder / "demo.fp32.engine"
    engine.write_bytes(HEADER + bytes(64))
    EngineSidecar(engine_sha256="0" * 64, spec=None, precision="fp32", tensorrt={"package": "tensorrt"},
                  onnx={"path": "demo.onnx"},
                  rebuild_command="bisenet-export demo.onnx --engine -o demo.fp32.engine").write(engine)
    renamed = folder / "renamed.engine"
    engine.rename(renamed)
    (folder / "demo.fp32.engine.json").rename(folder / "renamed.engine.json")
    assert inspect([str(renamed)]) == 1
    out = capsys.readouterr().out
    assert f"export {folder / 'demo.onnx'} from its checkpoint first" in out
    assert f"then cd {folder} && bisenet-export demo.onnx --engine -o renamed.engine" in out
    side = EngineSidecar.read(renamed)
    (folder / "demo.onnx").write_bytes(b"onnx")
    assert rebuild_hint(renamed, side) == f"cd {folder} && bisenet-export demo.onnx --engine -o renamed.engine"


def test_human_output_has_the_build_record(tmp_path, capsys):
    """The facts --json has: profile, targets, TF32, opt-level, the rebuild command."""
    engine = tmp_path / "m.fp16.engine"
    engine.write_bytes(b"vtrt" + bytes(64))
    (tmp_path / "m.fp16.onnx").write_bytes(b"onnx")
    EngineSidecar(engine_sha256=sha256_file(engine), spec=ModelSpec(num_classes=5, input_size=(64, 128)),
                  precision="fp16", tensorrt={"package": "tensorrt_rtx", "version": "1.7"},
                  target_compute_capabilities=["8.6", "8.9"], onnx={"path": "m.fp16.onnx"},
                  build={"profile": {"min": "1x3x32x64", "opt": "1x3x64x128", "max": "4x3x128x256"}, "tf32": False,
                         "optimization_level": 2, "portable_across_gpus": True},
                  rebuild_command="bisenet-export m.fp16.onnx --engine -o m.fp16.engine --opt-level 2").write(engine)
    inspect([str(engine)])
    out = capsys.readouterr().out
    assert "for compute capabilities 8.6, 8.9 (ahead of time" in out and "no GPU (ahead of time)" not in out
    assert "profile    1x3x32x64 .. 4x3x128x256 (opt 1x3x64x128)" in out
    assert "TF32 off" in out and "opt-level 2" in out
    assert f"rebuild    cd {tmp_path} && bisenet-export m.fp16.onnx --engine -o m.fp16.engine --opt-level 2" in out


def test_several_files_each_get_their_result(tmp_path, capsys):
    """One bad file among several: the others are still described, its error is one line,
    and the exit status says something failed."""
    good = _engine_with_sidecar(tmp_path / "a.fp16.engine")
    bad = tmp_path / "bad.engine"
    bad.write_bytes(b"")
    other = _engine_with_sidecar(tmp_path / "c.fp16.engine")
    assert inspect([str(good), str(bad), str(other)]) == 2
    out, err = capsys.readouterr()
    assert f"{good}: engine" in out and f"{other}: engine" in out
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and "bad.engine' is empty" in lines[0]
    assert inspect([str(good), str(bad), "--json"]) == 2
    infos = json.loads(capsys.readouterr().out)
    assert infos[0]["kind"] == "engine" and "is empty" in infos[1]["error"]
