"""Safe loading of BiSeNet checkpoints -> (nn.Module, ModelSpec); family matching in ``matching``.

Safety: unless the caller passes ``trust=True`` (CLI ``--trust-checkpoint``), the pickle inside a
``.pth`` is read by ``unpickling``'s restricted unpickler: tensors and pure data (paths, dates,
numpy values, config containers) come out, foreign classes become inert ``ForeignObject``
stand-ins (no foreign module is imported, no foreign code runs), and a pickle that names a
global whose call has an effect (``os.system``, ``exec``, ...) is refused. ``.safetensors``
files hold no pickle at all.
"""

from __future__ import annotations

import struct
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import CheckpointError
from ..fileio import sha256_file
from ..spec import ModelSpec
from . import unpickling
from .families import Family, refine_params
from .frameworks import ema_note, foreign_network, left_out_note, split_container
from .matching import match_family, summarize_keys
from .unpickling import ForeignObject, RefusedGlobal, foreign_items

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
#: Embedded spec written by our own training script (JSON string; in a .safetensors file, a
#: header metadata entry of the same name).
SPEC_KEY = "bisenet_deploy_spec"
#: File name endings of checkpoints (the runtime picks its torch backend by them).
CHECKPOINT_SUFFIXES = (".pth", ".pt", ".ckpt", ".bin", ".tar", ".safetensors")

_LEGACY_MAGIC = b"\x80\x02\x8a\x0al\xfc\x9cF\xf9 j\xa8P\x19"


class TrustRefusal(CheckpointError):
    """A checkpoint refused as unsafe that ``trust=True`` would read (the CLIs that have
    ``--trust-checkpoint`` say so; the others do not offer it)."""

    trust_option = True


@dataclass
class LoadedCheckpoint:
    """A rebuilt model in eval mode, its spec and what the loader did."""

    model: nn.Module
    spec: ModelSpec
    family: Family
    notes: list[str] = field(default_factory=list)


# --- reading the file ---------------------------------------------------------------------


def _is_safetensors(head: bytes) -> bool:
    # An 8-byte little-endian header length, then the JSON header itself.
    return len(head) > 9 and head[8:9] == b"{" and 2 <= struct.unpack("<Q", head[:8])[0] < 100_000_000


def _sniff(path: Path) -> str:
    """The file's container ("zip", "legacy", "safetensors"), or a helpful line if it is none."""
    if not path.exists():
        raise CheckpointError(f"checkpoint '{path}' not found")
    if path.is_dir():
        raise CheckpointError(f"'{path}' is a folder, not a checkpoint file")
    with open(path, "rb") as f:
        head = f.read(64)
    if not head:
        raise CheckpointError(f"checkpoint '{path}' is empty")
    if head.startswith(b"PK\x03\x04"):
        return "zip"
    if head.startswith(_LEGACY_MAGIC):
        return "legacy"
    if _is_safetensors(head):
        return "safetensors"
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
        f"'{path}' is not a PyTorch checkpoint (no torch.save zip, pickle or safetensors header found)"
    )


def _read_safetensors(path: Path) -> dict[str, Any]:
    try:
        from safetensors import safe_open
    except ImportError:
        raise CheckpointError(
            f"'{path}' is a .safetensors file; reading it needs the safetensors package "
            "(pip install safetensors, or bisenet-deploy[export])"
        ) from None
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            tensors = {key: f.get_tensor(key) for key in f.keys()}
            metadata = f.metadata() or {}
    except Exception as exc:  # noqa: BLE001 - a truncated or corrupt header
        raise CheckpointError(f"cannot read safetensors file '{path}': {_first_line(exc)}") from None
    if not tensors:
        raise CheckpointError(f"'{path}' holds no tensors")
    if isinstance(metadata.get(SPEC_KEY), str):
        return {"state_dict": tensors, SPEC_KEY: metadata[SPEC_KEY]}
    return tensors


def _is_torchscript(path: Path) -> bool:
    try:
        with zipfile.ZipFile(path) as archive:
            return any(n == "constants.pkl" or n.endswith("/constants.pkl") for n in archive.namelist())
    except (zipfile.BadZipFile, OSError):
        return False


def read_checkpoint(path: str | Path, trust: bool = False) -> tuple[Any, list[str]]:
    """Return the checkpoint object and the names of the foreign classes stood in for."""
    path = Path(path)
    kind = _sniff(path)
    if kind == "safetensors":
        return _read_safetensors(path), []
    if trust:
        try:
            return torch.load(path, map_location="cpu", weights_only=False), []
        except ModuleNotFoundError as exc:
            raise CheckpointError(
                f"'{path}' pickles objects from module '{exc.name}', which is not installed; "
                "read it without trust (drop --trust-checkpoint) to get its tensors safely"
            ) from None
        except Exception as exc:  # noqa: BLE001 - any unpickling failure is a bad file
            raise CheckpointError(f"cannot read checkpoint '{path}': {_first_line(exc)}") from None
    if kind == "zip" and _is_torchscript(path):
        # torch.load hands TorchScript archives to torch.jit.load, which runs their scripted code.
        raise TrustRefusal(
            f"'{path}' is a TorchScript archive (torch.jit.save): loading it runs its scripted code; "
            "export from the training checkpoint (its state_dict) instead"
        )
    try:
        return unpickling.read_restricted(
            lambda module: torch.load(path, map_location="cpu", weights_only=False, pickle_module=module)
        )
    except RefusedGlobal as exc:
        raise TrustRefusal(f"'{path}' calls {exc.name} when unpickled, which could run code; refusing it") from None
    except Exception as exc:  # noqa: BLE001 - corrupt zip, truncated file, refused state, ...
        raise CheckpointError(f"cannot read checkpoint '{path}': {_first_line(exc)}") from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


# --- finding the state_dict ---------------------------------------------------------------


def _is_tensor_mapping(obj: Any) -> bool:
    return isinstance(obj, Mapping) and len(obj) > 0 and all(isinstance(v, torch.Tensor) for v in obj.values())


def _module_state(obj: Any, prefix: str = "") -> dict[str, torch.Tensor]:
    """Tensors of a pickled nn.Module tree, real or rebuilt from placeholders."""
    if isinstance(obj, nn.Module):
        return {prefix + k: v for k, v in obj.state_dict().items()}
    state = obj.state if isinstance(obj, ForeignObject) else None
    if isinstance(state, tuple) and state and isinstance(state[0], Mapping):  # (state, slotstate)
        state = state[0]
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
    if isinstance(obj, ForeignObject):
        # A dict-like foreign container (a state_dict subclass, a config node): look inside.
        obj = dict(foreign_items(obj))
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
    ema = ema_note(obj, where)
    if ema:
        notes.append(ema)
    sd, stripped = strip_prefixes(sd)
    sd, container, left = split_container(sd, CONTAINER_PREFIXES)
    if container:  # a training wrapper saved whole: its network under model./net., a loss or an EMA copy beside
        sd, more = strip_prefixes(sd)
        stripped += [container, *more]
        notes.append(left_out_note(container, left, summarize_keys(left, 3)))
    if stripped:
        notes.append(f"stripped key prefixes {', '.join(repr(p) for p in stripped)}")
    try:
        fit = match_family(sd, arch)
    except CheckpointError:
        elsewhere = foreign_network(obj, sd) if arch is None else None
        if elsewhere:
            raise CheckpointError(f"'{path.name}' is {elsewhere}") from None
        raise
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
