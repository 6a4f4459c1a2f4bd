"""Issue 15's probes: nothing lost, nothing garbled, one clear line for every user mistake,
no temporary file that outlives a run."""

from __future__ import annotations

import csv
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from bisenet_deploy.cli.infer import main as infer
from bisenet_deploy.errors import ArtifactError, ClosedError, InputError, UserError
from bisenet_deploy.jobs.plan import check_output_against_inputs, collect_sources
from bisenet_deploy.runtime import Segmenter

from .conftest import TINY, random_frame
from .test_cli_infer import write_video

ROOT = Path(__file__).resolve().parent.parent


def digest(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def one_line_error(capsys, prog: str) -> str:
    lines = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith(f"{prog}: error: "), lines
    return lines[0]


def images(folder: Path, names: list[str], size=(40, 56)) -> list[Path]:
    out = []
    for i, name in enumerate(names):
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(path), random_frame(*size, seed=i))
        out.append(path)
    return out


# --- output names and the output folder ---------------------------------------------------------


def test_every_input_gets_its_own_output_name(tmp_path):
    images(tmp_path, ["a/x.png", "b/x.png", "dup.png", "dup.jpg", "F/Y.png", "f/y.png", "imgs/clip/000000.png"])
    write_video(tmp_path / "clip.mp4", [random_frame(32, 48, i) for i in range(3)])
    inputs = [str(tmp_path / p) for p in ("a/x.png", "b/x.png", "dup.png", "dup.jpg", "F/Y.png", "f/y.png",
                                          "clip.mp4", "imgs")]
    plan = collect_sources(inputs)
    names = [s.name for s in plan.sources]
    assert len({n.casefold() for n in names}) == len(names) == 8
    by_target = {Path(s.target).relative_to(tmp_path).as_posix(): s.name for s in plan.sources}
    assert (by_target["a/x.png"], by_target["b/x.png"]) == ("a/x", "b/x")
    assert (by_target["dup.png"], by_target["dup.jpg"]) == ("dup.png", "dup.jpg")
    assert by_target["F/Y.png"].casefold() != by_target["f/y.png"].casefold()
    # the video's mask frames go to clip/NNNNNN.png: the image named clip/000000 must not land there
    assert by_target["clip.mp4"] == "clip.mp4" and by_target["imgs/clip/000000.png"] == "clip/000000"
    assert any("renamed" in n for n in plan.notes)


def test_the_same_file_twice_is_read_once(tmp_path):
    images(tmp_path, ["in/a.png", "in/b.png"])
    plan = collect_sources([str(tmp_path / "in"), str(tmp_path / "in" / "a.png")])
    assert sorted(s.name for s in plan.sources) == ["a", "b"]
    assert any("given more than once" in n for n in plan.notes)


def test_the_same_camera_or_stream_twice_is_read_once():
    """A device cannot be opened twice: its second mention was a second stream that never
    produced a line or a row. Read once, and said."""
    plan = collect_sources(["7", "rtsp://127.0.0.1:9/cam", "07", "rtsp://127.0.0.1:9/cam", "8"])
    assert [s.target for s in plan.sources] == [7, "rtsp://127.0.0.1:9/cam", 8]
    assert "'07' is also given as '7'; it is read once" in plan.notes
    assert "'rtsp://127.0.0.1:9/cam' is given twice; it is read once" in plan.notes


@pytest.mark.parametrize("where", ["same", "contains", "inside"])
def test_output_folder_may_not_be_hold_or_sit_in_an_input(tmp_path, export_model5, capsys, where):
    images(tmp_path, ["in/a.png", "in/b.jpg"])
    before = digest(tmp_path / "in")
    inputs = {"same": [tmp_path / "in"], "contains": [tmp_path / "in" / "a.png"], "inside": [tmp_path / "in"]}[where]
    out = {"same": tmp_path / "in", "contains": tmp_path / "in", "inside": tmp_path / "in" / "masks"}[where]
    code = infer([str(export_model5()), *map(str, inputs), "-o", str(out), "-q"])
    assert code == 2
    assert {"same": "is the input", "contains": "contains the input", "inside": "inside the input folder"}[where] \
        in one_line_error(capsys, "bisenet-infer")
    assert digest(tmp_path / "in") == before  # not one byte of the inputs changed
    with pytest.raises(UserError):
        check_output_against_inputs(out, [str(p) for p in inputs])


def test_colliding_inputs_are_all_written_and_counted(tmp_path, export_model5, capsys):
    srcs = images(tmp_path, ["a/x.png", "b/x.png", "dup.png", "dup.jpg"])
    code = infer([str(export_model5()), *map(str, srcs), "-o", str(tmp_path / "out"), "-q"])
    assert code == 0
    assert "4 frames segmented" in capsys.readouterr().out
    written = sorted(p.relative_to(tmp_path / "out").as_posix() for p in (tmp_path / "out").rglob("*.png"))
    assert written == ["a/x.png", "b/x.png", "dup.jpg.png", "dup.png.png"]
    rows = list(csv.DictReader(open(tmp_path / "out" / "summary.csv")))
    assert sorted(r["output"] for r in rows) == written and {r["status"] for r in rows} == {"ok"}


@pytest.mark.parametrize("output, message", [("file", "is an existing file"), ("sub/file/x", "is a file, not a folder")])
def test_output_path_problems_are_one_line(tmp_path, export_model5, capsys, output, message):
    src = images(tmp_path, ["in/a.png"])[0]
    (tmp_path / "sub").mkdir()
    (tmp_path / "file").write_text("keep me")
    (tmp_path / "sub" / "file").write_text("keep me")
    assert infer([str(export_model5()), str(src), "-o", str(tmp_path / output), "-q"]) == 2
    assert message in one_line_error(capsys, "bisenet-infer")
    assert (tmp_path / "file").read_text() == "keep me"


@pytest.mark.parametrize("argv, message", [
    (["--alpha", "nan", "--mode", "overlay"], "--alpha: must be in [0, 1]"),
    (["--alpha", "1.5", "--mode", "overlay"], "--alpha: must be in [0, 1]"),
    (["--threads", "-3"], "--threads: must be >= 0"),
    (["--max-frames", "0"], "--max-frames: must be >= 1"),
])
def test_invalid_options_are_refused_with_a_short_usage(tmp_path, export_model5, capsys, argv, message):
    src = images(tmp_path, ["a.png"])[0]
    with pytest.raises(SystemExit) as exc:
        infer([str(export_model5()), str(src), "-o", str(tmp_path / "out"), *argv])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 3 and err[0].startswith("usage: bisenet-infer model inputs... -o OUT")
    assert message in err[1] and err[2] == "see 'bisenet-infer --help'"


@pytest.mark.parametrize("argv, message", [
    (["--mode", "overlay", "--background", "BG"], "--background is used only by --mode background"),
    (["--alpha", "0.3"], "no effect with --mode mask"),
    (["--legend"], "--legend draws on overlays"),
])
def test_options_that_would_be_ignored_are_refused(tmp_path, export_model5, capsys, argv, message):
    src = images(tmp_path, ["a.png", "bg.png"])[0]
    argv = [str(tmp_path / "bg.png") if a == "BG" else a for a in argv]
    assert infer([str(export_model5()), str(src), "-o", str(tmp_path / "out"), *argv]) == 2
    assert message in one_line_error(capsys, "bisenet-infer")
    assert not (tmp_path / "out").exists()


# --- videos ------------------------------------------------------------------------------------------


def _mjpeg(path: Path, frames: list[np.ndarray], fps: int = 10) -> Path:
    h, w = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (w, h))
    for frame in frames:
        writer.write(frame)
    writer.release()
    return path


def test_bad_videos_are_reported_and_the_rest_is_processed(tmp_path, export_model5, capsys):
    good = _mjpeg(tmp_path / "good.avi", [random_frame(32, 48, i) for i in range(6)])
    whole = _mjpeg(tmp_path / "whole.avi", [random_frame(32, 48, i) for i in range(12)])
    data = whole.read_bytes()
    (tmp_path / "short.avi").write_bytes(data[: len(data) // 2])  # declares 12 frames, holds about 6
    (tmp_path / "junk.mp4").write_bytes(b"not a video" * 50)
    photo = images(tmp_path, ["p.png"])[0]
    code = infer([str(export_model5()), str(tmp_path / "junk.mp4"), str(tmp_path / "short.avi"), str(good),
                  str(photo), "-o", str(tmp_path / "out"), "-q"])
    assert code == 1  # after processing everything that could be read
    err = capsys.readouterr().err
    assert "junk.mp4: cannot open video" in err and "short.avi: declares 12 frames but only" in err
    assert len(list((tmp_path / "out" / "good").glob("*.png"))) == 6 and (tmp_path / "out" / "p.png").is_file()
    rows = list(csv.DictReader(open(tmp_path / "out" / "summary.csv")))
    failed = {r["source"] for r in rows if r["status"] == "failed"}
    assert failed == {str(tmp_path / "junk.mp4"), str(tmp_path / "short.avi")}


def test_video_masks_keep_class_ids_exactly(tmp_path, export_model5):
    frames = [random_frame(36, 60, i) for i in range(4)]
    clip = _mjpeg(tmp_path / "clip.avi", frames)
    assert infer([str(export_model5()), str(clip), "-o", str(tmp_path / "out"), "-q"]) == 0
    seg = Segmenter(export_model5())
    cap = cv2.VideoCapture(str(clip))
    for i in range(4):
        ok, frame = cap.read()  # the decoded frame, as bisenet-infer saw it
        with Image.open(tmp_path / "out" / "clip" / f"{i:06d}.png") as im:
            assert im.mode == "P"
            np.testing.assert_array_equal(np.array(im), seg(frame))
    cap.release()


def test_network_size_overlays_keep_the_aspect_ratio_and_legend_draws(tmp_path, export_model5):
    frame = random_frame(120, 360, 3)  # 1:3, the network is 1:2
    cv2.imwrite(str(tmp_path / "wide.png"), frame)
    for extra, name in (([], "plain"), (["--legend"], "legend")):
        assert infer([str(export_model5()), str(tmp_path / "wide.png"), "-o", str(tmp_path / name), "--mode",
                      "overlay", "--network-size", "-q", *extra]) == 0
    plain = cv2.imread(str(tmp_path / "plain" / "wide.overlay.png"))
    legend = cv2.imread(str(tmp_path / "legend" / "wide.overlay.png"))
    assert plain.shape[:2] == (TINY[0], TINY[0] * 3)  # network height, the frame's aspect
    diff = np.abs(plain.astype(int) - legend.astype(int)).sum(axis=2) > 0
    assert diff[:20, :60].any() and not diff[-10:, -60:].any()  # the legend sits in the top-left corner


def test_rerun_keeps_existing_outputs_overwrite_redoes_and_another_model_is_refused(tmp_path, export_model5,
                                                                                     capsys):
    srcs = images(tmp_path, ["in/a.png", "in/b.png"])
    out = tmp_path / "out"
    assert infer([str(export_model5()), str(tmp_path / "in"), "-o", str(out), "-q"]) == 0
    first = (out / "a.png").stat().st_mtime_ns
    capsys.readouterr()
    assert infer([str(export_model5()), str(tmp_path / "in"), "-o", str(out), "-q"]) == 0
    assert "0 frames segmented" in capsys.readouterr().out and (out / "a.png").stat().st_mtime_ns == first
    rows = {r["source"]: r for r in csv.DictReader(open(out / "summary.csv"))}
    assert rows[str(srcs[0])]["status"] == "exists" and rows[str(srcs[0])]["latency_ms"]  # the earlier row kept
    assert infer([str(export_model5()), str(tmp_path / "in"), "-o", str(out), "--overwrite", "-q"]) == 0
    assert "2 frames segmented" in capsys.readouterr().out
    other = export_model5(argmax=True)
    assert infer([str(other), str(tmp_path / "in"), "-o", str(out), "-q"]) == 2
    assert "holds results of another run" in one_line_error(capsys, "bisenet-infer")


# --- the runtime ---------------------------------------------------------------------------------------


def test_spec_that_disagrees_with_the_graph_is_refused_at_open(export_model5, tmp_path):
    from .test_bench_cli import _onnx_with_spec

    with pytest.raises(ArtifactError, match="returns 5 channels, the spec says 3 classes"):
        Segmenter(export_model5(), num_classes=3, class_names=("a", "b", "c"))
    for n in (3, 300):
        bad = _onnx_with_spec(export_model5(), tmp_path / f"c{n}.onnx", num_classes=n, class_names=())
        with pytest.raises(ArtifactError, match=f"the spec says {n} classes"):
            Segmenter(bad)
    with pytest.raises(ArtifactError, match="fused preprocessing"):
        Segmenter(export_model5(), input_layout="NHWC_UINT8")
    with pytest.raises(ArtifactError, match="integer labels"):
        Segmenter(export_model5(argmax=True), output_kind="logits")
    with pytest.raises(ArtifactError, match="fixed to 64x128"):
        Segmenter(export_model5(), input_size=(32, 32))
    dynamic = _onnx_with_spec(export_model5(dynamic=("batch", "height", "width")), tmp_path / "d.onnx", num_classes=6,
                              class_names=())
    with pytest.raises(ArtifactError):  # channels known only from the first output: checked there
        Segmenter(dynamic)(random_frame(40, 50))


def test_calls_after_close_and_non_frames_are_clear_errors(export_model5):
    seg = Segmenter(export_model5())
    for bad in (None, 3, "frame.png"):
        with pytest.raises(InputError, match="takes a list of frames"):
            seg.predict_batch(bad)
    with pytest.raises(InputError, match="got None"):
        seg.backend.infer(None)
    seg.close()
    for call in (lambda: seg(random_frame(20, 20)), lambda: seg.predict_batch([random_frame(20, 20)]),
                 lambda: seg.logits(random_frame(20, 20)), lambda: seg.backend.infer(np.zeros((1, 3, *TINY), np.float32))):
        with pytest.raises(ClosedError, match="is closed"):
            call()


@pytest.mark.parametrize("value", ["tensorrt 10", None, 3, ["x"]])
def test_sidecar_fields_of_the_wrong_type_are_one_line(tmp_path, export_model5, capsys, value):
    from bisenet_deploy.fileio import sha256_file
    from bisenet_deploy.spec import ModelSpec
    from bisenet_deploy.trt.sidecar import EngineSidecar

    engine = tmp_path / "m.engine"
    engine.write_bytes(b"engine bytes")
    EngineSidecar(engine_sha256=sha256_file(engine), spec=ModelSpec(num_classes=5, input_size=TINY), precision="fp16",
                  tensorrt={"package": "tensorrt", "version": "10.0"}).write(engine)
    data = json.loads((tmp_path / "m.engine.json").read_text())
    data["tensorrt"] = value
    (tmp_path / "m.engine.json").write_text(json.dumps(data))
    with pytest.raises(ArtifactError, match="field 'tensorrt' must be an object"):
        Segmenter(engine)
    src = images(tmp_path, ["a.png"])[0]
    assert infer([str(engine), str(src), "-o", str(tmp_path / "out"), "-q"]) == 2
    assert "field 'tensorrt' must be an object" in one_line_error(capsys, "bisenet-infer")


def test_hints_name_commands_that_work(tmp_path, export_model5):
    from bisenet_deploy.model.checkpoint import load_checkpoint
    from bisenet_deploy.runtime.backends import backend_for

    with pytest.raises(UserError) as exc:
        backend_for("m.onnx", "tensorrt")
    assert "bisenet-export m.onnx --engine" in str(exc.value) and "-o m.onnx" not in str(exc.value)
    with pytest.raises(UserError, match="use --backend onnxruntime"):
        backend_for("m.onnx", "torch")
    onnx_file = export_model5()
    with pytest.raises(UserError) as exc:
        load_checkpoint(onnx_file)
    assert "rename" not in str(exc.value) and "needs no export" in str(exc.value)
    disguised = tmp_path / "m.pth"
    disguised.write_bytes(onnx_file.read_bytes())
    with pytest.raises(UserError, match="rename it to 'm.onnx'"):
        load_checkpoint(disguised)
    from bisenet_deploy.trt.cuda_buffers import gpu_problem

    problem = gpu_problem(0)
    if problem is not None and not Path("/proc/driver/nvidia/version").exists():
        assert "insufficient" not in problem and "no NVIDIA GPU driver" in problem


@pytest.mark.parametrize("call", ["exec", "eval", "os.system"])
def test_pickles_that_run_code_are_refused_as_such(tmp_path, call):
    import builtins

    torch = pytest.importorskip("torch")
    from bisenet_deploy.errors import CheckpointError
    from bisenet_deploy.model.checkpoint import read_checkpoint

    fn = {"exec": builtins.exec, "eval": builtins.eval, "os.system": os.system}[call]

    class Payload:
        def __reduce__(self):
            return fn, ("print('ran')",)

    path = tmp_path / "evil.pth"
    torch.save({"state_dict": {"w": torch.zeros(1)}, "x": Payload()}, path)
    with pytest.raises(CheckpointError, match="could run code; refusing it"):
        read_checkpoint(path)


# --- temporary files and signals -------------------------------------------------------------------


def test_stale_temporaries_of_dead_processes_are_removed_live_ones_kept(tmp_path):
    from bisenet_deploy import fileio

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    host = fileio._HOST
    stale = tmp_path / f".model.onnx.{fileio.TMP_MARK}-{host}-{dead.pid}-abcd1234.onnx"
    stale_dir = tmp_path / f"scenes.{fileio.TMP_MARK}-{host}-{dead.pid}-x1"
    live = tmp_path / f".other.onnx.{fileio.TMP_MARK}-{host}-{os.getpid()}-abcd1234.onnx"
    foreign = tmp_path / f".x.{fileio.TMP_MARK}-otherhost-{dead.pid}-abcd1234.onnx"
    user = tmp_path / ".model.onnx.1234.tmp"  # not our pattern: never touched
    for path in (stale, live, foreign, user):
        path.write_bytes(b"x")
    stale_dir.mkdir()
    fileio.write_text_atomic(tmp_path / "out.txt", "done")
    assert not stale.exists() and not stale_dir.exists()
    assert live.exists() and foreign.exists() and user.exists()
    assert (tmp_path / "out.txt").read_text() == "done"


def _wait_for(predicate, timeout: float = 60.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def test_sigterm_cleans_up_like_ctrl_c(tmp_path, export_model5):
    """SIGTERM in the middle of writing a video: exit 143, no temporary file, no partial video."""
    clip = tmp_path / "long.avi"
    _mjpeg(clip, [random_frame(64, 128, i % 7) for i in range(400)])
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "bisenet_deploy.cli.infer", str(export_model5()), str(clip),
                             "-o", str(out), "--mode", "overlay", "-q"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        assert _wait_for(lambda: any(out.glob(".*bisenet-tmp*")) or proc.poll() is not None)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 143 and "bisenet-infer: terminated" in err
    assert not list(out.glob(".*")) or [p.name for p in out.glob(".*")] == [".bisenet-infer.json"]
    assert not (out / "long.overlay.mp4").exists()


# --- every CLI --------------------------------------------------------------------------------------


@pytest.mark.parametrize("prog", ["bisenet-export", "bisenet-infer", "bisenet-bench", "bisenet-inspect"])
def test_every_cli_has_version_and_short_errors(prog):
    module = {"bisenet-export": "export", "bisenet-infer": "infer", "bisenet-bench": "bench",
              "bisenet-inspect": "inspect"}[prog]
    run = lambda *a: subprocess.run([sys.executable, "-m", f"bisenet_deploy.cli.{module}", *a],  # noqa: E731
                                    capture_output=True, text=True, timeout=60)
    from bisenet_deploy import __version__

    version = run("--version")
    assert version.returncode == 0 and version.stdout.strip() == f"{prog} {__version__}"
    bad = run("--no-such-option")
    lines = bad.stderr.strip().splitlines()
    assert bad.returncode == 2 and len(lines) == 3 and lines[0].startswith(f"usage: {prog}")
    assert lines[2] == f"see '{prog} --help'"


def test_export_refuses_checkpoint_options_on_an_onnx_input(export_model5, capsys, tmp_path):
    from bisenet_deploy.cli.export import main as export

    src = tmp_path / "m.onnx"
    src.write_bytes(export_model5().read_bytes())
    assert export([str(src), "--precision", "int8", "--size", "32x64", "--dynamic", "batch", "-q"]) == 2
    line = one_line_error(capsys, "bisenet-export")
    assert "--size, --dynamic apply when exporting a checkpoint" in line
    assert not (tmp_path / "m.int8.onnx").exists()


def test_inspect_describes_onnx_engine_and_checkpoint(precision_models, checkpoint5, tmp_path, capsys):
    from bisenet_deploy.cli.inspect import main as inspect
    from bisenet_deploy.fileio import sha256_file
    from bisenet_deploy.spec import ModelSpec
    from bisenet_deploy.trt.sidecar import EngineSidecar

    int8 = precision_models["fixed"]["int8"]
    assert inspect([str(int8), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["precision"] == "int8" and info["spec"]["num_classes"] == 5
    assert len(info["calibration"]["sha256"]) == 64 and info["calibration"]["count"] >= 1
    assert info["inputs"][0]["shape"] == [1, 3, *TINY] and info["opset"] == 17
    assert info["ops"]["QuantizeLinear"] > 0
    assert any(r["backend"] == "onnxruntime" and r["ok"] for r in info["runs_here"])
    engine = tmp_path / "m.int8.engine"
    engine.write_bytes(b"ftrt" + bytes(60))  # TensorRT's engine tag: inspect reads only the sidecar
    EngineSidecar(engine_sha256=sha256_file(engine), spec=ModelSpec(num_classes=5, input_size=TINY), precision="int8",
                  tensorrt={"package": "tensorrt", "version": "10.0"}).write(engine)
    assert inspect([str(engine), str(checkpoint5)]) == 0
    text = capsys.readouterr().out
    assert "precision  int8" in text and "tensorrt 10.0" in text and "bisenet_v1 resnet18" in text
    assert "parameters" in text
    assert inspect([str(tmp_path / "nope.onnx")]) == 2
    assert "not found" in one_line_error(capsys, "bisenet-inspect")


def test_robot_pipeline_without_a_camera_is_one_line(export_model5):
    run = subprocess.run([sys.executable, str(ROOT / "examples" / "robot_pipeline.py"), str(export_model5()),
                          "--source", "7", "--seconds", "1"], capture_output=True, text=True, timeout=60,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    lines = run.stderr.strip().splitlines()
    assert run.returncode == 1 and lines == ["robot_pipeline: error: cannot open camera 7"]
