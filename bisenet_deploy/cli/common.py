"""Shared CLI plumbing: one-line errors, exit codes, argument types."""

from __future__ import annotations

import argparse
import errno
import functools
import json
import logging
import math
import signal
import sys
import threading
from collections.abc import Callable, Iterable

from .. import __version__
from ..errors import UserError


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C so that every ``finally`` (temporary files, servers,
    clusters) runs before the process exits."""


def _raise_terminated(signum: int, frame: object) -> None:
    raise Terminated()


class _PrefixHandler(logging.Handler):
    """``prog: message`` on stderr for the library's log lines (the backend choice, warnings)."""

    def __init__(self, prog: str) -> None:
        super().__init__()
        self.prog = prog

    def emit(self, record: logging.LogRecord) -> None:
        level = "" if record.levelno < logging.WARNING else "warning: "
        print(f"{self.prog}: {level}{record.getMessage()}", file=sys.stderr, flush=True)


def set_quiet(quiet: bool) -> None:
    """-q: only warnings from the library's logger."""
    logging.getLogger("bisenet_deploy").setLevel(logging.WARNING if quiet else logging.INFO)


#: errno values that mean the disk (or the user's quota) is full.
_FULL_DISK = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)}


def _full_disk(exc: BaseException) -> OSError | None:
    """The ENOSPC/EDQUOT error behind ``exc`` (directly, or as the cause of a library's wrapper)."""
    seen = 0
    while exc is not None and seen < 8:
        if isinstance(exc, OSError) and exc.errno in _FULL_DISK:
            return exc
        exc = exc.__cause__ or exc.__context__
        seen += 1
    return None


def cli_entry(prog: str, trust_option: str | None = None
              ) -> Callable[[Callable[[list[str] | None], int]], Callable[[list[str] | None], int]]:
    """Turn ``UserError`` into ``prog: error: message`` on stderr and its exit code, and a full
    disk into one such line; treat SIGTERM like Ctrl-C (cleanup runs, exit 143 instead of 130).

    ``trust_option``: the command's option that reads a checkpoint refused as unsafe
    (``--trust-checkpoint``); named in such refusals only by the commands that have it."""

    def wrap(main: Callable[[list[str] | None], int]) -> Callable[[list[str] | None], int]:
        @functools.wraps(main)
        def run(argv: list[str] | None = None) -> int:
            previous = None
            if threading.current_thread() is threading.main_thread():
                previous = signal.signal(signal.SIGTERM, _raise_terminated)
            logger = logging.getLogger("bisenet_deploy")
            handler = _PrefixHandler(prog)
            logger.addHandler(handler)
            logger.setLevel(logging.INFO)
            logger.propagate = False
            try:
                return main(argv)
            except UserError as exc:
                text = str(exc)
                if trust_option and getattr(exc, "trust_option", False):
                    text += f". Pass {trust_option} only if you trust its source"
                print(f"{prog}: error: {text}", file=sys.stderr)
                return exc.exit_code
            except Exception as exc:
                full = _full_disk(exc)
                if full is None:
                    raise
                where = f" writing {full.filename}" if full.filename else ""
                print(f"{prog}: error: no space left on device{where}", file=sys.stderr)
                return 1
            except Terminated:
                print(f"{prog}: terminated", file=sys.stderr)
                return 143
            except KeyboardInterrupt:
                print(f"{prog}: interrupted", file=sys.stderr)
                return 130
            finally:
                logger.removeHandler(handler)
                logger.propagate = True
                if previous is not None:
                    signal.signal(signal.SIGTERM, previous)

        return run

    return wrap


class Parser(argparse.ArgumentParser):
    """argparse with ``--version`` and short errors: one usage line, the error, a pointer to
    ``--help`` (argparse's own prints the whole usage block first, up to 20 lines)."""

    def __init__(self, *args, **kwargs) -> None:
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)
        self.add_argument("--version", action="version", version=f"%(prog)s {__version__}")

    def short_usage(self) -> str:
        parts = [self.prog]
        for action in self._actions:
            if action.option_strings:
                if action.required:
                    metavar = action.metavar or action.dest.upper()
                    parts.append(f"{action.option_strings[0]} {metavar}")
            elif action.nargs not in (argparse.SUPPRESS,) and action.help is not argparse.SUPPRESS:
                name = action.metavar or action.dest
                if action.nargs in ("+",):
                    parts.append(f"{name}...")
                elif action.nargs in ("?", "*"):
                    parts.append(f"[{name}{'...' if action.nargs == '*' else ''}]")
                else:
                    parts.append(name)
        parts.append("[options]")
        return " ".join(parts)

    def parse_given(self, argv: list[str] | None = None) -> tuple[argparse.Namespace, frozenset[str]]:
        """``parse_args`` and the dests the command line set itself, whatever their value (an
        option typed out at its default is still given: refusing an option that does nothing
        must not depend on the value)."""
        args = self.parse_args(argv)
        saved = [(a, a.default) for a in self._actions]
        try:
            for action, _ in saved:
                action.default = argparse.SUPPRESS
            given = frozenset(vars(self.parse_args(argv)))
        finally:
            for action, default in saved:
                action.default = default
        return args, given

    def error(self, message: str):  # noqa: ANN201 - argparse's signature
        self.exit(2, f"usage: {self.short_usage()}\n{self.prog}: error: {message}\nsee '{self.prog} --help'\n")


def model_arg(text: str):  # noqa: ANN201 - a Path, or a served model's URL kept as text
    from pathlib import Path

    from ..runtime.backends.triton import is_url

    return text if is_url(text) else Path(text)


def size_arg(text: str) -> tuple[int, int]:
    """``512x1024`` -> (512, 1024); ``512`` -> (512, 512)."""
    parts = text.lower().replace("*", "x").split("x")
    try:
        values = tuple(int(p) for p in parts)
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must look like HxW, e.g. 512x1024, got {text!r}") from None
    if len(values) == 1:
        values = values * 2
    if len(values) != 2 or min(values) < 1:
        raise argparse.ArgumentTypeError(f"size must look like HxW with positive sides, got {text!r}")
    return values  # type: ignore[return-value]


def choices_list(allowed: tuple[str, ...]) -> Callable[[str], tuple[str, ...]]:
    """Comma-separated subset of ``allowed``."""

    def parse(text: str) -> tuple[str, ...]:
        items = tuple(dict.fromkeys(t.strip().lower() for t in text.split(",") if t.strip()))
        bad = [t for t in items if t not in allowed]
        if bad or not items:
            raise argparse.ArgumentTypeError(f"choose from {', '.join(allowed)} (comma-separated), got {text!r}")
        return items

    return parse


def given_flags(given: frozenset[str], dests: Iterable[str]) -> list[str]:
    """The flags of ``dests`` that the command line typed out (``Parser.parse_given``), in order."""
    return [f"--{dest.replace('_', '-')}" for dest in dests if dest in given]


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the epilog's layout and appends "(default: X)" where a default says something:
    not for None, False or empty values, nor where the help text already names its default."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if (
            "%(default)" in text
            or "default" in text.lower()
            or default is None
            or default is False
            or default == []
            or default == ()
            or default is argparse.SUPPRESS
            or action.option_strings == []
            and action.nargs in ("?", "*")
        ):
            return text
        if isinstance(default, (tuple, list)):  # a LIST option's default as it is typed: f32,bf16
            return text + " (default: " + ",".join(map(str, default)).replace("%", "%%") + ")"
        return text + " (default: %(default)s)"


# --- numeric options ----------------------------------------------------------------------
# argparse types: a bad value is one usage error ("argument --x: must be > 0, got -1"), never
# a nonsense report (-28387 % of peak) or a traceback deep inside a backend.


def _number(kind: type, text: str) -> float:
    try:
        value = kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected {'an integer' if kind is int else 'a number'}, got {text!r}") from None
    if isinstance(value, float) and not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def _bounded(kind: type, ok, rule: str, doc: str):
    """An argparse type: a ``kind`` number for which ``ok(value)`` holds, else "must be <rule>"."""

    def parse(text: str):
        value = kind(_number(kind, text))
        if not ok(value):
            raise argparse.ArgumentTypeError(f"must be {rule}, got {value if kind is int else text}")
        return value

    parse.__doc__ = doc
    return parse


positive_int = _bounded(int, lambda v: v >= 1, ">= 1", "An integer >= 1 (counts, iterations, sizes).")
nonnegative_int = _bounded(int, lambda v: v >= 0, ">= 0", "An integer >= 0 (0: none / automatic, as the help says).")
positive_float = _bounded(float, lambda v: v > 0, "> 0", "A finite number > 0 (seconds, GFLOPS, rates).")
nonnegative_float = _bounded(float, lambda v: v >= 0, ">= 0", "A finite number >= 0.")
fraction = _bounded(float, lambda v: 0 <= v <= 1, "between 0 and 1", "A number in [0, 1] (thresholds, tolerances).")
percentile = _bounded(float, lambda v: 0 <= v <= 100, "between 0 and 100", "A number in [0, 100].")


# --- a foreign model's spec from the command line -----------------------------------------


def spec_arg(text: str) -> dict:
    """``--spec``: a JSON object of ModelSpec fields, or the path of a .json file holding one,
    e.g. ``'{"num_classes": 19, "color_order": "RGB", "mean": [0.485, 0.456, 0.406],
    "std": [0.229, 0.224, 0.225]}'``. Returns the fields, checked by building a ModelSpec from
    them; ``spec_for`` completes them with the model's own input size."""
    import dataclasses
    from pathlib import Path

    from ..spec import ModelSpec

    source = text.strip()
    if not source.startswith("{"):
        path = Path(source)
        if not path.is_file():
            raise argparse.ArgumentTypeError(f"give a JSON object or a .json file; '{text}' is neither")
        try:
            source = path.read_text()
        except (OSError, UnicodeDecodeError) as exc:
            raise argparse.ArgumentTypeError(f"cannot read '{path}': {exc}") from None
    try:
        fields = json.loads(source)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not valid JSON: {exc}") from None
    if not isinstance(fields, dict):
        raise argparse.ArgumentTypeError("the spec must be a JSON object of ModelSpec fields")
    known = {f.name for f in dataclasses.fields(ModelSpec)}
    unknown = sorted(set(fields) - known)
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown ModelSpec field(s) {', '.join(unknown)}; "
                                         f"known: {', '.join(sorted(known - {'extra'}))}")
    try:
        ModelSpec.from_dict(dict(fields))
    except (TypeError, ValueError) as exc:
        raise argparse.ArgumentTypeError(f"not a valid ModelSpec: {str(exc).splitlines()[0]}") from None
    return fields


def spec_for(fields: dict, backend):  # noqa: ANN001, ANN201 - a Backend -> a ModelSpec
    """See ``runtime.given_spec.spec_for`` (imported when used: the CLI starts fast)."""
    from ..runtime.given_spec import spec_for as complete

    return complete(fields, backend)
