"""Safe loading of BiSeNet checkpoints -> (nn.Module, ModelSpec); family matching in ``matching``.

Safety: ``torch.load(weights_only=True)`` always, unless the caller passes ``trust=True``
(CLI ``--trust-checkpoint``). Training scripts often pickle their own objects next to the
weights (config parsers, argparse namespaces, loggers). Those classes are replaced by inert
placeholders (``ForeignObject``) registered with ``torch.serialization.safe_globals`` under
the original names: the tensors come out, no foreign module is imported and no foreign code
runs. Globals that PyTorch blocks outright (``os.system`` and friends) still fail.
"""

from __future__ import annotations

import pickle
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import CheckpointError
from ..fileio import sha256_file
from ..spec import ModelSpec
from .families import Family, refine_params
from .matching import match_family

#: Keys under which training code commonly nests the state_dict, in order of preference.
STATE_DICT_KEYS = (
    "state_dict",
    "model_state_dict",
    "model_state",
    "model",
    "net",
    "network",
    "module",
    "weights",
    "params",
    "model_ema",
    "ema",
)
#: Prefixes added by wrappers: DataParallel / DDP and torch.compile.
WRAPPER_PREFIXES = ("module.", "_orig_mod.")
#: Prefixes added when a whole training wrapper (e.g. a Lightning module) is saved.
CONTAINER_PREFIXES = ("model.", "net.", "network.")
#: Embedded spec written by our own training script (JSON string).
SPEC_KEY = "bisenet_deploy_spec"

_MAX_FOREIGN_GLOBALS = 64
_LEGACY_MAGIC = b"\x80\x02\x8a\x0al\xfc\x9cF\xf9 j\xa8P\x19"


class ForeignObject:
    """Inert stand-in for an object of a class that is not installed or not trusted.

    Keeps the constructor arguments and pickled state for inspection; never runs code.
    """

    _foreign_name = "?"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.args = args
        self.kwargs = kwargs
        self.state: Any = None

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def __repr__(self) -> str:
        return f"<foreign {self._foreign_name}>"


def _placeholder(qualified_name: str) -> type:
    short = qualified_name.rsplit(".", 1)[-1]
    return type(short, (ForeignObject,), {"_foreign_name": qualified_name})


@dataclass
class LoadedCheckpoint:
    """A rebuilt model in eval mode, its spec and what the loader did."""

    model: nn.Module
    spec: ModelSpec
    family: Family
    notes: list[str] = field(default_factory=list)


# --- reading the file ---------------------------------------------------------------------


def _sniff(path: Path) -> None:
    """Reject files that are clearly not torch checkpoints, with a helpful line."""
    if not path.exists():
        raise CheckpointError(f"checkpoint '{path}' not found")
    if path.is_dir():
        raise CheckpointError(f"'{path}' is a folder, not a checkpoint file")
    with open(path, "rb") as f:
        head = f.read(64)
    if not head:
        raise CheckpointError(f"checkpoint '{path}' is empty")
    if head.startswith(b"PK\x03\x04") or head.startswith(_LEGACY_MAGIC):
        return
    if head[:1] == b"\x08" and b"\x12" in head[2:4]:
        if path.suffix.lower() == ".onnx":
            raise CheckpointError(
                f"'{path}' is an ONNX model, not a PyTorch checkpoint; it needs no export "
                "(run it with onnxruntime, or give bisenet-export --precision/--engine to convert it)"
            )
        raise CheckpointError(
            f"'{path}' is an ONNX model, not a PyTorch checkpoint; rename it to "
            f"'{path.with_suffix('.onnx').name}' to use it as an ONNX model"
        )
    try:
        head.decode("utf-8")
        raise CheckpointError(f"'{path}' is a text file, not a PyTorch checkpoint")
    except UnicodeDecodeError:
        pass
    raise CheckpointError(
        f"'{path}' is not a PyTorch checkpoint (no torch.save zip or pickle header found)"
    )


def read_checkpoint(path: str | Path, trust: bool = False) -> tuple[Any, list[str]]:
    """Return the unpickled checkpoint object and the names of foreign globals replaced."""
    path = Path(path)
    _sniff(path)
    if trust:
        try:
            return torch.load(path, map_location="cpu", weights_only=False), []
        except ModuleNotFoundError as exc:
            raise CheckpointError(
                f"'{path}' pickles objects from module '{exc.name}', which is not installed; "
                "drop --trust-checkpoint to read the tensors safely without it"
            ) from None
        except Exception as exc:  # noqa: BLE001 - any unpickling failure is a bad file
            raise CheckpointError(f"cannot read checkpoint '{path}': {_first_line(exc)}") from None

    replaced: list[tuple[type, str]] = []
    for _ in range(_MAX_FOREIGN_GLOBALS):
        try:
            with torch.serialization.safe_globals(replaced):
                obj = torch.load(path, map_location="cpu", weights_only=True)
            return obj, [name for _, name in replaced]
        except pickle.UnpicklingError as exc:
            text = str(exc)
            match = re.search(r"Unsupported global: GLOBAL ([\w.]+)", text)
            if match is None:
                blocked = re.search(r"unsupported GLOBAL ([\w.]+) whose module ([\w.]+) is blocked", text)
                if blocked:
                    raise CheckpointError(
                        f"'{path}' calls {blocked.group(1)} when unpickled, which could run code; "
                        "refusing it. Pass --trust-checkpoint only if you trust its source"
                    ) from None
                raise CheckpointError(f"cannot read checkpoint '{path}': {_wo_reason(text)}") from None
            name = match.group(1)
            if _runs_code(name) or any(name == done for _, done in replaced):
                # Never stand in for these: a checkpoint that calls exec or os.system when
                # unpickled is hostile (and torch refuses builtins even when allowed).
                raise CheckpointError(
                    f"'{path}' calls {name} when unpickled, which could run code; refusing it. "
                    "Pass --trust-checkpoint only if you trust its source"
                ) from None
            replaced.append((_placeholder(name), name))
        except CheckpointError:
            raise
        except Exception as exc:  # noqa: BLE001 - corrupt zip, truncated file, ...
            raise CheckpointError(f"cannot read checkpoint '{path}': {_first_line(exc)}") from None
    raise CheckpointError(f"'{path}' pickles more than {_MAX_FOREIGN_GLOBALS} foreign classes")


#: Globals whose call runs code or touches the system: a pickle naming them is refused.
_CODE_MODULES = ("os", "posix", "nt", "subprocess", "sys", "shutil", "importlib", "runpy", "pickle", "marshal",
                 "socket", "ctypes", "code", "codeop", "pty", "webbrowser", "types", "io", "pathlib", "tempfile",
                 "multiprocessing", "threading", "signal", "asyncio", "urllib", "http", "ftplib", "smtplib")
_CODE_BUILTINS = ("exec", "eval", "compile", "__import__", "getattr", "setattr", "delattr", "open", "input",
                  "breakpoint", "globals", "locals", "vars", "memoryview", "exit", "quit", "help")


def _runs_code(qualified_name: str) -> bool:
    module, _, attr = qualified_name.rpartition(".")
    if module in ("", "builtins", "__builtin__"):  # torch names builtins without their module
        return attr in _CODE_BUILTINS
    return module.split(".")[0] in _CODE_MODULES


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _wo_reason(text: str) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    useful = [ln for ln in lines if not ln.startswith(("Weights only load failed", "Check the doc", "(1)", "(2)"))]
    return useful[0] if useful else (lines[0] if lines else "unreadable")


# --- finding the state_dict ---------------------------------------------------------------


def _is_tensor_mapping(obj: Any) -> bool:
    return isinstance(obj, Mapping) and len(obj) > 0 and all(isinstance(v, torch.Tensor) for v in obj.values())


def _module_state(obj: Any, prefix: str = "") -> dict[str, torch.Tensor]:
    """Tensors of a pickled nn.Module tree, real or rebuilt from placeholders."""
    if isinstance(obj, nn.Module):
        return {prefix + k: v for k, v in obj.state_dict().items()}
    state = obj.state if isinstance(obj, ForeignObject) else None
    if not isinstance(state, Mapping):
        return {}
    out: dict[str, torch.Tensor] = {}
    for group in ("_parameters", "_buffers"):
        for name, value in (state.get(group) or {}).items():
            if isinstance(value, torch.Tensor):
                out[prefix + name] = value.detach()
    for name, child in (state.get("_modules") or {}).items():
        if child is not None:
            out.update(_module_state(child, f"{prefix}{name}."))
    return out


def find_state_dict(obj: Any, where: str = "checkpoint") -> tuple[dict[str, torch.Tensor], str]:
    """Locate the model weights inside whatever the training code saved."""
    if _is_tensor_mapping(obj):
        return dict(obj), where
    if isinstance(obj, (nn.Module, ForeignObject)):
        sd = _module_state(obj)
        if sd:
            return sd, f"{where} (pickled module)"
    if isinstance(obj, Mapping):
        for key in STATE_DICT_KEYS:
            if key in obj:
                try:
                    return find_state_dict(obj[key], f"{where}['{key}']")
                except CheckpointError:
                    continue
        nested = [
            (k, v) for k, v in obj.items() if isinstance(v, (Mapping, nn.Module, ForeignObject))
        ]
        for key, value in nested:
            try:
                return find_state_dict(value, f"{where}['{key}']")
            except CheckpointError:
                continue
    raise CheckpointError(
        f"no model weights found in {where}: expected a state_dict or a dict holding one under "
        f"{', '.join(repr(k) for k in STATE_DICT_KEYS[:5])}, ..."
    )


def strip_prefixes(sd: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Remove DataParallel/DDP, torch.compile and container prefixes."""
    stripped: list[str] = []
    changed = True
    while changed:
        changed = False
        for prefix in WRAPPER_PREFIXES + CONTAINER_PREFIXES:
            if all(k.startswith(prefix) for k in sd):
                sd = {k[len(prefix):]: v for k, v in sd.items()}
                stripped.append(prefix)
                changed = True
    # Wrapper prefixes may also appear on only part of the keys (a partly wrapped model).
    for prefix in WRAPPER_PREFIXES:
        if any(k.startswith(prefix) for k in sd):
            sd = {k[len(prefix):] if k.startswith(prefix) else k: v for k, v in sd.items()}
            stripped.append(prefix)
    return sd, stripped


# --- public entry point -------------------------------------------------------------------


def load_checkpoint(path: str | Path, arch: str | None = None, trust: bool = False,
                    options: dict[str, Any] | None = None) -> LoadedCheckpoint:
    """Read a checkpoint safely, rebuild its network in eval mode and describe it.

    ``options``: choices the weights cannot tell, for families that have them
    (``variant``: a configuration with identical weights; ``native``: keep a smaller
    native output resolution); refused by families without such choices."""
    path = Path(path)
    obj, foreign = read_checkpoint(path, trust=trust)
    notes: list[str] = []
    if foreign:
        notes.append(f"ignored pickled objects of foreign classes: {', '.join(sorted(set(foreign)))}")
    sd, where = find_state_dict(obj)
    notes.append(f"weights found in {where} ({len(sd)} tensors)")
    sd, stripped = strip_prefixes(sd)
    if stripped:
        notes.append(f"stripped key prefixes {', '.join(repr(p) for p in stripped)}")
    fit = match_family(sd, arch)
    fit.params = refine_params(fit.family, fit.params, dict(options or {}), path, fit.reasons)
    notes.append(f"architecture {fit.family.name}: " + "; ".join(fit.reasons))

    model = fit.family.build(**fit.params)
    model.load_state_dict(fit.state_dict, strict=False)  # exactness checked by match_family
    model = model.float().eval()

    fields = fit.family.spec_fields(fit.params)
    embedded = obj.get(SPEC_KEY) if isinstance(obj, Mapping) else None
    if isinstance(embedded, str):
        saved = ModelSpec.from_json(embedded).to_dict()
        # Training metadata (class names, normalization, size) overrides family defaults,
        # but never the structure detected from the weights.
        for key in ("class_names", "input_size", "color_order", "mean", "std", "scale", "extra"):
            fields[key] = saved[key]
        notes.append("used the ModelSpec embedded in the checkpoint")
    extra = dict(fields.pop("extra", {}) or {})
    # The absolute path lets the benchmark find the PyTorch reference of an exported model;
    # the hash (checkpoint_sha256) tells whether the file there is still the same one.
    extra.update({"source": path.name, "checkpoint_path": str(path.resolve()), "detected": fit.reasons})
    spec = ModelSpec(arch=fit.family.name, checkpoint_sha256=sha256_file(path), extra=extra, **fields)
    return LoadedCheckpoint(model=model, spec=spec, family=fit.family, notes=notes)
