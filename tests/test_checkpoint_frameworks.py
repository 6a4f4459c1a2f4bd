"""Checkpoints laid out as public training frameworks save them (issue 23, item 4): each loads
and gives the saved network's own output, or is refused with one line naming what is missing.

Saved by a subprocess that has stand-ins of the frameworks' pickled classes (Lightning's
``AttributeDict``, MMEngine's ``HistoryBuffer``) under their real module names; this process
never imports them (each module writes a marker file when imported). The layouts follow the
frameworks' own writers: Lightning's ``CheckpointConnector.dump_checkpoint``, timm's
``CheckpointSaver`` (``args``, ``metric``, ``state_dict_ema``), MMCV 1.x runners (``meta`` with
``env_info``, ``config``, ``CLASSES``, ``PALETTE``) and MMEngine's ``Runner.save_checkpoint``
(``meta.cfg``, ``dataset_meta``, ``message_hub``, ``param_schedulers``, the EMA hook's
``ema_state_dict`` with the averaged weights swapped into ``state_dict``).
"""

from __future__ import annotations

import sys
import textwrap

import pytest
import torch

from bisenet_deploy.errors import CheckpointError
from bisenet_deploy.model import load_checkpoint

from .conftest import make_model
from .test_checkpoint_zoo import _MARK, saved_by_training_code

X = torch.randn(1, 3, 64, 96, generator=torch.Generator().manual_seed(7))

_FRAMEWORKS = {
    "lightning_fabric/__init__.py": _MARK,
    "lightning_fabric/utilities/__init__.py": _MARK,
    "lightning_fabric/utilities/data.py": _MARK + textwrap.dedent(
        """
        class AttributeDict(dict):
            def __getattr__(self, key):
                return self[key]

            def __setattr__(self, key, val):
                self[key] = val
        """
    ),
    "mmengine/__init__.py": _MARK,
    "mmengine/logging/__init__.py": _MARK,
    "mmengine/logging/history_buffer.py": _MARK + textwrap.dedent(
        """
        import numpy as np

        class HistoryBuffer:
            def __init__(self, log_history=(), count_history=(), max_length=1000000):
                self.max_length = max_length
                self._set_default_statistics()
                self._log_history = np.array(log_history)
                self._count_history = np.array(count_history)

            def _set_default_statistics(self):
                self._statistics_methods = {}
        """
    ),
}

# mmseg's BiSeNetV1 / V2 EncoderDecoder key names (backbone.*, decode_head.*, auxiliary_head.*)
_MMSEG_V1 = [
    "backbone.context_path.backbone.stem.0.weight", "backbone.context_path.backbone.stem.1.weight",
    "backbone.context_path.backbone.stem.1.running_mean", "backbone.context_path.backbone.layer1.0.conv1.weight",
    "backbone.context_path.arm16.conv_layer.conv.weight", "backbone.context_path.arm16.atten_conv_layer.0.conv.weight",
    "backbone.context_path.arm32.conv_layer.conv.weight", "backbone.context_path.conv_head32.conv.weight",
    "backbone.context_path.gap_conv.1.conv.weight", "backbone.spatial_path.layers.0.conv.weight",
    "backbone.ffm.conv1.conv.weight", "backbone.ffm.conv_atten.1.conv.weight",
    "decode_head.conv_seg.weight", "decode_head.conv_seg.bias", "decode_head.convs.0.conv.weight",
    "auxiliary_head.0.conv_seg.weight", "auxiliary_head.0.convs.0.conv.weight",
]
_MMSEG_V2 = [
    "backbone.detail.detail_branch.0.0.conv.weight", "backbone.detail.detail_branch.0.0.bn.weight",
    "backbone.semantic.stage1.conv_first.conv.weight", "backbone.semantic.stage3.0.gelayer.0.conv.weight",
    "backbone.semantic.stage4_CEBlock.conv_gap.conv.weight", "backbone.bga.detail_dwconv.0.conv.weight",
    "backbone.bga.semantic_conv.0.conv.weight", "decode_head.conv_seg.weight", "decode_head.convs.0.conv.weight",
    "auxiliary_head.0.conv_seg.weight",
]

_SAVE = textwrap.dedent(
    """
    import sys, time
    from argparse import Namespace
    from collections import OrderedDict
    from pathlib import Path

    import numpy as np
    import torch

    from lightning_fabric.utilities.data import AttributeDict
    from mmengine.logging.history_buffer import HistoryBuffer

    out = Path(sys.argv[1])
    mmseg_v1, mmseg_v2 = sys.argv[2].split(","), sys.argv[3].split(",")
    sd = torch.load(out / "weights.pth", weights_only=True)
    ema = torch.load(out / "ema.pth", weights_only=True)  # other weights: the test tells which were used
    params = [torch.nn.Parameter(v.clone()) for v in sd.values() if v.is_floating_point()][:4]
    opt = torch.optim.SGD(params, lr=1e-2, momentum=0.9)
    for p in params:
        p.grad = torch.ones_like(p)
    opt.step()
    sched = torch.optim.lr_scheduler.PolynomialLR(opt, total_iters=100)

    # Lightning 2.x (CheckpointConnector.dump_checkpoint) of a LightningModule holding self.net,
    # self.criterion = CrossEntropyLoss(weight=...) and a timm-style EMA copy under self.model_ema
    monitor = "ModelCheckpoint{'monitor': 'val_miou', 'mode': 'max', 'every_n_train_steps': 0, " \\
              "'every_n_epochs': 1, 'train_time_interval': None}"
    lightning_sd = OrderedDict((f"net.{k}", v) for k, v in sd.items())
    lightning_sd["criterion.weight"] = torch.tensor([1.0, 2.0, 3.0])
    torch.save({
        "epoch": 7, "global_step": 700, "pytorch-lightning_version": "2.4.0",
        "state_dict": lightning_sd,
        "loops": {"fit_loop": {"state_dict": {}, "epoch_progress": {"total": {"ready": 8, "completed": 7}},
                               "epoch_loop.state_dict": {"_batches_that_stepped": 700}}},
        "callbacks": {monitor: {"monitor": "val_miou", "best_model_score": torch.tensor(0.71),
                                "best_model_path": "/runs/7/epoch=6.ckpt", "current_score": torch.tensor(0.70),
                                "dirpath": "/runs/7", "best_k_models": {"/runs/7/epoch=6.ckpt": torch.tensor(0.71)},
                                "kth_best_model_path": "/runs/7/epoch=6.ckpt", "kth_value": torch.tensor(0.71),
                                "last_model_path": ""},
                      "EarlyStopping{'monitor': 'val_miou', 'mode': 'max'}": {"wait_count": 0, "stopped_epoch": 0,
                                                                            "best_score": torch.tensor(0.71),
                                                                            "patience": 10}},
        "optimizer_states": [opt.state_dict()],
        "lr_schedulers": [sched.state_dict()],
        "hparams_name": "kwargs",
        "hyper_parameters": AttributeDict(num_classes=3, lr=0.01, backbone="resnet18", crop=(512, 1024),
                                          class_weights=[1.0, 2.0, 3.0]),
    }, out / "lightning.ckpt")
    with_ema = OrderedDict((f"model.{k}", v) for k, v in sd.items())
    with_ema.update((f"model_ema.module.{k}", v) for k, v in ema.items())
    torch.save({"epoch": 7, "global_step": 700, "pytorch-lightning_version": "1.9.5", "state_dict": with_ema,
                "hyper_parameters": AttributeDict(lr=0.01), "optimizer_states": [opt.state_dict()],
                "lr_schedulers": [], "callbacks": {}}, out / "lightning_ema.ckpt")

    # timm's CheckpointSaver: args (argparse), metric, version, state_dict_ema
    args = Namespace(model="bisenet", data_dir=Path("/data/cityscapes"), lr=0.01, model_ema=True,
                     model_ema_decay=0.9998, img_size=(512, 1024), amp=True)
    torch.save({"epoch": 30, "arch": "bisenet", "state_dict": sd, "optimizer": opt.state_dict(), "version": 2,
                "args": args, "metric": 71.25, "state_dict_ema": ema}, out / "timm.pth.tar")

    # (a DDP loop's {"model": {"module.*"}, "model_ema": ...} reads like timm's: see test_checkpoint.py)

    # MMEngine (Runner.save_checkpoint) with its EMAHook: state_dict holds the averaged weights,
    # ema_state_dict the raw ones behind the AveragedModel's 'module.' and its 'steps'
    raw = OrderedDict((f"module.net.{k}", v) for k, v in ema.items())
    raw["steps"] = torch.tensor(700)
    cfg = "model = dict(type='SegWrapper', net=dict(type='BiSeNet', num_classes=3))\\nseed = 0\\n"
    message_hub = {"log_scalars": {"train/loss": HistoryBuffer([0.9, 0.7], [1, 1]),
                                   "train/lr": HistoryBuffer([0.01, 0.0099], [1, 1])},
                   "runtime_info": {"epoch": 7, "iter": 700, "max_iters": 1000,
                                    "dataset_meta": {"classes": ("bg", "person", "car")}},
                   "resumed_keys": {"epoch": True, "iter": True}}
    torch.save({"meta": {"cfg": cfg, "seed": 0, "experiment_name": "bisenet_20261203", "time": "20261203_093000",
                         "mmengine_version": "0.10.7", "epoch": 7, "iter": 700,
                         "dataset_meta": {"classes": ("bg", "person", "car"), "palette": [[0, 0, 0], [1, 2, 3]]}},
                "state_dict": OrderedDict((f"net.{k}", v) for k, v in sd.items()),
                "ema_state_dict": raw, "message_hub": message_hub, "optimizer": opt.state_dict(),
                "param_schedulers": [sched.state_dict()]}, out / "mmengine_ema.pth")

    # MMSegmentation 0.x (MMCV runner) BiSeNetV1 and 1.x (MMEngine) BiSeNetV2
    def tensors(keys):
        return OrderedDict((k, torch.zeros(4, 4, 1, 1) if k.endswith("weight") else torch.zeros(4)) for k in keys)

    v1_cfg = ("norm_cfg = dict(type='SyncBN', requires_grad=True)\\nmodel = dict(\\n    type='EncoderDecoder',\\n"
              "    backbone=dict(\\n        type='BiSeNetV1',\\n        in_channels=3,\\n"
              "        context_channels=(128, 256, 512)),\\n    decode_head=dict(\\n        type='FCNHead',\\n"
              "        num_classes=19))\\n")
    torch.save({"meta": {"env_info": "sys.platform: linux\\nPython: 3.8.13\\nCUDA available: True\\nGPU 0: A100",
                         "config": v1_cfg, "seed": 0, "exp_name": "bisenetv1_r18-d32_4x4_1024x1024_160k_cityscapes.py",
                         "mmseg_version": "0.30.0+f1b1b5c", "CLASSES": ("road", "sidewalk", "building"),
                         "PALETTE": [[128, 64, 128], [244, 35, 232], [70, 70, 70]], "mmcv_version": "1.7.1",
                         "time": time.asctime(), "epoch": 1, "iter": 160000},
                "state_dict": tensors(mmseg_v1), "optimizer": opt.state_dict()}, out / "mmseg_v1.pth")
    v2_cfg = "model = dict(\\n    type='EncoderDecoder',\\n    backbone=dict(type='BiSeNetV2', init_cfg=None))\\n"
    torch.save({"meta": {"cfg": v2_cfg, "seed": 0, "experiment_name": "bisenetv2", "mmengine_version": "0.10.7",
                         "dataset_meta": {"classes": ("road", "sidewalk"), "palette": [[128, 64, 128], [244, 35, 232]]},
                         "epoch": 0, "iter": 160000},
                "state_dict": tensors(mmseg_v2), "message_hub": message_hub, "optimizer": opt.state_dict(),
                "param_schedulers": [sched.state_dict()]}, out / "mmseg_v2.pth")
    """
)


@pytest.fixture(scope="module")
def model():
    return make_model(3, seed=4)


@pytest.fixture(scope="module")
def ema_model():
    return make_model(3, seed=5)


@pytest.fixture(scope="module")
def saved(model, ema_model, tmp_path_factory):
    root = tmp_path_factory.mktemp("frameworks")
    with saved_by_training_code(root, _FRAMEWORKS, _SAVE, (",".join(_MMSEG_V1), ",".join(_MMSEG_V2)),
                                weights={"weights.pth": model, "ema.pth": ema_model}) as out:
        yield out
    assert not any(m.split(".")[0] in ("lightning_fabric", "mmengine") for m in sys.modules), \
        "the loader imported a framework module"


def _output(net):
    with torch.no_grad():
        return net(X)


@pytest.mark.parametrize("name, ema_entry", [
    ("lightning.ckpt", None),
    ("lightning_ema.ckpt", "model_ema"),
    ("timm.pth.tar", "state_dict_ema"),
    ("mmengine_ema.pth", "ema_state_dict"),
])
def test_framework_checkpoints_give_the_saved_networks_output(saved, model, name, ema_entry):
    loaded = load_checkpoint(saved / name)
    torch.testing.assert_close(_output(loaded.model), _output(model), rtol=0, atol=0)
    notes = " | ".join(loaded.notes)
    if ema_entry:  # which weights were used, and which EMA entry was left, is said
        assert "EMA" in notes and ema_entry in notes and "not used" in notes, notes
    else:  # the loss's class weights beside Lightning's net.* are named, not matched
        assert "'net.'" in notes and "criterion.weight" in notes and "not part of the network" in notes, notes


@pytest.mark.parametrize("name, backbone", [("mmseg_v1.pth", "BiSeNetV1"), ("mmseg_v2.pth", "BiSeNetV2")])
def test_mmsegmentation_checkpoints_are_one_line_naming_what_is_missing(saved, name, backbone):
    with pytest.raises(CheckpointError) as refused:
        load_checkpoint(saved / name)
    message = str(refused.value)
    assert "\n" not in message
    assert "MMSegmentation" in message and backbone in message and "missing" in message and "MMDeploy" in message


def test_mmsegmentation_refusal_in_the_cli_is_one_line(saved, tmp_path, capsys):
    from bisenet_deploy.cli import export

    assert export.main([str(saved / "mmseg_v1.pth"), "-o", str(tmp_path / "m.onnx"), "-q"]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("bisenet-export: error:") and "MMSegmentation" in err[0], err
    assert not list(tmp_path.iterdir())


def test_a_torchscript_file_in_the_cli_is_one_line(model, tmp_path, capsys):
    from bisenet_deploy.cli import export

    scripted = tmp_path / "scripted.pt"
    torch.jit.save(torch.jit.trace(model, X), str(scripted))
    assert export.main([str(scripted), "-o", str(tmp_path / "s.onnx"), "-q"]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "TorchScript" in err[0] and "--trust-checkpoint" in err[0], err
    # (torch.save(model), a whole pickled module: test_checkpoint.py, its weights read without its code)
