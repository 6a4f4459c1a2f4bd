"""Family ``coincheung_v2``: BiSeNetV2 checkpoints of github.com/CoinCheung/BiSeNet.

Our own definitions with that code base's parameter names (``detail``, ``segment``, ``bga``,
``head``) and eval forward (``aux_mode='eval'``: the main logits; the training-only heads
``aux2``, ``aux3``, ``aux4``, ``aux5_4`` are ignored). Three head layouts of its history:

* ``head="bilinear"`` (since July 2021, current): ``head.conv_out.1`` is a 1x1 classifier,
  upsampled x8 bilinearly (``align_corners=False``).
* ``head="pixelshuffle"`` (Sep 2020 - Jul 2021): ``head.conv_out.0`` has ``num_classes * 64``
  outputs rearranged by ``PixelShuffle(8)``.
* ``head="legacy"`` (before Sep 2020): ``head.conv_out`` is the classifier, resized to the
  input size with ``align_corners=True``; the guided aggregation layer also resized with
  ``align_corners=True`` bilinear interpolation instead of x4 nearest upsampling.

The current and PixelShuffle code upsample the 1/32 semantic features by a fixed factor 4
onto the 1/8 detail features, so input sides must be multiples of 32 (the code's own demo
and evaluation round sizes up to multiples of 32); the legacy code takes any size.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..spec import Upsample
from .coincheung_v1 import ConvBNReLU, coincheung_spec, dataset_reason, global_mean
from .families import Family, LayoutError, StateDict, drop_prefixed, register, require

HEADS = ("bilinear", "pixelshuffle", "legacy")
AUX_HEADS = ("aux2.", "aux3.", "aux4.", "aux5_4.")


def _conv_bn(cin: int, cout: int, ks: int = 3, stride: int = 1, groups: int = 1) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, ks, stride=stride, padding=ks // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)]


class DetailBranch(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.S1 = nn.Sequential(ConvBNReLU(3, 64, 3, stride=2), ConvBNReLU(64, 64, 3))
        self.S2 = nn.Sequential(ConvBNReLU(64, 64, 3, stride=2), ConvBNReLU(64, 64, 3), ConvBNReLU(64, 64, 3))
        self.S3 = nn.Sequential(ConvBNReLU(64, 128, 3, stride=2), ConvBNReLU(128, 128, 3), ConvBNReLU(128, 128, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.S3(self.S2(self.S1(x)))


class StemBlock(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = ConvBNReLU(3, 16, 3, stride=2)
        self.left = nn.Sequential(ConvBNReLU(16, 8, 1), ConvBNReLU(8, 16, 3, stride=2))
        self.right = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        self.fuse = ConvBNReLU(32, 16, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feat = self.conv(x)
        return self.fuse(torch.cat([self.left(feat), self.right(feat)], dim=1))


class ContextEmbedding(nn.Module):
    """``CEBlock``: BN on the global mean, 1x1 ConvBNReLU, broadcast add, 3x3 ConvBNReLU."""

    def __init__(self) -> None:
        super().__init__()
        self.bn = nn.BatchNorm2d(128)
        self.conv_gap = ConvBNReLU(128, 128, 1)
        self.conv_last = ConvBNReLU(128, 128, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_last(self.conv_gap(self.bn(global_mean(x))) + x)


class GatherExpand(nn.Module):
    """``GELayerS1`` (stride 1, identity shortcut) and ``GELayerS2`` (stride 2)."""

    def __init__(self, cin: int, cout: int, stride: int, ratio: int = 6) -> None:
        super().__init__()
        mid = cin * ratio
        self.stride = stride
        self.conv1 = ConvBNReLU(cin, cin, 3)
        if stride == 1:
            self.dwconv = nn.Sequential(*_conv_bn(cin, mid, groups=cin), nn.ReLU(inplace=True))
        else:
            self.dwconv1 = nn.Sequential(*_conv_bn(cin, mid, stride=2, groups=cin))
            self.dwconv2 = nn.Sequential(*_conv_bn(mid, mid, groups=mid), nn.ReLU(inplace=True))
            self.shortcut = nn.Sequential(*_conv_bn(cin, cin, stride=2, groups=cin), *_conv_bn(cin, cout, 1))
        self.conv2 = nn.Sequential(*_conv_bn(mid, cout, 1))
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feat = self.conv1(x)
        if self.stride == 1:
            return self.relu(self.conv2(self.dwconv(feat)) + x)
        return self.relu(self.conv2(self.dwconv2(self.dwconv1(feat))) + self.shortcut(x))


class SegmentBranch(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.S1S2 = StemBlock()
        self.S3 = nn.Sequential(GatherExpand(16, 32, 2), GatherExpand(32, 32, 1))
        self.S4 = nn.Sequential(GatherExpand(32, 64, 2), GatherExpand(64, 64, 1))
        self.S5_4 = nn.Sequential(GatherExpand(64, 128, 2), *(GatherExpand(128, 128, 1) for _ in range(3)))
        self.S5_5 = ContextEmbedding()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.S5_5(self.S5_4(self.S4(self.S3(self.S1S2(x)))))


class GuidedAggregation(nn.Module):
    """``BGALayer``: detail and semantic branches gate each other."""

    def __init__(self, legacy: bool = False) -> None:
        super().__init__()
        self.legacy = legacy
        self.left1 = nn.Sequential(*_conv_bn(128, 128, groups=128), nn.Conv2d(128, 128, 1, bias=False))
        self.left2 = nn.Sequential(*_conv_bn(128, 128, stride=2), nn.AvgPool2d(3, stride=2, padding=1))
        self.right1 = nn.Sequential(*_conv_bn(128, 128))
        self.right2 = nn.Sequential(*_conv_bn(128, 128, groups=128), nn.Conv2d(128, 128, 1, bias=False))
        self.conv = nn.Sequential(*_conv_bn(128, 128), nn.ReLU(inplace=True))

    def _up(self, x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        if self.legacy:
            return F.interpolate(x, size=like.shape[-2:], mode="bilinear", align_corners=True)
        # x4 nearest (``nn.Upsample(scale_factor=4)``): 1/32 -> 1/8 for sides divisible by 32.
        return F.interpolate(x, size=like.shape[-2:], mode="nearest")

    def forward(self, x_d: torch.Tensor, x_s: torch.Tensor) -> torch.Tensor:
        left1 = self.left1(x_d)
        left2 = self.left2(x_d)
        right1 = self._up(self.right1(x_s), left1)
        right2 = self.right2(x_s)
        left = left1 * torch.sigmoid(right1)
        right = self._up(left2 * torch.sigmoid(right2), left1)
        return self.conv(left + right)


class SegmentHead(nn.Module):
    def __init__(self, num_classes: int, head: str, cin: int = 128, mid: int = 1024, up_factor: int = 8) -> None:
        super().__init__()
        self.head = head
        self.up_factor = up_factor
        self.conv = ConvBNReLU(cin, mid, 3)
        if head == "bilinear":
            self.conv_out = nn.Sequential(nn.Identity(), nn.Conv2d(mid, num_classes, 1))
        elif head == "pixelshuffle":
            self.conv_out = nn.Sequential(nn.Conv2d(mid, num_classes * up_factor**2, 1))
        else:
            self.conv_out = nn.Conv2d(mid, num_classes, 1)

    @property
    def upsample_rule(self) -> Upsample | None:
        """The bilinear upsample after ``conv_out``; None for PixelShuffle (learned sub-pixels)."""
        if self.head == "pixelshuffle":
            return None
        return Upsample(align_corners=self.head == "legacy", target="input", factor=self.up_factor)

    def forward(self, x: torch.Tensor, size) -> torch.Tensor:
        x = self.conv_out(self.conv(x))  # dropout is the identity in eval
        if self.head == "pixelshuffle":
            return F.pixel_shuffle(x, self.up_factor)
        return F.interpolate(x, size=size, mode="bilinear", align_corners=self.head == "legacy")


class CoinCheungBiSeNetV2(nn.Module):
    """CoinCheung's BiSeNetV2 in eval mode; ``forward`` returns logits (N, C, H, W)."""

    def __init__(self, num_classes: int, head: str = "bilinear") -> None:
        super().__init__()
        if head not in HEADS:
            raise ValueError(f"head must be one of {HEADS}, got {head!r}")
        self.detail = DetailBranch()
        self.segment = SegmentBranch()
        self.bga = GuidedAggregation(legacy=head == "legacy")
        self.head = SegmentHead(num_classes, head)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.bga(self.detail(x), self.segment(x)), x.shape[-2:])

    @property
    def upsample_rule(self) -> Upsample | None:
        return self.head.upsample_rule

    def low_resolution(self, x: torch.Tensor) -> torch.Tensor:
        """The eval scores before the head's upsample (``upsample_rule``), 1/8 of the input."""
        return self.head.conv_out(self.head.conv(self.bga(self.detail(x), self.segment(x))))


# --- family ---------------------------------------------------------------------------------


def _infer(sd: StateDict) -> tuple[dict[str, Any], list[str]]:
    require(sd, "detail.S1.0.conv.weight")
    require(sd, "segment.S1S2.conv.conv.weight")
    require(sd, "bga.left1.0.weight")
    if "head.conv_out.1.weight" in sd:
        head, classes = "bilinear", int(sd["head.conv_out.1.weight"].shape[0])
        why = "classifier 'head.conv_out.1' with bilinear x8 upsampling (current code)"
    elif "head.conv_out.0.weight" in sd:
        channels = int(sd["head.conv_out.0.weight"].shape[0])
        if channels % 64:
            raise LayoutError(f"'head.conv_out.0' has {channels} outputs, not a multiple of 64 for PixelShuffle(8)")
        head, classes = "pixelshuffle", channels // 64
        why = f"classifier 'head.conv_out.0' has {channels} = {classes} x 64 outputs for PixelShuffle(8) (Sep 2020 - Jul 2021)"
    elif "head.conv_out.weight" in sd:
        head, classes = "legacy", int(sd["head.conv_out.weight"].shape[0])
        why = "classifier 'head.conv_out' resized with align_corners=True (code before Sep 2020)"
    else:
        raise LayoutError("no classifier 'head.conv_out' (the main segmentation head is missing)")
    reasons = [
        "modules 'detail', 'segment', 'bga', 'head' are CoinCheung's BiSeNetV2",
        f"{classes} classes; {why}",
        dataset_reason(classes),
    ]
    return {"num_classes": classes, "head": head}, reasons


def _clean(sd: dict[str, torch.Tensor], notes: list[str]) -> dict[str, torch.Tensor]:
    return drop_prefixed(sd, AUX_HEADS, notes, "auxiliary heads, used in training only")


def _spec(params: dict[str, Any]) -> dict[str, Any]:
    legacy = params["head"] == "legacy"
    return {
        **coincheung_spec(params["num_classes"], 1 if legacy else 32),
        "backbone": "bisenetv2",
        "variant": f"{params['head']}-head",
    }


FAMILY = register(
    Family(
        name="coincheung_v2",
        title="BiSeNetV2 of CoinCheung/BiSeNet (Cityscapes, ADE20k, COCO-Stuff, custom)",
        infer=_infer,
        build=CoinCheungBiSeNetV2,
        spec_fields=_spec,
        clean=_clean,
        example={"num_classes": 19},
    )
)
