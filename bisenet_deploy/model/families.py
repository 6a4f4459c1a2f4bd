"""Model families: how to recognise a state_dict, rebuild its network and describe it.

A family knows one code base's parameter layout. Detection infers constructor arguments
from the weights (class count, backbone, architecture variant), builds the network on the
``meta`` device (no memory, no download) and compares the key sets and shapes: the family
whose layout matches exactly wins, and near misses are reported by name (see ``matching``).

Built-in families: ``bisenet_v1`` (below) and one module per public code base
(``ooooverflow``, ``coincheung_v1``, ``coincheung_v2``, ``face_parsing``), imported on first use.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ..spec import IMAGENET_MEAN, IMAGENET_STD

StateDict = Mapping[str, torch.Tensor]


class LayoutError(ValueError):
    """The state_dict does not have this family's layout (message says why)."""


@dataclass(frozen=True)
class Family:
    """One supported code base.

    Attributes:
        name: key stored as ``ModelSpec.arch`` and accepted by ``--arch``.
        title: human-readable name with the source code base.
        infer: state_dict -> (constructor kwargs, reasons); raises LayoutError when the
            weights cannot belong to this family.
        build: kwargs -> nn.Module whose ``eval()`` forward returns logits (N, C, H, W).
        spec_fields: kwargs -> ModelSpec fields the family implies (normalization, color
            order, class names, input size, size divisor, variant, backbone).
        clean: state_dict -> state_dict with quirks removed (duplicate aliases, unused
            backbone classifiers...); reasons for each removal are appended to the list.
        example: constructor kwargs of a typical network of the family; when ``infer``
            rejects a state_dict, its key names are compared with this layout to rank
            how close the family came.
        refine: (params, options, checkpoint path, reasons) -> params: what the weights
            cannot tell (a configuration with identical weights, an output form) from the
            user's options (``--variant``, ``--native-resolution``) and the file's path;
            families without such choices refuse options.
    """

    name: str
    title: str
    infer: Callable[[StateDict], tuple[dict[str, Any], list[str]]]
    build: Callable[..., nn.Module]
    spec_fields: Callable[[dict[str, Any]], dict[str, Any]]
    clean: Callable[[dict[str, torch.Tensor], list[str]], dict[str, torch.Tensor]] = field(
        default=lambda sd, notes: sd
    )
    example: Mapping[str, Any] = field(default_factory=dict)
    refine: Callable[[dict[str, Any], dict[str, Any], Any, list[str]], dict[str, Any]] | None = None


#: The command-line flag of each build option, for messages.
OPTION_FLAGS = {"variant": "--variant", "native": "--native-resolution"}


def refine_params(family: Family, params: dict[str, Any], options: dict[str, Any], path: Any,
                  reasons: list[str]) -> dict[str, Any]:
    """Apply build options (and path hints) through the family's ``refine``."""
    options = {k: v for k, v in options.items() if v not in (None, False)}
    if family.refine is None:
        if options:
            from ..errors import CheckpointError

            raise CheckpointError(f"{', '.join(OPTION_FLAGS.get(k, '--' + k.replace('_', '-')) for k in options)} "
                                  f"{'do' if len(options) > 1 else 'does'} not apply to {family.name} checkpoints")
        return params
    return family.refine(dict(params), options, path, reasons)


_FAMILIES: dict[str, Family] = {}


def register(family: Family) -> Family:
    if family.name in _FAMILIES:
        raise ValueError(f"family {family.name!r} registered twice")
    _FAMILIES[family.name] = family
    return family


def families() -> dict[str, Family]:
    """All registered families by name (importing the built-in ones on first use)."""
    _load_builtin()
    return dict(_FAMILIES)


def get_family(name: str) -> Family:
    all_families = families()
    if name not in all_families:
        raise KeyError(f"unknown architecture {name!r}; supported: {', '.join(sorted(all_families))}")
    return all_families[name]


#: Modules of the other built-in families; each registers its family when imported.
_BUILTIN_MODULES = ("ooooverflow", "coincheung_v1", "coincheung_v2", "face_parsing", "torchseg")


def _load_builtin() -> None:
    # Imported lazily: the registry is cheap to import, the networks are built on demand.
    if "bisenet_v1" not in _FAMILIES:
        register(BISENET_V1)
    for module in _BUILTIN_MODULES:
        importlib.import_module(f"{__package__}.{module}")


# --- helpers shared by family definitions -------------------------------------------------


def count_blocks(sd: StateDict, prefix: str) -> int:
    """Number of numbered children under ``prefix`` (e.g. ``layer3.`` -> blocks 0..n-1)."""
    pattern = re.compile(re.escape(prefix) + r"(\d+)\.")
    indices = {int(m.group(1)) for key in sd if (m := pattern.match(key))}
    return max(indices) + 1 if indices else 0


def resnet_name(sd: StateDict, prefix: str) -> str:
    """Identify a torchvision ResNet depth from the block counts under ``prefix``."""
    counts = tuple(count_blocks(sd, f"{prefix}layer{i}.") for i in range(1, 5))
    bottleneck = f"{prefix}layer1.0.conv3.weight" in sd
    table = {
        ((2, 2, 2, 2), False): "resnet18",
        ((3, 4, 6, 3), False): "resnet34",
        ((3, 4, 6, 3), True): "resnet50",
        ((3, 4, 23, 3), True): "resnet101",
    }
    try:
        return table[(counts, bottleneck)]
    except KeyError:
        kind = "bottleneck" if bottleneck else "basic"
        raise LayoutError(
            f"context path under '{prefix}' has {kind} blocks {counts}, which is no supported "
            "ResNet (18, 34, 50, 101)"
        ) from None


def require(sd: StateDict, key: str) -> torch.Tensor:
    if key not in sd:
        raise LayoutError(f"key '{key}' is missing")
    return sd[key]


def drop_prefixed(
    sd: dict[str, torch.Tensor], prefixes: tuple[str, ...], notes: list[str], why: str
) -> dict[str, torch.Tensor]:
    """Remove keys under ``prefixes`` (modules the eval forward never uses), with a note."""
    kept = {k: v for k, v in sd.items() if not k.startswith(prefixes)}
    dropped = len(sd) - len(kept)
    if dropped:
        names = sorted({p.rstrip(".") for p in prefixes if any(k.startswith(p) for k in sd)})
        notes.append(f"ignored {', '.join(names)} ({dropped} tensors): {why}")
    return kept


# --- bisenet_v1: our own layout and the seed sketch's -------------------------------------


def _infer_bisenet_v1(sd: StateDict) -> tuple[dict[str, Any], list[str]]:
    final = require(sd, "final_conv.weight")
    require(sd, "spatial_path.0.0.weight")
    require(sd, "attention_refinement_module_16x.conv_1x1.weight")
    if "context_path.xception.conv1.conv.weight" in sd:
        counts = tuple(count_blocks(sd, f"context_path.xception.layer{i}.") for i in (1, 2, 3))
        if counts != (4, 8, 4):
            raise LayoutError(f"context_path.xception has {counts} blocks per stage, not Xception-39's (4, 8, 4)")
        backbone = "xception39"
    else:
        backbone = resnet_name(sd, "context_path.")
    if "feature_fusion_module.conv_1x1.weight" in sd:
        variant = "seed"
        why = "FFM has one shared 'conv_1x1' (the seed sketch's FFM: conv applied twice, ReLU gate)"
    elif "feature_fusion_module.attention.0.weight" in sd:
        variant = "paper"
        why = "FFM has two attention convolutions with sigmoid gate (paper FFM)"
    else:
        raise LayoutError("feature_fusion_module has neither 'conv_1x1' nor 'attention.0'")
    params = {"num_classes": int(final.shape[0]), "backbone": backbone, "variant": variant}
    reasons = [
        f"final_conv has {params['num_classes']} output channels",
        f"context_path block counts match {backbone}",
        why,
    ]
    return params, reasons


def _build_bisenet_v1(**params: Any) -> nn.Module:
    from .bisenet import BiSeNet

    return BiSeNet(**params)


def _bisenet_v1_spec(params: dict[str, Any]) -> dict[str, Any]:
    return {
        "backbone": params["backbone"],
        "variant": params["variant"],
        "num_classes": params["num_classes"],
        "color_order": "RGB",
        "mean": IMAGENET_MEAN,
        "std": IMAGENET_STD,
        # The seed's virtual-background app trains and runs at 512x512.
        "input_size": (512, 512) if params["variant"] == "seed" else (512, 1024),
        "size_divisor": 1,
    }


BISENET_V1 = Family(
    name="bisenet_v1",
    title="BiSeNet V1 (bisenet-deploy and the seed sketch / noisrucer virtual-background)",
    infer=_infer_bisenet_v1,
    build=_build_bisenet_v1,
    spec_fields=_bisenet_v1_spec,
    example={"num_classes": 19},
)
