"""How streams end in the streaming runtime (issue 22 fixes): a video that stops before the
frames it declares is that stream's error, as in a plain run; a failing on_result callback is
that stream's failure."""

from __future__ import annotations

import numpy as np
import pytest

from bisenet_deploy.runtime import Segmenter
from bisenet_deploy.runtime.streaming import StreamRuntime
from tests.tiny_onnx import tiny_onnx


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return tiny_onnx(tmp_path_factory.mktemp("ends") / "tiny.onnx", dynamic=True)


def truncated_avi(path, frames=40):
    """An MJPG AVI that declares ``frames`` frames, cut in half (as a copy that stopped)."""
    import cv2

    full = path.with_name("full.avi")
    writer = cv2.VideoWriter(str(full), cv2.VideoWriter_fourcc(*"MJPG"), 50, (96, 48))
    if not writer.isOpened():
        pytest.skip("this OpenCV cannot write MJPG video")
    rng = np.random.default_rng(0)
    for _ in range(frames):
        writer.write(rng.integers(0, 256, (48, 96, 3), dtype=np.uint8))
    writer.release()
    data = full.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    cap = cv2.VideoCapture(str(path))
    declared, readable = int(cap.get(cv2.CAP_PROP_FRAME_COUNT)), 0
    while cap.read()[0]:
        readable += 1
    cap.release()
    if not 0 < readable < declared:
        pytest.skip(f"this OpenCV reads the cut file as {readable} of {declared} frames")
    return path, declared, readable


def test_a_truncated_video_source_ends_with_its_error(tiny, tmp_path):
    path, declared, readable = truncated_avi(tmp_path / "trunc.avi")
    with StreamRuntime(Segmenter(tiny, backend="onnxruntime")) as rt:
        sid = rt.add_source(path, lossless=True)
        results = list(rt.results(timeout=30))
        stats = rt.stats()[sid]
    assert len(results) == readable
    assert stats.error and f"declares {declared} frames but only {readable}" in stats.error


def test_a_raising_on_result_callback_is_a_failure_of_that_stream(tiny):
    import time

    seen = []

    def callback(result):
        seen.append(result.index)
        if result.index == 1:
            raise ValueError("consumer bug")

    rng = np.random.default_rng(1)
    frames = [rng.integers(0, 256, (48, 96, 3), dtype=np.uint8) for _ in range(3)]
    with StreamRuntime(Segmenter(tiny, backend="onnxruntime"), on_result=callback) as rt:
        sid = rt.add_source(frames, lossless=True)
        rt.start()
        deadline = time.monotonic() + 30
        while len(seen) < 3 and time.monotonic() < deadline:
            time.sleep(0.01)
        stats = rt.stats()[sid]
    assert seen == [0, 1, 2]
    assert (stats.delivered, stats.failed) == (2, 1)
    assert stats.error and "on_result failed: ValueError: consumer bug" in stats.error
    assert any("consumer bug" in e for e in rt.errors)
