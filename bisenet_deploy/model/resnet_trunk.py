"""A torchvision ResNet without its classifier, as the public BiSeNet code bases use it.

Parameter names are torchvision's (``conv1``, ``bn1``, ``layer1.0.conv1`` ...), which is
also what CoinCheung/BiSeNet and face-parsing.PyTorch write for their own ResNet-18 (same
blocks, same names). Built with ``weights=None``: nothing is downloaded.
"""

from __future__ import annotations

import torch
from torch import nn
from torchvision import models

#: name -> (constructor, channels at 1/8, 1/16, 1/32)
RESNETS = {
    "resnet18": (models.resnet18, 128, 256, 512),
    "resnet34": (models.resnet34, 128, 256, 512),
    "resnet50": (models.resnet50, 512, 1024, 2048),
    "resnet101": (models.resnet101, 512, 1024, 2048),
}


class ResNetTrunk(nn.Module):
    """Stem and four stages; ``forward`` returns the 1/8, 1/16 and 1/32 features."""

    def __init__(self, depth: str = "resnet18") -> None:
        super().__init__()
        if depth not in RESNETS:
            raise ValueError(f"unknown ResNet {depth!r}; choose from {sorted(RESNETS)}")
        build, *self.channels = RESNETS[depth]
        resnet = build(weights=None)
        self.conv1 = resnet.conv1
        self.bn1 = resnet.bn1
        self.relu = resnet.relu
        self.maxpool = resnet.maxpool
        self.layer1 = resnet.layer1
        self.layer2 = resnet.layer2
        self.layer3 = resnet.layer3
        self.layer4 = resnet.layer4

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        feat8 = self.layer2(self.layer1(x))
        feat16 = self.layer3(feat8)
        return feat8, feat16, self.layer4(feat16)
