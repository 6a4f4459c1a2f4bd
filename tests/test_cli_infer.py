import csv
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from bisenet_deploy.cli.infer import main
from bisenet_deploy.runtime import Segmenter

from .conftest import random_frame

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def write_video(path, frames, fps=10):
    h, w = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
    for f in frames:
        writer.write(f)
    writer.release()


def count_frames(path):
    cap = cv2.VideoCapture(str(path))
    n = 0
    while cap.read()[0]:
        n += 1
    cap.release()
    return n


def test_video_in_video_out_with_same_frame_count(export_model5, tmp_path, capsys):
    clip = tmp_path / "clip.mp4"
    write_video(clip, [random_frame(48, 64, i) for i in range(9)])
    bg = tmp_path / "bg.png"
    cv2.imwrite(str(bg), random_frame(20, 20, 99))
    code = main([str(export_model5()), str(clip), "-o", str(tmp_path / "out"), "--background", str(bg), "-q"])
    assert code == 0
    out = tmp_path / "out" / "clip.background.mp4"
    assert count_frames(out) == 9
    assert "9 frames" in capsys.readouterr().out
    # --max-frames stops early
    main([str(export_model5()), str(clip), "-o", str(tmp_path / "short"), "--mode", "overlay", "--max-frames", "4", "-q"])
    assert count_frames(tmp_path / "short" / "clip.overlay.mp4") == 4


def test_image_folder_gives_palette_pngs_holding_class_ids(export_model5, tmp_path, photos):
    src = tmp_path / "imgs" / "sub"
    src.mkdir(parents=True)
    for name, img in photos[:2]:
        cv2.imwrite(str(src / (Path(name).stem + ".png")), img)
    (src / "broken.jpg").write_bytes(b"not an image")
    code = main([str(export_model5()), str(tmp_path / "imgs"), "-o", str(tmp_path / "out"), "-q"])
    assert code == 1  # the unreadable image is reported, the others are segmented
    rows = {r["source"]: r for r in csv.DictReader(open(tmp_path / "out" / "summary.csv"))}
    assert rows[str(src / "broken.jpg")]["status"] == "failed" and len(rows) == 3
    seg = Segmenter(export_model5())
    for name, img in photos[:2]:
        png = tmp_path / "out" / "sub" / (Path(name).stem + ".png")
        with Image.open(png) as im:
            assert im.mode == "P"
            np.testing.assert_array_equal(np.array(im), seg(img))


def test_missing_input_and_bad_options(export_model5, tmp_path, capsys):
    assert main([str(export_model5()), str(tmp_path / "nope.jpg"), "-o", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "does not exist" in err[0]
    assert main([str(export_model5()), str(tmp_path), "-o", str(tmp_path), "--mode", "background"]) == 2
    assert "needs --background" in capsys.readouterr().err
    assert main([str(tmp_path / "missing.onnx"), "x.jpg", "-o", str(tmp_path)]) == 2


@pytest.mark.parametrize("script, args", [
    ("robot_pipeline.py", ["--source", "synthetic", "--seconds", "2", "--fps", "20"]),
    ("virtual_background.py", ["--max-frames", "3"]),
])
def test_examples_run(export_model5, tmp_path, script, args):
    if script == "virtual_background.py":
        clip = tmp_path / "talk.mp4"
        write_video(clip, [random_frame(48, 64, i) for i in range(5)])
        args = args + ["--video", str(clip), "--output", str(tmp_path / "vb.mp4")]
    env = {"PYTHONPATH": str(EXAMPLES.parent), "PATH": "/usr/bin:/bin", "DISPLAY": ""}
    run = subprocess.run([sys.executable, str(EXAMPLES / script), str(export_model5()), *args],
                         capture_output=True, text=True, timeout=120, env=env)
    assert run.returncode == 0, run.stderr
    if script == "robot_pipeline.py":
        assert "processed" in run.stdout and "dropped" in run.stdout
    else:
        assert count_frames(tmp_path / "vb.mp4") == 3


# --- one job: never mixed, never forgotten, per input (issue 20) -------------------------------------


def _images(folder: Path, count: int, start: int = 0) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"f{i:04d}.png" for i in range(start, start + count)]
    for i, path in enumerate(paths):
        cv2.imwrite(str(path), random_frame(24, 32, seed=start + i))
    return paths


def _summary(out: Path) -> dict:
    return {(r["source"], r["frame"]): r for r in csv.DictReader(open(out / "summary.csv"))}


def _one_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("bisenet-infer: error: "), err
    return err[0]


def test_kill_9_mid_folder_a_concurrent_run_and_another_model_are_refused(export_model5, tmp_path, capsys):
    src, out = tmp_path / "in", tmp_path / "out"
    _images(src, 600)
    model, other = export_model5(), export_model5(argmax=True)
    proc = subprocess.Popen([sys.executable, "-m", "bisenet_deploy.cli.infer", str(model), str(src), "-o", str(out),
                             "-q", "--backend", "onnxruntime"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while not list(out.glob("*.png")) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert proc.poll() is None, "the run ended before it could be caught writing"
        assert main([str(model), str(src), "-o", str(out), "-q"]) == 2  # the folder is locked
        assert "being written by another bisenet-infer run" in _one_line(capsys)
        proc.kill()
        proc.wait()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert not (out / "summary.csv").exists() and list(out.glob("*.png"))  # killed: outputs, no summary
    assert main([str(other), str(src), "-o", str(out), "-q"]) == 2  # the lock died with it; the manifest did not
    assert "holds results of another run" in _one_line(capsys)
    assert main([str(model), str(src), "-o", str(out), "-q"]) == 0
    rows = _summary(out)
    assert len(rows) == 600 and {r["status"] for r in rows.values()} == {"ok"}
    assert {r["model"] for r in rows.values()} == {model.name}


def test_failed_inputs_stay_failed_until_done_and_changed_inputs_are_redone(export_model5, tmp_path, capsys):
    src, out, model = tmp_path / "in", tmp_path / "out", str(export_model5())
    a, b = _images(src, 2)
    (src / "broken.png").write_bytes(b"not an image")
    assert main([model, str(src), "-o", str(out), "-q"]) == 1
    assert main([model, str(src), "-o", str(out), "-q"]) == 1  # the identical rerun: still failed
    rows = _summary(out)
    assert rows[(str(src / "broken.png"), "0")]["status"] == "failed"
    assert main([model, str(a), "-o", str(out), "-q"]) == 1  # not among the inputs: its failure is kept
    assert "1 of an earlier run" in capsys.readouterr().err
    cv2.imwrite(str(src / "broken.png"), random_frame(24, 32, seed=9))
    cv2.imwrite(str(b), random_frame(30, 40, seed=7))  # changed since its mask was written
    capsys.readouterr()
    assert main([model, str(src), "-o", str(out), "-q"]) == 0
    assert "2 frames segmented" in capsys.readouterr().out
    rows = _summary(out)
    assert {r["status"] for r in rows.values()} == {"ok", "exists"} and rows[(str(b), "0")]["height"] == "30"


def test_an_input_that_vanishes_or_is_a_dangling_link_is_one_failed_row(export_model5, tmp_path, capsys,
                                                                        monkeypatch):
    from bisenet_deploy.jobs.job import Job

    src, out = tmp_path / "in", tmp_path / "out"
    paths = _images(src, 5)
    (src / "gone.png").symlink_to(tmp_path / "nowhere.png")
    plan = Job.plan

    def plan_then_break(job, sources, chunk):  # after the folder was listed: one file becomes a folder
        plan(job, sources, chunk)
        paths[2].unlink()
        paths[2].mkdir()

    monkeypatch.setattr(Job, "plan", plan_then_break)
    assert main([str(export_model5()), str(src), "-o", str(out), "-q"]) == 1
    err = capsys.readouterr().err
    assert "f0002.png" in err and "gone.png" in err and "Traceback" not in err
    rows = _summary(out)
    failed = {s for (s, _), r in rows.items() if r["status"] == "failed"}
    assert failed == {str(paths[2]), str(tmp_path / "nowhere.png")}
    assert len([r for r in rows.values() if r["status"] == "ok"]) == 4  # the ones after it too


def test_symlinked_folders_are_followed_once_and_dangling_links_reported(export_model5, tmp_path, capsys):
    src, elsewhere, out = tmp_path / "in", tmp_path / "disk2", tmp_path / "out"
    _images(src, 1)
    far = _images(elsewhere / "set", 2, start=5)
    (src / "linked").symlink_to(elsewhere)
    (src / "loop").symlink_to(src)  # would never end without the visited set
    (src / "stale").symlink_to(tmp_path / "gone-folder")
    assert main([str(export_model5()), str(src), "-o", str(out), "-q"]) == 0
    assert "'stale' is a link to nothing" in capsys.readouterr().err.replace(str(src) + "/", "")
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*.png")) == \
        ["f0000.png", "linked/set/f0005.png", "linked/set/f0006.png"]
    assert {s for s, _ in _summary(out)} == {str(src / "f0000.png"), *map(str, far)}


def test_a_rerun_from_another_directory_keeps_every_figure(export_model5, tmp_path, monkeypatch, capsys):
    _images(tmp_path / "data" / "in", 3)
    model = str(export_model5())
    monkeypatch.chdir(tmp_path / "data")
    assert main([model, "in", "-o", "../out", "-q"]) == 0
    first = _summary(tmp_path / "out")
    monkeypatch.chdir(tmp_path)
    assert main([model, "data/in", "-o", "out", "-q"]) == 0
    assert "0 frames segmented" in capsys.readouterr().out
    again = _summary(tmp_path / "out")
    assert again.keys() == first.keys()
    for key, row in again.items():
        assert row["status"] == "exists"
        for column in ("height", "width", "backend", "latency_ms", "frac_0", "input_stamp"):
            assert row[column] and row[column] == first[key][column], column


@pytest.mark.parametrize("argv, message", [
    (["--batch", "4"], "--batch apply to Ray runs"),
    (["--verbose"], "--verbose apply to Ray runs"),
    (["--topic", "/cam"], "apply to bag inputs"),
    (["--copy-topics"], "apply to bag inputs"),
    (["--mask-topic", "/labels"], "apply to bag inputs"),
    (["--max-frames", "3"], "--max-frames applies to videos"),
])
def test_options_that_do_not_apply_are_refused(export_model5, tmp_path, capsys, argv, message):
    src = _images(tmp_path / "in", 1)[0]
    assert main([str(export_model5()), str(src), "-o", str(tmp_path / "out"), *argv]) == 2
    assert message in _one_line(capsys)
    assert not (tmp_path / "out").exists()


def test_a_truncated_overlay_video_stays_failed_and_modes_do_not_share_kept_rows(export_model5, tmp_path, capsys):
    from .test_hardening import _mjpeg

    whole = _mjpeg(tmp_path / "whole.avi", [random_frame(32, 48, i) for i in range(8)])
    short = tmp_path / "short.avi"
    short.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    out, model = tmp_path / "out", str(export_model5())
    for _ in range(2):  # the identical rerun does it again: never "kept from an earlier run"
        assert main([model, str(short), "-o", str(out), "--mode", "overlay", "-q"]) == 1
        assert "kept from an earlier run" not in capsys.readouterr().out
    assert [r["status"] for r in _summary(out).values()].count("failed") == 1
    assert main([model, str(whole), "-o", str(out), "--mode", "overlay", "-q"]) == 1  # short's failure is kept
    assert main([model, str(whole), "-o", str(out), "-q"]) == 1  # masks: the overlay's rows are not theirs
    assert len(list((out / "whole").glob("*.png"))) == 8
    rows = _summary(out)
    assert {rows[(str(whole), str(i))]["output"] for i in range(8)} == {f"whole/{i:06d}.png" for i in range(8)}


def test_ctrl_c_in_a_rerun_keeps_earlier_rows_and_failures(export_model5, tmp_path, monkeypatch):
    import bisenet_deploy.jobs.local as local

    src, out, model = tmp_path / "in", tmp_path / "out", str(export_model5())
    paths = _images(src, 5)
    (src / "broken.png").write_bytes(b"not an image")
    assert main([model, str(src), "-o", str(out), "-q"]) == 1
    first = _summary(out)
    for path in paths:  # changed: every image is done again
        cv2.imwrite(str(path), random_frame(24, 32, seed=50))
    calls, written = [], local.written

    def interrupt_at_the_third(*args):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return written(*args)

    monkeypatch.setattr(local, "written", interrupt_at_the_third)
    assert main([model, str(src), "-o", str(out), "-q"]) == 130
    rows = _summary(out)
    assert rows.keys() == first.keys() and rows[(str(src / "broken.png"), "0")]["status"] == "failed"
    assert {r["output"] for r in rows.values() if r["output"]} == {p.relative_to(out).as_posix()
                                                                   for p in out.rglob("*.png")}
    monkeypatch.setattr(local, "written", written)
    assert main([model, str(src), "-o", str(out), "-q"]) == 1
    assert [r["status"] for r in _summary(out).values()].count("ok") == 3  # the 3 not redone before Ctrl-C


def test_a_folder_that_cannot_be_listed_is_a_failed_row_until_it_can(export_model5, tmp_path, monkeypatch):
    import os

    src, out, model = tmp_path / "in", tmp_path / "out", str(export_model5())
    _images(src, 1)
    _images(src / "locked", 1, start=3)
    walk = os.walk

    def walk_failing(top, onerror=None, **kw):  # EACCES on one folder, as for a normal user (tests run as root)
        for root, dirs, files in walk(top, onerror=onerror, **kw):
            if root.endswith("locked"):
                onerror(PermissionError(13, "Permission denied", root))
                continue
            yield root, dirs, files

    monkeypatch.setattr(os, "walk", walk_failing)
    assert main([model, str(src), "-o", str(out), "-q"]) == 1
    assert _summary(out)[(str(src / "locked"), "-1")]["status"] == "failed"
    monkeypatch.setattr(os, "walk", walk)
    assert main([model, str(src), "-o", str(out), "-q"]) == 0
    assert {r["status"] for r in _summary(out).values()} == {"ok", "exists"} and len(_summary(out)) == 2
