"""Shared CLI plumbing: one-line errors, exit codes, argument types."""

from __future__ import annotations

import argparse
import functools
import sys
from collections.abc import Callable

from ..errors import UserError


def cli_entry(prog: str) -> Callable[[Callable[[list[str] | None], int]], Callable[[list[str] | None], int]]:
    """Turn ``UserError`` into ``prog: error: message`` on stderr and its exit code."""

    def wrap(main: Callable[[list[str] | None], int]) -> Callable[[list[str] | None], int]:
        @functools.wraps(main)
        def run(argv: list[str] | None = None) -> int:
            try:
                return main(argv)
            except UserError as exc:
                print(f"{prog}: error: {exc}", file=sys.stderr)
                return exc.exit_code
            except KeyboardInterrupt:
                print(f"{prog}: interrupted", file=sys.stderr)
                return 130

        return run

    return wrap


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
        return text + " (default: %(default)s)"
