"""Shared fixtures: tiny inputs, one seeded BiSeNet-R18 and its checkpoint, real photos."""

from __future__ import annotations

import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest

TINY = (64, 128)  # H, W: small enough for 2 CPU cores, still 2x4 cells at 1/32


# --- disk: a folder lives as long as the fixture that made it -----------------------------------
# The suite writes several GB of checkpoints, models and engines; a small CI disk fills up if
# they all stay until the session ends. A passing test's tmp_path goes when it ends (pyproject's
# tmp_path_retention_policy); a module or session fixture's tmp_path_factory.mktemp folders go
# when that fixture is torn down (the end of its module, for scope="module").

_setting_up: list = []  # the fixtures being set up, innermost last
_made: dict[int, list[Path]] = {}  # id(FixtureDef) -> the folders it made


@pytest.hookimpl(wrapper=True)
def pytest_fixture_setup(fixturedef, request):
    _setting_up.append(fixturedef)
    try:
        return (yield)
    finally:
        _setting_up.pop()


def pytest_fixture_post_finalizer(fixturedef, request):
    for folder in _made.pop(id(fixturedef), []):
        shutil.rmtree(folder, ignore_errors=True)


_mktemp = pytest.TempPathFactory.mktemp


def _mktemp_owned(self, basename: str, numbered: bool = True) -> Path:
    folder = _mktemp(self, basename, numbered)
    if _setting_up and _setting_up[-1].scope != "function":
        _made.setdefault(id(_setting_up[-1]), []).append(folder)
    return folder


pytest.TempPathFactory.mktemp = _mktemp_owned


@pytest.fixture(scope="session", autouse=True)
def private_cache(tmp_path_factory):
    """The suite's own cache folder (compiled OpenVINO models, backend choices), so tests never
    read or fill the user's, kept small. Subprocesses inherit it through the environment."""
    import os

    folder = tmp_path_factory.mktemp("cache")
    # A small limit: the suite compiles hundreds of models, and CI's disk may be small.
    settings = {"BISENET_DEPLOY_CACHE": str(folder), "BISENET_DEPLOY_CACHE_MB": "256"}
    previous = {k: os.environ.get(k) for k in settings}
    os.environ.update(settings)
    yield folder
    for key, value in previous.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


def _randomize_bn(model, seed: int) -> None:
    """Give BatchNorm layers non-trivial statistics so exports exercise the folding."""
    import torch

    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(m.num_features, generator=g) * 0.1)


def make_model(num_classes: int = 5, variant: str = "paper", backbone: str = "resnet18", seed: int = 0):
    import torch

    from bisenet_deploy.model import BiSeNet

    torch.manual_seed(seed)
    model = BiSeNet(num_classes=num_classes, backbone=backbone, variant=variant)
    _randomize_bn(model, seed)
    return model.eval()


@pytest.fixture(scope="session")
def model5():
    """Seeded BiSeNet-R18, 5 classes, paper FFM, eval mode."""
    return make_model(5)


@pytest.fixture(scope="session")
def checkpoint5(model5, tmp_path_factory) -> Path:
    """model5 saved the way many training scripts do: a dict with extra entries."""
    import torch

    path = tmp_path_factory.mktemp("ckpt") / "model5.pth"
    torch.save({"epoch": 7, "state_dict": model5.state_dict(), "best_miou": 0.5}, path)
    return path


@pytest.fixture(scope="session")
def photos():
    from bisenet_deploy.samples import sample_photos

    found = sample_photos()
    if len(found) < 3:
        pytest.skip("needs the sample photos shipped with scikit-image / scikit-learn / matplotlib")
    return found


def retag_storage_as_cuda(src: Path, dst: Path) -> None:
    """Rewrite a torch zip checkpoint so its storages claim to live on cuda:0 (as if saved
    on a GPU machine); loading it without map_location fails on a CPU-only machine."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", zipfile.ZIP_STORED) as zout:
        for info in zin.infolist():
            data = zin.read(info.filename)
            if info.filename.endswith("data.pkl"):
                data = data.replace(b"X\x03\x00\x00\x00cpu", b"X\x06\x00\x00\x00cuda:0")
            zout.writestr(info, data)


def random_frame(h: int, w: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)


@pytest.fixture(scope="session")
def export_model5(model5, tmp_path_factory):
    """Factory: model5 exported at TINY with the given ExportOptions fields (cached)."""
    from bisenet_deploy.export.onnx import ExportOptions, export_onnx
    from bisenet_deploy.spec import ModelSpec

    folder = tmp_path_factory.mktemp("onnx5")
    cache: dict = {}

    def make(**options) -> Path:
        key = tuple(sorted(options.items()))
        if key not in cache:
            path = folder / f"m{len(cache)}.onnx"
            options.setdefault("size", TINY)
            export_onnx(model5, ModelSpec(num_classes=5, input_size=TINY), path, ExportOptions(**options))
            cache[key] = path
        return cache[key]

    return make


@pytest.fixture(scope="session")
def precision_models(model5, photos, tmp_path_factory):
    """Tiny exports of model5 with their FP16 and INT8 copies (``make_precisions``,
    calibrated on the built-in photos): ``fixed`` (NCHW float in, logits out) and
    ``dynamic`` (dynamic batch/height/width, uint8 frames in, in-graph argmax).

    {variant: {"fp32"|"fp16"|"int8": path, "outcome": PrecisionOutcome, "log": [lines]}}
    """
    from bisenet_deploy.calibration.precision import PrecisionOptions, make_precisions
    from bisenet_deploy.export.onnx import ExportOptions, export_onnx
    from bisenet_deploy.spec import ModelSpec

    root = tmp_path_factory.mktemp("precision")
    variants = {
        "fixed": ExportOptions(size=TINY),
        "dynamic": ExportOptions(size=TINY, dynamic=("batch", "height", "width"), argmax=True, fuse_preprocess=True),
    }
    out = {}
    for name, options in variants.items():
        path = root / f"{name}.onnx"
        export_onnx(model5, ModelSpec(num_classes=5, input_size=TINY), path, options)
        log: list[str] = []
        outcome = make_precisions(path, PrecisionOptions(calib_count=6, val_count=4, progress=False), log=log.append)
        out[name] = {"fp32": path, **outcome.paths, "outcome": outcome, "log": log}
    return out


@pytest.fixture
def unwritable_cache(tmp_path, monkeypatch):
    """A cache path below a regular file: unwritable even for root."""
    from bisenet_deploy import cache

    blocker = tmp_path / "not-a-folder"
    blocker.write_text("x")
    monkeypatch.setenv("BISENET_DEPLOY_CACHE", str(blocker / "cache"))
    monkeypatch.setattr(cache, "_unwritable", set())
    return blocker
