"""What training frameworks write next to the weights, read for the user's sake.

* **EMA weights** (timm's ``state_dict_ema``, MMEngine's ``ema_state_dict``, ``model_ema`` /
  ``ema`` of hand-written loops, a Lightning module's ``model_ema.*`` keys): the loader uses
  the checkpoint's main weights, which is what each of those code bases loads by default
  (MMEngine even swaps the averaged weights into ``state_dict`` when it saves); a note says
  which entry was used and which EMA entry was left.
* **Keys outside the network** of a saved training wrapper (a Lightning module's
  ``criterion.weight`` next to ``model.*``): dropped with a note, so the network's own keys
  still match exactly.
* **Networks of code bases we have no family for** (MMSegmentation's ``EncoderDecoder``:
  ``backbone.*`` / ``decode_head.*``): one line that names the code base and what is missing,
  instead of a key-by-key near miss.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

#: Top-level entries that hold exponential-moving-average weights, by the code that writes them.
EMA_KEYS = ("state_dict_ema", "ema_state_dict", "model_ema", "ema", "ema_model", "model_ema_state_dict",
            "ema_state")


def ema_note(obj: Any, where: str) -> str | None:
    """A note when ``obj`` (the checkpoint) holds EMA weights that were not the ones used."""
    if not isinstance(obj, Mapping):
        return None
    left = [k for k in EMA_KEYS if k in obj and obj[k] is not None and f"['{k}']" not in where]
    if not left:
        return None
    used = where.split(" ", 1)[0]
    return (f"the checkpoint also holds EMA weights under {', '.join(repr(k) for k in left)}: not used; the weights "
            f"used are {used}, what the training code's own loading reads by default")


def split_container(sd: dict, prefixes: tuple[str, ...]) -> tuple[dict, str, list[str]]:
    """A training wrapper saved whole: most keys under one container prefix (``model.``), a
    few beside it (a loss's class weights, an EMA copy under ``model_ema.``). Returns the keys
    under the prefix (prefix removed), the prefix, and the keys left out; unchanged when no
    prefix holds most keys."""
    for prefix in prefixes:
        inside = [k for k in sd if k.startswith(prefix)]
        # at least half: a Lightning module's model.* next to an equal model_ema.* copy
        if len(inside) * 2 >= len(sd) and len(inside) < len(sd):
            return {k[len(prefix):]: sd[k] for k in inside}, prefix, [k for k in sd if not k.startswith(prefix)]
    return sd, "", []


def left_out_note(container: str, left: list[str], summary: str) -> str:
    ema = [k for k in left if "ema" in k.split(".", 1)[0].lower()]
    why = "EMA weights, not used (the training code's own loading reads the main ones by default)" if ema else \
        "not part of the network (a loss's weights, metrics)"
    return f"used the keys under {container!r}; left out {len(left)} beside them: {summary}: {why}"


def _meta_text(meta: Mapping) -> str:
    for key in ("config", "cfg"):  # MMCV runners: meta['config']; MMEngine: meta['cfg'] (pretty text)
        if isinstance(meta.get(key), str):
            return meta[key]
    return ""


def foreign_network(obj: Any, sd: dict) -> str | None:
    """Why this checkpoint's network belongs to a code base we have no family for, or None."""
    meta = obj.get("meta") if isinstance(obj, Mapping) else None
    meta = meta if isinstance(meta, Mapping) else {}
    tops = {k.split(".", 1)[0] for k in sd}
    text = _meta_text(meta)
    # only what is MMSegmentation's own: another network trained under MMEngine gets the usual near miss
    if not ("mmseg_version" in meta or "decode_head" in tops or "EncoderDecoder" in text or "mmseg" in text):
        return None
    found = re.search(r"backbone\s*=\s*dict\(\s*type\s*=\s*['\"](\w+)['\"]", text) or \
        re.search(r"['\"]backbone['\"]\s*:\s*\{\s*['\"]type['\"]\s*:\s*['\"](\w+)['\"]", text)
    head = re.search(r"decode_head\s*=\s*dict\(\s*type\s*=\s*['\"](\w+)['\"]", text)
    what = "an MMSegmentation"
    net = f" {found.group(1)}" if found else ""
    parts = f"{net} backbone" + (f" + {head.group(1)} decode head" if head else "")
    layout = ", ".join(f"{t}.*" for t in sorted(tops)[:4])
    return (f"{what} checkpoint ({parts.strip()}: EncoderDecoder layout {layout}); bisenet-deploy has no family "
            f"for MMSegmentation's networks (missing: mmseg's{net or ' network'} modules and forward), so it cannot export a "
            "network that matches mmseg's own output: export it with MMDeploy (tools/deploy.py) instead")
