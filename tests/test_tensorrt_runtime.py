"""Build and run engines on a GPU with TensorRT (marker ``tensorrt``; skipped elsewhere).

One run on a Jetson or a desktop GPU settles whether the runtime half works: outputs
against onnxruntime, dynamic shapes, the CUDA-graph path, GPU-resident input, stage times,
clean release, and label agreement of the trained demo model at every precision.
"""

from __future__ import annotations

import numpy as np
import pytest

from bisenet_deploy.errors import InputError
from bisenet_deploy.trt.builder import EngineOptions, build_engine
from bisenet_deploy.runtime.backends import open_backend
from bisenet_deploy.runtime.backends.onnxruntime import OnnxRuntimeBackend
from tests.tiny_onnx import tiny_onnx
from tests.trt_fixtures import runtime_module

pytestmark = pytest.mark.tensorrt


@pytest.fixture(scope="module")
def trt():
    return runtime_module()


@pytest.fixture(scope="module")
def engines(trt, tmp_path_factory):
    """(onnx, engine) per (precision, dynamic) for the tiny graphs."""
    folder = tmp_path_factory.mktemp("trt_run")
    out = {}
    for precision in ("fp32", "fp16", "int8"):
        for dynamic in (False, True):
            name = f"tiny_{'dyn' if dynamic else 'fix'}.{precision}"
            onnx = tiny_onnx(folder / f"{name}.onnx", precision, dynamic)
            build = build_engine(onnx, options=EngineOptions(progress=False), trt=trt)
            out[precision, dynamic] = onnx, build.engine_path
    return out


def _input(batch=1, h=64, w=128, seed=0):
    return np.random.default_rng(seed).standard_normal((batch, 3, h, w)).astype(np.float32)


def _reference(onnx, x):
    with OnnxRuntimeBackend(onnx, device="cpu") as ort:
        return ort.infer(x)


@pytest.mark.parametrize("precision, atol", [("fp32", 2e-2), ("fp16", 5e-2), ("int8", 0.25)])
def test_outputs_match_onnxruntime(engines, precision, atol):
    onnx, engine = engines[precision, False]
    x = _input()
    with open_backend(engine) as backend:
        assert backend.name == "tensorrt" and backend.precision == precision and backend.spec.num_classes == 4
        out = backend.infer(x)
        times = backend.last_stage_times
    ref = _reference(onnx, x)
    assert out.shape == ref.shape
    assert float(np.max(np.abs(out.astype(np.float32) - ref))) < atol
    assert set(times) == {"h2d", "compute", "d2h"} and all(t >= 0 for t in times.values()) and times["compute"] > 0


def test_dynamic_shapes(engines):
    onnx, engine = engines["fp32", True]
    with open_backend(engine) as backend:
        assert backend.inputs[0].shape == (None, 3, None, None)
        for shape in ((1, 64, 128), (3, 32, 64), (2, 96, 160), (1, 64, 128)):
            x = _input(*shape)
            out = backend.infer(x)
            assert out.shape == (shape[0], 4, shape[1], shape[2])
            assert np.allclose(out, _reference(onnx, x), atol=2e-2)
        with pytest.raises(InputError, match="outside the engine's profile"):
            backend.infer(_input(8, 64, 128))


@pytest.mark.parametrize("dynamic", [False, True], ids=["fixed", "dynamic"])
def test_cuda_graph_equals_plain_path(engines, dynamic):
    _, engine = engines["fp16", dynamic]
    with open_backend(engine) as plain, open_backend(engine, cuda_graph=True) as graphed:
        for seed, shape in enumerate([(1, 64, 128), (1, 64, 128), (2, 32, 64)] if dynamic else [(1, 64, 128)] * 3):
            x = _input(*shape, seed=seed)
            assert np.array_equal(plain.infer(x), graphed.infer(x))
        assert graphed.cuda_graph, "capture failed and the backend fell back to plain runs"


def test_gpu_resident_input_needs_no_host_copy(engines):
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("needs torch with CUDA")
    _, engine = engines["fp32", True]
    x = _input(2, 64, 128)
    with open_backend(engine) as backend, open_backend(engine, cuda_graph=True) as graphed:
        host = backend.infer(x)
        on_gpu = torch.from_numpy(x).cuda()
        assert np.array_equal(backend.infer(on_gpu), host)
        assert np.array_equal(graphed.infer(on_gpu), host)
        with pytest.raises(InputError, match="takes"):
            backend.infer(on_gpu.half())


def test_segmenter_runs_an_engine_unchanged(engines):
    from bisenet_deploy.runtime import Segmenter

    _, engine = engines["int8", True]
    frame = np.random.default_rng(3).integers(0, 256, (90, 160, 3), dtype=np.uint8)
    with Segmenter(engine, backend_options={"cuda_graph": True}) as seg:
        mask = seg(frame)
        masks = seg.predict_batch([frame, frame[:45]])
    assert mask.shape == (90, 160) and mask.dtype == np.uint8 and mask.max() < 4
    assert np.array_equal(masks[0], mask) and masks[1].shape == (45, 160)


def test_bad_input_and_closed_backend(engines):
    _, engine = engines["fp32", False]
    backend = open_backend(engine)
    with pytest.raises(InputError):
        backend.infer(_input(1, 32, 64))
    with pytest.raises(InputError):
        backend.infer(_input().astype(np.float64))
    backend.close()
    backend.close()  # idempotent
    with pytest.raises(InputError, match="closed"):
        backend.infer(_input())


def test_release_returns_gpu_memory(engines):
    from bisenet_deploy.trt.cuda_buffers import _call

    _, engine = engines["fp32", True]
    with open_backend(engine) as warm:  # first load initialises CUDA/TensorRT state that stays
        warm.infer(_input(2, 96, 160))
    free_before = _call("cudaMemGetInfo")[0]
    for _ in range(5):
        with open_backend(engine, cuda_graph=True) as backend:
            backend.infer(_input(2, 96, 160))
    free_after = _call("cudaMemGetInfo")[0]
    assert free_before - free_after < 16 << 20, f"{(free_before - free_after) >> 20} MiB not returned"


@pytest.mark.slow
def test_trained_demo_model_label_agreement(trt, tmp_path):
    """Label agreement with onnxruntime FP32 at each precision (thresholds in gpu_check)."""
    from bisenet_deploy.cli import gpu_check
    from bisenet_deploy.model.demo import demo_checkpoint_path

    if demo_checkpoint_path() is None:
        pytest.skip("needs the trained demo model (bisenet_deploy/assets/demo_shapes_r18.pth)")
    results = gpu_check.run_checks(tmp_path, (256, 512), tensorrt=trt.__name__)
    failed = [f"{r.name}: {r.detail}" for r in results if r.status == "FAIL"]
    assert not failed, failed
