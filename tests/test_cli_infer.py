import csv
import subprocess
import sys
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
