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


@pytest.fixture
def unwritable_cache(tmp_path, monkeypatch):
    """A cache path below a regular file: unwritable even for root."""
    from bisenet_deploy import cache

    blocker = tmp_path / "not-a-folder"
    blocker.write_text("x")
    monkeypatch.setenv("BISENET_DEPLOY_CACHE", str(blocker / "cache"))
    monkeypatch.setattr(cache, "_unwritable", set())
    return blocker


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
