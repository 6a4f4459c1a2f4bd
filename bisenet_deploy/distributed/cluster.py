"""Connecting to Ray: a private local cluster on 127.0.0.1 (started and stopped by us), or
an existing cluster by address (joined and left, never stopped).

Facts this relies on (Ray 2.60, measured here): Ray binds the machine's external address
unless ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` is set before it is imported and the node IP
is 127.0.0.1; session folders pile up in the system temp folder unless given one of ours;
``ray.shutdown()`` after a SIGTERM can leave workers behind, so every process whose command
line names our session folder is stopped by process id afterwards.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..errors import UserError
from ..fileio import process_alive


def _prepare_environment() -> None:
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")


def import_ray():  # noqa: ANN201 - the module
    _prepare_environment()
    try:
        import ray
    except ImportError:
        raise UserError("Ray is not installed: pip install 'bisenet-deploy[ray]'") from None
    return ray


def processes_naming(text: str) -> list[int]:
    """Process ids whose command line contains ``text``, or that hold a file open under it
    (Ray renames its processes, ``ray::DashboardAgent``, but they keep their logs open in the
    session folder). Linux /proc; empty elsewhere."""
    pids = []
    proc = Path("/proc")
    if not proc.is_dir():
        return pids
    me = os.getpid()
    for entry in proc.iterdir():
        if not entry.name.isdigit() or int(entry.name) == me:
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in cmdline or _holds_file_under(entry, text):
            pids.append(int(entry.name))
    return pids


def _holds_file_under(entry: Path, folder: str) -> bool:
    if not folder.startswith("/"):
        return False
    try:
        for fd in (entry / "fd").iterdir():
            try:
                if os.readlink(fd).startswith(folder):
                    return True
            except OSError:
                continue
    except OSError:
        return False
    return False


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


@contextlib.contextmanager
def ray_cluster(address: str = "local", num_cpus: int | None = None, num_gpus: int | None = None,
                verbose: bool = False) -> Iterator[dict[str, Any]]:
    """Yield facts about the cluster (``started``, ``address``, ``startup_s``, ``resources``);
    a ``local`` cluster is stopped, with all its processes, when the block ends (also on
    Ctrl-C and SIGTERM, which the CLIs turn into KeyboardInterrupt)."""
    ray = import_ray()
    if ray.is_initialized():
        raise UserError("Ray is already initialized in this process; segment() starts or joins its own")
    from ..fileio import temporary_folder

    level = logging.INFO if verbose else logging.ERROR
    start = time.perf_counter()
    session = None
    try:
        if address == "local":
            # Short: Ray's socket paths live under it and must fit in 107 bytes.
            session = temporary_folder("bray")
            ray.init(num_cpus=num_cpus, num_gpus=num_gpus, include_dashboard=False, _temp_dir=str(session),
                     _node_ip_address="127.0.0.1", logging_level=level, log_to_driver=verbose,
                     configure_logging=True)
        else:
            loopback = _check_reachable(address)
            try:
                # A driver on the head's own machine joins over loopback; otherwise Ray would
                # announce this machine's external address, which a loopback head cannot reach.
                extra = {"_node_ip_address": "127.0.0.1"} if loopback else {}
                ray.init(address=address, logging_level=level, log_to_driver=verbose, **extra)
            except (ConnectionError, RuntimeError, ValueError) as exc:
                text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                raise UserError(f"cannot join the Ray cluster at {address!r}: {text}") from None
        _quiet_ray_data(ray, verbose)
        facts = {"started": address == "local", "address": address, "startup_s": time.perf_counter() - start,
                 "resources": ray.cluster_resources()}
        yield facts
    finally:
        with contextlib.suppress(Exception):
            ray.shutdown()
        if session is not None:
            stop_processes_naming(str(session))
            shutil.rmtree(session, ignore_errors=True)


def _check_reachable(address: str, timeout: float = 5.0) -> bool:
    """Fail in seconds, not after Ray's minutes of retries, when a ``host:port`` address does
    not answer; returns whether it is a loopback address. ``auto`` and ``ray://`` addresses
    are left to Ray."""
    import socket

    if address == "auto" or "://" in address or ":" not in address:
        return False
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout):
            pass
    except (OSError, ValueError):
        raise UserError(f"no Ray cluster answers at {address} (checked for {timeout:.0f} s)") from None
    return host in ("127.0.0.1", "localhost", "::1")


def _quiet_ray_data(ray: Any, verbose: bool) -> None:
    """One progress bar (ours), not one per operator, unless --verbose."""
    ctx = ray.data.DataContext.get_current()
    for name in ("enable_progress_bars", "enable_operator_progress_bars"):
        if hasattr(ctx, name):
            setattr(ctx, name, verbose)
    if hasattr(ctx, "print_on_execution_start"):
        ctx.print_on_execution_start = verbose
    for name in ("ray.data", "ray"):
        logging.getLogger(name).setLevel(logging.INFO if verbose else logging.ERROR)
