"""Lifetime of the processes we start: they die with us, even when we are killed with SIGKILL.

A Ray head (raylet, gcs_server, ``ray::DashboardAgent``, ``ray::RuntimeEnvAgent``, workers)
or a ``tritonserver`` (and its Python stubs) is tied to a folder of ours: Ray's session folder,
Triton's work folder. Every process that names that folder on its command line or holds a
file open under it, and everything such a process started, belongs to the folder.

Why a watchdog and not only a parent-death signal: ``PR_SET_PDEATHSIG`` reaches a direct child
only, and fires when the parent *thread* ends; Ray's raylet starts the agents and workers
itself, and Ray's own fate sharing (a death signal on raylet and gcs_server) leaves them
orphaned. So ``watch(folder)`` starts one small process of its own (this file run as a script,
standard library only, in a session of its own so a Ctrl-C or a kill of our process group
does not reach it) whose stdin is a pipe from us: when that pipe ends without a "done" (we
died, however) or its parent changes, it stops every process of the folder (SIGTERM, a bounded
wait, SIGKILL) and removes the folder. While we live it notes, each second, the process tree
under the folder's processes, so orphans are known by pid and start time (never a reused pid).
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

PROC = Path("/proc")
_btime: float | None = None


def process_alive(pid: int) -> bool:
    """Whether process ``pid`` on this host is running (a zombie, exited but not yet reaped
    by its parent, is not)."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    try:
        return (PROC / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):  # gone since os.kill, or no /proc (not Linux: os.kill said it exists)
        return not PROC.joinpath("self").exists()


def _stat(pid: int | str) -> tuple[int, int] | None:
    """(parent pid, start time in clock ticks since boot) from /proc, or None."""
    try:
        fields = (PROC / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()
        return int(fields[1]), int(fields[19])
    except (OSError, IndexError, ValueError):
        return None


def process_started(pid: int) -> float | None:
    """When process ``pid`` started (seconds since the epoch, to about a second), or None where
    /proc cannot tell."""
    global _btime
    stat = _stat(pid)
    if stat is None:
        return None
    if _btime is None:
        try:
            _btime = float(next(ln.split()[1] for ln in Path("/proc/stat").read_text().splitlines()
                                if ln.startswith("btime")))
        except (OSError, StopIteration):
            return None
    return _btime + stat[1] / os.sysconf("SC_CLK_TCK")


def owner_alive(pid: int, since: float) -> bool:
    """Whether process ``pid``, named as the owner of something made at or before ``since``
    (a file's mtime), is still that owner: alive, and not a newer process that got its pid."""
    if not process_alive(pid):
        return False
    started = process_started(pid)
    return started is None or started <= since + 2.0  # 2 s: /proc's boot time is whole seconds


def _holds(pid: str, paths: list[str], files: bool = True) -> set[str]:
    """Those of ``paths`` that process ``pid`` names on its command line, has as its working
    folder, or (``files``) holds a file open under."""
    entry = PROC / pid
    held = set()
    try:
        cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return held
    held.update(p for p in paths if p in cmdline)
    if not files or len(held) == len(paths):
        return held
    links = []
    with contextlib.suppress(OSError):
        links.append(os.readlink(entry / "cwd"))
    with contextlib.suppress(OSError):
        for fd in os.scandir(entry / "fd"):
            with contextlib.suppress(OSError):
                links.append(os.readlink(fd.path))
    for link in links:
        held.update(p for p in paths if link == p or link.startswith(p + "/"))
    return held


def paths_in_use(paths: list[str], exclude: tuple[int, ...] = ()) -> set[str]:
    """Those of ``paths`` (absolute) that some live process other than us names or holds."""
    if not paths or not PROC.is_dir():
        return set()
    skip = {str(os.getpid()), *map(str, exclude)}
    used: set[str] = set()
    for entry in os.scandir(PROC):
        if entry.name.isdigit() and entry.name not in skip and process_alive(int(entry.name)):
            used |= _holds(entry.name, paths)
    return used


def processes_naming(text: str, files: bool = True) -> list[int]:
    """Process ids (not ours) whose command line contains ``text``, or, for an absolute path
    and ``files``, that hold a file open under it (Ray renames its processes,
    ``ray::DashboardAgent``, but they keep their logs open in the session folder). Linux
    /proc; empty elsewhere."""
    if not PROC.is_dir():
        return []
    me, pids = str(os.getpid()), []
    for entry in os.scandir(PROC):
        if not entry.name.isdigit() or entry.name == me:
            continue
        if text.startswith("/"):
            found = bool(_holds(entry.name, [text], files))
        else:
            try:
                found = text in (PROC / entry.name / "cmdline").read_bytes().replace(b"\0", b" ").decode(
                    errors="replace")
            except OSError:
                found = False
        if found:
            pids.append(int(entry.name))
    return pids


def _tree() -> dict[int, tuple[int, int]]:
    """pid -> (parent pid, start ticks) of every process."""
    tree = {}
    if PROC.is_dir():
        for entry in os.scandir(PROC):
            if entry.name.isdigit() and (stat := _stat(entry.name)) is not None:
                tree[int(entry.name)] = stat
    return tree


def _with_descendants(roots: set[int], tree: dict[int, tuple[int, int]]) -> dict[int, int]:
    """``roots`` and every process below them: pid -> start ticks."""
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in tree.items():
        children.setdefault(ppid, []).append(pid)
    found, todo = {}, [p for p in roots if p in tree]
    while todo:
        pid = todo.pop()
        if pid not in found:
            found[pid] = tree[pid][1]
            todo.extend(children.get(pid, []))
    return found


def stop_processes(pids: list[int], timeout: float = 10.0) -> list[int]:
    """SIGTERM, wait, SIGKILL what is left; returns the pids that had to be killed."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    alive = list(pids)
    while alive and time.monotonic() < deadline:
        alive = [p for p in alive if process_alive(p)]
        if alive:
            time.sleep(0.1)
    for pid in alive:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
    return alive


def stop_processes_naming(text: str, rounds: int = 3, timeout: float = 10.0) -> list[int]:
    """Stop every process naming ``text`` (see processes_naming), again while new ones appear:
    a raylet may start a worker between the listing and its own stop. Returns those still
    there after ``rounds`` (empty when all are gone)."""
    for _ in range(rounds):
        left = [p for p in processes_naming(text) if process_alive(p)]
        if not left:
            return []
        stop_processes(left, timeout)
        time.sleep(0.2)
    return [p for p in processes_naming(text) if process_alive(p)]


def stop_process_group(process: subprocess.Popen,
                       steps: tuple[tuple[int, float], ...] = ((signal.SIGTERM, 60.0), (signal.SIGKILL, 10.0))
                       ) -> int | None:
    """Stop ``process``, started in a session of its own, with its whole process group (a
    server and its Python stubs): each signal of ``steps`` in turn, waiting up to its
    seconds, until it has exited. Returns its exit code (None if even the last step failed)."""
    for sig, wait in steps:
        if process.poll() is not None:
            break
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=wait)
    return process.returncode


def stop_owned(folder: str, known: dict[int, int] | None = None, exclude: tuple[int, ...] = (),
               rounds: int = 4, timeout: float = 10.0) -> list[int]:
    """Stop the processes of ``folder`` (those naming or holding it, everything below them, and
    ``known`` pid -> start ticks still alive as themselves): the topmost first, so a server
    stops its own helpers gracefully, then whatever is left. Returns the pids still alive."""
    known = dict(known or {})
    skip = {os.getpid(), *exclude}
    left: list[int] = []
    for _ in range(rounds):
        tree = _tree()
        roots = {p for p in processes_naming(folder) if p not in skip}
        targets = _with_descendants(roots, tree)
        targets.update({p: t for p, t in known.items() if p in tree and tree[p][1] == t})
        left = [p for p in targets if p not in skip and process_alive(p)]
        if not left:
            return []
        top = [p for p in left if tree.get(p, (0, 0))[0] not in targets]
        stop_processes(top or left, timeout)
        time.sleep(0.2)
    return [p for p in left if process_alive(p)]


class Watch:
    """The watchdog of one folder (see the module docstring); ``close()`` when done."""

    def __init__(self, folder: str | os.PathLike, grace: float = 5.0) -> None:
        """``grace``: seconds a process has to exit after SIGTERM before SIGKILL."""
        self.folder, self.grace = str(Path(folder).resolve()), grace
        self.process: subprocess.Popen | None = None
        if not PROC.is_dir():
            return  # not Linux: what is started is stopped by the normal path only
        self.process = subprocess.Popen([sys.executable, "-I", __file__], stdin=subprocess.PIPE,
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd="/",
                                        start_new_session=True)
        config = {"parent": os.getpid(), "folder": self.folder, "grace": grace}
        self.process.stdin.write(json.dumps(config).encode() + b"\n")
        self.process.stdin.flush()

    def close(self, remove: bool = True) -> list[int]:
        """Stop what is left of the folder's processes, remove it, then end the watchdog (which
        does the same if we die in between). Returns pids that could not be stopped."""
        exclude = (self.process.pid,) if self.process else ()
        left = stop_owned(self.folder, exclude=exclude, timeout=self.grace)
        if remove:
            shutil.rmtree(self.folder, ignore_errors=True)
        process, self.process = self.process, None  # a second close() only looks again
        if process is not None:
            with contextlib.suppress(OSError, ValueError):
                process.stdin.write(b"done\n")
                process.stdin.close()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        return left


def _watchdog() -> int:
    """The watchdog's loop (this file run as a script by ``Watch``)."""
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)  # only our parent's end ends us
    config = json.loads(sys.stdin.buffer.readline() or b"{}")
    parent, folder = config.get("parent"), config.get("folder")
    if not parent or not folder:
        return 2
    known: dict[int, int] = {}
    stdin = sys.stdin.buffer.raw
    while os.getppid() == parent:
        readable, _, _ = select.select([stdin], [], [], 1.0)
        if readable:
            if stdin.read(64).startswith(b"done"):
                return 0
            break  # end of the pipe without "done": our parent is gone
        tree = _tree()
        # the command line is enough here (raylet, tritonserver name the folder); what they
        # start is found below them; the full look at open files comes when stopping
        roots = {p for p in processes_naming(folder, files=False) if p != parent}
        known.update(_with_descendants(roots, tree))
        known = {p: t for p, t in known.items() if p in tree and tree[p][1] == t}
    stop_owned(folder, known, exclude=(parent,), timeout=float(config.get("grace", 5.0)))
    shutil.rmtree(folder, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(_watchdog())
