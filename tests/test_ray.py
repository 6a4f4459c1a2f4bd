"""``bisenet-infer --ray``: a Ray Data run writes what a plain run writes (issue 13).

One session-scoped Ray cluster on 127.0.0.1 (``ray start --head`` on a free port, its own
temp folder) serves the jobs that join it by address; one test starts and stops its own
``--ray local`` cluster through the CLI. Every process a test started is stopped by process
id: nothing outlives the suite.
"""

from __future__ import annotations

import csv
import filecmp
import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from bisenet_deploy.cli.infer import main as infer
from bisenet_deploy.distributed import RayOptions
from bisenet_deploy.distributed.cluster import processes_naming, stop_processes_naming
from bisenet_deploy.jobs.job import BagOptions, JobSpec

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


def segment(model, inputs, out, ray, **options):
    from bisenet_deploy.distributed import run

    return run(JobSpec(model, [str(i) for i in inputs], Path(out), quiet=True, ray=ray, **options))


def _rows(path: Path) -> dict:
    return {(r["source"], r["frame"]): r for r in csv.DictReader(open(path / "summary.csv"))}


def _pngs(folder: Path) -> list[Path]:
    return sorted(p.relative_to(folder) for p in folder.rglob("*.png"))


def _csv_without_timing(path: Path) -> list[str]:
    rows = list(csv.reader(open(path / "summary.csv")))
    drop = [rows[0].index("latency_ms"), rows[0].index("worker")]
    return [",".join("" if i in drop else v for i, v in enumerate(r)) for r in rows]


def test_ray_run_equals_a_plain_run_and_resumes(export_model5, inputs, ray_address, tmp_path):
    model = export_model5()
    srcs = [str(inputs / "images"), str(inputs / "clip.avi"), str(inputs / "short.avi")]
    plain = tmp_path / "plain"
    assert infer([str(model), *srcs, "-o", str(plain), "--backend", "onnxruntime", "-q"]) == 1  # 2 bad inputs
    result = segment(model, srcs, tmp_path / "ray", backend="onnxruntime",
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
    # the same summary.csv, failures included, apart from timings and the process names
    assert _csv_without_timing(out) == _csv_without_timing(plain)

    again = segment(model, srcs, out, backend="onnxruntime",
                    ray=RayOptions(address=ray_address, workers=1, batch=4, chunk=4))
    assert again.frames == 0 and again.existing == result.frames  # every output kept
    assert {s for s, _ in again.failed} == failed  # the failures stay failed


def test_overlay_videos_are_assembled_with_every_frame(export_model5, inputs, ray_address, tmp_path):
    result = segment(export_model5(), [str(inputs / "clip.avi")], tmp_path, mode="overlay", backend="onnxruntime",
                     ray=RayOptions(address=ray_address, workers=1, chunk=3))
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


def _bag_messages(bag: Path) -> dict[str, list]:
    """{topic: [(log time, stamp, frame_id, pixels)]} of a bag's image topics."""
    from bisenet_deploy.rosbag.bags import BagReader

    with BagReader(bag) as reader:
        topics = sorted(reader.image_topics)
        out: dict[str, list] = {t: [] for t in topics}
        for frame in reader.frames(topics):
            out[frame.topic].append((frame.timestamp, frame.stamp, frame.frame_id, frame.image))
    return out


def test_bags_spread_over_workers_by_message_ranges_and_give_a_plain_runs_bag(export_model5, ray_address,
                                                                               tmp_path, capsys):
    """11 camera messages on two topics (one undecodable) in ranges of 3: the mask bag, its
    overlay and copied topics, headers, log times and the summary rows are a plain run's."""
    pytest.importorskip("rosbags")
    from .test_rosbag import TS2, compressed, raw_image, write_bag

    stamps = [1_700_000_000_123_456_789 + i * 33_000_000 for i in range(5)]
    frames = [random_frame(40, 72, seed=i) for i in range(5)]
    front = [(t + 1000, raw_image(TS2, f, ("bgr8", "rgb8", "mono8")[i % 3], t, pad=2 * (i % 2)))
             for i, (t, f) in enumerate(zip(stamps, frames))]
    bad = raw_image(TS2, frames[0], "bgr8", stamps[2] + 1)
    bad.encoding = "yuv422"
    front.insert(3, (stamps[2] + 5000, bad))
    rear = [(t + 2000, compressed(TS2, f, "png", t)) for t, f in zip(stamps, frames)]
    bag = write_bag(tmp_path / "drive", "mcap", {"/cam/front": front, "/cam/rear/compressed": rear},
                    ("/cam/rear/compressed",))
    model = export_model5()
    plain = tmp_path / "plain"
    assert infer([str(model), str(bag), "-o", str(plain), "--backend", "onnxruntime", "--mode", "overlay",
                  "--copy-topics", "-q"]) == 1  # the yuv422 message
    out = tmp_path / "ray"
    result = segment(model, [str(bag)], out, mode="overlay", backend="onnxruntime",
                     bag=BagOptions(copy_topics=True), ray=RayOptions(address=ray_address, workers=2, batch=2,
                                                                      chunk=3))
    assert result.frames == 10 and len(result.failed) == 1 and "yuv422" in result.failed[0][1]
    assert result.videos == [(out / "drive_segmentation", 10)]
    got, expected = _bag_messages(out / "drive_segmentation"), _bag_messages(plain / "drive_segmentation")
    assert set(got) == set(expected) == {"/cam/front", "/cam/rear/compressed", "/cam/front/segmentation",
                                         "/cam/rear/compressed/segmentation", "/cam/front/segmentation/overlay",
                                         "/cam/rear/compressed/segmentation/overlay"}
    for topic, messages in expected.items():
        assert len(got[topic]) == len(messages), topic
        for (t1, s1, f1, a), (t2, s2, f2, b) in zip(got[topic], messages):
            assert (t1, s1, f1) == (t2, s2, f2) and np.array_equal(a, b), topic
    assert [m[1] for m in got["/cam/front/segmentation"]] == stamps  # ns stamps survive Ray exactly
    ray_rows, plain_rows = _rows(out), _rows(plain)
    assert ray_rows.keys() == plain_rows.keys() and len(ray_rows) == 11
    for key, row in ray_rows.items():
        for column in ("status", "topic", "stamp", "output", "frac_0"):
            assert row[column] == plain_rows[key][column], (key, column)
    assert not [p for p in out.iterdir() if "bisenet-tmp" in p.name]  # the frames folder is gone

    assert _csv_without_timing(out) == _csv_without_timing(plain)
    again = segment(model, [str(bag)], out, mode="overlay", backend="onnxruntime", bag=BagOptions(copy_topics=True),
                    ray=RayOptions(address=ray_address, workers=1))
    assert again.frames == 10 and len(again.failed) == 1  # a bag with a failure is done again, never kept

    cli_out = tmp_path / "cli"
    assert infer([str(model), str(bag), "-o", str(cli_out), "--ray", ray_address, "--backend", "onnxruntime",
                  "--topic", "/cam/rear/compressed", "--mask-topic", "/labels", "-q"]) == 0
    assert set(_bag_messages(cli_out / "drive_segmentation")) == {"/cam/rear/compressed/labels"}
    capsys.readouterr()
    assert infer([str(model), str(bag), "-o", str(tmp_path / "none"), "--ray", ray_address, "--topic", "/nope",
                  "--backend", "onnxruntime", "-q"]) == 1
    said = capsys.readouterr()
    assert "has no image topic /nope; its image topics: /cam/front (Image)" in said.err
    assert "nothing left to run on Ray" in said.out

    # damaged part way (a SQLite3 bag with a corrupt page): the readable part and one failed
    # row at the first unreadable message, as in a plain run, however many ranges follow it
    sqlite = write_bag(tmp_path / "s", "sqlite3", {"/c": [(i * 10, raw_image(TS2, frames[i % 5], "bgr8", i * 10))
                                                          for i in range(1, 40)]})
    db = next(sqlite.glob("*.db3"))
    data = bytearray(db.read_bytes())
    data[len(data) // 2: len(data) // 2 + 5000] = b"\xff" * 5000
    db.write_bytes(bytes(data))
    assert infer([str(model), str(sqlite), "-o", str(tmp_path / "plain_s"), "--backend", "onnxruntime", "-q"]) == 1
    damaged = segment(model, [str(sqlite)], tmp_path / "ray_s", backend="onnxruntime",
                      ray=RayOptions(address=ray_address, workers=1, chunk=4))
    ray_rows, plain_rows = _rows(tmp_path / "ray_s"), _rows(tmp_path / "plain_s")
    assert {k: (r["status"], r["error"]) for k, r in ray_rows.items()} == \
        {k: (r["status"], r["error"]) for k, r in plain_rows.items()}
    assert len(damaged.failed) == len([r for r in plain_rows.values() if r["status"] == "failed"]) == 1


@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_under_ray_leaves_rows_for_every_mask_and_the_folder_refuses_another_model(
        export_model5, inputs, ray_address, tmp_path, sig, code):
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "bisenet_deploy.cli.infer", str(export_model5()),
                             str(inputs / "images"), str(inputs / "clip.avi"), "-o", str(out), "--ray", ray_address,
                             "--backend", "onnxruntime", "--batch", "1", "-q"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not list(out.glob("*.png")) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        manifest = json.loads((out / ".bisenet-infer.json").read_text())  # there before the first output
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == code, err[-2000:]
    listed = {r["output"] for r in _rows(out).values() if r["status"] == "ok"} if (out / "summary.csv").exists() \
        else set()
    on_disk = {p.relative_to(out).as_posix() for p in out.rglob("*.png")}
    assert on_disk <= listed and manifest["model"] == export_model5().name
    other = export_model5(argmax=True)  # refused while any result is there (a folder left empty may take it)
    # a result: a mask, or a summary of the rows done (a signal may land after the rows of a mask
    # whose file the run then dropped, so "no mask on disk" alone does not mean an empty folder)
    results = on_disk or any(p.name != ".bisenet-infer.json" for p in out.iterdir())
    assert infer([str(other), str(inputs / "images"), "-o", str(out), "-q"]) == (2 if results else 1)


def test_a_foreign_onnx_runs_on_ray_with_its_spec_as_it_does_here(inputs, ray_address, tmp_path, capsys):
    """``--spec`` reaches every actor (issue 23): the same masks as a plain run with it."""
    from .tiny_onnx import tiny_onnx

    model = tiny_onnx(tmp_path / "foreign.onnx", metadata=False)
    spec = '{"num_classes": 4, "color_order": "RGB", "mean": [0.2, 0.5, 0.7], "std": [0.3, 0.2, 0.1]}'
    src = str(inputs / "clip.avi")
    assert infer([str(model), src, "-o", str(tmp_path / "plain"), "--spec", spec, "-q"]) == 0
    assert infer([str(model), src, "-o", str(tmp_path / "ray"), "--spec", spec, "-q", "--ray", ray_address,
                  "--workers", "1"]) == 0
    assert _pngs(tmp_path / "ray") == _pngs(tmp_path / "plain") and len(_pngs(tmp_path / "ray")) == 10
    for name in _pngs(tmp_path / "ray"):
        assert filecmp.cmp(tmp_path / "ray" / name, tmp_path / "plain" / name, shallow=False), name
    capsys.readouterr()
    # without it: one line naming --spec, before any cluster is joined
    assert infer([str(model), src, "-o", str(tmp_path / "none"), "-q", "--ray", ray_address]) != 0
    err = capsys.readouterr().err
    assert "carries no ModelSpec" in err and "--spec" in err and len(err.strip().splitlines()) == 1, err
