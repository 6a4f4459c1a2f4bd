"""What an engine build may write over: only its own engine, sidecar and layer report.

The refusals come before TensorRT is loaded, so most of these need no TensorRT at all.
"""

from __future__ import annotations

import json

import pytest

from bisenet_deploy.cli.export import main
from bisenet_deploy.errors import UserError
from bisenet_deploy.trt.builder import EngineOptions, build_engine
from tests.tiny_onnx import tiny_onnx

QUIET = EngineOptions(progress=False)


def _one_line(capsys, argv):
    code = main([str(a) for a in argv])
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert code == 2 and len(lines) == 1 and lines[0].startswith("bisenet-export: error: "), err
    return lines[0]


@pytest.mark.parametrize("name", ["d0.engine.json", "fcopy.onnx", "out.txt", "m.pth"])
def test_engine_path_must_be_an_engine_name_and_nothing_is_replaced(tmp_path, capsys, name):
    onnx = tiny_onnx(tmp_path / "m.onnx")
    target = tmp_path / name
    target.write_bytes(b"precious")
    line = _one_line(capsys, [onnx, "--engine", "-o", target, "-q"])
    assert "must end in .engine or .plan" in line
    assert target.read_bytes() == b"precious"


def test_an_existing_file_that_is_not_an_engine_is_not_replaced(tmp_path, capsys):
    onnx = tiny_onnx(tmp_path / "m.onnx")
    notes = tmp_path / "notes.engine"
    notes.write_text("my notes")
    assert "exists and is not an engine" in _one_line(capsys, [onnx, "--engine", "-o", notes, "-q"])
    assert notes.read_text() == "my notes"


def test_a_foreign_file_where_the_sidecar_goes_is_not_replaced(tmp_path):
    onnx = tiny_onnx(tmp_path / "m.onnx")
    side = tmp_path / "m.fp32.engine.json"
    side.write_text('{"my": "settings"}')
    with pytest.raises(UserError, match="is not an engine sidecar"):
        build_engine(onnx, options=QUIET)
    assert side.read_text() == '{"my": "settings"}' and not (tmp_path / "m.fp32.engine").exists()


def test_another_models_engine_is_not_replaced(tmp_path):
    onnx = tiny_onnx(tmp_path / "m.onnx")
    engine = tmp_path / "other.engine"
    engine.write_bytes(b"ftrt" + bytes(64))
    (tmp_path / "other.engine.json").write_text(json.dumps({"engine_sha256": "", "onnx": {"path": "other.onnx"}}))
    with pytest.raises(UserError, match="is the engine of another model"):
        build_engine(onnx, engine, QUIET)
    assert engine.read_bytes() == b"ftrt" + bytes(64)


def test_messages_say_what_is_wrong_with_a_path(tmp_path, capsys):
    """A folder or a pipe is named as such, never 'not found' or 'no sidecar'."""
    import os

    from bisenet_deploy.cli.inspect import main as inspect

    (tmp_path / "d.onnx").mkdir()
    os.mkfifo(tmp_path / "ff.onnx")
    assert "'" + str(tmp_path / "d.onnx") + "' is a folder" in _one_line(capsys, [tmp_path / "d.onnx", "--engine"])
    assert "is not a regular file" in _one_line(capsys, [tmp_path / "ff.onnx", "--engine"])
    engine = tmp_path / "m.engine"
    engine.write_bytes(b"ftrt" + bytes(64))
    (tmp_path / "m.engine.json").mkdir()
    assert inspect([str(engine)]) == 2
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(lines) == 1 and "engine sidecar" in lines[0] and "is a folder" in lines[0], lines
