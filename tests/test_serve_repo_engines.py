"""bisenet-serve repo with engines: what Triton's TensorRT backend could never load is refused."""

from __future__ import annotations

import pytest

from bisenet_deploy.fileio import sha256_file
from bisenet_deploy.spec import ModelSpec
from bisenet_deploy.trt.sidecar import EngineSidecar

pytest.importorskip("tritonclient")


def _engine(path, package):
    path.write_bytes(b"vtrt" + bytes(64))
    EngineSidecar(engine_sha256=sha256_file(path), spec=ModelSpec(num_classes=5, input_size=(64, 128)),
                  precision="fp16", tensorrt={"package": package, "version": "1.7.1"}).write(path)
    return path


def test_native_repository_of_a_tensorrt_rtx_engine_is_refused(tmp_path, capsys):
    from bisenet_deploy.cli.serve import main

    engine = _engine(tmp_path / "m.fp16.engine", "tensorrt_rtx")
    assert main(["repo", str(engine), "-o", str(tmp_path / "repo"), "--native", "--gpu"]) == 2
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(lines) == 1 and "TensorRT-RTX engine" in lines[0] and "tensorrt_plan" in lines[0], lines
    assert not (tmp_path / "repo").exists()
    # Without --native the Python-backend model runs it (with tensorrt_rtx): allowed.
    assert main(["repo", str(engine), "-o", str(tmp_path / "python"), "--gpu"]) == 0
    assert (tmp_path / "python" / "bisenet" / "1" / "m.fp16.engine").is_file()


@pytest.mark.parametrize("damage, message", [
    (lambda p: p.write_bytes(b""), "is empty (0 bytes)"),
    (lambda p: p.write_bytes(b"\x8b\x11random bytes" * 8), "is not a TensorRT engine"),
    (lambda p: p.write_bytes(p.read_bytes()[:20]), "does not match its sidecar"),
], ids=["empty", "random", "truncated"])
def test_a_broken_engine_is_never_packaged(tmp_path, capsys, damage, message):
    """The check inspect/infer/bench/Segmenter make (sha256 against the sidecar, the engine
    header) refuses the engine here too, with or without --native."""
    from bisenet_deploy.cli.serve import main

    engine = _engine(tmp_path / "m.fp16.engine", "tensorrt")
    damage(engine)
    for extra in ([], ["--native"]):
        assert main(["repo", str(engine), "-o", str(tmp_path / "repo"), "--gpu", *extra]) == 2
        lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
        assert len(lines) == 1 and message in lines[0], lines
        assert not (tmp_path / "repo").exists()


def test_serve_repo_says_what_is_wrong_with_the_path(tmp_path, capsys):
    from bisenet_deploy.cli.serve import main

    (tmp_path / "dir.engine").mkdir()
    empty = tmp_path / "empty.engine"
    empty.write_bytes(b"")
    for path, message in ((tmp_path / "dir.engine", "is a folder"), (empty, "is empty (0 bytes)"),
                          (tmp_path / "gone.engine", "not found")):
        assert main(["repo", str(path), "-o", str(tmp_path / "repo"), "--native", "--gpu"]) == 2
        lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
        assert len(lines) == 1 and message in lines[0], lines
