"""Connecting to Ray: a private local cluster on 127.0.0.1 (started and stopped by us), or
an existing cluster by address (joined and left, never stopped).

Facts this relies on (Ray 2.60, measured here): Ray binds the machine's external address
unless ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` is set before it is imported and the node IP
is 127.0.0.1; session folders pile up in the system temp folder unless given one of ours, whose socket
paths (``<folder>/session_<date>_<pid>/sockets/plasma_store``) must fit AF_UNIX's 107 bytes;
``ray.shutdown()`` after a SIGTERM can leave workers behind, and Ray's own fate sharing (a
death signal on raylet and gcs_server) leaves the agents and workers raylet started alive when
the driver is killed: ``processes.Watch`` stops every process of the session folder, whether
we end or die.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Iterator
from typing import Any

from ..errors import UserError
from ..processes import Watch, processes_naming, stop_processes, stop_processes_naming  # noqa: F401 - tests' names


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
    watch = None
    try:
        if address == "local":
            # Ray's longest socket path below the folder: sockets/plasma_store in a session
            # folder named for the date (26 characters) and this process id.
            room = len(f"/session_{'0' * 26}_{os.getpid()}/sockets/plasma_store")
            watch = Watch(temporary_folder("r", room=room), grace=3.0)  # the agents ignore SIGTERM
            ray.init(num_cpus=num_cpus, num_gpus=num_gpus, include_dashboard=False, _temp_dir=watch.folder,
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
        if watch is not None:
            watch.close()


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
