import json

import numpy as np
import onnx
import pytest

from bisenet_deploy.errors import ExportError, InputError
from bisenet_deploy.export.onnx import ExportOptions, export_onnx, read_metadata
from bisenet_deploy.export.pipeline import export_loaded
from bisenet_deploy.export.verify import Tolerance, random_frames, torch_reference, verify_onnx
from bisenet_deploy.model.checkpoint import load_checkpoint
from bisenet_deploy.runtime import processing
from bisenet_deploy.runtime.backends.onnxruntime import OnnxRuntimeBackend
from bisenet_deploy.spec import METADATA_KEY, ModelSpec

from .conftest import TINY

SPEC5 = ModelSpec(num_classes=5, input_size=TINY)


def _export(model, tmp_path, name="m.onnx", spec=SPEC5, **opts):
    opts.setdefault("size", TINY)
    path = tmp_path / name
    result = export_onnx(model, spec, path, ExportOptions(**opts))
    return path, result.spec


def test_fixed_export_structure_and_metadata(model5, tmp_path):
    path, spec = _export(model5, tmp_path)
    proto = onnx.load(str(path))
    assert [o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")] == [17]
    assert [i.name for i in proto.graph.input] == ["input"]
    assert [o.name for o in proto.graph.output] == ["logits"]
    dims = [d.dim_value for d in proto.graph.input[0].type.tensor_type.shape.dim]
    assert dims == [1, 3, *TINY]
    assert ModelSpec.from_json(read_metadata(proto)[METADATA_KEY]) == spec
    assert not list(tmp_path.glob("*.data")), "must be one self-contained file"
    onnx.checker.check_model(proto, full_check=True)


def test_other_opset_is_written_as_asked(model5, tmp_path):
    path, _ = _export(model5, tmp_path, opset=13)
    assert onnx.load(str(path)).opset_import[0].version == 13
    with pytest.raises(ExportError, match="opset"):
        _export(model5, tmp_path, "bad.onnx", opset=99)


@pytest.mark.parametrize("size", [TINY, (96, 160)])
def test_fixed_export_matches_pytorch_at_two_sizes(model5, tmp_path, size):
    spec = SPEC5.replace(input_size=size)
    path, art = _export(model5, tmp_path, spec=spec, size=size)
    frames = [(f"r{i}", f) for i, f in enumerate(random_frames(2, size, seed=5))]
    report = verify_onnx(path, model5, art, frames)
    assert report.passed, report.failures
    assert report.max_abs_diff < 1e-3 and report.label_agreement >= 99.9


def test_dynamic_export_runs_other_batches_and_sizes(model5, tmp_path):
    path, art = _export(model5, tmp_path, dynamic=("batch", "height", "width"))
    frames = [(f"r{i}", f) for i, f in enumerate(random_frames(2, TINY, seed=6))]
    report = verify_onnx(path, model5, art, frames)
    assert report.passed, report.failures
    shapes = {(c["batch"], tuple(c["size"])) for c in report.cases}
    assert (2, TINY) in shapes and any(s != TINY for _, s in shapes), shapes
    with OnnxRuntimeBackend(path) as be:
        out = be.infer(np.zeros((3, 3, 96, 64), np.float32))
    assert out.shape == (3, 5, 12, 8)  # low resolution by default: 1/8 of 96x64


def test_argmax_and_fused_preprocess_equal_the_pytorch_pipeline(model5, tmp_path, photos):
    path, art = _export(model5, tmp_path, argmax=True, fuse_preprocess=True)
    assert art.input_layout == "NHWC_UINT8" and art.output_kind == "labels"
    proto = onnx.load(str(path))
    assert proto.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.UINT8
    assert proto.graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.INT32
    frames = [f for _, f in photos[:3]]
    ref = torch_reference(model5, art, frames, TINY)
    expected = np.argmax(ref, axis=1)
    with OnnxRuntimeBackend(path) as be:
        labels = np.concatenate([be.infer(processing.preprocess([f], art)) for f in frames])
        with pytest.raises(InputError, match="takes shape"):
            be.infer(processing.preprocess(frames, art))  # fixed batch 1
    assert labels.shape == expected.shape
    assert (labels == expected).mean() >= 0.999


@pytest.mark.parametrize("fuse, argmax", [(True, False), (False, True)])
def test_each_graph_extension_alone(model5, tmp_path, fuse, argmax):
    path, art = _export(model5, tmp_path, fuse_preprocess=fuse, argmax=argmax)
    frames = [(f"r{i}", f) for i, f in enumerate(random_frames(2, TINY, seed=7))]
    assert verify_onnx(path, model5, art, frames).passed


def test_rgb_frames_for_fused_graph(model5, tmp_path):
    path, art = _export(model5, tmp_path, fuse_preprocess=True, frame_color_order="RGB")
    frame = random_frames(1, TINY, seed=8)[0]
    ref = torch_reference(model5, art, [frame], TINY)
    with OnnxRuntimeBackend(path) as be:
        out = be.infer(frame[None, :, :, ::-1].copy())
    np.testing.assert_allclose(processing.scores_from_output(out, art), ref, atol=1e-3)  # 1/8 scores, upsampled


def test_binary_model_argmax_is_a_threshold(tmp_path):
    from .conftest import make_model

    model = make_model(1, variant="seed", seed=4)
    spec = ModelSpec(num_classes=1, variant="seed", input_size=TINY)
    path, art = _export(model, tmp_path, spec=spec, argmax=True)
    frames = random_frames(2, TINY, seed=9)
    ref = torch_reference(model, art, frames, TINY)
    with OnnxRuntimeBackend(path) as be:
        labels = np.concatenate([be.infer(processing.preprocess([f], art)) for f in frames])
    np.testing.assert_array_equal(labels, (ref[:, 0] > 0).astype(np.int32))


def test_verification_failure_keeps_the_existing_file(checkpoint5, tmp_path):
    out = tmp_path / "model.onnx"
    out.write_bytes(b"previous good model")
    loaded = load_checkpoint(checkpoint5)
    impossible = Tolerance(abs=-1.0, rel=0.0)  # nothing can pass
    with pytest.raises(ExportError, match="verification failed"):
        export_loaded(loaded, out, ExportOptions(size=TINY), tolerance=impossible)
    assert out.read_bytes() == b"previous good model"
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    report = json.loads((tmp_path / "model.verify.json").read_text())
    assert report["passed"] is False and report["failures"]


def test_successful_export_writes_model_and_report(checkpoint5, tmp_path):
    loaded = load_checkpoint(checkpoint5)
    out = tmp_path / "model.onnx"
    outcome = export_loaded(loaded, out, ExportOptions(size=TINY))
    assert outcome.report.passed and out.is_file()
    assert oct(out.stat().st_mode & 0o077) != "0o0", "permissions should follow the umask, not mkstemp's 0600"
    report = json.loads(outcome.report_path.read_text())
    assert report["passed"] and report["cases"][0]["size"] == list(TINY)
    # ModelSpec carries the checkpoint hash through to the artifact.
    with OnnxRuntimeBackend(out) as be:
        assert be.spec.checkpoint_sha256 == loaded.spec.checkpoint_sha256


def test_output_in_missing_folder_is_created_only_when_the_export_succeeds(checkpoint5, tmp_path):
    loaded = load_checkpoint(checkpoint5)
    strict = Tolerance(abs=0.0, rel=0.0, min_agreement=100.0)
    with pytest.raises(ExportError):  # verification fails: no model, and no folder left behind
        export_loaded(loaded, tmp_path / "a" / "b" / "m.onnx", ExportOptions(size=TINY), tolerance=strict)
    assert not (tmp_path / "a" / "b" / "m.onnx").exists()
    export_loaded(loaded, tmp_path / "no" / "such" / "m.onnx", ExportOptions(size=TINY))
    assert (tmp_path / "no" / "such" / "m.onnx").is_file()
