"""The streaming runtime's TensorRT path (one execution context per CUDA stream) on a GPU
(marker ``tensorrt``; skipped elsewhere)."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from bisenet_deploy.runtime import Segmenter
from bisenet_deploy.runtime.streaming import StreamRuntime
from bisenet_deploy.trt.builder import EngineOptions, build_engine
from tests.tiny_onnx import tiny_onnx
from tests.trt_fixtures import runtime_module

pytestmark = pytest.mark.tensorrt


@pytest.mark.parametrize("dynamic", [False, True])
def test_context_pool_masks_equal_segmenter(tmp_path, dynamic):
    trt = runtime_module()
    onnx = tiny_onnx(tmp_path / "tiny.onnx", "fp32", dynamic)
    engine = build_engine(onnx, options=EngineOptions(progress=False), trt=trt).engine_path
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (48, 100, 3), dtype=np.uint8) for _ in range(12)]
    seg = Segmenter(engine)
    expected = [seg(f) for f in frames]
    before = set(threading.enumerate())
    with StreamRuntime(seg, mode="throughput") as rt:
        ids = [rt.add_source(iter(frames), lossless=True) for _ in range(3)]
        out = {}
        for r in rt.results(timeout=60):
            out.setdefault(r.stream_id, []).append(r)
        assert rt.inference.kind.startswith("tensorrt"), rt.inference.kind
        assert rt.errors == []
    for sid in ids:
        assert [r.index for r in out[sid]] == list(range(12))
        assert all(np.array_equal(r.mask, expected[r.index]) for r in out[sid])
    assert set(threading.enumerate()) == before
    seg.close()
