"""The user's cache folder for bisenet-deploy: compiled OpenVINO models, backend choices.

``$BISENET_DEPLOY_CACHE`` if set, else ``$XDG_CACHE_HOME/bisenet-deploy``, else
``~/.cache/bisenet-deploy``. Everything in it can be deleted at any time; it is only
ever a shortcut: where it cannot be written (a service account without a home, a read-only
container) everything runs without it, after one warning.
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path

log = logging.getLogger(__name__)

#: Folders already found unwritable (warned about once per process).
_unwritable: set[Path] = set()


def cache_root() -> Path:
    root = os.environ.get("BISENET_DEPLOY_CACHE")
    if root:
        return Path(root)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "bisenet-deploy"


def _writable(folder: Path) -> bool:
    # os.access says yes to root on a read-only mount: try a real file.
    try:
        with tempfile.TemporaryFile(dir=folder):
            return True
    except OSError:
        return False


def cache_dir(*parts: str) -> Path | None:
    """The cache folder (or a subfolder of it), created on first use; None where it cannot be
    created or written (then callers run without a cache)."""
    try:
        base = cache_root()
    except RuntimeError:  # no HOME and no passwd entry
        base = Path("~")
    folder = base.joinpath(*parts)
    if base in _unwritable:
        return None
    try:
        folder.mkdir(parents=True, exist_ok=True)
        problem = None if _writable(folder) else "not writable"
    except OSError as exc:
        problem = exc.strerror or type(exc).__name__
    if problem is None:
        return folder
    _unwritable.add(base)
    log.warning("cache folder '%s': %s; running without a cache (set BISENET_DEPLOY_CACHE to a writable folder)",
                base, problem.lower())
    return None
