"""Family ``torchseg``: BiSeNet checkpoints of the paper's first author, ycszen/TorchSeg.

Configurations ``model/bisenet/cityscapes.bisenet.{R18,R18.speed,R101,X39,X39.speed}``:

* context path: its own ResNet-18, ResNet-101 with a deep stem (3x3 convs 3->64->64->128
  instead of one 7x7), or Xception-39 (``xception.py``); blocks reversed, the last two
  refined by ARMs (``arms``: 3x3 ConvBnRelu, channel attention from a pooled 1x1 ConvBnRelu
  and a sigmoid) with a global context added in (``global_context``: pool, 1x1 ConvBnRelu,
  bilinear broadcast), each stage upsampled (bilinear, ``align_corners=True``) and refined
  by a 3x3 ConvBnRelu (``refines``);
* spatial path: 7x7 stride-2, two 3x3 stride-2 and a 1x1 to 128 channels, all ConvBnRelu;
* FFM (``ffm``): concat, 1x1 ConvBnRelu, channel attention (pool, 1x1 + ReLU, 1x1, sigmoid,
  no BN), ``x + x * attn``;
* head (``heads.2``): 3x3 ConvBnRelu to 64 (256 for R101) and a 1x1 to the classes, x8
  bilinear (``align_corners=True``) -- except in the ``.speed`` configurations, whose head
  does not upsample: scores at 1/8 of the input.

What the exported graph computes (its ``eval.py``, exactly):

* full configurations: ``log_softmax`` of the upsampled head, as the network returns it;
* ``.speed``: its evaluator turns the 1/8 ``log_softmax`` into probabilities (``exp``) and
  resizes that map to the image with ``cv2.INTER_LINEAR`` before the argmax; the graph does
  the same (bilinear, half-pixel centres, which is what ``cv2.resize`` does when enlarging),
  so its scores are probabilities at the input size. ``native=True`` keeps the network's own
  1/8 ``log_softmax`` instead (faster; the runtime upsamples the labels).

Checkpoints come from its engine's ``save_checkpoint``: ``{'model': state_dict ('module.'
stripped), 'optimizer', 'epoch', 'iteration'}``, in the legacy serialization of the torch of
2019-2020. Its ``eval.py`` loads them with ``strict=False``; the auxiliary heads
(``heads.0``, ``heads.1``) are ignored here.

Telling the configurations apart from the weights: ResNet depth and stem from the context
path; R18 and R18.speed by the auxiliary heads of a training checkpoint (256 vs 128 middle
channels). X39 and X39.speed have identical weights: the configuration folder name in the
checkpoint's path decides (``.../cityscapes.bisenet.X39.speed/...``, where its engine saves
snapshots), else X39; ``--variant X39.speed`` states it.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.resnet import BasicBlock, Bottleneck

from ..spec import IMAGENET_MEAN, IMAGENET_STD, Upsample
from .datasets import CITYSCAPES_CLASSES
from .families import Family, LayoutError, StateDict, count_blocks, drop_prefixed, register, require
from .xception import ConvBnRelu, Xception39

CONFIGS = ("R18", "R18.speed", "R101", "X39", "X39.speed")
#: configuration -> (backbone, deep stem, aux head middle channels, main head middle channels)
LAYOUT = {
    "R18": ("resnet18", False, 256, 64),
    "R18.speed": ("resnet18", False, 128, 64),
    "R101": ("resnet101", True, 256, 256),
    "X39": ("xception39", False, 128, 64),
    "X39.speed": ("xception39", False, 128, 64),
}
CONV_CHANNEL = 128
AUX_HEADS = ("heads.0.", "heads.1.")


class TorchSegResNet(nn.Module):
    """TorchSeg's ResNet: torchvision's block names, optional deep stem; returns all four stages."""

    def __init__(self, depth: str, deep_stem: bool) -> None:
        super().__init__()
        block, counts = {"resnet18": (BasicBlock, (2, 2, 2, 2)), "resnet101": (Bottleneck, (3, 4, 23, 3))}[depth]
        width = 64
        if deep_stem:
            self.conv1 = nn.Sequential(
                nn.Conv2d(3, width, 3, 2, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True),
                nn.Conv2d(width, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True),
                nn.Conv2d(width, width * 2, 3, 1, 1, bias=False),
            )
            self.inplanes = width * 2
        else:
            self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
            self.inplanes = 64
        self.bn1 = nn.BatchNorm2d(self.inplanes)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        for i, (planes, n) in enumerate(zip((64, 128, 256, 512), counts), start=1):
            setattr(self, f"layer{i}", self._stage(block, planes, n, stride=1 if i == 1 else 2))
        self.channels = tuple(p * block.expansion for p in (64, 128, 256, 512))

    def _stage(self, block: type, planes: int, blocks: int, stride: int) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(nn.Conv2d(self.inplanes, planes * block.expansion, 1, stride, bias=False),
                                       nn.BatchNorm2d(planes * block.expansion))
        layers = [block(self.inplanes, planes, stride, downsample)]
        self.inplanes = planes * block.expansion
        layers += [block(self.inplanes, planes) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        blocks = []
        for i in range(1, 5):
            x = getattr(self, f"layer{i}")(x)
            blocks.append(x)
        return blocks


class XceptionContext(Xception39):
    """Xception-39 returning its three stages as TorchSeg's ``xception39`` does."""

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:  # type: ignore[override]
        return list(super().forward(x))


def _pool(x: torch.Tensor) -> torch.Tensor:
    # AdaptiveAvgPool2d(1), written as a mean so the graph works at any input size.
    return x.mean(dim=(2, 3), keepdim=True)


class PooledConv(nn.Module):
    """``Sequential(AdaptiveAvgPool2d(1), ConvBnRelu)``: keys ``1.conv``, ``1.bn``."""

    def __init__(self, block: nn.Module) -> None:
        super().__init__()
        self.add_module("1", block)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return getattr(self, "1")(_pool(x))


class AttentionRefinement(nn.Module):
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv_3x3 = ConvBnRelu(cin, cout, 3, 1, 1)
        self.channel_attention = PooledConv(ConvBnRelu(cout, cout, 1, has_relu=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        fm = self.conv_3x3(x)
        return fm * torch.sigmoid(self.channel_attention(fm))


class FeatureFusion(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv_1x1 = ConvBnRelu(channels, channels, 1)
        self.channel_attention = nn.Module()
        self.channel_attention.add_module("1", ConvBnRelu(channels, channels, 1, has_bn=False))
        self.channel_attention.add_module("2", ConvBnRelu(channels, channels, 1, has_bn=False, has_relu=False))

    def forward(self, x1: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
        fm = self.conv_1x1(torch.cat([x1, x2], dim=1))
        att = getattr(self.channel_attention, "1")(_pool(fm))
        att = torch.sigmoid(getattr(self.channel_attention, "2")(att))
        return fm + fm * att


class Head(nn.Module):
    def __init__(self, cin: int, mid: int, classes: int, scale: int) -> None:
        super().__init__()
        self.conv_3x3 = ConvBnRelu(cin, mid, 3, 1, 1)
        self.conv_1x1 = nn.Conv2d(mid, classes, 1)
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv_1x1(self.conv_3x3(x))
        if self.scale > 1:
            h, w = out.shape[-2:]
            out = F.interpolate(out, size=(h * self.scale, w * self.scale), mode="bilinear", align_corners=True)
        return out


def _up(x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return F.interpolate(x, size=like.shape[-2:], mode="bilinear", align_corners=True)


class TorchSegBiSeNet(nn.Module):
    """TorchSeg's BiSeNet for one configuration; ``eval()`` returns what its eval.py scores."""

    def __init__(self, num_classes: int, config: str = "R18", native: bool = False) -> None:
        super().__init__()
        if config not in LAYOUT:
            raise ValueError(f"unknown TorchSeg configuration {config!r}; choose from {', '.join(CONFIGS)}")
        backbone, deep_stem, _, mid = LAYOUT[config]
        self.config, self.speed, self.native = config, config.endswith(".speed"), native
        self.context_path = XceptionContext() if backbone == "xception39" else TorchSegResNet(backbone, deep_stem)
        c_last, c_prev = self.context_path.channels[-1], self.context_path.channels[-2]
        self.spatial_path = nn.Module()
        for name, block in (("conv_7x7", ConvBnRelu(3, 64, 7, 2, 3)), ("conv_3x3_1", ConvBnRelu(64, 64, 3, 2, 1)),
                            ("conv_3x3_2", ConvBnRelu(64, 64, 3, 2, 1)), ("conv_1x1", ConvBnRelu(64, CONV_CHANNEL, 1))):
            self.spatial_path.add_module(name, block)
        self.global_context = PooledConv(ConvBnRelu(c_last, CONV_CHANNEL, 1))
        self.arms = nn.ModuleList([AttentionRefinement(c_last, CONV_CHANNEL), AttentionRefinement(c_prev, CONV_CHANNEL)])
        self.refines = nn.ModuleList([ConvBnRelu(CONV_CHANNEL, CONV_CHANNEL, 3, 1, 1) for _ in range(2)])
        self.ffm = FeatureFusion(CONV_CHANNEL * 2)
        # heads.0 / heads.1 supervise training only (no parameters here: their keys are ignored)
        self.heads = nn.ModuleList([nn.Identity(), nn.Identity(),
                                    Head(CONV_CHANNEL * 2, mid, num_classes, 1 if self.speed else 8)])

    def _spatial(self, x: torch.Tensor) -> torch.Tensor:
        sp = self.spatial_path
        return sp.conv_1x1(sp.conv_3x3_2(sp.conv_3x3_1(sp.conv_7x7(x))))

    @property
    def upsample_rule(self) -> Upsample | None:
        """Full configurations: ``heads.2`` resizes its logits to 8x their size
        (``align_corners=True``), then ``log_softmax``. ``.speed``: eval.py resizes the
        probabilities to the input (half-pixel). Native speed heads have no upsample."""
        if self.speed:
            return None if self.native else Upsample(align_corners=False, target="input", factor=8,
                                                     scores="probabilities")
        return Upsample(align_corners=True, target="factor", factor=8, then="log_softmax")

    def low_resolution(self, x: torch.Tensor) -> torch.Tensor:
        """What the head interpolates, at 1/8: logits, or a speed head's probabilities."""
        head = self.heads[2]
        scores = head.conv_1x1(head.conv_3x3(self._fused(x)))
        return F.log_softmax(scores, dim=1).exp() if self.speed else scores  # as forward computes it

    def _fused(self, x: torch.Tensor) -> torch.Tensor:
        spatial = self._spatial(x)
        blocks = list(reversed(self.context_path(x)))
        last = _up(self.global_context(blocks[0]), blocks[0])
        for i, (arm, refine) in enumerate(zip(self.arms, self.refines)):
            fm = arm(blocks[i]) + last
            last = refine(_up(fm, blocks[i + 1]))
        return self.ffm(spatial, last)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scores = F.log_softmax(self.heads[2](self._fused(x)), dim=1)
        if not self.speed or self.native:
            return scores
        # eval.py: exp(score), then cv2.resize(INTER_LINEAR) of the score map to the image
        return F.interpolate(scores.exp(), size=x.shape[-2:], mode="bilinear", align_corners=False)


# --- detection --------------------------------------------------------------------------------


def _backbone(sd: StateDict) -> tuple[str, bool, str]:
    if "context_path.layer1.0.residual_branch.0.conv1.weight" in sd:
        counts = tuple(count_blocks(sd, f"context_path.layer{i}.") for i in (1, 2, 3))
        if counts != (4, 8, 4):
            raise LayoutError(f"Xception context path has {counts} blocks per stage, not Xception-39's (4, 8, 4)")
        return "xception39", False, "context path blocks 'residual_branch' (4, 8, 4): Xception-39"
    deep = "context_path.conv1.0.weight" in sd
    counts = tuple(count_blocks(sd, f"context_path.layer{i}.") for i in range(1, 5))
    bottleneck = "context_path.layer1.0.conv3.weight" in sd
    table = {((2, 2, 2, 2), False): "resnet18", ((3, 4, 23, 3), True): "resnet101"}
    depth = table.get((counts, bottleneck))
    if depth is None:
        raise LayoutError(f"TorchSeg's BiSeNet uses ResNet-18, ResNet-101 or Xception-39; the context path has "
                          f"{'bottleneck' if bottleneck else 'basic'} blocks {counts}")
    stem = "deep stem (three 3x3 convs)" if deep else "7x7 stem"
    return depth, deep, f"context path blocks {counts} with a {stem}: {depth}"


def _infer(sd: StateDict) -> tuple[dict[str, Any], list[str]]:
    require(sd, "spatial_path.conv_7x7.conv.weight")
    require(sd, "global_context.1.conv.weight")
    require(sd, "ffm.conv_1x1.conv.weight")
    classifier = require(sd, "heads.2.conv_1x1.weight")
    backbone, deep, why = _backbone(sd)
    mid = int(require(sd, "heads.2.conv_3x3.conv.weight").shape[0])
    aux = sd.get("heads.0.conv_3x3.conv.weight")
    aux_mid = None if aux is None else int(aux.shape[0])
    candidates = [c for c, (b, d, a, m) in LAYOUT.items()
                  if b == backbone and d == deep and m == mid and (aux_mid is None or a == aux_mid)]
    if not candidates:
        raise LayoutError(f"a {backbone} context path with a {mid}-channel head"
                          + (f" and {aux_mid}-channel auxiliary heads" if aux_mid else "")
                          + " is none of TorchSeg's configurations " + ", ".join(CONFIGS))
    reasons = ["modules 'spatial_path.conv_7x7', 'global_context', 'arms', 'refines', 'ffm', 'heads' are "
               "TorchSeg's BiSeNet", why, f"head 'heads.2' has {int(classifier.shape[0])} classes"]
    if len(candidates) == 1:
        config = candidates[0]
        reasons.append(f"configuration {config}" + (f" (auxiliary heads with {aux_mid} channels)" if aux_mid else ""))
    else:
        config = candidates[0]  # the full configuration; the path hint or --variant may say otherwise
        reasons.append(f"{' and '.join(candidates)} have identical weights: {config} assumed (the configuration "
                       f"folder in the path, or --variant, says which)")
    return {"num_classes": int(classifier.shape[0]), "config": config, "ambiguous": candidates}, reasons


def _clean(sd: dict[str, torch.Tensor], notes: list[str]) -> dict[str, torch.Tensor]:
    return drop_prefixed(sd, AUX_HEADS, notes, "auxiliary heads its training uses and eval.py ignores")


def _spec(params: dict[str, Any]) -> dict[str, Any]:
    classes = params["num_classes"]
    config = params["config"]
    backbone = LAYOUT[config][0]
    speed = config.endswith(".speed")
    return {
        "backbone": backbone,
        "variant": config + ("+native" if params.get("native") and speed else ""),
        "num_classes": classes,
        "class_names": CITYSCAPES_CLASSES if classes == len(CITYSCAPES_CLASSES) else (),
        # its dataset flips OpenCV's BGR to RGB before normalizing with ImageNet statistics
        "color_order": "RGB",
        "mean": IMAGENET_MEAN,
        "std": IMAGENET_STD,
        "input_size": (768, 1536) if speed else (1024, 2048),
        # the full head multiplies 1/8 by 8; the speed graph resizes to the input itself
        "size_divisor": 8 if not speed or params.get("native") else 1,
        "output_stride": 8 if speed and params.get("native") else 1,
        "extra": {"scores": "probabilities (exp of log_softmax) resized to the input, as eval.py"
                  if speed and not params.get("native") else "log_softmax"},
    }


def _refine(params: dict[str, Any], options: dict[str, Any], path: Any, reasons: list[str]) -> dict[str, Any]:
    """--variant names the configuration; else the configuration folder in the checkpoint's
    path settles X39 vs X39.speed; --native-resolution keeps a speed head's 1/8 scores."""
    from ..errors import CheckpointError

    unknown = set(options) - {"variant", "native"}
    if unknown:
        raise CheckpointError(f"{', '.join(sorted(unknown))} does not apply to TorchSeg checkpoints")
    candidates = params.pop("ambiguous", None) or [params["config"]]
    wanted = options.get("variant")
    if wanted is not None:
        if wanted not in candidates:
            raise CheckpointError(f"--variant {wanted}: these weights are TorchSeg {' or '.join(candidates)}"
                                  + ("" if wanted in CONFIGS else f" (configurations: {', '.join(CONFIGS)})"))
        params["config"] = wanted
        reasons.append(f"--variant {wanted}")
    elif len(candidates) > 1:
        from pathlib import Path

        parts = set(Path(path).parts) | set(Path(path).resolve().parts)
        named = [c for c in candidates if any(part.endswith(f"bisenet.{c}") for part in parts)]
        hinted = max(named, key=len) if named else None
        if hinted:
            params["config"] = hinted
            reasons.append(f"the path names the configuration folder cityscapes.bisenet.{hinted}")
    if options.get("native"):
        if not params["config"].endswith(".speed"):
            raise CheckpointError(f"--native-resolution keeps a .speed head's 1/8 scores; {params['config']} "
                                  "upsamples inside the network")
        params["native"] = True
        reasons.append("--native-resolution: scores at 1/8 of the input (the runtime upsamples the labels)")
    return params


def _build(num_classes: int, config: str = "R18", native: bool = False, ambiguous: Any = None) -> nn.Module:
    return TorchSegBiSeNet(num_classes, config, native)


FAMILY = register(
    Family(
        name="torchseg",
        title="BiSeNet of ycszen/TorchSeg (the paper's authors): R18, R18.speed, R101, X39, X39.speed",
        infer=_infer,
        build=_build,
        spec_fields=_spec,
        clean=_clean,
        example={"num_classes": 19, "config": "R18"},
        refine=_refine,
    )
)
