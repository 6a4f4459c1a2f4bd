"""Write a 19-class CoinCheung BiSeNetV1 checkpoint with seeded random weights, saved the way
CoinCheung/BiSeNet's ``tools/train_amp.py`` saves ``model_final.pth``: a plain state_dict of
the network built with ``aux_mode='train'`` (so the auxiliary heads ``conv_out16`` and
``conv_out32`` are in it), with his key names.

For the Cityscapes-size benchmark cell (``scripts/bench_cityscapes.sh``): the speed of a
network does not depend on its weights, so no trained weights are needed (and none are
downloaded). Its labels mean nothing: agreement figures of INT8 rows on random weights are
not the ones a trained model gets.

    python scripts/cityscapes_checkpoint.py OUT.pth [--classes 19] [--seed 0]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from torch import nn

from bisenet_deploy.fileio import atomic_output
from bisenet_deploy.model.coincheung_v1 import CoinCheungBiSeNetV1, OutputHead


def random_state_dict(num_classes: int = 19, seed: int = 0) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    net = CoinCheungBiSeNetV1(num_classes).eval()
    # BatchNorm statistics as a trained network has them (not 0/1), so that the exported
    # graph is the one a real checkpoint gives after BN folding.
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.1, 0.1)
    sd = dict(net.state_dict())
    # aux_mode='train' builds these two heads too, and train_amp.py saves them with the rest.
    for name, up in (("conv_out16", 8), ("conv_out32", 16)):
        aux = OutputHead(128, 64, num_classes, "bilinear", up_factor=up)
        sd.update({f"{name}.{k}": v for k, v in aux.state_dict().items()})
    return sd


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("output", type=Path)
    p.add_argument("--classes", type=int, default=19)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    with atomic_output(args.output) as tmp:
        torch.save(random_state_dict(args.classes, args.seed), tmp)
    print(f"wrote {args.output} (CoinCheung BiSeNetV1, {args.classes} classes, random weights, seed {args.seed})")


if __name__ == "__main__":
    main()
