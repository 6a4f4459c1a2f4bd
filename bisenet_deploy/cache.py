"""The user's cache folder for bisenet-deploy: compiled OpenVINO models, backend choices.

``$BISENET_DEPLOY_CACHE`` if set, else ``$XDG_CACHE_HOME/bisenet-deploy``, else
``~/.cache/bisenet-deploy``. Everything in it can be deleted at any time; it is only
ever a shortcut: where it cannot be written (a service account without a home, a read-only
container) everything runs without it, after one warning. Compiled models are kept to
``$BISENET_DEPLOY_CACHE_MB`` megabytes (default 2048): past that, the least recently used go.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import re
import stat
import tempfile
from collections.abc import Iterator
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

_LOCK_NAME = ".lock"
_warned_limits: set[str] = set()


def limit_bytes() -> int:
    """The cache's size limit in bytes, from ``$BISENET_DEPLOY_CACHE_MB`` (a bad value: warned
    about once per process, then the default)."""
    raw = os.environ.get("BISENET_DEPLOY_CACHE_MB", "").strip()
    if raw:
        try:
            mb = float(raw)
        except ValueError:
            mb = -1.0
        if math.isfinite(mb) and mb >= 0:
            return int(mb * 1024 * 1024)
        if raw not in _warned_limits:
            _warned_limits.add(raw)
            log.warning("BISENET_DEPLOY_CACHE_MB=%r is not a size in megabytes; using %d", raw, DEFAULT_LIMIT_MB)
    return DEFAULT_LIMIT_MB * 1024 * 1024


def _lock(folder: Path, exclusive: bool) -> int | None:
    """A file descriptor holding the folder's lock (shared: in use; exclusive: pruning), or None:
    no lock to be had (another process holds it exclusively, or locking is not possible here)."""
    try:
        import fcntl
    except ImportError:  # not POSIX: no pruning (a shared lock is then a no-op)
        return None
    try:
        fd = os.open(folder / _LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB if exclusive else fcntl.LOCK_SH)
    except OSError:
        os.close(fd)
        return None
    return fd


@contextlib.contextmanager
def in_use(folder: Path | None) -> Iterator[None]:
    """Hold while a library reads or writes files in ``folder`` (OpenVINO's compile_model):
    no process prunes the folder meanwhile, so a blob just written or about to be read stays."""
    fd = _lock(folder, exclusive=False) if folder is not None else None
    try:
        yield
    finally:
        if fd is not None:
            os.close(fd)  # releases the lock


def prune(folder: Path, names: str = r".+", limit: int | None = None, keep_since: float | None = None) -> int:
    """Delete the least recently used files of ``folder`` whose names match the regular
    expression ``names`` whole (the files the cache's writer makes, e.g. OpenVINO's
    ``OPENVINO_BLOB``: nothing else in the folder is touched, and symlinks never) until they
    total at most ``limit`` bytes (default: ``limit_bytes()``). Files modified at or after
    ``keep_since`` (a time.time() value: what this run just wrote) are never deleted. Skipped,
    returning 0, while another process uses the folder (``in_use``) or prunes it. Returns the
    bytes freed."""
    limit = limit_bytes() if limit is None else limit
    fd = _lock(folder, exclusive=True)
    if fd is None:
        return 0
    try:
        return _prune_locked(folder, re.compile(names), limit, keep_since)
    finally:
        os.close(fd)


def _prune_locked(folder: Path, names: re.Pattern, limit: int, keep_since: float | None) -> int:
    entries = []
    try:
        for path in folder.iterdir():
            if not names.fullmatch(path.name):
                continue
            try:
                st = path.lstat()
            except OSError:
                continue
            if stat.S_ISREG(st.st_mode) and path.name != _LOCK_NAME:  # not a link, a folder or a fifo
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
