"""Import a TensorRT flavour and give it one capturing logger (shared by builder and runtime).

Two Python packages speak the same API family: ``tensorrt`` (TensorRT 8.6 on JetPack 6.0
through 11) and ``tensorrt_rtx`` (TensorRT-RTX, which builds engines without a GPU). The
builder and the backend take the module as a value; this file only finds one.

TensorRT keeps one process-wide logger (a second one is ignored with a warning), so each
module gets exactly one ``CapturingLogger``. It prints nothing unless verbose: it keeps recent
messages so a failure is reported as one line with TensorRT's own reason, and warnings are
summarized by the caller instead of scrolling past.
"""

from __future__ import annotations

import collections
import importlib
import sys
from types import ModuleType
from typing import Any

from ..errors import UserError

FLAVOURS = ("tensorrt", "tensorrt_rtx")
_LOGGERS: dict[str, Any] = {}


class TensorRTUnavailable(UserError):
    """The requested TensorRT Python package cannot be imported."""


def load_tensorrt(name: str = "auto") -> ModuleType:
    """Import ``tensorrt`` or ``tensorrt_rtx``; ``auto`` prefers the full TensorRT."""
    if name not in ("auto", *FLAVOURS):
        raise UserError(f"unknown TensorRT package {name!r}; choose auto, {' or '.join(FLAVOURS)}")
    reasons = []
    for candidate in FLAVOURS if name == "auto" else (name,):
        try:
            return importlib.import_module(candidate)
        except Exception as exc:  # noqa: BLE001 - broken installs raise OSError, RuntimeError ...
            text = str(exc).strip()
            reasons.append(f"{candidate}: {text.splitlines()[0] if text else type(exc).__name__}")
    hint = (
        "TensorRT ships with JetPack; on a desktop GPU: pip install tensorrt; "
        "GPU-less engine builds for RTX GPUs: pip install 'bisenet-deploy[rtx]'"
    )
    raise TensorRTUnavailable(f"TensorRT is not available ({'; '.join(reasons)}). {hint}")


def flavour(trt: ModuleType) -> str:
    """``tensorrt`` or ``tensorrt_rtx`` (the import name, recorded in engine sidecars)."""
    return trt.__name__.split(".")[0]


def version_of(trt: ModuleType) -> str:
    return str(getattr(trt, "__version__", "unknown"))


def engine_validity_problem(trt: ModuleType, runtime: Any, data: bytes) -> str | None:
    """Why ``data`` cannot run here, from TensorRT's own engine check (where it has one).

    ``Runtime.get_engine_validity`` (TensorRT-RTX, recent TensorRT) reads the engine header
    and names the reason: malformed file, other version, unsupported compute capability,
    old driver. None when the engine is valid or the check does not exist.
    """
    if not hasattr(runtime, "get_engine_validity"):
        return None
    validity, diagnostics = runtime.get_engine_validity(data)
    if validity != trt.EngineValidity.INVALID:
        return None
    flags = getattr(trt, "EngineInvalidityDiagnostics", None)
    names = [
        name.lower().replace("_", " ")
        for name, member in (flags.__members__.items() if flags is not None else ())
        if int(diagnostics) & int(member)
    ]
    return f"invalid engine ({', '.join(names)})" if names else "invalid engine for this machine"


def logger_for(trt: ModuleType, verbose: bool = False) -> Any:
    """The one logger this TensorRT module uses in this process."""
    key = flavour(trt)
    if key not in _LOGGERS:
        _LOGGERS[key] = _make_logger_class(trt)()
    logger = _LOGGERS[key]
    logger.verbose = verbose
    return logger


def _make_logger_class(trt: ModuleType) -> type:
    severity = trt.ILogger.Severity

    class CapturingLogger(trt.ILogger):
        """Keeps recent messages; prints them all when verbose, none otherwise."""

        def __init__(self) -> None:
            trt.ILogger.__init__(self)
            self.messages: collections.deque[tuple[Any, str]] = collections.deque(maxlen=500)
            self.verbose = False

        def log(self, level: Any, msg: str) -> None:
            if int(level) <= int(severity.WARNING):
                self.messages.append((level, msg))
            if self.verbose:
                print(f"[TensorRT] {getattr(level, 'name', level)}: {msg}", file=sys.stderr)

        def clear(self) -> None:
            self.messages.clear()

        def last_error(self) -> str | None:
            """The most recent error (or internal error) message, on one line."""
            for level, msg in reversed(self.messages):
                if int(level) <= int(severity.ERROR):
                    return " ".join(msg.split())
            return None

        def warnings(self) -> list[str]:
            """Distinct warning messages since the last ``clear``, in order."""
            seen = [" ".join(m.split()) for lv, m in self.messages if int(lv) == int(severity.WARNING)]
            return list(dict.fromkeys(seen))

    return CapturingLogger
