"""Family ``torchseg`` (ycszen/TorchSeg, the BiSeNet paper's code): all five configurations,
checkpoints written the way its engine writes them (``{'model', 'optimizer', 'epoch',
'iteration'}``, legacy serialization, CUDA storage tags), detection, export at two sizes,
and the speed configurations' eval-time resize."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from bisenet_deploy.errors import CheckpointError
from bisenet_deploy.export.onnx import ExportOptions
from bisenet_deploy.export.pipeline import export_loaded
from bisenet_deploy.export.verify import Tolerance
from bisenet_deploy.model.checkpoint import load_checkpoint
from bisenet_deploy.model.torchseg import LAYOUT, Head, TorchSegBiSeNet

from .family_checkpoints import randomize

SIZES = [(64, 128), (96, 160)]


def torchseg_checkpoint(config: str, folder, seed: int = 0, aux: bool = True, legacy_cuda: bool = True):
    """(our network, path): saved as TorchSeg's Engine.save_checkpoint saves a training
    network (auxiliary heads included) with the torch of 2019: legacy format, CUDA tags."""
    model = randomize(TorchSegBiSeNet(19, config), seed)
    with torch.no_grad():  # trained heads give logits of order 10, not the thousands random ones reach
        model.heads[2].conv_1x1.weight.mul_(0.05)
    sd = dict(model.state_dict())
    if aux:
        for i in (0, 1):
            head = Head(128, LAYOUT[config][2], 19, 1)
            sd.update({f"heads.{i}.{k}": v for k, v in head.state_dict().items()})
    optimizer = torch.optim.SGD(model.parameters(), lr=1e-2, momentum=0.9)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "epoch-last.pth"
    torch.save({"model": sd, "optimizer": optimizer.state_dict(), "epoch": 80, "iteration": 8000}, path,
               _use_new_zipfile_serialization=False)
    if legacy_cuda:  # storages saved from a GPU: location 'cuda:0' in the legacy pickle
        data = path.read_bytes().replace(b"X\x03\x00\x00\x00cpu", b"X\x06\x00\x00\x00cuda:0")
        path.write_bytes(data)
    return model, path


@pytest.fixture(scope="module", params=list(LAYOUT), ids=str)
def saved(request, tmp_path_factory):
    config = request.param
    # where its engine saves snapshots: log/<configuration folder>/snapshot/
    folder = tmp_path_factory.mktemp("TorchSeg") / "log" / f"cityscapes.bisenet.{config}" / "snapshot"
    model, path = torchseg_checkpoint(config, folder, seed=list(LAYOUT).index(config))
    return config, model, load_checkpoint(path)


def test_each_configuration_is_detected_and_rebuilt_exactly(saved):
    config, model, loaded = saved
    assert loaded.spec.arch == "torchseg" and loaded.spec.variant == config
    assert loaded.spec.backbone == LAYOUT[config][0] and loaded.spec.num_classes == 19
    assert loaded.spec.class_names[0] == "road" and loaded.spec.color_order == "RGB"
    notes = " ".join(loaded.notes)
    assert "checkpoint['model']" in notes and "ignored heads.0, heads.1" in notes
    x = torch.randn(1, 3, 64, 96, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(loaded.model(x), model(x), rtol=0, atol=0)
        out = loaded.model(x)
    assert out.shape == (1, 19, 64, 96)  # scores at the input size by default, speed configurations too
    if config.endswith(".speed"):
        assert torch.allclose(out.sum(1), torch.ones(1, 64, 96), atol=1e-4)  # resized probabilities
    else:
        assert torch.allclose(out.exp().sum(1), torch.ones(1, 64, 96), atol=1e-4)  # log_softmax


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_export_matches_pytorch_at_two_sizes(saved, size, tmp_path):
    config, _, loaded = saved
    outcome = export_loaded(loaded, tmp_path / "ts.onnx", ExportOptions(size=size), tolerance=Tolerance())
    assert outcome.report.passed, outcome.report.failures
    assert outcome.report.label_agreement >= 99.9 and outcome.spec.variant == config


def test_speed_output_is_its_eval_resize_of_the_eighth_scale_probabilities(tmp_path, photos):
    """eval.py: exp(log_softmax) at 1/8, cv2.resize(INTER_LINEAR) to the image, argmax."""
    folder = tmp_path / "log" / "cityscapes.bisenet.R18.speed" / "snapshot"
    _, path = torchseg_checkpoint("R18.speed", folder, seed=7)
    full = load_checkpoint(path)
    native = load_checkpoint(path, options={"native": True})
    assert native.spec.output_stride == 8 and native.spec.variant == "R18.speed+native"
    frame = cv2.resize(photos[0][1], (160, 96))
    from bisenet_deploy.runtime import processing

    x = torch.from_numpy(processing.preprocess([frame], full.spec, (96, 160)))
    with torch.no_grad():
        small = native.model(x)[0]  # log_softmax at 1/8
        ours = full.model(x)[0].numpy()
    assert small.shape == (19, 12, 20)
    expected = cv2.resize(small.exp().permute(1, 2, 0).numpy(), (160, 96), interpolation=cv2.INTER_LINEAR)
    np.testing.assert_allclose(ours, expected.transpose(2, 0, 1), atol=1e-5)
    outcome = export_loaded(native, tmp_path / "native.onnx", ExportOptions(size=(96, 160)))
    assert outcome.report.passed, outcome.report.failures
    from bisenet_deploy.runtime import Segmenter

    mask = Segmenter(tmp_path / "native.onnx", backend="onnxruntime")(frame)
    assert mask.shape == frame.shape[:2]  # the runtime upsamples the 1/8 labels


def test_identical_weights_follow_the_path_or_variant(tmp_path):
    _, plain = torchseg_checkpoint("X39", tmp_path / "elsewhere", seed=2)
    loaded = load_checkpoint(plain)
    assert loaded.spec.variant == "X39" and any("identical weights" in n for n in loaded.notes)
    assert load_checkpoint(plain, options={"variant": "X39.speed"}).spec.variant == "X39.speed"
    with pytest.raises(CheckpointError, match="--variant R18: these weights are TorchSeg X39 or X39.speed"):
        load_checkpoint(plain, options={"variant": "R18"})
    with pytest.raises(CheckpointError, match="keeps a .speed head"):
        load_checkpoint(plain, options={"native": True})
    # R18 and R18.speed differ in their auxiliary heads; without them the full configuration is assumed
    _, bare = torchseg_checkpoint("R18.speed", tmp_path / "bare", seed=3, aux=False)
    assert load_checkpoint(bare).spec.variant == "R18"
    assert load_checkpoint(bare, options={"variant": "R18.speed"}).spec.variant == "R18.speed"


def test_options_are_refused_by_families_without_choices(checkpoint5):
    with pytest.raises(CheckpointError, match="--variant does not apply to bisenet_v1"):
        load_checkpoint(checkpoint5, options={"variant": "X39"})


def test_near_miss_gets_the_clear_layout_error(tmp_path):
    _, path = torchseg_checkpoint("R18", tmp_path / "x", seed=4, legacy_cuda=False)
    state = torch.load(path, weights_only=False)
    del state["model"]["ffm.conv_1x1.conv.weight"]
    torch.save(state, tmp_path / "broken.pth")
    with pytest.raises(CheckpointError, match="torchseg"):
        load_checkpoint(tmp_path / "broken.pth")
