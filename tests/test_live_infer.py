"""``bisenet-infer --live`` (issue 22, item 3): several sources at once through one streaming
runtime, each to its own outputs, per-stream drop and latency figures at the end."""

from __future__ import annotations

import csv
import re

import cv2
import numpy as np
from PIL import Image

from bisenet_deploy.cli.infer import main as infer
from bisenet_deploy.runtime import Segmenter

from .conftest import random_frame
from .test_cli_infer import write_video

LINE = re.compile(r"^  (?P<src>\S+): (?P<cap>\d+) captured, (?P<seg>\d+) segmented, (?P<drop>\d+) dropped "
                  r"\([\d.]+ %\); latency capture->mask p50 [\d.]+ ms, p90 [\d.]+, p99 [\d.]+, max [\d.]+$")


def decoded(path):
    cap = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(frame)
    cap.release()
    return frames


def test_two_videos_as_live_sources_get_their_own_outputs_and_figures(export_model5, tmp_path, capsys):
    a, b = tmp_path / "front.mp4", tmp_path / "rear.mp4"
    write_video(a, [random_frame(48, 64, seed=i) for i in range(10)], fps=30)
    write_video(b, [random_frame(40, 72, seed=20 + i) for i in range(8)], fps=25)
    out = tmp_path / "out"
    assert infer([str(export_model5()), str(a), str(b), "-o", str(out), "--live", "--backend", "onnxruntime",
                  "-q"]) == 0
    lines = {m["src"]: m for m in map(LINE.match, capsys.readouterr().out.splitlines()) if m}
    assert set(lines) == {str(a.resolve()), str(b.resolve())}
    seg = Segmenter(export_model5(), backend="onnxruntime")
    rows = list(csv.DictReader(open(out / "summary.csv")))
    for video, name, count in ((a, "front", 10), (b, "rear", 8)):
        figures = lines[str(video.resolve())]
        assert int(figures["cap"]) == count and int(figures["seg"]) + int(figures["drop"]) == count
        pngs = sorted((out / name).glob("*.png"))
        assert len(pngs) == int(figures["seg"]) >= 1  # one mask per segmented frame, in its own folder
        frames = decoded(video)
        for png in pngs:  # named by the source's frame index: the mask of that very frame
            with Image.open(png) as im:
                np.testing.assert_array_equal(np.asarray(im), seg(frames[int(png.stem)]))
        mine = [r for r in rows if r["source"] == str(video.resolve())]
        assert sorted(r["output"] for r in mine) == sorted(f"{name}/{p.name}" for p in pngs)
        assert all(r["status"] == "ok" and float(r["latency_ms"]) > 0 for r in mine)


def test_live_refuses_what_it_cannot_read_live(export_model5, tmp_path, capsys):
    image = tmp_path / "x.png"
    cv2.imwrite(str(image), random_frame(40, 72))
    for argv, words in (([str(image), "--live"], "--live reads cameras, streams (URLs) and videos"),
                        (["rtsp://127.0.0.1:9/cam"], "is a stream: streams are read as they come, add --live"),
                        (["0", "--live", "--ray"], "drop --ray")):
        code = infer([str(export_model5()), *argv, "-o", str(tmp_path / "out"), "-q"])
        err = capsys.readouterr().err
        assert code == 2 and words in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "out").exists()


def test_a_rerun_after_kill_9_leaves_no_mask_without_its_row(export_model5, tmp_path, capsys):
    video = tmp_path / "front.mp4"
    write_video(video, [random_frame(48, 64, seed=i) for i in range(6)], fps=30)
    out = tmp_path / "out"
    argv = [str(export_model5()), str(video), "-o", str(out), "--live", "--backend", "onnxruntime", "-q"]
    assert infer(argv) == 0
    for name in ("summary.csv", "summary.parquet"):  # killed with SIGKILL: masks, manifest, no summary
        (out / name).unlink(missing_ok=True)
    orphan = out / "front" / "000050.png"  # a frame the rerun does not segment again (dropped, or past the end)
    orphan.write_bytes((out / "front" / sorted(p.name for p in (out / "front").glob("*.png"))[0]).read_bytes())
    assert infer(argv) == 0
    capsys.readouterr()
    listed = {r["output"] for r in csv.DictReader(open(out / "summary.csv"))}
    assert {f"front/{p.name}" for p in (out / "front").glob("*.png")} <= listed
    assert not orphan.exists()


def test_a_truncated_video_is_a_failed_input_live_as_in_a_plain_run(export_model5, tmp_path, capsys):
    from .test_streaming_ends import truncated_avi

    video, declared, readable = truncated_avi(tmp_path / "trunc.avi")
    out = tmp_path / "out"
    assert infer([str(export_model5()), str(video), "-o", str(out), "--live", "--backend", "onnxruntime",
                  "-q"]) == 1
    capsys.readouterr()
    rows = list(csv.DictReader(open(out / "summary.csv")))
    failed = [r for r in rows if r["status"] == "failed"]
    assert len(failed) == 1 and f"declares {declared} frames but only {readable}" in failed[0]["error"]


def test_a_signal_mid_run_exits_130_and_the_figures_add_up(export_model5, tmp_path, capsys, monkeypatch):
    from bisenet_deploy.jobs import live

    video = tmp_path / "front.mp4"
    write_video(video, [random_frame(48, 64, seed=i) for i in range(40)], fps=30)
    real, calls = live.written, []

    def interrupted_after_two(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt  # Ctrl-C while frames are still in flight
        return real(*args, **kwargs)

    monkeypatch.setattr(live, "written", interrupted_after_two)
    out = tmp_path / "out"
    assert infer([str(export_model5()), str(video), "-o", str(out), "--live", "--backend", "onnxruntime",
                  "-q"]) == 130
    text = capsys.readouterr().out
    m = re.search(r"(\d+) captured, (\d+) segmented, (\d+) dropped \([\d.]+ %\)(?:, (\d+) failed)?"
                  r"(?:, (\d+) in flight at stop \(not segmented\))?", text)
    assert m, text
    cap, seg, drop, failed, flight = (int(g or 0) for g in m.groups())
    assert seg == 2 and cap == seg + drop + failed + flight and flight >= 1
    assert len(list((out / "front").glob("*.png"))) == 2


def test_a_silent_stream_does_not_hold_back_the_video_beside_it(export_model5, tmp_path, capsys):
    """A server that accepts and never answers holds OpenCV's open for 30 s: only its own
    stream waits (the video is segmented meanwhile), and its failure is its own row."""
    import socket
    import threading
    import time

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(4)
    url = f"http://127.0.0.1:{server.getsockname()[1]}/cam.mjpg"
    video = tmp_path / "front.mp4"
    write_video(video, [random_frame(48, 64, seed=i) for i in range(6)], fps=30)
    out = tmp_path / "out"
    done_at: list[float] = []

    def hang_up_when_the_video_is_done() -> None:
        deadline = time.monotonic() + 25
        while time.monotonic() < deadline and not list((out / "front").glob("*.png")):
            time.sleep(0.05)
        done_at.append(time.monotonic())
        time.sleep(2)  # the 6-frame video (0.2 s at its own rate) has ended by then
        server.close()  # the silent stream's open now fails: the run can end

    watcher = threading.Thread(target=hang_up_when_the_video_is_done, daemon=True)
    start = time.monotonic()
    watcher.start()
    try:
        code = infer([str(export_model5()), str(video), url, "-o", str(out), "--live", "--backend", "onnxruntime",
                      "-q"])
    finally:
        server.close()
        watcher.join(30)
    assert done_at and done_at[0] - start < 20  # masks came while the stream was still opening (30 s)
    assert code == 1  # a failed input
    lines = {m["src"]: m for m in map(LINE.match, capsys.readouterr().out.splitlines()) if m}
    figures = lines[str(video.resolve())]
    assert int(figures["cap"]) == 6 and int(figures["seg"]) + int(figures["drop"]) == 6
    rows = list(csv.DictReader(open(out / "summary.csv")))
    assert sum(r["status"] == "ok" for r in rows if r["source"] == str(video.resolve())) == int(figures["seg"]) >= 1
    assert [r["status"] for r in rows if r["source"] == url] == ["failed"]


def test_inputs_that_do_not_open_get_their_lines_beside_the_video_that_runs(export_model5, tmp_path, capsys):
    """A camera that does not exist and a file that is no video: each its own line among the
    figures and a failed row, while the video beside them runs to its end."""
    video, corrupt = tmp_path / "front.mp4", tmp_path / "corrupt.mp4"
    write_video(video, [random_frame(48, 64, seed=i) for i in range(6)], fps=30)
    corrupt.write_bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    out = tmp_path / "out"
    code = infer([str(export_model5()), str(video), "97", str(corrupt), "-o", str(out), "--live",
                  "--backend", "onnxruntime"])
    printed = capsys.readouterr().out.splitlines()
    assert code == 1  # a failed input
    assert any(LINE.match(line) for line in printed)  # the video's figures
    for source in ("camera 97", str(corrupt.resolve())):
        assert len([line for line in printed if line.startswith(f"  {source}: not opened: ")]) == 1, printed
    rows = list(csv.DictReader(open(out / "summary.csv")))
    for source in ("camera 97", str(corrupt.resolve())):
        assert [r["status"] for r in rows if r["source"] == source] == ["failed"]
    assert len([r for r in rows if r["status"] == "ok"]) >= 1
