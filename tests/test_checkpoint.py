import sys
import types

import pytest
import torch

from bisenet_deploy.errors import CheckpointError
from bisenet_deploy.model import BiSeNet, load_checkpoint
from bisenet_deploy.model.checkpoint import match_family

from .conftest import make_model, retag_storage_as_cuda

X = torch.randn(1, 3, 64, 96, generator=torch.Generator().manual_seed(3))


def _same_outputs(a, b):
    with torch.no_grad():
        torch.testing.assert_close(a(X), b(X), rtol=0, atol=0)


@pytest.fixture(scope="module")
def model():
    return make_model(3, seed=1)


@pytest.mark.parametrize(
    "wrap",
    [
        lambda sd: sd,
        lambda sd: {"state_dict": sd, "epoch": 3},
        lambda sd: {"model": sd, "optimizer": {"lr": 0.1}},
        lambda sd: {"model_state": sd, "epoch": 9, "config": {"n": 1}},
        lambda sd: {"model_state_dict": sd},
        lambda sd: {"net": sd},
        lambda sd: {"checkpoint": {"state_dict": sd}},
        lambda sd: {f"module.{k}": v for k, v in sd.items()},
        lambda sd: {f"_orig_mod.{k}": v for k, v in sd.items()},
        lambda sd: {"state_dict": {f"module._orig_mod.{k}": v for k, v in sd.items()}},
        lambda sd: {f"model.{k}": v for k, v in sd.items()},
    ],
    ids=["plain", "state_dict", "model", "model_state", "model_state_dict", "net", "nested",
         "dataparallel", "compiled", "ddp+compiled", "lightning"],
)
def test_checkpoint_layouts_load_to_the_same_network(model, tmp_path, wrap):
    path = tmp_path / "ck.pth"
    torch.save(wrap(model.state_dict()), path)
    loaded = load_checkpoint(path)
    assert loaded.spec.num_classes == 3 and loaded.spec.backbone == "resnet18"
    assert loaded.spec.variant == "paper" and not loaded.model.training
    assert len(loaded.spec.checkpoint_sha256) == 64
    _same_outputs(loaded.model, model)


def test_seed_variant_detected_from_weights(tmp_path):
    seed = make_model(1, variant="seed", seed=2)
    path = tmp_path / "seed.pth"
    torch.save({"epoch": 9, "model_state": seed.state_dict()}, path)
    loaded = load_checkpoint(path)
    assert loaded.spec.variant == "seed" and loaded.spec.num_classes == 1
    assert any("seed" in r for r in loaded.spec.extra["detected"])
    _same_outputs(loaded.model, seed)


@pytest.mark.parametrize("backbone", ["resnet18", "resnet34", "resnet50", "resnet101"])
@pytest.mark.parametrize("variant", ["paper", "seed"])
def test_backbone_variant_and_classes_inferred(backbone, variant):
    with torch.device("meta"):
        sd = BiSeNet(num_classes=7, backbone=backbone, variant=variant).state_dict()
    fit = match_family(dict(sd))
    assert fit.params == {"num_classes": 7, "backbone": backbone, "variant": variant}


def test_gpu_saved_checkpoint_loads_on_cpu(model, tmp_path):
    plain = tmp_path / "plain.pth"
    torch.save({"state_dict": model.state_dict()}, plain)
    gpu = tmp_path / "gpu.pth"
    retag_storage_as_cuda(plain, gpu)
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="CUDA"):
            torch.load(gpu, weights_only=True)  # the case the loader must handle
    _same_outputs(load_checkpoint(gpu).model, model)


def test_legacy_serialization_and_fp16_weights(model, tmp_path):
    path = tmp_path / "legacy.pth"
    half = {k: (v.half() if v.is_floating_point() else v) for k, v in model.state_dict().items()}
    torch.save(half, path, _use_new_zipfile_serialization=False)
    loaded = load_checkpoint(path)
    assert next(loaded.model.parameters()).dtype == torch.float32
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(X), model(X), rtol=0.05, atol=0.05)


def test_missing_num_batches_tracked_is_accepted(model, tmp_path):
    """PyTorch < 0.4.1 checkpoints have no BatchNorm counters."""
    sd = {k: v for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}
    path = tmp_path / "old.pth"
    torch.save(sd, path)
    _same_outputs(load_checkpoint(path).model, model)


def _foreign_module(name, marker):
    mod = types.ModuleType(name)
    exec(
        "class Config:\n"
        "    def __init__(self, d):\n"
        "        self.d = d\n"
        "    def __setstate__(self, state):\n"
        f"        open({str(marker)!r}, 'w').write('foreign code ran')\n"
        "        self.__dict__.update(state)\n",
        mod.__dict__,
    )
    return mod


def test_foreign_pickled_objects_yield_tensors_without_running_their_code(model, tmp_path):
    marker = tmp_path / "ran.txt"
    name = "trainer_config_not_installed"
    sys.modules[name] = _foreign_module(name, marker)
    try:
        cfg = sys.modules[name].Config({"lr": 0.1})
        import argparse

        torch.save(
            {"model_state": model.state_dict(), "config": cfg, "args": argparse.Namespace(lr=0.1), "epoch": 9},
            tmp_path / "ck.pth",
        )
    finally:
        del sys.modules[name]
    loaded = load_checkpoint(tmp_path / "ck.pth")
    _same_outputs(loaded.model, model)
    assert name not in sys.modules, "the loader imported the foreign module"
    assert not marker.exists(), "the loader ran foreign code"
    assert any(name in note for note in loaded.notes)
    # Full unpickling needs the module: a clear error, not a traceback.
    with pytest.raises(CheckpointError, match="not installed"):
        load_checkpoint(tmp_path / "ck.pth", trust=True)


def test_code_executing_pickles_are_refused(model, tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            import os

            return (os.system, (f"touch {marker}",))

    torch.save({"state_dict": model.state_dict(), "x": Evil()}, tmp_path / "evil.pth")
    with pytest.raises(CheckpointError, match="could run code"):
        load_checkpoint(tmp_path / "evil.pth")
    assert not marker.exists()


def test_pickled_whole_module_gives_its_weights_safely(model, tmp_path):
    torch.save(model, tmp_path / "whole.pth")
    _same_outputs(load_checkpoint(tmp_path / "whole.pth").model, model)
    _same_outputs(load_checkpoint(tmp_path / "whole.pth", trust=True).model, model)


@pytest.mark.parametrize(
    "content, message",
    [
        (b"", "empty"),
        (bytes(range(256)) * 10, "not a PyTorch checkpoint"),
        (b"epoch: 10\nlr: 0.1\n", "text file"),
        (b"PK\x03\x04garbage-zip-contents" * 4, "cannot read checkpoint"),
    ],
    ids=["empty", "random", "text", "corrupt-zip"],
)
def test_files_that_are_not_checkpoints(tmp_path, content, message):
    path = tmp_path / "bad.pth"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match=message):
        load_checkpoint(path)


def test_onnx_file_given_as_checkpoint(tmp_path):
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
    )
    path = tmp_path / "model.pth"
    onnx.save(helper.make_model(graph, producer_name="pytorch"), path)
    with pytest.raises(CheckpointError, match="ONNX model"):
        load_checkpoint(path)


def test_missing_file_and_folder(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "nope.pth")
    with pytest.raises(CheckpointError, match="folder"):
        load_checkpoint(tmp_path)


def test_bare_backbone_is_named_as_one():
    from torchvision.models import resnet18

    # An ImageNet ResNet-18 is our context path (plus its fc): name it, not "0% of keys fit".
    with pytest.raises(CheckpointError, match=r"not a whole segmentation network.*: 9\d% of its weights are the (context_path|cp\.resnet)\.\* module of "):
        match_family(dict(resnet18(weights=None).state_dict()))


def test_other_network_is_rejected_with_the_closest_family():
    from torchvision.models import mobilenet_v2

    with pytest.raises(CheckpointError, match="unknown checkpoint layout.*closest: ") as info:
        match_family(dict(mobilenet_v2(weights=None).state_dict()))
    assert "not a whole segmentation network" not in str(info.value)


def test_missing_unexpected_and_misshaped_keys_are_named(model):
    sd = dict(model.state_dict())
    del sd["final_conv.bias"]
    sd["extra_head.weight"] = torch.zeros(1)
    sd["spatial_path.1.0.weight"] = torch.zeros(3, 3, 3, 3)
    with pytest.raises(CheckpointError) as info:
        match_family(sd)
    text = str(info.value)
    assert "final_conv.bias" in text and "extra_head.weight" in text and "spatial_path.1.0.weight" in text
    assert "\n" not in text


def test_arch_override(model):
    with pytest.raises(CheckpointError, match="unknown architecture"):
        match_family(dict(model.state_dict()), arch="no_such_arch")
    assert match_family(dict(model.state_dict()), arch="bisenet_v1").family.name == "bisenet_v1"
