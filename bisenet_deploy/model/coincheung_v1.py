"""Family ``coincheung_v1``: BiSeNetV1 checkpoints of github.com/CoinCheung/BiSeNet.

Our own definitions with that code base's parameter names (``cp``, ``sp``, ``ffm``,
``conv_out``) and eval forward (``aux_mode='eval'``: the main logits). Three layouts of its
history are recognised from the weights, each rebuilt with the forward of its time:

* ``head="bilinear"`` (since July 2021, current): ``conv_out.conv_out`` has a bias and
  ``num_classes`` outputs, upsampled x8 bilinearly (``align_corners=False``).
* ``head="pixelshuffle"`` (Sep 2020 - Jul 2021): ``conv_out.conv_out`` has
  ``num_classes * 64`` outputs rearranged by ``PixelShuffle(8)``.
* ``head="legacy"`` (before Sep 2020): no bias; bilinear upsampling to the input size with
  ``align_corners=True``.

and two feature-fusion attentions: ``fusion="conv_bn"`` (since July 2021: 1x1 conv -> BN ->
sigmoid) and ``fusion="mlp"`` (before: conv1 -> ReLU -> conv2 -> sigmoid, C/4 bottleneck).

The current code upsamples the 1/32 and 1/16 context features by a fixed factor 2
(``nn.Upsample(scale_factor=2)``) and adds them to the next stage, so input sides must be
multiples of 32; the legacy code resizes to the next stage's size and takes any input.
Here both are written as nearest resizing to the next stage's size, which is identical
wherever the original runs. Global pooling is a mean over H and W, so any size exports.

The training-only auxiliary heads ``conv_out16`` / ``conv_out32`` are ignored.

face-parsing.PyTorch's network is this legacy layout without a spatial path
(``spatial_path=False``; see ``face_parsing.py``).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..spec import Upsample
from .datasets import CITYSCAPES_CLASSES, coincheung_dataset
from .families import Family, LayoutError, StateDict, drop_prefixed, register, require, resnet_name
from .resnet_trunk import ResNetTrunk

HEADS = ("bilinear", "pixelshuffle", "legacy")
FUSIONS = ("conv_bn", "mlp")
AUX_HEADS = ("conv_out16.", "conv_out32.")


class ConvBNReLU(nn.Module):
    """conv (no bias) -> BN -> ReLU; the building block of CoinCheung's BiSeNetV1 and V2."""

    def __init__(self, cin: int, cout: int, ks: int = 3, stride: int = 1, padding: int | None = None,
                 groups: int = 1) -> None:
        super().__init__()
        padding = ks // 2 if padding is None else padding
        self.conv = nn.Conv2d(cin, cout, ks, stride=stride, padding=padding, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.bn(self.conv(x)))


def global_mean(x: torch.Tensor) -> torch.Tensor:
    return torch.mean(x, dim=(2, 3), keepdim=True)


def nearest_to(x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return F.interpolate(x, size=like.shape[-2:], mode="nearest")


class AttentionRefinement(nn.Module):
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv = ConvBNReLU(cin, cout, 3)
        self.conv_atten = nn.Conv2d(cout, cout, 1, bias=False)
        self.bn_atten = nn.BatchNorm2d(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feat = self.conv(x)
        return feat * torch.sigmoid(self.bn_atten(self.conv_atten(global_mean(feat))))


class ContextPath(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.resnet = ResNetTrunk("resnet18")
        self.arm16 = AttentionRefinement(256, 128)
        self.arm32 = AttentionRefinement(512, 128)
        self.conv_head32 = ConvBNReLU(128, 128, 3)
        self.conv_head16 = ConvBNReLU(128, 128, 3)
        self.conv_avg = ConvBNReLU(512, 128, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns the ResNet's 1/8 features and the context at 1/8."""
        feat8, feat16, feat32 = self.resnet(x)
        # The pooled 1x1 context broadcasts over H x W (the legacy code resized it first).
        feat32_sum = self.arm32(feat32) + self.conv_avg(global_mean(feat32))
        feat32_up = self.conv_head32(nearest_to(feat32_sum, feat16))
        feat16_sum = self.arm16(feat16) + feat32_up
        return feat8, self.conv_head16(nearest_to(feat16_sum, feat8))


class SpatialPath(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = ConvBNReLU(3, 64, 7, stride=2)
        self.conv2 = ConvBNReLU(64, 64, 3, stride=2)
        self.conv3 = ConvBNReLU(64, 64, 3, stride=2)
        self.conv_out = ConvBNReLU(64, 128, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_out(self.conv3(self.conv2(self.conv1(x))))


class FeatureFusion(nn.Module):
    def __init__(self, cin: int, cout: int, fusion: str) -> None:
        super().__init__()
        self.fusion = fusion
        self.convblk = ConvBNReLU(cin, cout, 1)
        if fusion == "conv_bn":
            self.conv = nn.Conv2d(cout, cout, 1, bias=False)
            self.bn = nn.BatchNorm2d(cout)
        else:
            self.conv1 = nn.Conv2d(cout, cout // 4, 1, bias=False)
            self.conv2 = nn.Conv2d(cout // 4, cout, 1, bias=False)

    def forward(self, fsp: torch.Tensor, fcp: torch.Tensor) -> torch.Tensor:
        feat = self.convblk(torch.cat([fsp, fcp], dim=1))
        pooled = global_mean(feat)
        if self.fusion == "conv_bn":
            atten = self.bn(self.conv(pooled))
        else:
            atten = self.conv2(F.relu(self.conv1(pooled)))
        return feat * torch.sigmoid(atten) + feat


class OutputHead(nn.Module):
    """``BiSeNetOutput``: 3x3 ConvBNReLU, 1x1 classifier, then the head's upsampling."""

    def __init__(self, cin: int, mid: int, num_classes: int, head: str, up_factor: int = 8) -> None:
        super().__init__()
        self.head = head
        self.up_factor = up_factor
        out = num_classes * up_factor**2 if head == "pixelshuffle" else num_classes
        self.conv = ConvBNReLU(cin, mid, 3)
        self.conv_out = nn.Conv2d(mid, out, 1, bias=head != "legacy")

    @property
    def upsample_rule(self) -> Upsample | None:
        """The bilinear upsample after ``conv_out``; None for PixelShuffle, which is no
        interpolation of class scores (its 64 x C channels are learned sub-pixels)."""
        if self.head == "pixelshuffle":
            return None
        return Upsample(align_corners=self.head == "legacy", target="input", factor=self.up_factor)

    def forward(self, x: torch.Tensor, size) -> torch.Tensor:
        x = self.conv_out(self.conv(x))
        if self.head == "pixelshuffle":
            return F.pixel_shuffle(x, self.up_factor)
        # ``bilinear`` scales by exactly 8 (sides are multiples of 32 there), so resizing to
        # the input size computes the same; ``legacy`` resized to the input size itself.
        return F.interpolate(x, size=size, mode="bilinear", align_corners=self.head == "legacy")


class CoinCheungBiSeNetV1(nn.Module):
    """CoinCheung's BiSeNetV1 in eval mode; ``forward`` returns logits (N, C, H, W)."""

    def __init__(self, num_classes: int, head: str = "bilinear", fusion: str = "conv_bn",
                 spatial_path: bool = True) -> None:
        super().__init__()
        if head not in HEADS or fusion not in FUSIONS:
            raise ValueError(f"head must be one of {HEADS} and fusion one of {FUSIONS}")
        self.cp = ContextPath()
        if spatial_path:
            self.sp = SpatialPath()
        self.ffm = FeatureFusion(256, 256, fusion)
        self.conv_out = OutputHead(256, 256, num_classes, head)

    def _fused(self, x: torch.Tensor) -> torch.Tensor:
        feat8, context8 = self.cp(x)
        # face-parsing.PyTorch feeds the ResNet's 1/8 features where a spatial path would be.
        spatial = self.sp(x) if hasattr(self, "sp") else feat8
        return self.ffm(spatial, context8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_out(self._fused(x), x.shape[-2:])

    @property
    def upsample_rule(self) -> Upsample | None:
        return self.conv_out.upsample_rule

    def low_resolution(self, x: torch.Tensor) -> torch.Tensor:
        """The eval scores before the head's upsample (``upsample_rule``), 1/8 of the input."""
        return self.conv_out.conv_out(self.conv_out.conv(self._fused(x)))


# --- family ---------------------------------------------------------------------------------


def infer_head(sd: StateDict, key: str, aux_key: str) -> tuple[str, int, str]:
    """(head, num_classes, reason) from the classifier at ``key`` and an aux head's."""
    weight = require(sd, key + ".weight")
    channels = int(weight.shape[0])
    if key + ".bias" not in sd:
        return "legacy", channels, "classifier without bias (code before Sep 2020: align_corners=True upsampling)"
    aux = sd.get(aux_key)
    pixelshuffle_why = (
        f"classifier has {channels} = {channels // 64} x 64 outputs for PixelShuffle(8) "
        "(code of Sep 2020 - Jul 2021)"
    )
    if aux is not None:
        # The x16 auxiliary head has 4x the main head's outputs only with PixelShuffle.
        if int(aux.shape[0]) == 4 * channels and channels % 64 == 0:
            return "pixelshuffle", channels // 64, pixelshuffle_why
    elif channels % 64 == 0 and channels >= 128:
        # Saved without auxiliary heads (output_aux=False, as that code's inference did):
        # 128, 192, ... classes are far less likely than 2, 3, ... with PixelShuffle.
        return "pixelshuffle", channels // 64, pixelshuffle_why + "; no auxiliary heads to confirm it"
    return "bilinear", channels, "classifier with bias and bilinear x8 upsampling (current code)"


def _infer(sd: StateDict) -> tuple[dict[str, Any], list[str]]:
    require(sd, "sp.conv1.conv.weight")
    require(sd, "ffm.convblk.conv.weight")
    if resnet_name(sd, "cp.resnet.") != "resnet18":
        raise LayoutError("CoinCheung's BiSeNetV1 context path is a ResNet-18")
    head, num_classes, head_why = infer_head(sd, "conv_out.conv_out", "conv_out32.conv_out.weight")
    if "ffm.conv.weight" in sd:
        fusion, fusion_why = "conv_bn", "FFM attention is conv + BN (code since Jul 2021)"
    elif "ffm.conv1.weight" in sd:
        fusion, fusion_why = "mlp", "FFM attention is a two-layer MLP (code before Jul 2021)"
    else:
        raise LayoutError("feature fusion 'ffm' has neither 'conv' nor 'conv1'")
    reasons = [
        "modules 'cp' (ResNet-18 context path), 'sp', 'ffm', 'conv_out' are CoinCheung's BiSeNetV1",
        f"{num_classes} classes; {head_why}",
        fusion_why,
        dataset_reason(num_classes),
    ]
    if head == "legacy" and not any(k.endswith("num_batches_tracked") for k in sd):
        # InPlaceABN keeps no counter; its default activation is a leaky ReLU, not a ReLU.
        reasons.append(
            "WARNING: no BatchNorm counters; if this comes from the 2019 code in CoinCheung's old/ "
            "folder (InPlaceABN with leaky ReLU, not supported), the export differs from it"
        )
    return {"num_classes": num_classes, "head": head, "fusion": fusion}, reasons


def _clean(sd: dict[str, torch.Tensor], notes: list[str]) -> dict[str, torch.Tensor]:
    return drop_prefixed(sd, AUX_HEADS, notes, "auxiliary heads, used in training only")


def dataset_reason(num_classes: int) -> str:
    name, mean, std, _ = coincheung_dataset(num_classes)
    return f"{num_classes} classes: normalized with the statistics of its {name} loader (mean {mean}, std {std})"


def coincheung_spec(num_classes: int, divisor: int) -> dict[str, Any]:
    _, mean, std, size = coincheung_dataset(num_classes)
    return {
        "num_classes": num_classes,
        "class_names": CITYSCAPES_CLASSES if num_classes == 19 else (),
        "color_order": "RGB",  # its loaders read BGR with cv2 and flip to RGB
        "mean": mean,
        "std": std,
        "input_size": size,
        "size_divisor": divisor,
    }


def _spec(params: dict[str, Any]) -> dict[str, Any]:
    legacy = params["head"] == "legacy"
    return {
        **coincheung_spec(params["num_classes"], 1 if legacy else 32),
        "backbone": "resnet18",
        "variant": f"{params['head']}-head/{params['fusion']}-ffm",
    }


FAMILY = register(
    Family(
        name="coincheung_v1",
        title="BiSeNetV1 of CoinCheung/BiSeNet (Cityscapes, ADE20k, COCO-Stuff, custom)",
        infer=_infer,
        build=CoinCheungBiSeNetV1,
        spec_fields=_spec,
        clean=_clean,
        example={"num_classes": 19},
    )
)
