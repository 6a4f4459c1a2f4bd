"""Which family does a state_dict belong to? Exact layout match, or a helpful near miss.

Every family infers its constructor arguments from the weights, removes the quirks its code
base writes (aliases, unused modules), builds its network on the ``meta`` device (no memory,
no download) and compares key names and shapes. Exactly one exact fit wins; otherwise the
error names the closest families and the keys that did not fit, grouped by module.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch

from ..errors import CheckpointError
from .families import Family, LayoutError, families, get_family


@dataclass
class _Fit:
    family: Family
    params: dict[str, Any] = field(default_factory=dict)
    reasons: list[str] = field(default_factory=list)
    state_dict: dict[str, torch.Tensor] = field(default_factory=dict)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: list[str] = field(default_factory=list)
    error: str = ""
    score: float = 0.0
    expected_keys: set[str] = field(default_factory=set)
    given_keys: set[str] = field(default_factory=set)
    nested_prefix: str = ""  # the module of ours that holds most of the given keys, e.g. a backbone
    nested_fraction: float = 0.0

    @property
    def exact(self) -> bool:
        return not (self.error or self.missing or self.unexpected or self.mismatched)

    def describe(self, limit: int = 4) -> str:
        parts = [self.error] if self.error else []
        for label, keys, universe in (
            ("missing", self.missing, self.expected_keys),
            ("unexpected", self.unexpected, self.given_keys),
        ):
            if keys:
                parts.append(f"{label} {summarize_keys(keys, limit, universe)}")
        if self.mismatched:
            more = f" (+{len(self.mismatched) - limit} more)" if len(self.mismatched) > limit else ""
            parts.append(f"wrong shape {', '.join(self.mismatched[:limit])}{more}")
        # Floor, so a near miss never reads as "100%".
        return f"{self.family.name} ({math.floor(self.score * 100)}% of keys fit): " + "; ".join(parts)


def summarize_keys(keys: list[str], limit: int = 4, universe: set[str] | None = None) -> str:
    """Keys grouped by top-level module: ``ffm.* (12 keys)`` reads better than 12 names.

    ``universe`` (all keys of that side) tells a whole missing module (``head.*``) from a
    part of one (``ffm.{conv,bn}.*``).
    """
    groups: dict[str, list[str]] = {}
    for key in keys:
        groups.setdefault(key.split(".", 1)[0], []).append(key)
    labels = []
    for top, members in groups.items():
        if len(members) == 1:
            labels.append(members[0])
            continue
        if universe is not None and len(members) == sum(k.startswith(top + ".") for k in universe):
            labels.append(f"{top}.* ({len(members)} keys)")
            continue
        common = members[0].split(".")
        for key in members[1:]:
            parts = key.split(".")
            n = 0
            while n < min(len(common), len(parts)) and common[n] == parts[n]:
                n += 1
            common = common[:n]
        subs = list(dict.fromkeys(k.split(".")[1] for k in members))
        if len(common) == 1 and len(subs) <= 2:
            common = [common[0], "{" + ",".join(subs) + "}"]  # e.g. ffm.{conv,bn}.*
        labels.append(f"{'.'.join(common)}.* ({len(members)} keys)")
    more = f" (+{len(labels) - limit} more)" if len(labels) > limit else ""
    return ", ".join(labels[:limit]) + more


def _compare_keys(
    fit: _Fit, given: dict[str, torch.Tensor], expected: dict[str, torch.Tensor], shapes: bool = True
) -> None:
    # Checkpoints from PyTorch < 0.4.1 lack BatchNorm's counter; it does not affect eval.
    fit.missing = [k for k in expected if k not in given and not k.endswith("num_batches_tracked")]
    fit.unexpected = [k for k in given if k not in expected]
    fit.mismatched = [
        f"{k} {tuple(given[k].shape)} vs {tuple(expected[k].shape)}"
        for k in expected
        if shapes and k in given and tuple(given[k].shape) != tuple(expected[k].shape)
    ]
    fit.expected_keys = {k for k in expected if not k.endswith("num_batches_tracked")}
    fit.given_keys = set(given)
    union = len(set(expected) | set(given)) or 1
    fit.score = (len(set(expected) & set(given)) - len(fit.mismatched)) / union
    fit.nested_prefix, fit.nested_fraction = _nested_fit(given, expected)


def _nested_fit(given: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> tuple[str, float]:
    """The prefix under which most given keys sit in our layout, same shape: a bare backbone
    (an ImageNet ResNet-18's ``layer1.0.conv1.weight`` is our ``context_path.layer1.0.conv1.weight``)."""
    names = [k for k in given if not k.endswith("num_batches_tracked")]
    if not names:
        return "", 0.0
    hits: dict[str, int] = {}
    for key in names:
        shape = tuple(given[key].shape)
        for candidate, tensor in expected.items():
            if candidate != key and candidate.endswith("." + key) and tuple(tensor.shape) == shape:
                prefix = candidate[: -len(key)]
                hits[prefix] = hits.get(prefix, 0) + 1
    if not hits:
        return "", 0.0
    prefix = max(hits, key=lambda p: hits[p])
    return prefix, hits[prefix] / len(names)


def _fit(family: Family, sd: dict[str, torch.Tensor]) -> _Fit:
    fit = _Fit(family)
    try:
        fit.params, fit.reasons = family.infer(sd)
        fit.state_dict = family.clean(dict(sd), fit.reasons)
        with torch.device("meta"):
            expected = family.build(**fit.params).state_dict()
    except LayoutError as exc:
        fit.error = str(exc)
        # Still rank the family by how many key names its reference layout shares, so a
        # near miss (say, a deleted head) is named as the closest family.
        with torch.device("meta"):
            reference = family.build(**family.example).state_dict()
        _compare_keys(fit, family.clean(dict(sd), []), reference, shapes=False)
        fit.missing = [k for k in fit.missing if f"'{k}'" not in fit.error]
        return fit
    _compare_keys(fit, fit.state_dict, expected)
    return fit


def match_family(sd: dict[str, torch.Tensor], arch: str | None = None) -> _Fit:
    """Find the family whose layout the state_dict has exactly; clear error otherwise."""
    if arch is not None:
        try:
            candidates = [get_family(arch)]
        except KeyError as exc:
            raise CheckpointError(str(exc.args[0])) from None
    else:
        candidates = list(families().values())
    fits = [_fit(f, sd) for f in candidates]
    exact = [f for f in fits if f.exact]
    if len(exact) == 1:
        return exact[0]
    if len(exact) > 1:
        names = ", ".join(f.family.name for f in exact)
        raise CheckpointError(f"checkpoint layout fits several architectures ({names}); choose one with --arch")
    # Ties (often all 0%) are broken by how much of the checkpoint sits inside a family's
    # module, then by name, so the message is the same whichever order families registered in.
    fits.sort(key=lambda f: (-f.score, -f.nested_fraction, f.family.name))
    if arch is not None:
        raise CheckpointError(f"checkpoint does not fit --arch {arch}: {fits[0].describe()}")
    sample = ", ".join(list(sd)[:3])
    best = fits[0]
    if best.score == 0 and best.nested_fraction >= 0.8:
        module = best.nested_prefix.rstrip(".")
        raise CheckpointError(
            f"this is not a whole segmentation network (first keys: {sample}): "
            f"{best.nested_fraction:.0%} of its weights are the {module}.* module of {best.family.name}, "
            "e.g. an ImageNet backbone; export the trained BiSeNet checkpoint (spatial path, context path, heads)"
        )
    closest = " | ".join(f.describe(3) for f in fits[:2])
    raise CheckpointError(
        f"unknown checkpoint layout (first keys: {sample}); closest: {closest}. "
        "If it is a supported family, pass --arch to see what does not fit"
    )
