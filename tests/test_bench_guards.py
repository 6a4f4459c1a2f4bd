"""bisenet-bench's refusals before any work: outputs that are inputs or each other (both modes),
and the rate options (--seconds, --pipeline-mode, --streams) checked with one line."""

from __future__ import annotations

import pytest

from bisenet_deploy.cli.bench import main
from tests.tiny_onnx import tiny_onnx


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return tiny_onnx(tmp_path_factory.mktemp("guards") / "m.onnx", dynamic=True)


def _refused(capsys, argv, message):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("bisenet-bench: error: ") and message in err[0], err


@pytest.mark.parametrize("streams", [[], ["--streams", "1", "--rate", "5", "--seconds", "0.2"]])
def test_outputs_never_replace_an_input_or_each_other(model, tmp_path, capsys, streams):
    images = tmp_path / "images"
    images.mkdir()
    (images / "0001.png").write_bytes(b"png")
    link = tmp_path / "link.onnx"
    link.symlink_to(model)
    before = model.read_bytes()
    base = [str(model), "--backend", "onnxruntime", "-q", *streams]
    _refused(capsys, base + ["--json", str(model)], "is the input")
    _refused(capsys, base + ["--plot", str(link)], "is the input")  # through a link
    _refused(capsys, base + ["--images", str(images), "--plot", str(images / "0001.png")], "input folder")
    _refused(capsys, base + ["--json", str(tmp_path / "r"), "--markdown", str(tmp_path / "." / "r")], "is also --json")
    assert model.read_bytes() == before and (images / "0001.png").read_bytes() == b"png"
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("mode", ["sync", "latency", "warm-up"])
def test_an_interrupted_trial_leaves_no_thread_inside_the_backend(model, mode, monkeypatch):
    """SIGTERM/Ctrl-C (raised in the main thread) during a trial: every worker is stopped and
    joined before the exception leaves, so none runs native inference while the process exits
    (that aborted with 'terminate called without an active exception')."""
    import threading

    import numpy as np

    from bisenet_deploy.benchmarks import streams
    from bisenet_deploy.runtime import Segmenter

    def interrupted(n, rate_hz, seconds, frames, sink):
        for tick in range(3):
            for cam in range(n):
                sink(cam, tick, frames[0], 0.0)
        raise KeyboardInterrupt

    monkeypatch.setattr(streams, "drive_cameras", interrupted)
    if mode == "warm-up":  # the signal comes while the runtime's threads warm up, before the clock
        start = streams.StreamRuntime.start

        def start_then_interrupted(self):
            start(self)
            raise KeyboardInterrupt

        monkeypatch.setattr(streams.StreamRuntime, "start", start_then_interrupted)
    before = set(threading.enumerate())
    frames = [np.zeros((64, 128, 3), np.uint8)]
    with Segmenter(model, backend="onnxruntime") as seg:
        with pytest.raises(KeyboardInterrupt):
            if mode == "sync":
                streams._sync_trial(seg, 2, 10.0, 0.5, frames)
            else:
                streams._pipeline_trial(seg, 2, 10.0, 0.5, frames, "latency", 1)
        assert [t.name for t in set(threading.enumerate()) - before if t.is_alive()] == []


@pytest.mark.parametrize("extra,message", [
    (["--streams", "1", "--seconds", "inf"], "--seconds must be positive: a finite number"),
    (["--streams", "1", "--seconds", "nan"], "--seconds must be positive: a finite number"),
    (["--streams", "1", "--seconds", "1e-9"], ">= 0.1"),
    (["--pipeline-mode", "latency"], "--pipeline-mode: rate options, they need --streams"),
    (["--pipeline-mode", "fast"], "--pipeline-mode takes latency and/or throughput"),
    (["--streams", "1", "--pipeline-mode", "latency,,throughput"], "--pipeline-mode takes"),
    (["--streams", "1,,2"], "--streams takes camera counts"),
])
def test_rate_options_are_refused_before_any_work(model, capsys, extra, message):
    _refused(capsys, [str(model), "--backend", "onnxruntime", *extra], message)


def test_openvino_options_without_an_openvino_row_are_refused(model, tmp_path, capsys):
    """--ov-hint / --ov-prepost shape OpenVINO's rows only: with no such row they did nothing,
    silently (a value typed out at its default included)."""
    base = [str(model), "--no-reference", "-q"]
    _refused(capsys, base + ["--backend", "onnxruntime", "--ov-hint", "bf16"], "add openvino to --backend")
    _refused(capsys, base + ["--backend", "onnxruntime,auto", "--ov-prepost", "graph"], "add openvino to --backend")
    engine = tmp_path / "m.engine"
    engine.write_bytes(b"not checked before the options")
    _refused(capsys, [str(engine), "--no-reference", "-q", "--ov-prepost", "host"], "give an .onnx model")


def test_help_shows_list_defaults_as_they_are_typed(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "(default: f32)" in text and "(default: graph)" in text and "('" not in text
