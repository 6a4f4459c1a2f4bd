"""Family ``face_parsing``: checkpoints of github.com/zllrunning/face-parsing.PyTorch.

That network is CoinCheung's BiSeNet of 2019 with the spatial path removed: the ResNet-18's
1/8 features take its place in the feature fusion. Parameter names and eval forward are
therefore those of ``coincheung_v1`` with ``head="legacy"``, ``fusion="mlp"`` and
``spatial_path=False``. Its forward returns ``(out, out16, out32)`` in eval mode too; its
test script takes ``[0]``, which is what we export (``conv_out16`` / ``conv_out32`` are
ignored). Its ``F.avg_pool2d(x, x.size()[2:])`` global pooling is written as a mean over H
and W, the same for every input size. 19 CelebAMask-HQ classes, ImageNet normalization of
RGB images, 512 x 512 input.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..spec import IMAGENET_MEAN, IMAGENET_STD
from .coincheung_v1 import AUX_HEADS, CoinCheungBiSeNetV1
from .datasets import FACE_PARSING_CLASSES
from .families import Family, LayoutError, StateDict, drop_prefixed, register, require, resnet_name


def _infer(sd: StateDict) -> tuple[dict[str, Any], list[str]]:
    require(sd, "ffm.convblk.conv.weight")
    require(sd, "ffm.conv1.weight")
    classifier = require(sd, "conv_out.conv_out.weight")
    if resnet_name(sd, "cp.resnet.") != "resnet18":
        raise LayoutError("face-parsing's context path is a ResNet-18")
    classes = int(classifier.shape[0])
    reasons = [
        "modules 'cp', 'ffm', 'conv_out' without a spatial path 'sp' are face-parsing.PyTorch's "
        "BiSeNet (ResNet 1/8 features replace the spatial path)",
        f"classifier 'conv_out.conv_out' has {classes} outputs",
    ]
    return {"num_classes": classes}, reasons


def _clean(sd: dict[str, torch.Tensor], notes: list[str]) -> dict[str, torch.Tensor]:
    return drop_prefixed(sd, AUX_HEADS, notes, "auxiliary outputs its test script discards")


def _spec(params: dict[str, Any]) -> dict[str, Any]:
    classes = params["num_classes"]
    return {
        "backbone": "resnet18",
        "variant": "face-parsing",
        "num_classes": classes,
        "class_names": FACE_PARSING_CLASSES if classes == len(FACE_PARSING_CLASSES) else (),
        "color_order": "RGB",
        "mean": IMAGENET_MEAN,
        "std": IMAGENET_STD,
        "input_size": (512, 512),
        "size_divisor": 1,
    }


def _build(num_classes: int) -> nn.Module:
    return CoinCheungBiSeNetV1(num_classes, head="legacy", fusion="mlp", spatial_path=False)


FAMILY = register(
    Family(
        name="face_parsing",
        title="BiSeNet of zllrunning/face-parsing.PyTorch (CelebAMask-HQ, 19 face parts)",
        infer=_infer,
        build=_build,
        spec_fields=_spec,
        clean=_clean,
        example={"num_classes": 19},
    )
)
