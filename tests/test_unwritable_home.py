"""An unwritable cache or HOME (issue 23, item 5): the promise is one warning line and an
honest probe line, nothing from the libraries' own telemetry."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from .tiny_onnx import tiny_onnx


def test_the_auto_probe_line_does_not_claim_a_cache_it_could_not_write(tmp_path, unwritable_cache, caplog):
    pytest.importorskip("openvino")
    from bisenet_deploy.runtime.segmenter import Segmenter

    model = tiny_onnx(tmp_path / "tiny.onnx")
    caplog.set_level(logging.INFO, logger="bisenet_deploy")
    with Segmenter(model, backend="auto") as seg:
        assert seg.predict(np.zeros((64, 128, 3), np.uint8)).shape == (64, 128)
    probe = [r.getMessage() for r in caplog.records if "probed for" in r.getMessage()]
    assert len(probe) == 1, caplog.text
    assert "not cached (no writable cache folder)" in probe[0] and "cached for next time" not in probe[0]


def _home(tmp_path, kind):
    if kind == "proc":  # an existing folder nobody can create anything in, root included
        if not os.path.isdir("/proc/self") or os.access("/proc", os.W_OK) and _can_mkdir("/proc"):
            pytest.skip("no /proc that refuses new folders here")
        return "/proc"
    blocker = tmp_path / "afile"  # a path under a regular file: unwritable, root included
    blocker.write_text("")
    return str(blocker / "x")


def _can_mkdir(folder):
    try:
        os.mkdir(os.path.join(folder, "bisenet-deploy-probe"))
    except OSError:
        return False
    os.rmdir(os.path.join(folder, "bisenet-deploy-probe"))
    return True


@pytest.mark.parametrize("home, command", [
    ("proc", ["bench", "--iterations", "2", "--warmup", "1", "--no-reference", "-q"]),  # every installed backend
    ("file", ["bench", "--backend", "onnxruntime", "--iterations", "2", "--warmup", "1", "--no-reference", "-q"]),
    ("proc", ["infer", "--backend", "auto", "-q"]),
])
def test_an_unwritable_home_is_one_warning_line(tmp_path, home, command):
    """No telemetry warnings of onnxruntime ('Failed to persist telemetry device ID') or
    OpenVINO ('Failed to create openvino_telemetry file', 'Could not create directory for
    storing client ID') next to our one cache warning."""
    pytest.importorskip("openvino")
    model = tiny_onnx(tmp_path / "tiny.onnx")
    args = [str(model)]
    if command[0] == "infer":
        import cv2

        cv2.imwrite(str(tmp_path / "a.png"), np.zeros((64, 128, 3), np.uint8))
        args += [str(tmp_path / "a.png"), "-o", str(tmp_path / "out")]
    env = {k: v for k, v in os.environ.items() if k not in ("BISENET_DEPLOY_CACHE", "XDG_CACHE_HOME")}
    env.update(HOME=_home(tmp_path, home), PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    done = subprocess.run([sys.executable, "-m", f"bisenet_deploy.cli.{command[0]}", *args, *command[1:]],
                          env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    lines = done.stderr.strip().splitlines()
    assert "telemetry" not in done.stderr and "client ID" not in done.stderr, done.stderr
    # onnxruntime alone keeps no cache: nothing to warn about at all
    assert len(lines) == (0 if "onnxruntime" in command else 1), done.stderr
    assert all("running without a cache" in line for line in lines), done.stderr
