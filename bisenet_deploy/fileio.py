"""Small file helpers: atomic writes, our temporary names and their cleanup, content hashes.

Every file a tool writes goes to a temporary name next to its destination and is renamed
over it only once complete, so a failed or killed run never leaves a truncated output and
never touches an existing one. Temporary names carry the host and process id
(``.model.onnx.bisenet-tmp-<host>-<pid>-<random>.onnx``; ``<host>`` is the host name, or,
for a long one, its first letters and a hash: 8 characters at most, so that folders of Ray's
sockets stay short): a run that was killed with SIGKILL cannot remove its own, so the next run
that writes into the same folder removes those whose process is gone
(``remove_stale_temporaries``), unless a live process still uses them (an orphaned server).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import re
import secrets
import shutil
import socket
import sys
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

from .errors import UserError
from .processes import owner_alive, paths_in_use, process_alive  # noqa: F401 - process_alive: its old home

TMP_MARK = "bisenet-tmp"
#: AF_UNIX socket paths (Ray's) are at most 107 bytes on Linux, 103 on macOS
SOCKET_PATH_MAX = 103 if sys.platform == "darwin" else 107


def _host_tag(name: str) -> str:
    name = re.sub(r"[^A-Za-z0-9]", "", name) or "host"
    return name if len(name) <= 8 else name[:3] + hashlib.sha1(name.encode()).hexdigest()[:5]


_HOST = _host_tag(socket.gethostname())
_STALE = re.compile(rf"\.{TMP_MARK}-(?P<host>[A-Za-z0-9]+)-(?P<pid>\d+)-")
_cleaned: set[str] = set()


def temporary_name(path: str | os.PathLike, suffix: str | None = None) -> Path:
    """A hidden, unique name next to ``path`` that keeps its suffix (writers such as
    cv2.VideoWriter choose the container from it)."""
    path = Path(path)
    tail = path.suffix if suffix is None else suffix
    return path.with_name(f".{path.name}.{TMP_MARK}-{_HOST}-{os.getpid()}-{secrets.token_hex(4)}{tail}")


def temporary_folder(prefix: str, room: int | None = None) -> Path:
    """A new folder in the system temp folder, named so that a later run removes it if this
    process dies without removing it itself. ``room``: the longest path (in bytes) the caller
    will put below it that must stay a valid AF_UNIX socket path; then the first of $TMPDIR,
    /tmp, /var/tmp, /dev/shm short enough is used, and none is a one-line error."""
    if room is None:
        return _new_folder(Path(tempfile.gettempdir()), prefix)
    name = len(f"/{prefix}.{TMP_MARK}-{_HOST}-{os.getpid()}-xxxx")
    roots = []
    for root in (tempfile.gettempdir(), "/tmp", "/var/tmp", "/dev/shm"):
        root = os.path.realpath(root)  # what the sockets' paths will really be
        if root not in roots and os.path.isdir(root) and os.access(root, os.W_OK | os.X_OK):
            roots.append(root)
    for root in roots:
        if len(os.fsencode(root)) + name + room <= SOCKET_PATH_MAX:
            return _new_folder(Path(root), prefix)
    raise UserError(f"no temporary folder is short enough for socket paths of {room} bytes below it (at most "
                    f"{SOCKET_PATH_MAX} bytes in all; $TMPDIR is {tempfile.gettempdir()!r}): set TMPDIR to a short "
                    "writable folder such as /tmp")


def _new_folder(root: Path, prefix: str) -> Path:
    remove_stale_temporaries(root)
    for _ in range(100):
        # 4 random hex digits, not mkdtemp's 8: the name must leave room for Ray's socket paths;
        # host and pid already make it unique between processes
        folder = root / f"{prefix}.{TMP_MARK}-{_HOST}-{os.getpid()}-{secrets.token_hex(2)}"
        try:
            folder.mkdir(mode=0o700)
            return folder
        except FileExistsError:
            continue
    raise UserError(f"cannot make a temporary folder in '{root}'")


def remove_stale_temporaries(folder: str | os.PathLike) -> list[Path]:
    """Remove our temporary files and folders in ``folder`` (not below it) whose process
    on this host is gone (or its pid now belongs to a newer process) and that no live process
    uses (names on its command line, or holds a file in: a server that outlived the run that
    started it keeps its folder). Checked once per folder per process; returns what was removed."""
    folder = Path(folder)
    key = str(folder.resolve()) if folder.exists() else str(folder)
    if key in _cleaned:
        return []
    _cleaned.add(key)
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return []
    stale = []
    for entry in entries:
        if TMP_MARK not in entry.name:
            continue
        match = _STALE.search(entry.name)
        if match is None or match.group("host") != _HOST:
            continue
        try:
            made = entry.stat(follow_symlinks=False).st_mtime
        except OSError:
            continue
        if not owner_alive(int(match.group("pid")), made):
            stale.append(entry)
    # real paths: /proc shows open files that way (a /tmp that is a link would not match)
    used = paths_in_use([os.path.realpath(e.path) for e in stale]) if stale else set()
    removed: list[Path] = []
    for entry in stale:
        if os.path.realpath(entry.path) in used:
            continue
        try:
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path)
            else:
                os.unlink(entry.path)
            removed.append(Path(entry.path))
        except OSError:
            pass
    return removed


def _missing_parents(path: Path) -> list[Path]:
    """The folders above ``path`` that do not exist yet, outermost first."""
    missing = []
    parent = path.parent
    while not parent.exists():
        missing.append(parent)
        if parent.parent == parent:
            break
        parent = parent.parent
    return list(reversed(missing))


def check_output_path(path: str | os.PathLike) -> Path:
    """Fail early, with a clear line, when ``path`` cannot be written. Missing folders are
    fine (``atomic_output`` creates them) as long as they can be created."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"output path '{path}' is a folder; give a file name")
    missing = _missing_parents(path)
    existing = (missing[0].parent if missing else path.parent) if str(path.parent) else Path(".")
    if not existing.is_dir():
        raise UserError(f"cannot write '{path}': '{existing}' is a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UserError(f"cannot write '{path}': folder '{existing}' is not writable")
    return path


def check_output_files(outputs: dict[str, str | os.PathLike | None],
                       inputs: Iterable[str | os.PathLike | None]) -> None:
    """Refuse, before any work, an output file that is one of the ``inputs`` (a model, an image,
    through a link or another spelling too), lies inside an input folder, or is the same file
    as another output (the later write would silently replace the earlier one).
    ``outputs`` maps the option (``--json``) to its path; ``None`` entries are skipped."""
    seen: dict[Path, str] = {}
    resolved_inputs = [(Path(i), Path(i).resolve()) for i in inputs if i is not None]
    for option, path in outputs.items():
        if path is None:
            continue
        out = Path(path).resolve()
        if out in seen:
            raise UserError(f"{option} '{path}' is also {seen[out]}: one would replace the other; give two names")
        seen[out] = f"{option}"
        for given, src in resolved_inputs:
            if src == out:
                raise UserError(f"{option} '{path}' is the input '{given}': it would be written over; "
                                "choose another name")
            if src.is_dir() and src in out.parents:
                raise UserError(f"{option} '{path}' is inside the input folder '{given}'; choose a path outside it")


def check_output_folder(folder: str | os.PathLike) -> Path:
    """Fail early when ``folder`` cannot be an output folder (a file, or not creatable)."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise UserError(f"output folder '{folder}' is an existing file; give a folder")
    if not folder.exists():
        check_output_path(folder / "probe")
    elif not os.access(folder, os.W_OK | os.X_OK):
        raise UserError(f"output folder '{folder}' is not writable")
    return folder


def make_folders(folder: str | os.PathLike) -> list[Path]:
    """Create ``folder`` and its missing parents; return the ones created (outermost first)."""
    folder = Path(folder)
    created = _missing_parents(folder / "x")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create folder '{folder}': {exc.strerror or exc}") from None
    return created


def remove_empty_folders(created: list[Path]) -> None:
    """Undo ``make_folders`` where the folders are still empty (innermost first)."""
    for folder in reversed(created):
        try:
            folder.rmdir()
        except OSError:
            break


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it over ``path`` only on success.

    A failed or interrupted run leaves any existing file at ``path`` untouched, no
    truncated output and no folder it had to create for it.
    """
    path = check_output_path(path)
    created = make_folders(path.parent) if str(path.parent) else []
    remove_stale_temporaries(path.parent)
    tmp_path = temporary_name(path)
    ok = False
    try:
        yield tmp_path
        if not tmp_path.exists():
            raise UserError(f"nothing was written for '{path}'")
        # Give the result the permissions a plain open() would (mkstemp-like writers use 0600).
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp_path, 0o666 & ~umask)
        try:
            os.replace(tmp_path, path)
        except OSError as exc:
            if exc.errno == errno.EISDIR:
                raise UserError(f"output path '{path}' is a folder; give a file name") from None
            raise
        ok = True
    except OSError as exc:
        # A full disk surfaces from deep inside a writer (torch, onnx) without a file name:
        # name the output the user asked for (the CLIs print it in their one line).
        if exc.errno in (errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)) and not exc.filename:
            exc.filename = str(path)
        raise
    finally:
        if tmp_path.exists():
            tmp_path.unlink()
        if not ok:
            remove_empty_folders(created)


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    with atomic_output(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> Path:
    with atomic_output(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()
