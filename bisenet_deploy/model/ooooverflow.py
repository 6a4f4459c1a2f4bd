"""Family ``ooooverflow``: checkpoints of github.com/ooooverflow/BiSeNet (CamVid, ResNet-18/101).

Our own definitions with that code base's parameter names (including its spelling
``saptial_path``) and its eval forward:

* spatial path: three stride-2 ``ConvBlock`` (conv3x3 -> BN -> ReLU); the convolutions have
  no bias since July 2019 and a bias before (``conv_bias=True``; that code also upsampled
  the context by fixed factors, so it needs sides that are multiples of 32).
* context path: a torchvision ResNet-18/101; the tail is the global mean of the 1/32
  features.
* ARM: ``x * sigmoid(conv1x1(mean(x)))``. The module also owns a BatchNorm ``bn`` that its
  forward never calls; those weights are ignored.
* FFM: ConvBlock(stride 1) -> global mean -> conv1 -> ReLU -> conv2 -> sigmoid;
  ``x + x * attn``. The first release (Nov 2018 - Jan 2019, ResNet-101 only, no
  ``supervision`` heads yet) skipped ``conv2`` (sigmoid straight after the ReLU); a
  checkpoint with spatial-path biases and no supervision heads is rebuilt that way
  (``ffm_conv2=False``).
* 1/16 and 1/32 features are upsampled bilinearly (``align_corners=False``) to the spatial
  path's size; the fused map by 8 (written as ``scale_factor=8``; here as the input size,
  the same for sides that are multiples of 8, which the family requires).

Quirks of the saved state_dict handled by ``clean``: the backbone stored twice (as
``context_path.features.*`` and as the aliases ``context_path.conv1/bn1/layer1-4``), the
backbone's unused ImageNet ``fc``, the training-only ``supervision1/2`` heads and the unused
ARM BatchNorms.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..spec import IMAGENET_MEAN, IMAGENET_STD, Upsample
from .datasets import CAMVID_11_CLASSES, CAMVID_12_CLASSES, CAMVID_32_CLASSES
from .families import Family, LayoutError, StateDict, drop_prefixed, register, require, resnet_name
from .resnet_trunk import RESNETS, ResNetTrunk

BACKBONES = ("resnet18", "resnet101")
SPATIAL_CHANNELS = 256


class ConvBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int = 2, bias: bool = False) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, kernel_size=3, stride=stride, padding=1, bias=bias)
        self.bn = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.bn(self.conv1(x)))


class SpatialPath(nn.Module):
    def __init__(self, bias: bool = False) -> None:
        super().__init__()
        self.convblock1 = ConvBlock(3, 64, bias=bias)
        self.convblock2 = ConvBlock(64, 128, bias=bias)
        self.convblock3 = ConvBlock(128, SPATIAL_CHANNELS, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.convblock3(self.convblock2(self.convblock1(x)))


def _global_pool(x: torch.Tensor) -> torch.Tensor:
    return F.adaptive_avg_pool2d(x, 1)


def _tail(x: torch.Tensor) -> torch.Tensor:
    # Same reduction order as the original (W, then H), so PyTorch results agree bit for bit.
    return torch.mean(torch.mean(x, 3, keepdim=True), 2, keepdim=True)


class AttentionRefinement(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(self.conv(_global_pool(x)))


class FeatureFusion(nn.Module):
    def __init__(self, num_classes: int, in_channels: int, bias: bool = False, use_conv2: bool = True) -> None:
        super().__init__()
        self.use_conv2 = use_conv2
        self.convblock = ConvBlock(in_channels, num_classes, stride=1, bias=bias)
        self.conv1 = nn.Conv2d(num_classes, num_classes, kernel_size=1)
        self.conv2 = nn.Conv2d(num_classes, num_classes, kernel_size=1)

    def forward(self, spatial: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        feature = self.convblock(torch.cat((spatial, context), dim=1))
        attn = F.relu(self.conv1(_global_pool(feature)))
        attn = torch.sigmoid(self.conv2(attn) if self.use_conv2 else attn)
        return feature * attn + feature


def _bilinear(x: torch.Tensor, size) -> torch.Tensor:
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


class OoooverflowBiSeNet(nn.Module):
    """ooooverflow/BiSeNet's network; ``forward`` returns logits (N, C, H, W)."""

    def __init__(
        self, num_classes: int, backbone: str = "resnet18", conv_bias: bool = False, ffm_conv2: bool = True
    ) -> None:
        super().__init__()
        if backbone not in BACKBONES:
            raise ValueError(f"ooooverflow/BiSeNet has context paths {BACKBONES}, not {backbone!r}")
        _, _, c16, c32 = RESNETS[backbone]
        self.saptial_path = SpatialPath(conv_bias)
        self.context_path = ResNetTrunk(backbone)
        self.attention_refinement_module1 = AttentionRefinement(c16)
        self.attention_refinement_module2 = AttentionRefinement(c32)
        self.feature_fusion_module = FeatureFusion(num_classes, SPATIAL_CHANNELS + c16 + c32, conv_bias, ffm_conv2)
        self.conv = nn.Conv2d(num_classes, num_classes, kernel_size=1)

    #: the x8 upsample of the fused scores; the final 1x1 ``conv`` after it is moved before
    #: it in a low-resolution export (bilinear weights sum to 1: they commute)
    upsample_rule = Upsample(align_corners=False, target="input", factor=8)

    def low_resolution(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(self._fused(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(_bilinear(self._fused(x), x.shape[-2:]))

    def _fused(self, x: torch.Tensor) -> torch.Tensor:
        spatial = self.saptial_path(x)
        _, feat16, feat32 = self.context_path(x)
        cx1 = self.attention_refinement_module1(feat16)
        cx2 = self.attention_refinement_module2(feat32) * _tail(feat32)
        size = spatial.shape[-2:]
        context = torch.cat((_bilinear(cx1, size), _bilinear(cx2, size)), dim=1)
        return self.feature_fusion_module(spatial, context)


# --- family ---------------------------------------------------------------------------------

_ALIASES = ("conv1.", "bn1.", "layer1.", "layer2.", "layer3.", "layer4.")


def _infer(sd: StateDict) -> tuple[dict[str, Any], list[str]]:
    final = require(sd, "conv.weight")
    require(sd, "saptial_path.convblock1.conv1.weight")
    require(sd, "feature_fusion_module.convblock.conv1.weight")
    prefix = "context_path." if "context_path.layer1.0.conv1.weight" in sd else "context_path.features."
    backbone = resnet_name(sd, prefix)
    if backbone not in BACKBONES:
        raise LayoutError(f"context path is {backbone}; ooooverflow/BiSeNet builds only {' or '.join(BACKBONES)}")
    conv_bias = "saptial_path.convblock1.conv1.bias" in sd
    first_release = conv_bias and backbone == "resnet101" and "supervision1.weight" not in sd
    params = {
        "num_classes": int(final.shape[0]),
        "backbone": backbone,
        "conv_bias": conv_bias,
        "ffm_conv2": not first_release,
    }
    reasons = [
        "module names 'saptial_path' (sic), 'attention_refinement_module1/2' and a final 'conv' "
        "are ooooverflow/BiSeNet's",
        f"final 'conv' has {params['num_classes']} output channels",
        f"context path block counts match {backbone}",
    ]
    if first_release:
        reasons.append(
            "spatial-path biases and no 'supervision' heads: the first release (Nov 2018), "
            "whose FFM never applies its 'conv2'"
        )
    elif conv_bias:
        reasons.append("spatial-path convolutions have biases (the code base before July 2019)")
    return params, reasons


def _clean(sd: dict[str, torch.Tensor], notes: list[str]) -> dict[str, torch.Tensor]:
    feats = "context_path.features."
    copies = [k for k in sd if k.startswith(feats) and k[len(feats):].startswith(_ALIASES)]
    if copies:
        renamed = 0
        for key in copies:
            alias = "context_path." + key[len(feats):]
            value = sd.pop(key)
            if alias not in sd:
                sd[alias] = value
                renamed += 1
        how = f"; {renamed} kept under the alias names" if renamed else ""
        notes.append(
            f"'context_path.features.*' stores the backbone a second time next to its aliases "
            f"'context_path.conv1/bn1/layer1-4' (same tensors): {len(copies)} duplicates dropped{how}"
        )
    sd = drop_prefixed(sd, ("context_path.features.fc.",), notes, "the backbone's ImageNet classifier, unused")
    sd = drop_prefixed(
        sd, ("supervision1.", "supervision2."), notes, "auxiliary heads, used in training only"
    )
    return drop_prefixed(
        sd,
        ("attention_refinement_module1.bn.", "attention_refinement_module2.bn."),
        notes,
        "BatchNorms that the ARM forward never calls",
    )


def _spec(params: dict[str, Any]) -> dict[str, Any]:
    names = {11: CAMVID_11_CLASSES, 12: CAMVID_12_CLASSES, 32: CAMVID_32_CLASSES}
    return {
        "backbone": params["backbone"],
        "variant": "standard" if not params["conv_bias"] else "conv-bias" if params["ffm_conv2"] else "first-release",
        "num_classes": params["num_classes"],
        "class_names": names.get(params["num_classes"], ()),
        "color_order": "RGB",
        "mean": IMAGENET_MEAN,
        "std": IMAGENET_STD,
        "input_size": (720, 960),  # its --crop_height / --crop_width defaults
        # The fused 1/8 map is upsampled by exactly 8; before July 2019 the 1/16 and 1/32
        # features were also upsampled by fixed factors 2 and 4 onto the 1/8 map.
        "size_divisor": 32 if params["conv_bias"] else 8,
    }


FAMILY = register(
    Family(
        name="ooooverflow",
        title="BiSeNet of ooooverflow/BiSeNet (CamVid; ResNet-18 or ResNet-101 context path)",
        infer=_infer,
        build=OoooverflowBiSeNet,
        spec_fields=_spec,
        clean=_clean,
        example={"num_classes": 12},
    )
)
