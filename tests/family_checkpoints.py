"""State_dicts in the layouts the public BiSeNet code bases write, built from our definitions.

Our family modules hold only what the eval forward uses; the code bases themselves also
save training-only heads, unused modules and aliases. These helpers add exactly those
extra entries (with the shapes those code bases give them), so tests see checkpoints as
``torch.save(net.module.state_dict(), ...)`` writes them there. Works on ``meta`` tensors too.
"""

from __future__ import annotations

import torch
from torch import nn

from bisenet_deploy.model.coincheung_v1 import ConvBNReLU, OutputHead
from bisenet_deploy.model.families import get_family
from bisenet_deploy.model.resnet_trunk import RESNETS


def _tensors(module: nn.Module, prefix: str) -> dict[str, torch.Tensor]:
    return {prefix + k: v for k, v in module.state_dict().items()}


def _batchnorm(prefix: str, channels: int, device) -> dict[str, torch.Tensor]:
    with torch.device(device):
        return _tensors(nn.BatchNorm2d(channels), prefix)


def ooooverflow_layout(model: nn.Module) -> dict[str, torch.Tensor]:
    """Backbone also under ``context_path.features.*`` (same tensors) with its ImageNet fc,
    ARM BatchNorms the forward never calls, and ``supervision1/2`` unless first release."""
    sd = dict(model.state_dict())
    device = next(iter(sd.values())).device
    num_classes = model.conv.out_channels
    backbone = "resnet101" if len(model.context_path.layer3) == 23 else "resnet18"
    _, _, c16, c32 = RESNETS[backbone]
    features = {
        f"context_path.features.{k[len('context_path.'):]}": v for k, v in sd.items() if k.startswith("context_path.")
    }
    with torch.device(device):
        features.update(_tensors(nn.Linear(c32, 1000), "context_path.features.fc."))
        extra = {}
        for i, c in ((1, c16), (2, c32)):
            extra.update(_batchnorm(f"attention_refinement_module{i}.bn.", c, device))
        if model.feature_fusion_module.use_conv2:
            for i, c in ((1, c16), (2, c32)):
                extra.update(_tensors(nn.Conv2d(c, num_classes, 1), f"supervision{i}."))
    # Upstream order: the features copy first (registered first), then the aliases.
    return {**features, **sd, **extra}


def coincheung_v1_layout(model: nn.Module, aux: bool = True) -> dict[str, torch.Tensor]:
    """Training layout (``aux_mode='train'``): auxiliary heads conv_out16 / conv_out32."""
    sd = dict(model.state_dict())
    if not aux:
        return sd
    device = next(iter(sd.values())).device
    head = model.conv_out.head
    classes = model.conv_out.conv_out.out_channels // (64 if head == "pixelshuffle" else 1)
    with torch.device(device):
        sd.update(_tensors(OutputHead(128, 64, classes, head, up_factor=8), "conv_out16."))
        sd.update(_tensors(OutputHead(128, 64, classes, head, up_factor=16), "conv_out32."))
    return sd


def coincheung_v2_layout(model: nn.Module) -> dict[str, torch.Tensor]:
    """Training layout: the four auxiliary SegmentHeads (current code's shapes)."""
    sd = dict(model.state_dict())
    device = next(iter(sd.values())).device
    classes = sd["head.conv_out.1.weight"].shape[0] if "head.conv_out.1.weight" in sd else 3
    with torch.device(device):
        for name, cin, up in (("aux2", 16, 4), ("aux3", 32, 8), ("aux4", 64, 16), ("aux5_4", 128, 32)):
            sd.update(_tensors(ConvBNReLU(cin, 128, 3), f"{name}.conv."))
            sd.update(_tensors(ConvBNReLU(128, up * up, 3), f"{name}.conv_out.0.1."))
            sd.update(_tensors(nn.Conv2d(up * up, classes, 1), f"{name}.conv_out.1."))
    return sd


def torchseg_layout(model: nn.Module) -> dict[str, torch.Tensor]:
    """Training layout of its engine's save_checkpoint: the auxiliary heads heads.0 / heads.1."""
    from bisenet_deploy.model.torchseg import LAYOUT, Head

    sd = dict(model.state_dict())
    device = next(iter(sd.values())).device
    classes = model.heads[2].conv_1x1.out_channels
    with torch.device(device):
        for i in (0, 1):
            sd.update(_tensors(Head(128, LAYOUT[model.config][2], classes, 1), f"heads.{i}."))
    return sd


LAYOUTS = {
    "bisenet_v1": lambda model: dict(model.state_dict()),
    "ooooverflow": ooooverflow_layout,
    "coincheung_v1": coincheung_v1_layout,
    "coincheung_v2": coincheung_v2_layout,
    "face_parsing": coincheung_v1_layout,  # same auxiliary outputs conv_out16 / conv_out32
    "torchseg": torchseg_layout,
}


def randomize(model: nn.Module, seed: int, size_hw=(64, 128)) -> nn.Module:
    """Seeded weights with BatchNorm statistics taken from data, so logits have a realistic
    scale (order 1) and the default tolerance is a real test; eval mode."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() > 1:
                p.copy_(torch.randn(p.shape, generator=gen) * (2.0 / p[0].numel()) ** 0.5)
            else:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.1)
        bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
        for bn in bns:
            bn.weight.copy_(torch.rand(bn.num_features, generator=gen) + 0.5)
            bn.reset_running_stats()
            bn.momentum = None  # cumulative average over the calibration batch
        model.train()
        model(torch.randn(4, 3, *size_hw, generator=gen))
        for bn in bns:
            bn.momentum = 0.1
            # The pooled 1x1 BatchNorms see one value per image: keep a variance floor so no
            # channel divides by ~sqrt(eps), which no trained network does either.
            bn.running_var.clamp_(min=1e-2)
    return model.eval()


def upstream_state_dict(family: str, params: dict, device="cpu", seed: int = 0) -> tuple[nn.Module, dict]:
    """(our network, its weights in the family's upstream layout); ``meta`` builds no weights."""
    with torch.device(device):
        model = get_family(family).build(**params)
    if device != "meta":
        randomize(model, seed)
    return model, LAYOUTS[family](model)
