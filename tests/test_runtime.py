import subprocess
import sys
import threading

import numpy as np
import pytest

from bisenet_deploy.errors import ArtifactError, InputError, UserError
from bisenet_deploy.export.verify import torch_reference
from bisenet_deploy.runtime import Segmenter, processing
from bisenet_deploy.runtime.backends.onnxruntime import OnnxRuntimeBackend
from bisenet_deploy.spec import ModelSpec

from .conftest import TINY, make_model, random_frame


def torch_pipeline_masks(model, spec, frames):
    """The PyTorch reference pipeline: same preprocessing, torch forward, argmax, upscale."""
    masks = []
    for frame in frames:
        logits = torch_reference(model, spec, [frame], spec.input_size)
        labels = np.argmax(logits[0], axis=0).astype(np.uint8)
        masks.append(processing.resize_labels(labels, frame.shape[:2]))
    return masks


def test_runtime_import_and_onnx_inference_never_import_torch(export_model5):
    path = export_model5()
    code = (
        "import sys, numpy as np\n"
        "from bisenet_deploy.runtime import Segmenter\n"
        f"seg = Segmenter({str(path)!r})\n"
        "mask = seg(np.zeros((50, 70, 3), np.uint8))\n"
        "assert mask.shape == (50, 70), mask.shape\n"
        "heavy = [m for m in ('torch', 'torchvision') if m in sys.modules]\n"
        "print('HEAVY' if heavy else 'CLEAN', heavy)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "CLEAN" in out.stdout, out.stdout


def test_segmenter_matches_pytorch_pipeline_on_real_photos(model5, export_model5, photos):
    seg = Segmenter(export_model5())
    frames = [img for _, img in photos]
    masks = seg.predict_batch(frames)
    expected = torch_pipeline_masks(model5, seg.spec, frames)
    for frame, mask, ref in zip(frames, masks, expected):
        assert mask.shape == frame.shape[:2] and mask.dtype == np.uint8
        assert (mask == ref).mean() >= 0.999


def test_torch_backend_segmenter_equals_onnx_segmenter(checkpoint5, export_model5, photos):
    frames = [img for _, img in photos[:3]]
    onnx_masks = Segmenter(export_model5()).predict_batch(frames)
    torch_seg = Segmenter(checkpoint5, input_size=TINY)  # .pth: the PyTorch reference backend
    assert torch_seg.backend.name == "torch"
    for a, b in zip(onnx_masks, torch_seg.predict_batch(frames)):
        assert (a == b).mean() >= 0.999


@pytest.mark.parametrize(
    "options",
    [{"argmax": True}, {"fuse_preprocess": True}, {"argmax": True, "fuse_preprocess": True}],
    ids=["argmax", "fused", "both"],
)
def test_in_graph_variants_equal_host_processing(export_model5, photos, options):
    frames = [img for _, img in photos[:4]]
    host = Segmenter(export_model5()).predict_batch(frames)
    graph = Segmenter(export_model5(**options))
    assert graph.spec.output_kind == ("labels" if options.get("argmax") else "logits")
    for a, b in zip(host, graph.predict_batch(frames)):
        assert (a == b).mean() >= 0.999


def test_batches_fixed_and_dynamic(export_model5):
    frames = [random_frame(40 + 10 * i, 90, i) for i in range(3)]
    fixed = Segmenter(export_model5())
    dynamic = Segmenter(export_model5(dynamic=("batch",)))
    assert fixed.batch_size == 1 and dynamic.batch_size is None
    a, b = fixed.predict_batch(frames), dynamic.predict_batch(frames)
    assert [m.shape for m in a] == [f.shape[:2] for f in frames]
    for x, y in zip(a, b):
        assert (x == y).mean() >= 0.999


def test_network_size_output_and_logits(export_model5):
    seg = Segmenter(export_model5(), output_size="network")
    frame = random_frame(300, 200)
    mask = seg(frame)
    assert mask.shape == TINY
    logits = seg.logits(frame)
    assert logits.shape == (5, *TINY)
    np.testing.assert_array_equal(mask, np.argmax(logits, axis=0))
    probs = seg.probabilities(frame)
    np.testing.assert_allclose(probs.sum(axis=0), 1.0, rtol=1e-5)
    with pytest.raises(ArtifactError, match="labels in the graph"):
        Segmenter(export_model5(argmax=True)).logits(frame)


def test_binary_model_mask_and_probability(tmp_path):
    from bisenet_deploy.export.onnx import ExportOptions, export_onnx

    model = make_model(1, variant="seed", seed=3)
    path = tmp_path / "person.onnx"
    export_onnx(model, ModelSpec(num_classes=1, variant="seed", input_size=TINY), path, ExportOptions(size=TINY))
    seg = Segmenter(path)
    frame = random_frame(80, 100, 5)
    mask = seg(frame)
    assert set(np.unique(mask)) <= {0, 1}
    prob = seg.probabilities(frame)
    assert prob.shape == (80, 100) and prob.min() >= 0 and prob.max() <= 1
    net = Segmenter(path, output_size="network")
    np.testing.assert_array_equal(net(frame), (net.probabilities(frame) > 0.5).astype(np.uint8))
    stricter = Segmenter(path, output_size="network", binary_threshold=1e9)
    assert stricter(frame).sum() == 0  # explicit arguments override the artifact's spec


def test_concurrent_calls_are_safe(export_model5, checkpoint5):
    frames = [random_frame(64, 96, i) for i in range(6)]
    for seg in (Segmenter(export_model5()), Segmenter(checkpoint5, input_size=TINY)):
        expected = [seg(f) for f in frames]
        results: dict = {}
        errors: list = []

        def work(tid, seg=seg, results=results, errors=errors):
            try:
                for k in range(3):
                    i = (tid + k) % len(frames)
                    results[(tid, k)] = (i, seg(frames[i]))
            except Exception as exc:  # noqa: BLE001 - surfaced below
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(t,)) for t in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors, errors
        assert len(results) == 12
        for i, mask in results.values():
            np.testing.assert_array_equal(mask, expected[i])
        assert seg.backend.thread_safe or seg._lock is not None


@pytest.mark.parametrize(
    "frame, message",
    [
        (None, "None"),
        (np.zeros((0, 0, 3), np.uint8), "empty"),
        (np.zeros((10, 10, 3), np.float64), "dtype"),
        (np.zeros((10,), np.uint8), "shape"),
    ],
)
def test_bad_frames(export_model5, frame, message):
    seg = Segmenter(export_model5())
    with pytest.raises(InputError, match=message):
        seg(frame)


def test_gray_and_bgra_frames_are_converted(export_model5):
    seg = Segmenter(export_model5())
    gray = random_frame(30, 40)[:, :, 0]
    assert seg(gray).shape == (30, 40)
    bgra = np.dstack([random_frame(30, 40), np.zeros((30, 40), np.uint8)])
    np.testing.assert_array_equal(seg(bgra), seg(bgra[:, :, :3].copy()))
    with pytest.raises(InputError, match="list of frames"):
        seg.predict_batch(random_frame(30, 40))


def test_onnx_without_metadata_needs_a_spec(export_model5, tmp_path):
    import onnx

    proto = onnx.load(str(export_model5()))
    del proto.metadata_props[:]
    bare = tmp_path / "bare.onnx"
    onnx.save(proto, str(bare))
    with pytest.raises(ArtifactError, match="no ModelSpec"):
        Segmenter(bare)
    seg = Segmenter(bare, spec=ModelSpec(num_classes=5, input_size=TINY))
    assert seg(random_frame(20, 20)).shape == (20, 20)


def test_broken_artifacts_and_devices(tmp_path, export_model5):
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(b"\x08\x07garbage" * 100)
    with pytest.raises(ArtifactError, match="cannot load"):
        Segmenter(corrupt)
    with pytest.raises(ArtifactError, match="not found"):
        Segmenter(tmp_path / "missing.onnx")
    with pytest.raises(UserError, match="suffix"):
        Segmenter(tmp_path / "model.bin")
    import onnxruntime

    if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
        with pytest.raises(UserError, match="CUDAExecutionProvider"):
            OnnxRuntimeBackend(export_model5(), device="cuda")
