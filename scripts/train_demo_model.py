#!/usr/bin/env python
"""Train the packaged demo model: BiSeNet-R18 on synthetic shapes scenes, on a CPU, in minutes.

The model (``bisenet_deploy.model.BiSeNet``, paper FFM, ResNet-18 context path, trained from
scratch: nothing is downloaded) learns ``bisenet_deploy.datasets.shapes``: objects of six
colour classes over real photographs. Training uses small random crops whose objects are drawn at
the pixel sizes of crops and of whole 512x512 frames, so the model also works at the demo
size. Inputs go through ``runtime.processing.preprocess``, the same code as export and
runtime. The BiSeNet auxiliary heads are supervised in train mode, as in the paper.

The weights are stored as FP16 (the loader converts them back to FP32) and the reported
validation scores are measured on exactly those rounded weights, on scenes over held-out
photos that training never sees. The output embeds the ModelSpec (class names, 512x512,
normalization) and a training record; the same record is written as JSON beside it.

    python scripts/train_demo_model.py            # the packaged model (about 20 min, 2 cores)
    python scripts/train_demo_model.py --steps 20 --output /tmp/try.pth --record /tmp/try.json
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run from a checkout without installing

from bisenet_deploy.datasets import shapes  # noqa: E402
from bisenet_deploy.fileio import atomic_output, write_text_atomic  # noqa: E402
from bisenet_deploy.model import BiSeNet  # noqa: E402
from bisenet_deploy.model.demo import TRAINED_DEMO  # noqa: E402
from bisenet_deploy.model.evaluate import SegmentationScore, score_model  # noqa: E402
from bisenet_deploy.runtime.processing import preprocess  # noqa: E402
from bisenet_deploy.spec import ModelSpec  # noqa: E402
from bisenet_deploy.versions import tool_versions  # noqa: E402

DEMO_SIZE = (512, 512)
#: Few held-out scenes whose mIoU the tests recompute from the packaged file.
QUICK_CHECK = {"count": 4, "size": 256}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--steps", type=int, default=1800, help="optimizer steps")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--crop", type=int, default=96, help="training crop side in pixels")
    p.add_argument("--zoom", type=float, nargs=2, default=(0.6, 1.15), metavar=("MIN", "MAX"),
                   help="object zoom range of the training crops (validation and demo frames use 1)")
    p.add_argument("--lr", type=float, default=2e-3, help="peak AdamW learning rate (one-cycle schedule)")
    p.add_argument("--weight-decay", type=float, default=1e-4)
    p.add_argument("--aux-weight", type=float, default=1.0, help="loss weight of each auxiliary head")
    p.add_argument("--ohem-thresh", type=float, default=0.7,
                   help="online hard example mining: average the loss over pixels whose true-class "
                        "probability is below this (at least 1/16 of the pixels); 1 disables it")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--backbone", default="resnet18", choices=("resnet18", "resnet34", "xception39"),
                   help="context path: resnet18 (the built-in demo model), xception39 (the paper's fastest)")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    p.add_argument("--val-count", type=int, default=16, help="held-out validation scenes per size")
    p.add_argument("--val-sizes", default="256,512", help="square validation sizes, comma separated")
    p.add_argument("--eval-every", type=int, default=100, help="steps between quick validations (0: none)")
    p.add_argument("--output", type=Path, default=TRAINED_DEMO, help="checkpoint to write")
    p.add_argument("--record", type=Path, default=ROOT / "scripts" / "demo_shapes_r18.json",
                   help="JSON training record to write")
    args = p.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    try:
        args.val_sizes = [int(s) for s in args.val_sizes.split(",") if s.strip()]
    except ValueError:
        p.error(f"--val-sizes must be integers separated by commas, got {args.val_sizes!r}")
    if args.steps < 1 or args.batch_size < 1 or args.crop < 32:
        p.error("--steps and --batch-size must be positive and --crop at least 32")
    return args


def demo_spec(extra: dict | None = None, backbone: str = "resnet18") -> ModelSpec:
    return ModelSpec(
        arch="bisenet_v1",
        backbone=backbone,
        variant="paper",
        num_classes=shapes.NUM_CLASSES,
        class_names=shapes.CLASS_NAMES,
        input_size=DEMO_SIZE,
        extra=extra or {},
    )


def training_batch(step: int, args: argparse.Namespace, spec: ModelSpec) -> tuple[torch.Tensor, torch.Tensor]:
    size = (args.crop, args.crop)
    items = [
        shapes.training_scene(step * args.batch_size + i, args.seed, size, tuple(args.zoom))
        for i in range(args.batch_size)
    ]
    x = torch.from_numpy(preprocess([s.image for s in items], spec, size))
    y = torch.from_numpy(np.stack([s.labels for s in items]).astype(np.int64))
    return x, y


def ohem_cross_entropy(logits: torch.Tensor, target: torch.Tensor, thresh: float) -> torch.Tensor:
    """Cross-entropy over the hard pixels only (as in common BiSeNet training code): once the
    abundant easy background is learnt, the gradient goes to object pixels and edges."""
    loss = F.cross_entropy(logits, target, reduction="none").flatten()
    if thresh >= 1.0:
        return loss.mean()
    hard = loss[loss > -math.log(thresh)]
    n_min = max(1, loss.numel() // 16)
    if hard.numel() < n_min:
        hard = loss.topk(n_min).values
    return hard.mean()


def evaluate(model: BiSeNet, spec: ModelSpec, sizes: list[int], count: int) -> dict[str, dict]:
    model.eval()
    scores = {}
    for side in sizes:
        items = shapes.validation_scenes(count, (side, side))
        scores[f"{side}x{side}"] = score_model(model, spec, items, (side, side)).to_dict()
    model.train()
    return scores


def fp16_state_dict(model: BiSeNet) -> dict[str, torch.Tensor]:
    sd = {k: (v.half() if v.is_floating_point() else v).clone() for k, v in model.state_dict().items()}
    bad = [k for k, v in sd.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise SystemExit(f"weights overflow FP16 storage: {', '.join(bad[:5])}")
    return sd


def _portable(value):
    """Paths inside the checkout relative to it, so the record does not name this machine."""
    if isinstance(value, Path):
        try:
            return str(value.resolve().relative_to(ROOT))
        except ValueError:
            return str(value)
    return value


def train(args: argparse.Namespace) -> dict:
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    spec = demo_spec(backbone=args.backbone)
    model = BiSeNet(num_classes=shapes.NUM_CLASSES, backbone=args.backbone, variant="paper").train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=args.lr, total_steps=args.steps, pct_start=0.1)
    history = []
    start = time.perf_counter()
    bar = tqdm(range(args.steps), desc="training", unit="step", file=sys.stderr, dynamic_ncols=True)
    for step in bar:
        x, y = training_batch(step, args, spec)
        logits, aux_16x, aux_32x = model(x)
        loss = ohem_cross_entropy(logits, y, args.ohem_thresh) + args.aux_weight * (
            ohem_cross_entropy(aux_16x, y, args.ohem_thresh) + ohem_cross_entropy(aux_32x, y, args.ohem_thresh)
        )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        bar.set_postfix(loss=f"{loss.item():.3f}", lr=f"{schedule.get_last_lr()[0]:.1e}")
        if args.eval_every and (step + 1) % args.eval_every == 0 and step + 1 < args.steps:
            val_miou = evaluate(model, spec, [256], 6)["256x256"]["miou"]
            elapsed = time.perf_counter() - start
            history.append({"step": step + 1, "seconds": round(elapsed), "loss": round(loss.item(), 4), "miou_256": val_miou})
            tqdm.write(f"step {step + 1} ({elapsed / 60:.1f} min): loss {loss.item():.3f}, "
                       f"val mIoU {val_miou:.1f}% on 6 held-out 256px scenes", file=sys.stderr)
    train_seconds = time.perf_counter() - start

    model.eval()
    fp32_scores = evaluate(model, spec, args.val_sizes, args.val_count)
    sd = fp16_state_dict(model)
    model.load_state_dict(sd)  # measure what is shipped: the FP16-rounded weights
    shipped_scores = evaluate(model, spec, args.val_sizes, args.val_count)
    quick_items = shapes.validation_scenes(QUICK_CHECK["count"], (QUICK_CHECK["size"],) * 2)
    quick = score_model(model.eval(), spec, quick_items, (QUICK_CHECK["size"],) * 2)
    return {
        "state_dict": sd,
        "record": {
            "command": shlex.join(["python", "scripts/train_demo_model.py", *args.argv]),
            "arguments": {k: _portable(v) for k, v in vars(args).items() if k != "argv"},
            "seed": args.seed,
            "steps": args.steps,
            "train_seconds": round(train_seconds, 1),
            "threads": args.threads,
            "machine": f"{platform.machine()} {platform.processor() or platform.system()}",
            "versions": tool_versions(),
            "dataset": "bisenet_deploy.datasets.shapes validation_scenes (held-out photos)",
            "validation": shipped_scores,
            "validation_fp32_before_fp16_storage": fp32_scores,
            "quick_check": {**QUICK_CHECK, "miou": quick.miou},
            "history": history,
        },
    }


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    for path in (args.output, args.record):
        path.parent.mkdir(parents=True, exist_ok=True)
    result = train(args)
    record = result["record"]
    summary = {size: score["miou"] for size, score in record["validation"].items()}
    spec = demo_spec(extra={
        "weights": "trained on synthetic shapes scenes (scripts/train_demo_model.py)",
        "val_miou": summary,
        "command": record["command"],
    }, backbone=args.backbone)
    with atomic_output(args.output) as tmp:
        torch.save({"state_dict": result["state_dict"], "bisenet_deploy_spec": spec.to_json(), "training": record}, tmp)
    write_text_atomic(args.record, json.dumps(record, indent=2) + "\n")
    for score in record["validation"].values():
        print("held-out validation: " + SegmentationScore(**score).table())
    size_mb = args.output.stat().st_size / 1e6
    print(f"trained {args.steps} steps in {record['train_seconds'] / 60:.1f} min; wrote {args.output} ({size_mb:.1f} MB) and {args.record}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
