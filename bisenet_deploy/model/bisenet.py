"""BiSeNet V1 (Yu et al., ECCV 2018): Spatial Path + Context Path + ARM + FFM.

Our own implementation of the architecture described in the paper and in the project's
seed notes. Module and parameter names follow the seed's layout (``spatial_path``,
``context_path``, ``attention_refinement_module_16x`` ...) so checkpoints trained with the
seed's code load one to one.

Deliberate differences from the seed sketch, all fixed here:

* **FFM** (``variant="paper"``): the attention branch is 1x1 conv -> ReLU -> 1x1 conv ->
  sigmoid with two distinct convolutions, and the output is ``x + x * attn``. The sketch
  applies *one* 1x1 conv twice and gates with ReLU instead of sigmoid. Checkpoints trained
  with the sketch carry a single ``feature_fusion_module.conv_1x1`` and are rebuilt with
  ``variant="seed"``, which reproduces that forward exactly (see ``FeatureFusion``).
* **ARM** does not ``detach()`` its input (the sketch cut the gradient through the main
  path; the forward values are identical, so seed checkpoints are unaffected).
* No ``training`` constructor argument shadowing ``nn.Module.training``: ``train()`` returns
  ``(logits, aux_16x, aux_32x)``, ``eval()`` returns the main logits only.
* The backbone is built with ``weights=None``: nothing is downloaded, ever. Pretrained
  weights come from the user's checkpoint.
* The final upsampling targets the input size instead of ``scale_factor=8``, so any input
  size yields an output of the same H x W. For sides that are multiples of 8 the result is
  identical to the sketch (``align_corners=True`` derives the same scale either way).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torchvision import models

from ..spec import Upsample

#: Context-path backbones: constructor and the channels of layer3 (1/16) and layer4 (1/32)
#: (Xception-39: its stages 2 and 3).
BACKBONES: dict[str, tuple] = {
    "resnet18": (models.resnet18, 256, 512),
    "resnet34": (models.resnet34, 256, 512),
    "resnet50": (models.resnet50, 1024, 2048),
    "resnet101": (models.resnet101, 1024, 2048),
    "xception39": (None, 128, 256),
}

FFM_VARIANTS = ("paper", "seed")

SPATIAL_CHANNELS = 256


class ConvBNReLU(nn.Sequential):
    """3x3 stride-2 conv (with bias, as the seed layout stores it) + BN + ReLU."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(
            nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=2, padding=1),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        )


class SpatialPath(nn.Sequential):
    """Three stride-2 conv blocks: 1/8 resolution, 256 channels, rich spatial detail."""

    def __init__(self, in_channels: int = 3) -> None:
        super().__init__(
            ConvBNReLU(in_channels, 64),
            ConvBNReLU(64, 128),
            ConvBNReLU(128, SPATIAL_CHANNELS),
        )


class ContextPath(nn.Module):
    """ResNet (or Xception-39) trunk returning 1/16 and 1/32 features and the global-average
    'tail'. Xception-39, the paper's fastest backbone, lives under ``xception``."""

    def __init__(self, backbone: str = "resnet18") -> None:
        super().__init__()
        if backbone not in BACKBONES:
            raise ValueError(f"unknown backbone {backbone!r}; choose from {sorted(BACKBONES)}")
        build, self.channels_16x, self.channels_32x = BACKBONES[backbone]
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        if build is None:
            from .xception import Xception39

            self.xception = Xception39()
            return
        resnet = build(weights=None)
        self.conv_block = nn.Sequential(resnet.conv1, resnet.bn1, resnet.relu, resnet.maxpool)
        self.layer1 = resnet.layer1
        self.layer2 = resnet.layer2
        self.layer3 = resnet.layer3
        self.layer4 = resnet.layer4

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if hasattr(self, "xception"):
            _, down_16x, down_32x = self.xception(x)
            return down_16x, down_32x, self.avg_pool(down_32x)
        x = self.layer2(self.layer1(self.conv_block(x)))
        down_16x = self.layer3(x)
        down_32x = self.layer4(down_16x)
        return down_16x, down_32x, self.avg_pool(down_32x)


class AttentionRefinement(nn.Module):
    """ARM: channel attention from global pooling; ``x * sigmoid(bn(conv(gap(x))))``."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        self.conv_1x1 = nn.Conv2d(channels, channels, kernel_size=1)
        self.batch_norm = nn.BatchNorm2d(channels)
        self.sigmoid = nn.Sigmoid()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        attn = self.sigmoid(self.batch_norm(self.conv_1x1(self.avg_pool(x))))
        return x * attn


class FeatureFusion(nn.Module):
    """FFM: fuse spatial and context features, reweight channels, ``x + x * attn``.

    ``variant="paper"``: attn = sigmoid(conv_b(relu(conv_a(gap(x))))), two convolutions
    stored as ``attention.0`` and ``attention.2``.

    ``variant="seed"``: reproduces the seed sketch for checkpoints trained with it:
    attn = relu(conv(relu(conv(gap(x))))) with the *same* ``conv_1x1`` applied twice and no
    sigmoid. Kept only so such checkpoints export to what their training code computed.
    """

    def __init__(self, in_channels: int, out_channels: int, variant: str = "paper") -> None:
        super().__init__()
        if variant not in FFM_VARIANTS:
            raise ValueError(f"unknown FFM variant {variant!r}; choose from {FFM_VARIANTS}")
        self.variant = variant
        self.conv_block = nn.Sequential(
            nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=1, padding=1),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        )
        self.avg_pool = nn.AdaptiveAvgPool2d(1)
        if variant == "paper":
            self.attention = nn.Sequential(
                nn.Conv2d(out_channels, out_channels, kernel_size=1),
                nn.ReLU(inplace=True),
                nn.Conv2d(out_channels, out_channels, kernel_size=1),
                nn.Sigmoid(),
            )
        else:
            self.conv_1x1 = nn.Conv2d(out_channels, out_channels, kernel_size=1)

    def forward(self, spatial: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        feature = self.conv_block(torch.cat([spatial, context], dim=1))
        pooled = self.avg_pool(feature)
        if self.variant == "paper":
            attn = self.attention(pooled)
        else:
            attn = F.relu(self.conv_1x1(F.relu(self.conv_1x1(pooled))))
        return feature + feature * attn


def _upsample(x: torch.Tensor, size) -> torch.Tensor:
    return F.interpolate(x, size=size, mode="bilinear", align_corners=True)


class BiSeNet(nn.Module):
    """BiSeNet V1 for ``num_classes`` >= 1 classes (1: binary mask, positive logit = on).

    Args:
        num_classes: output channels.
        backbone: context path: ``resnet18`` (default), ``resnet34/50/101`` for accuracy,
            ``xception39`` for speed (the paper's fastest).
        variant: feature-fusion variant, ``paper`` for new models, ``seed`` for
            checkpoints trained with the seed sketch.
        in_channels: image channels.

    ``eval()`` forward returns logits (N, num_classes, H, W) with H x W of the input;
    ``train()`` forward also returns the two auxiliary context-path heads.
    """

    def __init__(
        self,
        num_classes: int = 19,
        backbone: str = "resnet18",
        variant: str = "paper",
        in_channels: int = 3,
    ) -> None:
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        self.num_classes = num_classes
        self.backbone = backbone
        self.variant = variant
        self.spatial_path = SpatialPath(in_channels)
        self.context_path = ContextPath(backbone)
        c16, c32 = self.context_path.channels_16x, self.context_path.channels_32x
        self.attention_refinement_module_16x = AttentionRefinement(c16)
        self.attention_refinement_module_32x = AttentionRefinement(c32)
        self.feature_fusion_module = FeatureFusion(SPATIAL_CHANNELS + c16 + c32, num_classes, variant)
        self.final_conv = nn.Conv2d(num_classes, num_classes, kernel_size=1)
        # Auxiliary heads supervise the context path during training only.
        self.aux_conv_16x = nn.Conv2d(c16, num_classes, kernel_size=1)
        self.aux_conv_32x = nn.Conv2d(c32, num_classes, kernel_size=1)

    #: the head's upsample of its 1/8 scores (``final_conv`` moved before it: they commute)
    upsample_rule = Upsample(align_corners=True, target="input", factor=8)

    def low_resolution(self, x: torch.Tensor) -> torch.Tensor:
        """The eval scores before the head's upsample (``upsample_rule``), 1/8 of the input."""
        return self.final_conv(self._features(x)[0])

    def _features(self, x: torch.Tensor):
        spatial = self.spatial_path(x)
        down_16x, down_32x, tail = self.context_path(x)
        down_16x = self.attention_refinement_module_16x(down_16x)
        down_32x = self.attention_refinement_module_32x(down_32x) * tail
        sp_size = spatial.shape[-2:]
        down_16x = _upsample(down_16x, sp_size)
        down_32x = _upsample(down_32x, sp_size)
        fused = self.feature_fusion_module(spatial, torch.cat([down_16x, down_32x], dim=1))
        return fused, down_16x, down_32x

    def forward(self, x: torch.Tensor):
        size = x.shape[-2:]
        fused, down_16x, down_32x = self._features(x)
        logits = self.final_conv(_upsample(fused, size))
        if not self.training:
            return logits
        aux_16x = _upsample(self.aux_conv_16x(down_16x), size)
        aux_32x = _upsample(self.aux_conv_32x(down_32x), size)
        return logits, aux_16x, aux_32x
