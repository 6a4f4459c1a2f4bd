"""``bisenet-serve run``: a real ``tritonserver`` on a repository, bound to 127.0.0.1 by default.

Where the server comes from: ``tritonserver`` on PATH (NVIDIA's containers), else the build
inside the ``nvidia-pytriton`` wheel of this environment (``pip install 'bisenet-deploy[serve]'``,
which needs numpy < 2: ``make serve-setup`` makes such an environment, ``.venv-serve``, from
this repository's files). Facts the launcher handles (measured with that wheel here):

* the wheel's ``backends/python`` has no stub: a backends folder is assembled from
  ``libtriton_python.so``, ``triton_python_backend_utils.py`` and the stub for this Python;
* the stub loads ``libpython3.X.so.1.0``: the running interpreter's ``LIBDIR`` and the wheel's
  ``nvidia_pytriton.libs`` go first on ``LD_LIBRARY_PATH`` (a system copy of another build
  fails with ``'_thread.RLock' object has no attribute '_recursion_count'``);
* the stub finds its packages through ``python3`` on PATH: this environment's ``bin`` goes first;
* clients left open make shutdown wait 30 s: ``--exit-timeout-secs`` is set; a Python-backend
  shared-memory region (``/dev/shm/triton_python_backend_shm_region_*``) that an aborted start
  leaves is removed when the server stops;
* CUDA warnings on a machine without a GPU are harmless; the server's log goes to a file in a
  temporary folder (its last lines are shown when the start fails; ``--verbose`` streams it);
* a port held by another server would answer our readiness check for it: every port is bound
  once (and released) before the start, and one that is taken is named;
* the server and its stubs name the temporary folder (``--backend-directory``): a
  ``processes.Watch`` on it stops them when we stop or die (even by SIGKILL).
"""

from __future__ import annotations

import contextlib
import errno
import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from ..errors import UserError
from ..fileio import temporary_folder
from ..processes import Watch, stop_process_group

SHM_GLOB = "triton_python_backend_shm_region_*"


@dataclass
class ServerOptions:
    host: str = "127.0.0.1"
    http_port: int = 8000
    grpc_port: int = 8001
    metrics_port: int = 8002
    ready_timeout: float = 120.0
    exit_timeout: int = 5
    verbose: bool = False


@dataclass
class Server:
    process: subprocess.Popen
    options: ServerOptions
    log_path: Path
    work: Path
    shm_before: set[str]
    skipped: list[str]
    watch: Watch | None = None
    stop_note: str = ""  # why a requested stop did not end with exit code 0

    @property
    def endpoints(self) -> dict[str, str]:
        o = self.options
        return {"http": f"http://{o.host}:{o.http_port}", "grpc": f"grpc://{o.host}:{o.grpc_port}",
                "metrics": f"http://{o.host}:{o.metrics_port}/metrics"}


def triton_home() -> tuple[Path, Path | None]:
    """(tritonserver binary, the pytriton wheel's folder or None for one on PATH)."""
    on_path = shutil.which("tritonserver")
    if on_path:
        return Path(on_path), None
    spec = importlib.util.find_spec("pytriton")
    if spec is None or not spec.submodule_search_locations:
        raise UserError("no tritonserver here: run inside NVIDIA's Triton container, or make an environment with "
                        "the server (make serve-setup, then use .venv-serve/bin/bisenet-serve)")
    root = Path(list(spec.submodule_search_locations)[0])
    binary = root / "tritonserver" / "bin" / "tritonserver"
    if not binary.is_file():
        raise UserError(f"the pytriton wheel at {root} has no tritonserver binary (a platform without one?)")
    return binary, root


def _backends(wheel: Path, work: Path) -> Path:
    """A backends folder Triton can use: the wheel's Python backend plus the stub for this
    Python version."""
    src = wheel / "tritonserver"
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    stub = src / "python_backend_stubs" / version / "triton_python_backend_stub"
    if not stub.is_file():
        raise UserError(f"the pytriton wheel has no Python backend stub for Python {version}")
    python = work / "backends" / "python"
    python.mkdir(parents=True)
    for name in ("libtriton_python.so", "triton_python_backend_utils.py"):
        shutil.copy2(src / "backends" / "python" / name, python / name)
    shutil.copy2(stub, python / "triton_python_backend_stub")
    os.chmod(python / "triton_python_backend_stub", 0o755)
    return work / "backends"


def _environment(wheel: Path | None) -> dict[str, str]:
    env = dict(os.environ)
    libs = [sysconfig.get_config_var("LIBDIR") or ""]
    if wheel is not None:
        libs.append(str(wheel.parent / "nvidia_pytriton.libs"))
    env["LD_LIBRARY_PATH"] = os.pathsep.join([p for p in libs if p] + [env.get("LD_LIBRARY_PATH", "")]).rstrip(":")
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    env.setdefault("OMP_NUM_THREADS", "1")
    return env


def python_models(repository: Path) -> tuple[list[str], list[str]]:
    """(models of the Python backend, the others) in a repository."""
    from . import config as cfg

    loadable, skipped = [], []
    for folder in sorted(p for p in repository.iterdir() if (p / "config.pbtxt").is_file()):
        try:
            config = cfg.read(folder / "config.pbtxt")
        except Exception:  # noqa: BLE001 - Triton reports a broken config itself
            skipped.append(folder.name)
            continue
        (loadable if config.backend == "python" else skipped).append(folder.name)
    if not loadable:
        raise UserError(f"'{repository}' has no Python-backend model, the only kind this tritonserver "
                        "(nvidia-pytriton's build) runs; NVIDIA's Triton container serves the others")
    return loadable, skipped


def _ready(options: ServerOptions) -> bool:
    url = f"http://{'127.0.0.1' if options.host in ('0.0.0.0', '::') else options.host}:{options.http_port}" \
          "/v2/health/ready"
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def _shm() -> set[str]:
    return {p.name for p in Path("/dev/shm").glob(SHM_GLOB)} if Path("/dev/shm").is_dir() else set()


def _tail(path: Path, lines: int = 12) -> str:
    try:
        text = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    useful = [ln for ln in text if "CUDA" not in ln and "cuda" not in ln]
    return "\n".join(useful[-lines:])


def check_ports(options: ServerOptions) -> None:
    """Bind each port on the host once (SO_REUSEADDR, as servers do) and release it: one line
    naming the first that cannot be used."""
    for flag, port in (("--http-port", options.http_port), ("--grpc-port", options.grpc_port),
                       ("--metrics-port", options.metrics_port)):
        try:
            family, kind, proto, _, address = socket.getaddrinfo(options.host, port, type=socket.SOCK_STREAM,
                                                                 flags=socket.AI_PASSIVE)[0]
        except socket.gaierror as exc:
            raise UserError(f"--host {options.host!r} is not an address of this machine ({exc.strerror})") from None
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(address)
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE:
                    raise UserError(f"port {port} on {options.host} ({flag}) is taken by another program; "
                                    f"give a free one with {flag}") from None
                if exc.errno == errno.EADDRNOTAVAIL:
                    raise UserError(f"--host {options.host!r} is not an address of this machine") from None
                raise UserError(f"cannot bind {options.host} port {port} ({flag}): {exc.strerror or exc}") from None


def _command(binary: Path, wheel: Path | None, repository: Path, options: ServerOptions, work: Path,
             loadable: list[str] | None) -> list[str]:
    command = [str(binary), f"--model-repository={repository.resolve()}",
               f"--http-address={options.host}", f"--http-port={options.http_port}",
               f"--grpc-address={options.host}", f"--grpc-port={options.grpc_port}",
               f"--metrics-address={options.host}", f"--metrics-port={options.metrics_port}",
               f"--exit-timeout-secs={options.exit_timeout}", "--strict-readiness=true", "--log-verbose=0"]
    if wheel is not None:
        command.append(f"--backend-directory={_backends(wheel, work)}")
        command.append("--cache-directory=" + str(wheel / "tritonserver" / "caches"))
        command.append("--model-control-mode=explicit")
        command += [f"--load-model={name}" for name in loadable or []]
    return command


def start_server(repository: str | Path, options: ServerOptions = ServerOptions()) -> Server:
    """Start tritonserver on ``repository`` and wait (bounded) until it is ready."""
    repository = Path(repository)
    if not (repository.is_dir() and any(p.joinpath("config.pbtxt").is_file() for p in repository.iterdir())):
        raise UserError(f"'{repository}' is not a model repository (no <model>/config.pbtxt); "
                        "write one with bisenet-serve repo")
    check_ports(options)
    binary, wheel = triton_home()
    # pytriton's build has the Python backend only: load just the models it can run
    loadable, skipped = python_models(repository) if wheel is not None else (None, [])
    # SIGTERM is Triton's graceful stop: give it its exit timeout before SIGKILL
    watch = Watch(temporary_folder("bisenet-triton"), grace=options.exit_timeout + 10)
    work = Path(watch.folder)
    shm_before = _shm()
    log_path = work / "tritonserver.log"
    try:
        command = _command(binary, wheel, repository, options, work, loadable)
        with open(log_path, "wb") as log_file:  # the server keeps its own descriptor
            process = subprocess.Popen(command, stdout=None if options.verbose else log_file,
                                       stderr=subprocess.STDOUT, env=_environment(wheel), start_new_session=True)
    except BaseException:
        watch.close()
        raise
    server = Server(process, options, log_path, work, shm_before, skipped, watch)
    deadline = time.monotonic() + options.ready_timeout
    try:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise UserError(f"tritonserver exited during start (code {process.returncode}):\n"
                                f"{_tail(log_path)}")
            if _ready(options):
                return server
            time.sleep(0.2)
        raise UserError(f"tritonserver was not ready after {options.ready_timeout:.0f} s:\n{_tail(log_path)}")
    except BaseException:
        stop_server(server)
        raise


def stop_server(server: Server) -> int:
    """SIGINT (Triton's graceful stop), then SIGTERM, then SIGKILL, each bounded; remove what
    the server left (its shared-memory regions, the temporary folder). Returns its exit code."""
    process = server.process
    stop_process_group(process, ((signal.SIGINT, server.options.exit_timeout + 10), (signal.SIGTERM, 5),
                                 (signal.SIGKILL, 5)))
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)  # stubs that outlived the server
    if process.returncode and "Exit timeout expired" in _tail(server.log_path, 4):
        # Triton waits for open client connections (HTTP keep-alive) up to its exit timeout,
        # then stops anyway with exit code 1: nothing went wrong with the server itself.
        server.stop_note = (f"clients were still connected when Triton's {server.options.exit_timeout} s exit "
                            "timeout ran out; it stopped anyway")
    if server.watch is not None:
        server.watch.close()  # stubs that outlived the server, the folder, the watchdog
    for name in _shm() - server.shm_before:
        with contextlib.suppress(OSError):
            (Path("/dev/shm") / name).unlink()
    shutil.rmtree(server.work, ignore_errors=True)
    return process.returncode if process.returncode is not None else -9


@contextlib.contextmanager
def running_server(repository: str | Path, options: ServerOptions = ServerOptions()) -> Iterator[Server]:
    server = start_server(repository, options)
    try:
        yield server
    finally:
        stop_server(server)
