"""Every process we start dies with us (issue 20, item 5), and Ray's session folder fits AF_UNIX
(item 4): real ``bisenet-infer --ray local`` and ``bisenet-serve run`` subprocesses killed with
SIGKILL mid-run, their descendants collected by pid from /proc while alive, then waited for
(bounded); whatever a failed test leaves is killed by pid, so nothing outlives the suite.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from bisenet_deploy import fileio
from bisenet_deploy.errors import UserError
from bisenet_deploy.processes import _tree, process_alive

from .ports import free_ports
from .tiny_onnx import tiny_onnx

ROOT = Path(__file__).resolve().parent.parent
SERVE_PYTHON = Path(os.environ.get("BISENET_SERVE_PYTHON", ROOT / ".venv-serve" / "bin" / "python"))
LINUX = Path("/proc/self").exists()
needs_proc = pytest.mark.skipif(not LINUX, reason="process trees are read from Linux /proc")


def _descendants(pid: int) -> set[int]:
    tree, found = _tree(), {pid}
    grew = True
    while grew:
        grew = False
        for child, (parent, _) in tree.items():
            if parent in found and child not in found:
                found.add(child)
                grew = True
    return found


def _kill_and_expect_none_left(proc: subprocess.Popen, seen: set[int], timeout: float = 30.0) -> None:
    """SIGKILL ``proc``; every pid of ``seen`` must be gone within ``timeout`` seconds."""
    seen |= _descendants(proc.pid)
    proc.kill()
    proc.wait()
    deadline = time.monotonic() + timeout
    alive = [p for p in seen if process_alive(p)]
    while alive and time.monotonic() < deadline:
        time.sleep(0.2)
        alive = [p for p in alive if process_alive(p)]
    names = {}
    for pid in alive:
        with contextlib.suppress(OSError):
            names[pid] = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")[:80].decode(errors="replace")
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)  # nothing outlives the suite, even when the test fails
    assert not alive, f"outlived the SIGKILL by {timeout:.0f} s: {names}"




def _reap(proc: subprocess.Popen, seen) -> None:
    """Whatever a kill test started dies with it, whether the test passed or not."""
    if proc.poll() is None:
        proc.kill()
        proc.wait()
    for pid in seen:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)


# --- the watchdog on its own -------------------------------------------------------------------


@needs_proc
def test_watchdog_stops_a_folders_processes_and_removes_it_when_its_parent_is_killed(tmp_path):
    """A parent watches a folder, starts a child naming it and a grandchild that holds a file
    in it (as raylet and its agents do), and is killed with SIGKILL."""
    folder = tmp_path / "owned"
    folder.mkdir()
    script = f"""
import subprocess, sys, time
from bisenet_deploy.processes import Watch
watch = Watch({str(folder)!r}, grace=2)
grandchild = "import time; f = open({str(folder / 'log')!r}, 'w'); time.sleep(300)"
child = subprocess.Popen([sys.executable, "-c",
    "import subprocess, sys, time; subprocess.Popen([sys.executable, '-c', sys.argv[2]]); time.sleep(300)",
    {str(folder)!r}, grandchild], start_new_session=True)
print("started", flush=True)
time.sleep(300)
"""
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True,
                            env=dict(os.environ, PYTHONPATH=str(ROOT)))
    try:
        assert proc.stdout.readline().strip() == "started"
        deadline = time.monotonic() + 20  # the grandchild has opened its file
        while not (folder / "log").exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        seen = _descendants(proc.pid)
        assert len(seen) >= 4, seen  # parent, watchdog, child, grandchild
        _kill_and_expect_none_left(proc, seen, timeout=20)
        deadline = time.monotonic() + 5
        while folder.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not folder.exists(), "the watched folder outlived its processes"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


# --- temporary folders -------------------------------------------------------------------------


@needs_proc
def test_sweep_keeps_a_folder_a_live_process_uses_and_removes_one_whose_pid_was_reused(tmp_path, monkeypatch):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    used = tmp_path / f"bisenet-triton.{fileio.TMP_MARK}-{fileio._HOST}-{dead.pid}-ab12"
    used.mkdir()
    # an orphaned server: its starter (dead.pid) is gone, it still names the folder
    orphan = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)", str(used)])
    newer = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])
    try:
        reused = tmp_path / f"r.{fileio.TMP_MARK}-{fileio._HOST}-{newer.pid}-cd34"
        reused.mkdir()
        hour_ago = time.time() - 3600
        os.utime(reused, (hour_ago, hour_ago))  # made before the process that now has its pid
        mine = tmp_path / f"r.{fileio.TMP_MARK}-{fileio._HOST}-{os.getpid()}-ef56"
        mine.mkdir()
        monkeypatch.setattr(fileio, "_cleaned", set())
        removed = fileio.remove_stale_temporaries(tmp_path)
        assert used.is_dir() and mine.is_dir()
        assert removed == [reused] and not reused.exists()
        orphan.kill()
        orphan.wait()
        monkeypatch.setattr(fileio, "_cleaned", set())
        assert fileio.remove_stale_temporaries(tmp_path) == [used]
    finally:
        for p in (orphan, newer):
            p.kill()
            p.wait()


def test_socket_folder_is_short_whatever_tmpdir_and_says_so_when_nothing_is(tmp_path, monkeypatch):
    import tempfile

    long = tmp_path / ("t" * 80)
    long.mkdir()
    monkeypatch.setenv("TMPDIR", str(long))
    monkeypatch.setattr(tempfile, "tempdir", None)
    room = len(f"/session_{'0' * 26}_{4194304}/sockets/plasma_store")  # the longest pid Linux gives
    folder = fileio.temporary_folder("r", room=room)
    try:
        assert len(os.fsencode(str(folder))) + room <= fileio.SOCKET_PATH_MAX
        assert fileio.TMP_MARK in folder.name
    finally:
        folder.rmdir()
    with pytest.raises(UserError, match="short enough") as info:
        fileio.temporary_folder("r", room=200)
    assert "\n" not in str(info.value)


def test_host_tag_is_short_and_stable():
    assert fileio._host_tag("vm") == "vm"
    tag = fileio._host_tag("robot-workstation-01")
    assert len(tag) == 8 and tag == fileio._host_tag("robot-workstation-01") != fileio._host_tag("robot-workstation-02")


# --- bisenet-infer --ray local -----------------------------------------------------------------

ray_missing = importlib.util.find_spec("ray") is None or importlib.util.find_spec("pyarrow") is None
needs_ray = pytest.mark.skipif(ray_missing, reason="needs ray[data] (pip install 'bisenet-deploy[ray]')")


@pytest.fixture(scope="module")
def ray_job(tmp_path_factory):
    """A tiny model (64x128) and 240 small images: a --ray local run of about half a minute."""
    import cv2
    import numpy as np

    root = tmp_path_factory.mktemp("lifetime")
    model = tiny_onnx(root / "m.onnx", dynamic=True)
    images = root / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    for i in range(240):
        cv2.imwrite(str(images / f"i{i:03d}.png"), rng.integers(0, 255, (64, 128, 3), dtype=np.uint8))
    return model, images


def _infer(model: Path, images: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "bisenet_deploy.cli.infer", str(model), str(images), "-o", str(out), "--ray",
            "local", "--backend", "onnxruntime", "-q"]


@needs_ray
@needs_proc
def test_ray_local_runs_with_a_long_tmpdir_and_a_long_hostname(ray_job, tmp_path):
    model, images = ray_job
    long = tmp_path / ("t" * 70)
    long.mkdir()
    env = dict(os.environ, TMPDIR=str(long), PYTHONPATH=str(ROOT))
    command = _infer(model, images, tmp_path / "out")
    hostname = "robot-workstation-01-in-a-private-uts-namespace"
    unshare = shutil.which("unshare")
    private = os.geteuid() == 0 and unshare and subprocess.run(
        [unshare, "--uts", "hostname", hostname], capture_output=True, check=False).returncode == 0
    if private:  # a long host name too, in a UTS namespace of its own
        command = [unshare, "--uts", "sh", "-c", f'hostname {hostname} && exec "$@"', "sh", *command]
    run = subprocess.run(command, capture_output=True, text=True, timeout=240, env=env, check=False)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "240 frames segmented" in run.stdout, run.stdout
    # (a library keeps a small id file, .ses, in TMPDIR for good: not a temporary of the run)
    assert not [p for p in long.iterdir() if fileio.TMP_MARK in p.name or "session" in p.name]
    if not private:
        pytest.skip("ran with the long TMPDIR only: a long host name needs root and unshare --uts")


@needs_ray
@needs_proc
def test_sigkill_of_ray_local_mid_run_leaves_no_process(ray_job, tmp_path):
    model, images = ray_job
    out = tmp_path / "out"
    proc = subprocess.Popen(_infer(model, images, out), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env=dict(os.environ, PYTHONPATH=str(ROOT)))
    seen: set[int] = set()
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and proc.poll() is None and len(list(out.glob("*.png"))) < 3:
            seen |= _descendants(proc.pid)
            time.sleep(0.2)
        assert proc.poll() is None, "the run ended before it could be killed mid-run"
        assert len(list(out.glob("*.png"))) >= 3
        names = " ".join(Path(f"/proc/{p}/cmdline").read_bytes().decode(errors="replace")
                         for p in _descendants(proc.pid) if Path(f"/proc/{p}/cmdline").exists())
        assert "raylet" in names and "ray::" in names  # the head and its workers/agents were seen
        _kill_and_expect_none_left(proc, seen)
        assert not [p for p in Path("/tmp").glob(f"r.{fileio.TMP_MARK}-{fileio._HOST}-{proc.pid}-*")]
    finally:
        _reap(proc, seen)


# --- bisenet-serve -----------------------------------------------------------------------------


def _fake_repository(tmp_path: Path) -> Path:
    repo = tmp_path / "repo"
    (repo / "bisenet").mkdir(parents=True)
    (repo / "bisenet" / "config.pbtxt").write_text('name: "bisenet"\nbackend: "python"\n')
    return repo


def test_run_names_the_port_that_is_taken(tmp_path, capsys):
    from bisenet_deploy.cli.serve import main

    http, grpc, metrics = free_ports(3)
    with socket.socket() as other:  # another server, listening on what would be our gRPC port
        other.bind(("127.0.0.1", grpc))
        other.listen()
        code = main(["run", str(_fake_repository(tmp_path)), "--http-port", str(http), "--grpc-port", str(grpc),
                     "--metrics-port", str(metrics)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1, err
    assert f"port {grpc}" in err and "--grpc-port" in err


@pytest.mark.parametrize("args, message", [
    (["--backend", "nope"], "unknown --backend 'nope'"),
    (["--backend", "tensorrt"], "the tensorrt backend runs TensorRT engines"),
    (["--backend", "triton"], "client of a server"),
])
def test_repo_refuses_options_that_cannot_run_when_it_writes(tmp_path, capsys, args, message):
    pytest.importorskip("tritonclient")
    from bisenet_deploy.cli.serve import main

    model = tiny_onnx(tmp_path / "m.onnx", dynamic=True)
    code = main(["repo", str(model), "-o", str(tmp_path / "repo"), *args])
    err = capsys.readouterr().err.strip()
    assert code == 2 and message in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / "repo").exists()


def test_repo_of_a_checkpoint_without_torch_says_export_it_first(tmp_path):
    if not SERVE_PYTHON.is_file():
        pytest.skip(f"no serving environment at {SERVE_PYTHON} (make serve-setup builds it)")
    if subprocess.run([str(SERVE_PYTHON), "-c", "import torch"], capture_output=True, check=False).returncode == 0:
        pytest.skip("the serving environment has torch")
    (tmp_path / "m.pth").write_bytes(b"not read")
    run = subprocess.run([str(SERVE_PYTHON), "-m", "bisenet_deploy.cli.serve", "repo", str(tmp_path / "m.pth"), "-o",
                          str(tmp_path / "repo")], capture_output=True, text=True, timeout=60,
                         env=dict(os.environ, PYTHONPATH=str(ROOT)), check=False)
    assert run.returncode == 2 and "export it first" in run.stderr, run.stderr
    assert len(run.stderr.strip().splitlines()) == 1 and "Traceback" not in run.stderr


@needs_proc
def test_sigkill_of_serve_run_leaves_no_process(tmp_path):
    if not SERVE_PYTHON.is_file():
        pytest.skip(f"no serving environment at {SERVE_PYTHON} (make serve-setup builds it)")
    pytest.importorskip("tritonclient")
    from bisenet_deploy.serving.repository import RepoOptions, write_repository

    repo = write_repository(tiny_onnx(tmp_path / "m.onnx", dynamic=True), tmp_path / "repo",
                            RepoOptions(backend="onnxruntime"))
    http, grpc, metrics = free_ports(3)
    proc = subprocess.Popen([str(SERVE_PYTHON), "-m", "bisenet_deploy.cli.serve", "run", str(repo), "--http-port",
                             str(http), "--grpc-port", str(grpc), "--metrics-port", str(metrics), "--timeout", "90"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=dict(os.environ, PYTHONPATH=str(ROOT)))
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stdout), daemon=True)
    reader.start()
    seen: set[int] = set()
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None and not any("ready in" in ln for ln in lines):
            seen |= _descendants(proc.pid)
            time.sleep(0.2)
        assert any("ready in" in ln for ln in lines), "".join(lines[-20:])
        seen |= _descendants(proc.pid)
        names = " ".join(Path(f"/proc/{p}/cmdline").read_bytes().decode(errors="replace")
                         for p in seen if Path(f"/proc/{p}/cmdline").exists())
        assert "tritonserver" in names and "triton_python_backend_stub" in names
        regions = set()  # the Python backend's shared memory, as our processes map it
        for pid in seen:
            with contextlib.suppress(OSError):
                regions |= {ln.split(maxsplit=5)[5] for ln in Path(f"/proc/{pid}/maps").read_text().splitlines()
                            if "/dev/shm/triton_python_backend_shm_region" in ln}
        assert regions
        _kill_and_expect_none_left(proc, seen)
        # Triton's graceful stop (SIGTERM from the watchdog) removes them
        assert not [r for r in regions if Path(r.removesuffix(" (deleted)")).exists()], regions
        with socket.socket() as probe:  # the ports are free again
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind(("127.0.0.1", grpc))
    finally:
        _reap(proc, seen)
