"""Xception-39, the BiSeNet paper's fastest context-path backbone (Sec. 4.1 of Yu et al.).

A small Xception: a 3x3 stride-2 stem with 8 channels and a max-pool, then three stages of
4, 8 and 4 blocks with 16, 32 and 64 bottleneck channels (x4 at the output: 64, 128, 256
channels at 1/8, 1/16 and 1/32 of the input). Each block is three depthwise-separable
3x3 convolutions (depthwise conv, then pointwise conv + BN, ReLU except after the last)
plus a shortcut (a separable projection where the stage downsamples), ReLU after the sum.

Parameter names follow the authors' reference code (ycszen/TorchSeg, ``furnace/base_model/
xception.py``: ``conv1``, ``layer1.0.residual_branch.0.conv1``, ``...point_wise_cbr.conv``,
``proj``) so its checkpoints load one to one; the definitions are our own. Built with no
pretrained weights: nothing is downloaded.
"""

from __future__ import annotations

import torch
from torch import nn

#: stage blocks and bottleneck channels of Xception-39; outputs are 4x the latter
XCEPTION39 = ((4, 16), (8, 32), (4, 64))
EXPANSION = 4


class ConvBnRelu(nn.Module):
    """Conv (no bias unless asked), optional BN, optional ReLU: names ``conv``, ``bn``."""

    def __init__(self, cin: int, cout: int, ksize: int, stride: int = 1, pad: int = 0, dilation: int = 1,
                 groups: int = 1, has_bn: bool = True, has_relu: bool = True, has_bias: bool = False,
                 bn_eps: float = 1e-5) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, ksize, stride, pad, dilation, groups=groups, bias=has_bias)
        self.bn = nn.BatchNorm2d(cout, eps=bn_eps) if has_bn else None
        self.relu = nn.ReLU(inplace=True) if has_relu else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        if self.bn is not None:
            x = self.bn(x)
        return self.relu(x) if self.relu is not None else x


class SeparableConvBnRelu(nn.Module):
    """Depthwise 3x3 (``conv1``) then pointwise 1x1 + BN (+ ReLU) (``point_wise_cbr``)."""

    def __init__(self, cin: int, cout: int, stride: int = 1, dilation: int = 1, has_relu: bool = True) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cin, 3, stride, dilation, dilation, groups=cin, bias=False)
        self.point_wise_cbr = ConvBnRelu(cin, cout, 1, has_relu=has_relu)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.point_wise_cbr(self.conv1(x))


class XceptionBlock(nn.Module):
    """Three separable convolutions; a projection shortcut where the block downsamples."""

    def __init__(self, cin: int, mid: int, stride: int, project: bool) -> None:
        super().__init__()
        self.proj = SeparableConvBnRelu(cin, mid * EXPANSION, stride, has_relu=False) if project else None
        self.residual_branch = nn.Sequential(
            SeparableConvBnRelu(cin, mid, stride),
            SeparableConvBnRelu(mid, mid),
            SeparableConvBnRelu(mid, mid * EXPANSION, has_relu=False),
        )
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = self.proj(x) if self.proj is not None else x
        return self.relu(shortcut + self.residual_branch(x))


class Xception39(nn.Module):
    """``forward`` returns the 1/8, 1/16 and 1/32 features (64, 128, 256 channels)."""

    channels = tuple(mid * EXPANSION for _, mid in XCEPTION39)

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = ConvBnRelu(3, 8, 3, 2, 1)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        cin = 8
        for i, (blocks, mid) in enumerate(XCEPTION39, start=1):
            layers = [XceptionBlock(cin, mid, stride=2, project=True)]
            cin = mid * EXPANSION
            layers += [XceptionBlock(cin, mid, stride=1, project=False) for _ in range(blocks - 1)]
            setattr(self, f"layer{i}", nn.Sequential(*layers))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = self.maxpool(self.conv1(x))
        feat8 = self.layer1(x)
        feat16 = self.layer2(feat8)
        return feat8, feat16, self.layer3(feat16)
