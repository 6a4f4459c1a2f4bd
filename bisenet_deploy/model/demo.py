"""The built-in demo model, so every command can run without a user checkpoint.

The package ships trained demo weights, ``assets/demo_shapes_r18.pth``: BiSeNet-R18 (paper
FFM) trained by ``scripts/train_demo_model.py`` on the synthetic shapes scenes of
``bisenet_deploy.datasets.shapes`` (7 classes, 512x512, FP16 storage, the ModelSpec and the
training record embedded). Its logits are decisive, so FP16/INT8 fidelity measured on it
means something. Where the asset is missing (a stripped installation), a BiSeNet with seeded
random weights is built instead and labelled *untrained* everywhere it appears.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ..spec import ModelSpec
from .bisenet import BiSeNet
from .checkpoint import LoadedCheckpoint, load_checkpoint
from .families import get_family

ASSETS = Path(__file__).resolve().parent.parent / "assets"
TRAINED_DEMO = ASSETS / "demo_shapes_r18.pth"
UNTRAINED_NOTE = "UNTRAINED demo weights (seeded random): outputs are meaningless, use for plumbing only"


def demo_checkpoint_path() -> Path | None:
    """Path of the packaged trained demo checkpoint, if this installation has it."""
    return TRAINED_DEMO if TRAINED_DEMO.is_file() else None


def demo_model(num_classes: int = 19, seed: int = 0) -> LoadedCheckpoint:
    """The trained demo model when packaged, else an untrained seeded BiSeNet-R18.

    ``num_classes`` and ``seed`` only shape the untrained fallback; the trained model has
    the shapes task's classes (``datasets.shapes.CLASS_NAMES``).
    """
    path = demo_checkpoint_path()
    if path is not None:
        loaded = load_checkpoint(path)
        loaded.notes.insert(0, f"demo model: trained weights from {path.name}")
        return loaded
    torch.manual_seed(seed)
    model = BiSeNet(num_classes=num_classes).eval()
    spec = ModelSpec(num_classes=num_classes, extra={"source": "demo", "weights": UNTRAINED_NOTE})
    return LoadedCheckpoint(model=model, spec=spec, family=get_family("bisenet_v1"), notes=[UNTRAINED_NOTE])
