"""An unwritable cache or HOME (issue 23, item 5): the promise is one warning line and an
honest probe line, nothing from the libraries' own telemetry."""

from __future__ import annotations

import logging

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
