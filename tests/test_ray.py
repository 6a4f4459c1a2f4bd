"""``bisenet-infer --ray``: a Ray Data run writes what a plain run writes (issue 13).

One session-scoped Ray cluster on 127.0.0.1 (``ray start --head`` on a free port, its own
temp folder) serves the jobs that join it by address; one test starts and stops its own
``--ray local`` cluster through the CLI. Every process a test started is stopped by process
id: nothing outlives the suite.
"""

from __future__ import annotations

import csv
import importlib.util
import filecmp
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import cv2
import pytest

from bisenet_deploy.cli.infer import main as infer
from bisenet_deploy.distributed.cluster import processes_naming, stop_processes_naming

from .conftest import random_frame
from .test_hardening import _mjpeg

# find_spec, not importorskip: importing ray before the cluster code sets its environment
# (RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 ...) makes it announce the external address.
if importlib.util.find_spec("ray") is None or importlib.util.find_spec("pyarrow") is None:
    pytest.skip("needs ray[data] (pip install 'bisenet-deploy[ray]')", allow_module_level=True)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def ray_address(tmp_path_factory):
    """A head node of its own (2 CPUs), stopped by pid at the end of the session."""
    folder = tmp_path_factory.mktemp("r")  # short: Ray's socket paths must fit 107 bytes
    port = _free_port()
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
           "RAY_AUTH_MODE": "disabled"}  # a token in ~/.ray/auth_token would lock out the test client
    ray = str(Path(sys.executable).with_name("ray"))
    start = subprocess.run([ray, "start", "--head", "--node-ip-address", "127.0.0.1", "--port", str(port),
                            "--num-cpus", "2", "--temp-dir", str(folder), "--include-dashboard", "false",
                            "--disable-usage-stats"], capture_output=True, text=True, timeout=120, env=env)
    try:
        assert start.returncode == 0, start.stderr[-2000:]
        yield f"127.0.0.1:{port}"
    finally:
        assert not stop_processes_naming(str(folder)), "Ray processes outlived the session"


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """20 small images (one corrupt), a short video and a truncated one."""
    root = tmp_path_factory.mktemp("rayin")
    folder = root / "images"
    folder.mkdir()
    for i in range(19):
        cv2.imwrite(str(folder / f"img{i:02d}.png"), random_frame(40 + (i % 3) * 8, 72, seed=i))
    (folder / "broken.jpg").write_bytes(b"not an image")
    _mjpeg(root / "clip.avi", [random_frame(48, 64, i) for i in range(10)])
    whole = _mjpeg(root / "whole.avi", [random_frame(48, 64, i) for i in range(12)])
    (root / "short.avi").write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    return root


def _rows(path: Path) -> dict:
    return {(r["source"], r["frame"]): r for r in csv.DictReader(open(path / "summary.csv"))}


def _pngs(folder: Path) -> list[Path]:
    return sorted(p.relative_to(folder) for p in folder.rglob("*.png"))


def test_ray_run_equals_a_plain_run_and_resumes(export_model5, inputs, ray_address, tmp_path):
    from bisenet_deploy.distributed import RayOptions, segment

    model = export_model5()
    srcs = [str(inputs / "images"), str(inputs / "clip.avi"), str(inputs / "short.avi")]
    plain = tmp_path / "plain"
    assert infer([str(model), *srcs, "-o", str(plain), "--backend", "onnxruntime", "-q"]) == 1  # 2 bad inputs
    result = segment(model, srcs, tmp_path / "ray", backend="onnxruntime", progress=False,
                     ray=RayOptions(address=ray_address, workers=1, batch=4, chunk=4))
    out = tmp_path / "ray"
    assert not result.ok and result.frames == len(_pngs(plain)) > 19 + 10  # + the readable part of short.avi
    assert _pngs(out) == _pngs(plain)
    for name in _pngs(out):  # palette PNGs byte for byte
        assert filecmp.cmp(out / name, plain / name, shallow=False), name
    ray_rows, plain_rows = _rows(out), _rows(plain)
    assert {k for k, r in ray_rows.items() if r["status"] == "ok"} == {k for k, r in plain_rows.items()
                                                                      if r["status"] == "ok"}
    for key, row in ray_rows.items():
        if row["status"] == "ok":
            assert row["output"] == plain_rows[key]["output"] and row["frac_0"] == plain_rows[key]["frac_0"]
            assert row["worker"] and float(row["latency_ms"]) > 0
    failed = {r["source"] for r in ray_rows.values() if r["status"] == "failed"}
    assert failed == {str(inputs / "images" / "broken.jpg"), str(inputs / "short.avi")}
    assert (out / "summary.parquet").is_file()

    again = segment(model, srcs, out, backend="onnxruntime", progress=False,
                    ray=RayOptions(address=ray_address, workers=1, batch=4, chunk=4))
    assert again.frames == 0 and again.existing == result.frames  # every output kept


def test_overlay_videos_are_assembled_with_every_frame(export_model5, inputs, ray_address, tmp_path):
    from bisenet_deploy.distributed import RayOptions, segment

    result = segment(export_model5(), [str(inputs / "clip.avi")], tmp_path, mode="overlay", backend="onnxruntime",
                     progress=False, ray=RayOptions(address=ray_address, workers=1, chunk=3))
    cap = cv2.VideoCapture(str(tmp_path / "clip.overlay.mp4"))
    count = 0
    while cap.read()[0]:
        count += 1
    cap.release()
    assert result.ok and count == 10 and result.videos == [(tmp_path / "clip.overlay.mp4", 10)]
    assert not [p for p in tmp_path.iterdir() if "bisenet-tmp" in p.name]  # the frames folder is gone


def test_cli_ray_local_starts_and_stops_its_own_cluster(export_model5, inputs, tmp_path):
    before = set(processes_naming("raylet"))
    run = subprocess.run([sys.executable, "-m", "bisenet_deploy.cli.infer", str(export_model5()),
                          str(inputs / "clip.avi"), "-o", str(tmp_path / "out"), "--ray", "local", "--backend",
                          "onnxruntime", "-q"], capture_output=True, text=True, timeout=240)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "10 frames segmented" in run.stdout and "Ray startup" in run.stdout
    assert len(list((tmp_path / "out" / "clip").glob("*.png"))) == 10
    deadline = time.monotonic() + 20
    while set(processes_naming("raylet")) - before and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not set(processes_naming("raylet")) - before, "the local cluster outlived the run"


def test_bad_ray_options_are_one_line(export_model5, inputs, tmp_path, capsys):
    assert infer([str(export_model5()), str(inputs / "clip.avi"), "-o", str(tmp_path), "--workers", "2"]) == 2
    assert "apply to Ray runs: add --ray" in capsys.readouterr().err
    assert infer([str(export_model5()), "0", "-o", str(tmp_path / "o"), "--ray", "--backend", "onnxruntime"]) == 2
    assert "segment cameras without --ray" in capsys.readouterr().err
