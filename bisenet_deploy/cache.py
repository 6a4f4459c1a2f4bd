"""The user's cache folder for bisenet-deploy: compiled OpenVINO models, backend choices.

``$BISENET_DEPLOY_CACHE`` if set, else ``$XDG_CACHE_HOME/bisenet-deploy``, else
``~/.cache/bisenet-deploy``. Everything in it can be deleted at any time; it is only
ever a shortcut: where it cannot be written (a service account without a home, a read-only
container) everything runs without it, after one warning. Compiled models are kept to
``$BISENET_DEPLOY_CACHE_MB`` megabytes (default 2048): past that, the least recently used go.
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


#: The compiled-model cache's size limit without ``$BISENET_DEPLOY_CACHE_MB``: each model exported
#: or re-exported leaves one compiled blob (about its weights' size), so an unbounded cache fills
#: the disk of anyone who iterates on a model.
DEFAULT_LIMIT_MB = 2048


def limit_bytes() -> int:
    """The cache's size limit in bytes, from ``$BISENET_DEPLOY_CACHE_MB`` (a bad value: warned
    about, then the default)."""
    raw = os.environ.get("BISENET_DEPLOY_CACHE_MB", "").strip()
    if raw:
        try:
            mb = float(raw)
            if mb >= 0:
                return int(mb * 1024 * 1024)
        except ValueError:
            pass
        log.warning("BISENET_DEPLOY_CACHE_MB=%r is not a size in megabytes; using %d", raw, DEFAULT_LIMIT_MB)
    return DEFAULT_LIMIT_MB * 1024 * 1024


def prune(folder: Path, limit: int | None = None, keep_since: float | None = None) -> int:
    """Delete the least recently used files of ``folder`` until its files total at most ``limit``
    bytes (default: ``limit_bytes()``); files modified at or after ``keep_since`` (a time.time()
    value: what this run just wrote) are never deleted. Returns the bytes freed. Safe against
    another process pruning the same folder at the same time: a file already gone is skipped."""
    limit = limit_bytes() if limit is None else limit
    entries = []
    try:
        for path in folder.iterdir():
            try:
                st = path.lstat()
            except OSError:
                continue
            if path.is_file() and not path.is_symlink():
                # last use: a read updates atime (relatime: at least once after each write)
                entries.append((max(st.st_atime, st.st_mtime), st.st_mtime, st.st_size, path))
    except OSError:
        return 0
    total = sum(e[2] for e in entries)
    freed = 0
    for _used, modified, size, path in sorted(entries, key=lambda e: e[0]):
        if total <= limit:
            break
        if keep_since is not None and modified >= keep_since:
            continue
        try:
            path.unlink()
        except FileNotFoundError:
            pass
        except OSError:
            continue
        total -= size
        freed += size
    if freed:
        log.info("cache '%s': removed %.0f MB of least recently used files (limit %.0f MB)",
                 folder, freed / 2**20, limit / 2**20)
    return freed
