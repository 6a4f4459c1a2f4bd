"""Checkpoints as real training code writes them, and pickles that try to run code.

The training-side classes (a pytorch-template ``ConfigParser``, OmegaConf's and yacs' containers,
an ``Enum``) live in modules written to a temporary folder and imported only by the subprocess
that saves the checkpoints: the loader must read them without that folder, without importing
anything from it, and without running any of its code (each module writes a marker file when
imported, each class when its state is set).
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import pickle
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path, PurePosixPath, PureWindowsPath

import numpy as np
import pytest
import torch

from bisenet_deploy.errors import CheckpointError
from bisenet_deploy.model import load_checkpoint
from bisenet_deploy.model.checkpoint import TrustRefusal, read_checkpoint
from bisenet_deploy.model.unpickling import ForeignObject

from .conftest import make_model

X = torch.randn(1, 3, 64, 96, generator=torch.Generator().manual_seed(5))

_MARK = textwrap.dedent(
    """
    import os as _os
    if _os.environ.get("ZOO_SAVING") != "1":
        open(_os.environ.get("ZOO_MARKER", "/tmp/zoo-marker"), "a").write(__name__ + " imported\\n")
    """
)

# pytorch-template (victoresque/pytorch-template, parse_config.py): the shape the seed's
# virtual-background trainer pickles as checkpoint['config'].
_PARSE_CONFIG = _MARK + textwrap.dedent(
    """
    import logging
    from collections import OrderedDict
    from pathlib import Path

    class ConfigParser:
        def __init__(self, config, resume=None, modification=None, run_id="1203_101500"):
            self._config = config
            self.resume = resume
            save_dir = Path(self.config["trainer"]["save_dir"])
            exper_name = self.config["name"]
            self._save_dir = save_dir / "models" / exper_name / run_id
            self._log_dir = save_dir / "log" / exper_name / run_id
            self.log_levels = {0: logging.WARNING, 1: logging.INFO, 2: logging.DEBUG}

        def __getitem__(self, name):
            return self.config[name]

        @property
        def config(self):
            return self._config

        @property
        def save_dir(self):
            return self._save_dir

        def __setstate__(self, state):
            open(_os.environ.get("ZOO_MARKER", "/tmp/zoo-marker"), "a").write("ConfigParser ran\\n")
            self.__dict__.update(state)
    """
)

_PHASES = _MARK + textwrap.dedent(
    """
    import enum

    class Phase(enum.Enum):
        TRAIN = "train"
        VAL = "val"
    """
)

# OmegaConf 2.3's pickled shape: NEWOBJ + BUILD of __dict__ with _metadata (a dataclass holding
# typing.Any, builtins.dict and a defaultdict(dict)), _parent (a cycle back to the parent
# container) and _content (nodes). Captured from the real package; emulated with plain classes.
_OMEGACONF = {
    "omegaconf/__init__.py": _MARK,
    "omegaconf/base.py": _MARK + textwrap.dedent(
        """
        from collections import defaultdict
        from typing import Any

        class Metadata:
            def __init__(self, ref_type, object_type, key=None):
                self.ref_type = ref_type
                self.object_type = object_type
                self.optional = True
                self.key = key
                self.flags = {}
                self.flags_root = False
                self.resolver_cache = defaultdict(dict)

        class ContainerMetadata(Metadata):
            def __init__(self, ref_type, object_type, key=None):
                super().__init__(ref_type, object_type, key)
                self.key_type = Any
                self.element_type = Any
        """
    ),
    "omegaconf/nodes.py": _MARK + textwrap.dedent(
        """
        from typing import Any
        from .base import Metadata

        class AnyNode:
            def __init__(self, value, key, parent):
                self._metadata = Metadata(Any, None, key)
                self._parent = parent
                self._val = value
        """
    ),
    "omegaconf/dictconfig.py": _MARK + textwrap.dedent(
        """
        from typing import Any
        from .base import ContainerMetadata
        from .nodes import AnyNode

        class DictConfig:
            def __init__(self, content, key=None, parent=None):
                from .listconfig import ListConfig
                self._metadata = ContainerMetadata(Any, dict, key)
                self._parent = parent
                self._content = {}
                for k, v in content.items():
                    if isinstance(v, dict):
                        self._content[k] = DictConfig(v, k, self)
                    elif isinstance(v, list):
                        self._content[k] = ListConfig(v, k, self)
                    else:
                        self._content[k] = AnyNode(v, k, self)

            def __getstate__(self):
                return dict(self.__dict__)

            def __setstate__(self, state):
                open(__import__("os").environ.get("ZOO_MARKER", "/tmp/zoo-marker"), "a").write("DictConfig ran\\n")
                self.__dict__.update(state)
        """
    ),
    "omegaconf/listconfig.py": _MARK + textwrap.dedent(
        """
        from typing import Any
        from .base import ContainerMetadata
        from .nodes import AnyNode

        class ListConfig:
            def __init__(self, content, key=None, parent=None):
                self._metadata = ContainerMetadata(Any, list, key)
                self._metadata.key_type = int
                self._parent = parent
                self._content = [AnyNode(v, i, self) for i, v in enumerate(content)]
        """
    ),
}

# yacs' CfgNode: a dict subclass whose __dict__ holds its flags (NEWOBJ, SETITEMS, BUILD).
_YACS = {
    "yacs/__init__.py": _MARK,
    "yacs/config.py": _MARK + textwrap.dedent(
        """
        class CfgNode(dict):
            IMMUTABLE = "__immutable__"

            def __init__(self, init_dict=None):
                super().__init__(init_dict or {})
                self.__dict__[CfgNode.IMMUTABLE] = False
                self.__dict__["__deprecated_keys__"] = set()
                self.__dict__["__renamed_keys__"] = {}
                self.__dict__["__new_allowed__"] = False

            def __getattr__(self, name):
                if name in self:
                    return self[name]
                raise AttributeError(name)

            def __setattr__(self, name, value):
                self[name] = value
        """
    ),
}

_SAVE = textwrap.dedent(
    """
    import datetime, json, sys
    from argparse import Namespace
    from collections import OrderedDict, defaultdict
    from configparser import ConfigParser as StdConfigParser
    from functools import partial
    from pathlib import Path

    import numpy as np
    import torch

    from omegaconf.dictconfig import DictConfig
    from parse_config import ConfigParser
    from phases import Phase
    from yacs.config import CfgNode

    out = Path(sys.argv[1])
    sd = torch.load(out / "weights.pth", weights_only=True)
    params = [torch.nn.Parameter(v.clone()) for v in sd.values() if v.is_floating_point()][:4]
    opt = torch.optim.Adam(params, lr=1e-3)
    for p in params:
        p.grad = torch.ones_like(p)
    opt.step()

    raw = json.loads('{"name": "VirtualBackground", "n_gpu": 1, "arch": {"type": "BiSeNet", "args": {"n_class": 3}},'
                     ' "trainer": {"epochs": 100, "save_dir": "saved/", "save_period": 10, "monitor": "max val_mIoU"}}',
                     object_pairs_hook=OrderedDict)
    config = ConfigParser(raw, resume=Path("saved/models/VirtualBackground/1202_090000/checkpoint-epoch10.pth"))
    # pytorch-template's BaseTrainer._save_checkpoint
    torch.save({"arch": "BiSeNet", "epoch": 20, "state_dict": sd, "optimizer": opt.state_dict(),
                "monitor_best": np.float64(0.8125), "config": config}, out / "pytorch_template.pth")
    # noisrucer/virtual-background's Trainer._save_checkpoint (the seed's trainer)
    torch.save({"epoch": 20, "model_state": sd, "optimizer_sate": opt.state_dict(), "config": config},
               out / "virtual_background.pth")
    # a hand-written loop: numpy scores, dates, an Enum, argparse, collections
    std = StdConfigParser()
    std.read_string("[train]\\nlr = 0.01\\n")
    torch.save({"state_dict": sd, "best_miou": np.float64(0.77), "miou_history": np.array([0.5, 0.6, 0.77]),
                "class_iou": np.array([[0.9, 0.8, 0.7]], dtype=np.float32), "epoch": np.int64(42),
                "flags": np.array([True, False]), "name": np.str_("run-7"),
                "saved_at": datetime.datetime(2026, 12, 3, 9, 30, 0), "day": datetime.date(2026, 12, 3),
                "elapsed": datetime.timedelta(hours=5), "phase": Phase.VAL,
                "args": Namespace(lr=0.01, out=Path("runs/7"), crop=(512, 512)), "ini": std,
                "per_class": defaultdict(list, {"road": [0.9]}), "sched": partial(int, base=2),
                "ordered": OrderedDict(a=1)}, out / "numpy_dates.pth")
    cfg = DictConfig({"model": {"name": "bisenet", "num_classes": 3}, "data": {"crop": [512, 512]}, "lr": 0.01})
    torch.save({"state_dict": sd, "cfg": cfg}, out / "omegaconf.pth")
    # Lightning: prefixed weights, hyper_parameters holding the OmegaConf config
    torch.save({"epoch": 3, "global_step": 300, "pytorch-lightning_version": "2.1.0",
                "state_dict": {"model." + k: v for k, v in sd.items()}, "hyper_parameters": {"cfg": cfg},
                "optimizer_states": [opt.state_dict()], "lr_schedulers": [], "callbacks": {}},
               out / "lightning.pth")
    y = CfgNode()
    y.MODEL = CfgNode({"NAME": "bisenet", "NUM_CLASSES": 3})
    y.SOLVER = CfgNode({"BASE_LR": 0.01, "STEPS": (100, 200)})
    torch.save({"model": sd, "cfg": y, "iteration": 999}, out / "yacs.pth")
    """
)


@pytest.fixture(scope="module")
def model():
    return make_model(3, seed=2)


@pytest.fixture(scope="module")
def zoo(model, tmp_path_factory):
    """Checkpoints saved by one subprocess that has the training code; this process has not."""
    root = tmp_path_factory.mktemp("zoo")
    files = {"parse_config.py": _PARSE_CONFIG, "phases.py": _PHASES, **_OMEGACONF, **_YACS}
    with saved_by_training_code(root, files, _SAVE, weights={"weights.pth": model}) as out:
        yield out


@contextlib.contextmanager
def saved_by_training_code(root: Path, files: dict[str, str], script: str, args: tuple[str, ...] = (),
                           weights: dict | None = None):
    """Checkpoints written by ``script`` in a subprocess that has the training code ``files``
    on its path (and ``weights``' state dicts beside them); this process has not. Yields the
    checkpoint folder; afterwards, no training code may have run while loading (marker file)."""
    code, out = root / "training_code", root / "checkpoints"
    out.mkdir()
    for name, text in files.items():
        (code / name).parent.mkdir(parents=True, exist_ok=True)
        (code / name).write_text(text)
    for name, net in (weights or {}).items():
        torch.save(net.state_dict(), out / name)
    env = dict(os.environ, PYTHONPATH=str(code), ZOO_SAVING="1")
    done = subprocess.run([sys.executable, "-c", script, str(out), *args], env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    marker = root / "marker.txt"
    os.environ["ZOO_MARKER"] = str(marker)
    try:
        yield out
    finally:
        os.environ.pop("ZOO_MARKER", None)
    assert not marker.exists(), f"training code ran while loading: {marker.read_text()}"


def _same_outputs(loaded, model):
    with torch.no_grad():
        torch.testing.assert_close(loaded(X), model(X), rtol=0, atol=0)


def _untouched():
    for name in ("parse_config", "phases", "omegaconf", "yacs"):
        assert not any(m == name or m.startswith(name + ".") for m in sys.modules), f"the loader imported {name}"


@pytest.mark.parametrize("name", ["pytorch_template", "virtual_background", "numpy_dates", "omegaconf",
                                  "lightning", "yacs"])
def test_training_framework_checkpoints_load(zoo, model, name):
    loaded = load_checkpoint(zoo / f"{name}.pth")
    _same_outputs(loaded.model, model)
    _untouched()


def test_pytorch_template_config_is_an_inert_record_with_path_values(zoo):
    obj, foreign = read_checkpoint(zoo / "pytorch_template.pth")
    assert foreign == ["parse_config.ConfigParser"]
    assert type(obj["monitor_best"]) is np.float64 and obj["monitor_best"] == 0.8125
    config = obj["config"]
    assert isinstance(config, ForeignObject)
    state = config.state
    assert state["_save_dir"] == PurePosixPath("saved/models/VirtualBackground/1203_101500")
    assert state["resume"].name == "checkpoint-epoch10.pth"
    assert state["_config"]["arch"]["args"]["n_class"] == 3 and state["log_levels"] == {0: 30, 1: 20, 2: 10}
    assert obj["optimizer"]["param_groups"][0]["lr"] == 1e-3
    _untouched()


def test_pure_data_becomes_values(zoo):
    obj, foreign = read_checkpoint(zoo / "numpy_dates.pth")
    assert obj["best_miou"] == 0.77 and isinstance(obj["best_miou"], np.float64)
    np.testing.assert_array_equal(obj["miou_history"], [0.5, 0.6, 0.77])
    assert obj["class_iou"].dtype == np.float32 and obj["class_iou"].shape == (1, 3)
    assert obj["epoch"] == 42 and obj["name"] == "run-7" and obj["flags"].tolist() == [True, False]
    assert obj["saved_at"] == datetime.datetime(2026, 12, 3, 9, 30) and obj["day"] == datetime.date(2026, 12, 3)
    assert obj["elapsed"] == datetime.timedelta(hours=5)
    # Enum members: getattr(Phase, "VAL") since Python 3.11, Phase("val") before
    assert (obj["phase"].attribute == "VAL" or obj["phase"].value == "val") and "phases.Phase" in foreign
    assert obj["args"].lr == 0.01 and obj["args"].out == PurePosixPath("runs/7")
    assert obj["per_class"] == {"road": [0.9]} and obj["ordered"] == {"a": 1}
    assert isinstance(obj["sched"], ForeignObject)  # a partial is never called
    assert isinstance(obj["ini"], ForeignObject)


def test_config_containers_keep_their_content(zoo):
    obj, foreign = read_checkpoint(zoo / "yacs.pth")
    assert foreign == ["yacs.config.CfgNode"]
    assert obj["cfg"].items["MODEL"].items["NUM_CLASSES"] == 3
    assert obj["cfg"].items["SOLVER"].items["STEPS"] == (100, 200)
    obj, foreign = read_checkpoint(zoo / "omegaconf.pth")
    assert "omegaconf.dictconfig.DictConfig" in foreign and "typing.Any" in foreign
    content = obj["cfg"].state["_content"]
    assert content["model"].state["_content"]["num_classes"].state["_val"] == 3
    assert content["model"].state["_parent"] is obj["cfg"]  # the cycle survives
    crop = content["data"].state["_content"]["crop"].state
    assert crop["_metadata"].state["object_type"] is list and crop["_content"][1].state["_val"] == 512


def _rewrite_pickle(src: Path, dst: Path, *pairs: tuple[bytes, bytes]) -> None:
    """Copy a torch zip, replacing names inside its pickle (other numpy/Python versions)."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for info in zin.infolist():
            data = zin.read(info.filename)
            if info.filename.endswith("data.pkl"):
                for old, new in pairs:
                    assert old in data, old
                    data = data.replace(old, new)
            zout.writestr(info, data)


def test_numpy_1_and_python_3_13_and_windows_names(zoo, tmp_path, model):
    # numpy 1.x writes numpy.core.multiarray, 2.x numpy._core.multiarray.
    _rewrite_pickle(zoo / "numpy_dates.pth", tmp_path / "np1.pth", (b"numpy._core.multiarray", b"numpy.core.multiarray"))
    obj, _ = read_checkpoint(tmp_path / "np1.pth")
    assert obj["best_miou"] == 0.77 and obj["class_iou"].shape == (1, 3)
    # Python 3.13 pickles paths as pathlib._local.PosixPath; a Windows trainer as WindowsPath.
    torch.save({"state_dict": model.state_dict(), "a": PurePosixPath("/data/run"), "b": PureWindowsPath("C:/runs/7")},
               tmp_path / "paths.pth")
    _rewrite_pickle(tmp_path / "paths.pth", tmp_path / "paths2.pth",
                    (b"pathlib\nPurePosixPath", b"pathlib._local\nPosixPath"),
                    (b"pathlib\nPureWindowsPath", b"pathlib\nWindowsPath"))
    obj, _ = read_checkpoint(tmp_path / "paths2.pth")
    assert obj["a"] == PurePosixPath("/data/run") and obj["b"] == PureWindowsPath("C:/runs/7")
    _same_outputs(load_checkpoint(tmp_path / "paths2.pth").model, model)


def test_safetensors_state_dict_loads(model, tmp_path):
    safetensors_torch = pytest.importorskip("safetensors.torch")
    path = tmp_path / "model.safetensors"
    safetensors_torch.save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    loaded = load_checkpoint(path)
    _same_outputs(loaded.model, model)
    assert loaded.spec.arch == "bisenet_v1" and loaded.spec.num_classes == 3
    # accelerate / Hugging Face prefixes are stripped as for .pth files
    safetensors_torch.save_file({f"module.{k}": v.contiguous() for k, v in model.state_dict().items()},
                                str(tmp_path / "ddp.safetensors"), metadata={"format": "pt"})
    _same_outputs(load_checkpoint(tmp_path / "ddp.safetensors").model, model)
    (tmp_path / "cut.safetensors").write_bytes(path.read_bytes()[:5000])
    with pytest.raises(CheckpointError, match="cannot read safetensors file"):
        load_checkpoint(tmp_path / "cut.safetensors")


# --- hostile pickles -----------------------------------------------------------------------


def _legacy_file(path: Path, payload: bytes) -> Path:
    """A pre-1.6 torch.save file around a hand-written pickle (no tensors needed)."""
    header = (pickle.dumps(0x1950A86A20F9469CFC6C, protocol=2) + pickle.dumps(1001, protocol=2)
              + pickle.dumps({"protocol_version": 1001, "little_endian": True,
                              "type_sizes": {"short": 2, "int": 4, "long": 4}}, protocol=2))
    path.write_bytes(header + payload + pickle.dumps([], protocol=2))
    return path


class _Reduce:
    def __init__(self, fn, *args):
        self.fn, self.args = fn, args

    def __reduce__(self):
        return self.fn, self.args


def _hostile_objects(marker: Path):
    import builtins
    import importlib
    import shutil
    import socket

    touch = f"open({str(marker)!r}, 'w').write('x')"
    return {
        "os.system": _Reduce(os.system, f"touch {marker}"),
        "subprocess.Popen": _Reduce(subprocess.Popen, ["touch", str(marker)]),
        "builtins.eval": _Reduce(builtins.eval, touch),
        "builtins.exec": _Reduce(builtins.exec, touch),
        "builtins.open": _Reduce(builtins.open, str(marker), "w"),
        "builtins.getattr": _Reduce(builtins.getattr, Path, "write_text"),
        "importlib.import_module": _Reduce(importlib.import_module, "antigravity"),
        "pickle.loads": _Reduce(pickle.loads, b"."),
        "shutil.rmtree": _Reduce(shutil.rmtree, str(marker)),
        "socket.create_connection": _Reduce(socket.create_connection, ("127.0.0.1", 9)),
        "Path.write_text": _Reduce(Path.write_text, Path(marker), "x"),
        "numpy.load": _Reduce(np.load, str(marker)),
        "nested": {"a": [1, (2, {"b": _Reduce(os.system, f"touch {marker}")})]},
    }


@pytest.mark.parametrize("name", list(_hostile_objects(Path("/x"))))
def test_pickles_that_call_effects_are_refused(model, tmp_path, name):
    marker = tmp_path / "pwned"
    evil = _hostile_objects(marker)[name]
    path = tmp_path / "evil.pth"
    torch.save({"state_dict": model.state_dict(), "config": evil}, path, pickle_protocol=4)
    with pytest.raises(TrustRefusal, match="when unpickled, which could run code; refusing it"):
        read_checkpoint(path)
    assert not marker.exists()


@pytest.mark.parametrize(
    "payload, message",
    [
        # os.system as Linux pickles it (posix.system), protocol 2
        (b"\x80\x02cposix\nsystem\nX\x04\x00\x00\x00true\x85R.", "posix.system"),
        # protocol 4 STACK_GLOBAL reaching a method through a class
        (b"\x80\x04\x8c\x07pathlib\x8c\x0fPath.write_text\x93.", "pathlib.Path.write_text"),
        # builtins under their Python 2 name
        (b"\x80\x02c__builtin__\neval\nX\x01\x00\x00\x001\x85R.", "builtins.eval"),
    ],
    ids=["posix-system", "stack-global-method", "py2-builtin"],
)
def test_hand_written_hostile_pickles_are_refused(tmp_path, payload, message):
    with pytest.raises(TrustRefusal, match=message):
        read_checkpoint(_legacy_file(tmp_path / "evil.pth", payload))


def test_a_pickle_cannot_patch_a_class(tmp_path):
    import argparse

    # BUILD on the class argparse.Namespace itself, with a slot state that would set __eq__
    payload = b"\x80\x02cargparse\nNamespace\nN}X\x06\x00\x00\x00__eq__cbuiltins\nint\nsq\x00\x86b."
    with pytest.raises(CheckpointError, match="refused to set the state"):
        read_checkpoint(_legacy_file(tmp_path / "patch.pth", payload))
    assert argparse.Namespace.__eq__ is not int


def test_unknown_callables_are_stood_in_for_never_called(tmp_path):
    # a reduce of a callable from a module that does not exist: an inert record of its arguments
    payload = b"\x80\x02cno_such_trainer.hooks\nlaunch\nX\x04\x00\x00\x00fire\x85R."
    obj, foreign = read_checkpoint(_legacy_file(tmp_path / "odd.pth", payload))
    assert foreign == ["no_such_trainer.hooks.launch"] and obj.args == ("fire",)


def test_refusal_names_the_option_only_where_it_exists(model, tmp_path, capsys):
    from bisenet_deploy.cli import export, inspect

    path = tmp_path / "evil.pth"
    torch.save({"state_dict": model.state_dict(), "x": _Reduce(os.system, "true")}, path)
    assert export.main([str(path), "-o", str(tmp_path / "m.onnx")]) != 0
    err = capsys.readouterr().err
    assert "refusing it" in err and "--trust-checkpoint" in err and len(err.strip().splitlines()) == 1
    assert inspect.main([str(path)]) != 0
    err = capsys.readouterr().err
    assert "refusing it" in err and "--trust-checkpoint" not in err


def test_safetensors_in_every_command_that_takes_a_checkpoint(model, tmp_path, capsys):
    safetensors_torch = pytest.importorskip("safetensors.torch")
    from bisenet_deploy.cli import bench, export, inspect
    from bisenet_deploy.runtime.segmenter import Segmenter

    path = tmp_path / "hf.safetensors"
    safetensors_torch.save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    frame = np.random.default_rng(1).integers(0, 255, (64, 96, 3), dtype=np.uint8)
    with Segmenter(path, device="cpu") as seg:  # bisenet-infer's torch backend
        assert seg.backend.name == "torch" and seg.predict(frame).shape == (64, 96)
    assert inspect.main([str(path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["family"] == "bisenet_v1"
    onnx_path = tmp_path / "hf.onnx"
    assert export.main([str(path), "-o", str(onnx_path), "--size", "64x96", "-q"]) == 0
    assert onnx_path.is_file()
    assert bench.main([str(path), str(onnx_path), "--backend", "onnxruntime", "--iterations", "1", "--warmup", "1",
                       "-q", "--json", str(tmp_path / "b.json")]) == 0
    result = json.loads((tmp_path / "b.json").read_text())
    assert any("torch" in row["name"] for cell in result["cells"] for row in cell["rows"])


def test_torchscript_archives_need_trust(model, tmp_path):
    path = tmp_path / "scripted.pt"
    torch.jit.save(torch.jit.trace(model, X), str(path))
    with pytest.raises(TrustRefusal, match="TorchScript archive"):
        read_checkpoint(path)
    _same_outputs(load_checkpoint(path, trust=True).model, model)
