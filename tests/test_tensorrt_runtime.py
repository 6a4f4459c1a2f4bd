"""Build and run engines on a GPU with TensorRT (marker ``tensorrt``; skipped elsewhere).

One run on a Jetson or a desktop GPU settles whether the runtime half works: outputs
against onnxruntime, dynamic shapes, the CUDA-graph path, GPU-resident input, stage times,
clean release, and label agreement of the trained demo model at every precision.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from bisenet_deploy.errors import InputError
from bisenet_deploy.runtime.backends import open_backend
from bisenet_deploy.runtime.backends.onnxruntime import OnnxRuntimeBackend
from bisenet_deploy.trt.builder import EngineOptions, build_engine
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
    """The GPU check's run half on one form (scripts/gpu_check.sh runs all of them once)."""
    from bisenet_deploy.cli import gpu_check
    from bisenet_deploy.model.demo import demo_checkpoint_path

    if demo_checkpoint_path() is None:
        pytest.skip("needs the trained demo model (bisenet_deploy/assets/demo_shapes_r18.pth)")
    results = gpu_check.run_checks(tmp_path, (128, 256), tensorrt=trt.__name__, forms=("labels_fixed",),
                                   precisions=("fp16",))
    failed = [f"{r.name}: {r.detail}" for r in results if r.status == "FAIL"]
    assert not failed, failed


# --- argmax / fused preprocessing, graphs, alignment, DLA: the paths issue 24 lists -------------

#: minimum label agreement (%) of the engine with onnxruntime running the same ONNX
LABEL_AGREEMENT = {"fp32": 99.5, "fp16": 98.0, "int8": 95.0}


@pytest.fixture(scope="module")
def labels_engines(trt, precision_models, tmp_path_factory):
    """Engines of the ``--argmax --fuse-preprocess`` exports (uint8 NHWC in, int32 labels out)."""
    folder = tmp_path_factory.mktemp("trt_labels")
    return {
        precision: (precision_models["dynamic"][precision],
                    build_engine(precision_models["dynamic"][precision], folder / f"seg.{precision}.engine",
                                 EngineOptions(progress=False), trt=trt).engine_path)
        for precision in ("fp32", "fp16", "int8")
    }


def _frames(photos, batch, h, w):
    import cv2

    return np.stack([cv2.resize(photo, (w, h)) for _, photo in list(photos)[:batch]]).astype(np.uint8)


@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
def test_argmax_fused_preprocess_engines_give_onnxruntime_labels(labels_engines, photos, precision):
    from bisenet_deploy.metrics import label_agreement

    onnx, engine = labels_engines[precision]
    with open_backend(engine) as backend, OnnxRuntimeBackend(onnx, device="cpu") as ort:
        assert backend.inputs[0].dtype == np.uint8 and backend.outputs[0].dtype == np.int32
        for batch, h, w in ((1, 64, 128), (2, 96, 160)):
            x = _frames(photos, batch, h, w)
            got, want = backend.infer(x), ort.infer(x)
            assert got.shape == want.shape == (batch, h, w)
            assert label_agreement(got, want) >= LABEL_AGREEMENT[precision]


def _capturing(stream):
    from bisenet_deploy.trt.cuda_buffers import _call, cudart

    status = _call("cudaStreamIsCapturing", stream.handle)
    return status != cudart().cudaStreamCaptureStatus.cudaStreamCaptureStatusNone


def test_cuda_graph_first_call_runs_once_then_replays(engines):
    """The first call of a shape runs the engine once (not a warm-up plus a run); the graph is
    captured afterwards and replayed from the second call on."""
    _, engine = engines["fp32", True]
    with open_backend(engine, cuda_graph=True) as backend:
        runs = []
        plain = backend._execute

        def counting():
            runs.append("captured" if _capturing(backend._stream) else "ran")
            plain()

        backend._execute = counting
        x = _input(2, 64, 128)
        first = backend.infer(x)
        assert runs == ["ran", "captured"] and backend._graph is not None
        runs.clear()
        assert np.array_equal(backend.infer(x), first) and runs == []  # replayed, not enqueued
        backend.infer(_input(1, 32, 64))  # a new shape: one run, one capture
        assert runs == ["ran", "captured"]


def test_failed_capture_is_ended_and_the_backend_keeps_working(engines):
    """An enqueue that fails under capture (trtexec: endCaptureOnError) leaves a usable stream."""
    from bisenet_deploy.trt.cuda_buffers import CudaError

    _, engine = engines["fp16", False]
    x = _input()
    with open_backend(engine) as plain_backend:
        expected = plain_backend.infer(x)
    with open_backend(engine, cuda_graph=True) as backend:
        plain = backend._execute

        def failing_under_capture():
            if _capturing(backend._stream):
                raise CudaError("TensorRT execution failed: refused under capture")
            plain()

        backend._execute = failing_under_capture
        with pytest.warns(UserWarning, match="CUDA graph capture failed"):
            assert np.array_equal(backend.infer(x), expected)
        assert not backend.cuda_graph and backend._graph is None
        assert not _capturing(backend._stream)
        assert np.array_equal(backend.infer(x), expected)


def test_misaligned_gpu_input_is_copied_aligned_one_is_bound(engines):
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("needs torch with CUDA")
    from bisenet_deploy.trt.device_arrays import needs_copy

    _, engine = engines["fp32", False]
    x = _input()
    storage = torch.zeros(x.size + 1, dtype=torch.float32, device="cuda")
    storage[1:] = torch.from_numpy(x.ravel()).cuda()
    shifted = storage[1:].view(x.shape)  # 4 bytes past a cudaMalloc boundary
    assert needs_copy(shifted.data_ptr()) and not needs_copy(storage.data_ptr())
    with open_backend(engine) as backend:
        host = backend.infer(x)
        assert np.array_equal(backend.infer(shifted), host) and backend.input_copied
        assert np.array_equal(backend.infer(torch.from_numpy(x).cuda()), host) and not backend.input_copied


def test_sidecar_identifies_the_gpu(engines):
    from bisenet_deploy.trt.sidecar import EngineSidecar, gpu_identity_problem

    _, engine = engines["fp32", False]
    side = EngineSidecar.read(engine)
    with open_backend(engine) as backend:
        here = backend.gpu
    if side.tensorrt["package"] == "tensorrt":
        assert side.gpu["multiprocessors"] > 0 and side.gpu["total_memory_mb"] > 0 and side.gpu["uuid"]
        assert gpu_identity_problem(side.gpu, here) is None


def test_dla_engine_runs_on_its_core(trt, tmp_path):
    from bisenet_deploy.trt.features import dla_note
    from bisenet_deploy.trt.loading import flavour, logger_for, version_of

    if not getattr(trt.Builder(logger_for(trt)), "num_DLA_cores", 0):
        note = dla_note(flavour(trt), version_of(trt))
        pytest.skip("no DLA cores here" + (f" ({note})" if note else ""))
    onnx = tiny_onnx(tmp_path / "dla.fp16.onnx", "fp16")
    build = build_engine(onnx, options=EngineOptions(progress=False, dla_core=0), trt=trt)
    assert build.sidecar.build["dla_core"] == 0
    # GPU fallback could have taken every layer: the layer report must show DLA layers.
    from bisenet_deploy.trt.features import dla_layers

    assert build.layers_path is not None, build.notes
    report = json.loads(build.layers_path.read_text())
    assert dla_layers(report), f"no layer of the DLA engine runs on DLA: {build.notes}"
    x = _input()
    with open_backend(build.engine_path) as backend:
        assert backend.describe()["dla_core"] == 0
        out = backend.infer(x)
    assert float(np.max(np.abs(out - _reference(onnx, x)))) < 5e-2
