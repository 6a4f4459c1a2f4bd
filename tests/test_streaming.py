"""The streaming runtime on real tiny models (onnxruntime, OpenVINO): order, drops, close,
failing sources, masks equal to Segmenter's, batching, and the rate benchmark's fields."""

from __future__ import annotations

import importlib.util
import json
import threading
import time

import numpy as np
import pytest

from bisenet_deploy.errors import InputError, UserError
from bisenet_deploy.runtime import Segmenter
from bisenet_deploy.runtime.streaming import StreamRuntime
from tests.tiny_onnx import tiny_onnx

HAVE_OV = importlib.util.find_spec("openvino") is not None
RUNTIMES = [("onnxruntime", "latency"), ("onnxruntime", "throughput"),
            pytest.param("openvino", "latency", marks=pytest.mark.skipif(not HAVE_OV, reason="needs openvino")),
            pytest.param("openvino", "throughput", marks=pytest.mark.skipif(not HAVE_OV, reason="needs openvino"))]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """Dynamic batch/height/width tiny model (4 classes, 64x128)."""
    return tiny_onnx(tmp_path_factory.mktemp("stream") / "tiny.onnx", dynamic=True)


def frames(count: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (40 + 3 * (i % 5), 96 + i % 7, 3), dtype=np.uint8) for i in range(count)]


def collect(rt: StreamRuntime) -> dict[str, list]:
    out: dict[str, list] = {}
    for r in rt.results(timeout=30):
        out.setdefault(r.stream_id, []).append(r)
    return out


@pytest.mark.parametrize("backend,mode", RUNTIMES)
def test_masks_equal_segmenter_in_capture_order(tiny, backend, mode):
    seg = Segmenter(tiny, backend=backend)
    sources = {"a": frames(12, 1), "b": frames(9, 2), "c": frames(15, 3)}
    expected = {k: [seg(f) for f in v] for k, v in sources.items()}
    with StreamRuntime(seg, mode=mode) as rt:
        for sid, fs in sources.items():
            rt.add_source(iter(fs), stream_id=sid, lossless=True)
        out = collect(rt)
        assert rt.errors == []
    for sid, fs in sources.items():
        assert [r.index for r in out[sid]] == list(range(len(fs)))  # every frame, in capture order
        for r in out[sid]:
            assert r.mask.dtype == np.uint8 and r.mask.shape == fs[r.index].shape[:2]
            assert np.array_equal(r.mask, expected[sid][r.index])
            assert r.frame is fs[r.index]
            assert min(r.queued, r.pre, r.infer, r.post) >= 0 and r.latency >= r.pre + r.post
        stats = rt.stats()[sid]
        assert (stats.received, stats.dropped, stats.delivered, stats.error) == (len(fs), 0, len(fs), None)
    seg.close()


def test_cross_stream_batching_gives_the_same_masks(tiny):
    seg = Segmenter(tiny, backend="onnxruntime")
    sources = [frames(10, s) for s in range(4)]
    with StreamRuntime(seg, max_batch=4, batch_wait_ms=50, parallel=1) as rt:
        ids = [rt.add_source(iter(fs), lossless=True) for fs in sources]
        out = collect(rt)
    assert max(r.batch for rs in out.values() for r in rs) > 1  # four waiting streams fill a batch
    for sid, fs in zip(ids, sources):
        assert [r.index for r in out[sid]] == list(range(10))
        assert all(np.array_equal(r.mask, seg(fs[r.index])) for r in out[sid])
    fixed = Segmenter(tiny_onnx(tiny.parent / "fixed.onnx"), backend="onnxruntime")
    with pytest.raises(UserError, match="dynamic batch"):
        StreamRuntime(fixed, max_batch=4)


def test_a_fast_source_overloads_the_model_and_drops_are_counted(tiny):
    """An unpaced source offers frames far faster than even the tiny model runs: the latest-frame
    slot drops the older ones, and every frame is either dropped or delivered."""
    big = np.random.default_rng(0).integers(0, 256, (480, 640, 3), dtype=np.uint8)  # real resize work per frame
    with StreamRuntime(tiny, backend="onnxruntime") as rt:
        sid = rt.add_source(iter([big] * 1500))
        out = collect(rt)
        stats = rt.stats()[sid]
    indices = [r.index for r in out[sid]]
    assert indices == sorted(set(indices)) and indices[-1] == 1499  # in order; the freshest frame last
    assert stats.received == 1500 and stats.dropped > 0
    assert stats.dropped + stats.delivered + stats.failed == stats.received
    assert stats.delivered == len(indices) and 0 < stats.drop_rate < 1


def test_a_failing_source_is_reported_and_the_others_go_on(tiny):
    def breaks_after(n: int):
        yield from frames(n)
        raise OSError("camera unplugged")

    bad_frame = [frames(1)[0], np.zeros((8, 8, 3), np.float32)]
    with StreamRuntime(tiny, backend="onnxruntime") as rt:
        broken = rt.add_source(breaks_after(4), lossless=True)
        wrong = rt.add_source(iter(bad_frame), lossless=True)
        good = rt.add_source(iter(frames(20, 5)), lossless=True)
        out = collect(rt)
        stats = rt.stats()
    assert [r.index for r in out[good]] == list(range(20))
    assert [r.index for r in out[broken]] == list(range(4))
    assert "camera unplugged" in stats[broken].error and stats[broken].ended
    assert "float32" in stats[wrong].error and stats[wrong].delivered == 1
    assert stats[good].error is None


def test_push_streams_carry_stamps_and_end(tiny):
    fs = frames(6)
    with StreamRuntime(tiny, backend="onnxruntime", result_queue=16) as rt:
        left = rt.add_push("left", lossless=True)
        for i, f in enumerate(fs):
            rt.push(left, f, stamp=(100, i))
        rt.end(left)
        out = collect(rt)
        with pytest.raises(InputError, match="ended"):
            rt.push(left, fs[0])
        with pytest.raises(InputError, match="add_push"):
            rt.push("right", fs[0])
    assert [r.stamp for r in out["left"]] == [(100, i) for i in range(6)]


def test_close_is_bounded_and_leaves_no_thread(tiny):
    seg = Segmenter(tiny, backend="openvino" if HAVE_OV else "onnxruntime")
    seg(frames(1)[0])  # the backend's own threads (if any) exist before we count
    before = set(threading.enumerate())

    def endless():
        while True:
            yield from frames(5)

    rt = StreamRuntime(seg, mode="throughput", result_queue=2)  # results never read: the queue fills
    rt.add_source(endless())
    rt.add_source(endless(), rate=200)
    rt.add_push("p")
    rt.start()
    rt.push("p", frames(1)[0])
    time.sleep(0.3)
    start = time.monotonic()
    assert rt.close(timeout=5) == []
    assert time.monotonic() - start < 6
    assert set(threading.enumerate()) == before
    assert not any(t.name.startswith("bisenet-") for t in threading.enumerate())
    with pytest.raises(UserError, match="closed"):
        rt.add_push("q")
    seg(frames(1)[0])  # a shared Segmenter stays open
    seg.close()


def test_bad_options_are_refused(tiny):
    with pytest.raises(UserError, match="mode"):
        StreamRuntime(tiny, backend="onnxruntime", mode="fast")
    with StreamRuntime(tiny, backend="onnxruntime") as rt:
        with pytest.raises(InputError, match="not a frame source"):
            rt.add_source(np.zeros((8, 8, 3), np.uint8))
        with pytest.raises(InputError, match="does not exist"):
            rt.add_source("/nonexistent/clip.mp4")
        rt.add_push("x")
        with pytest.raises(InputError, match="in use"):
            rt.add_push("x")


def test_rate_benchmark_cli_writes_sane_rows(tiny, tmp_path, capsys):
    from bisenet_deploy.cli.bench import main

    out = tmp_path / "s.json"
    rc = main([str(tiny), "--backend", "onnxruntime", "--streams", "1,2", "--rate", "20", "--seconds", "0.5",
               "--pipeline-mode", "latency,throughput", "--json", str(out), "-q"])
    assert rc == 0
    rows = json.loads(out.read_text())["streams"]
    assert {(r["mode"], r["streams"]) for r in rows} == {(m, n) for m in ("sync", "pipeline") for n in (1, 2)}
    assert len(rows) == 6
    for r in rows:
        assert r["backend"] == r["backend_used"] == "onnxruntime" and r["rate_hz"] == 20
        assert 0 < r["delivered_fps"] <= r["offered_fps"] * 1.5 and 0 <= r["drop_rate"] <= 1
        lat = r["latency_ms"]
        assert 0 < lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["max"]
        assert r["cpu_percent"] > 0
    ceilings = json.loads(out.read_text())["backend_ceiling"]
    assert {(c["streams"], c["pipeline_mode"]) for c in ceilings} == {(2, "latency"), (2, "throughput")}
    printed = capsys.readouterr().out
    assert "pipeline/throughput" in printed and "over 2 streams'" in printed


def test_rate_rows_of_auto_name_the_backend_it_chose(tiny, tmp_path, capsys):
    from bisenet_deploy.cli.bench import main

    out = tmp_path / "s.json"
    assert main([str(tiny), "--backend", "auto", "--streams", "1", "--rate", "20", "--seconds", "0.3",
                 "--json", str(out), "-q"]) == 0
    rows = json.loads(out.read_text())["streams"]
    assert {r["backend"] for r in rows} == {"auto"}
    used = {r["backend_used"] for r in rows}
    assert len(used) == 1 and used <= {"onnxruntime", "openvino"}
    assert f"auto ({used.pop()})" in capsys.readouterr().out


@pytest.mark.parametrize("backend,mode", RUNTIMES)
def test_backend_ceiling_measures_all_three_forms(tiny, backend, mode):
    from bisenet_deploy.benchmarks import stream_ceiling

    with Segmenter(tiny, backend=backend) as seg:
        row = stream_ceiling.measure(seg, frames(1)[0], 3, mode, requests=6)
        for key in ("one_at_a_time_fps", "sync_concurrent_fps", "pipeline_fps"):
            assert 0 < row[key] < 1e6, key
        assert row["requests"] == 6 and row["streams"] == 3
        assert row["pipeline_over_sync"] == pytest.approx(row["pipeline_fps"] / row["sync_concurrent_fps"])
        assert (backend == "openvino") == row["pipeline_form"].startswith("openvino AsyncInferQueue")
        assert seg(frames(1)[0]).shape == frames(1)[0].shape[:2]  # the Segmenter is still usable after


def test_rate_search_finds_a_peak_row(tiny):
    from bisenet_deploy.benchmarks.streams import RateConfig, run_rate_benchmark

    config = RateConfig(model=tiny, backends=["onnxruntime"], streams=[2], rate_hz=None, seconds=0.3,
                        frames=frames(4), search_steps=2)
    result = run_rate_benchmark(config)
    assert [r["mode"] for r in result["streams"]] == ["sync", "pipeline"]
    for r in result["streams"]:
        assert r["rate_hz"] > 0 and "peak_found" in r
    assert len(result["trials"]) == 6  # probe + 2 steps, each way


@pytest.mark.parametrize("extra,message", [
    (["--streams", "0,2"], "--streams takes camera counts"),
    (["--streams", "a"], "--streams takes camera counts"),
    (["--streams", "2", "--rate", "-3"], "--rate takes frames per second"),
    (["--streams", "2", "--rate", "fast"], "--rate takes frames per second"),
    (["--streams", "2", "--seconds", "0"], "--seconds must be positive"),
    (["--rate", "5"], "need --streams"),
    (["--streams", "2", "--sizes", "64x64"], "--sizes does not apply"),
    (["--streams", "2", "--pipeline-mode", "fast"], "--pipeline-mode takes"),
])
def test_rate_options_are_checked_with_one_line(tiny, capsys, extra, message):
    from bisenet_deploy.cli.bench import main

    assert main([str(tiny), *extra]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("bisenet-bench: error: ") and message in err[0]


def test_a_video_file_source_gives_every_frame_in_order(tiny, tmp_path):
    import cv2

    from bisenet_deploy.runtime.sources import video_frames

    path = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 50, (96, 48))
    if not writer.isOpened():
        pytest.skip("this OpenCV cannot write MJPG video")
    for f in frames(6):
        writer.write(np.ascontiguousarray(cv2.resize(f, (96, 48))))
    writer.release()
    decoded = list(video_frames(str(path)))
    seg = Segmenter(tiny, backend="onnxruntime")
    with StreamRuntime(seg) as rt:
        sid = rt.add_source(path, rate="native", lossless=True)  # 50 FPS, as a camera would
        out = collect(rt)
    assert [r.index for r in out[sid]] == list(range(len(decoded))) and len(decoded) == 6
    assert all(np.array_equal(r.mask, seg(decoded[r.index])) for r in out[sid])


def test_onnxruntime_throughput_mode_runs_only_as_many_runs_as_fit_on_the_cores(tiny):
    """One onnxruntime run already uses every core (intra-op threads): a second concurrent run
    only shares them, so throughput mode keeps one unless the session was given fewer threads."""
    from bisenet_deploy.machine import physical_cores

    with StreamRuntime(tiny, backend="onnxruntime", mode="throughput") as rt:
        assert rt.inference.parallel == 1
    with StreamRuntime(tiny, backend="onnxruntime", mode="throughput", backend_options={"threads": 1}) as rt:
        assert rt.inference.parallel == physical_cores()
    with StreamRuntime(tiny, backend="onnxruntime", mode="throughput", parallel=3) as rt:
        assert rt.inference.parallel == 3  # asked for: given


def test_an_on_result_consumer_gets_results_without_calling_results(tiny):
    """Adding a source starts the runtime: a callback consumer (ROS publisher, robot loop) never
    iterates results()."""
    got: list[tuple[str, int]] = []
    with StreamRuntime(tiny, backend="onnxruntime", on_result=lambda r: got.append((r.stream_id, r.index))) as rt:
        sid = rt.add_source(iter(frames(5)), lossless=True)
        deadline = time.monotonic() + 30
        while not rt.finished() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert rt.finished()
    assert got == [(sid, i) for i in range(5)]


def test_a_url_that_never_answers_stalls_only_its_own_stream(tiny):
    """A server that accepts the connection and sends nothing holds OpenCV's open for its
    timeout (30 s): add_source returns at once and the other sources go on meanwhile."""
    import socket

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(4)
    url = f"http://127.0.0.1:{server.getsockname()[1]}/camera.mjpg"
    try:
        with StreamRuntime(tiny, backend="onnxruntime") as rt:
            start = time.monotonic()
            silent = rt.add_source(url)
            good = rt.add_source(iter(frames(6)), lossless=True)
            assert time.monotonic() - start < 5
            out: list[int] = []
            for r in rt.results(timeout=20):
                if r.stream_id == good:
                    out.append(r.index)
                if len(out) == 6:
                    break
            assert out == list(range(6))
            assert rt.stats()[silent].delivered == 0
            left = rt.close(timeout=1)
            assert set(left) <= {f"bisenet-source-{silent}"}  # at most the one still in OpenCV's open
    finally:
        server.close()  # the blocked open sees the connection end and returns


def test_a_silent_network_stream_gives_up_after_the_network_timeout(monkeypatch):
    """OpenCV opens one FFmpeg stream at a time: a silent server must not hold the others for
    OpenCV's own 30 s, so network opens carry our (shorter) timeout."""
    import socket

    from bisenet_deploy.runtime import sources

    monkeypatch.setattr(sources, "NETWORK_TIMEOUT_MS", 1000)
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(4)
    try:
        start = time.monotonic()
        with pytest.raises(InputError, match="cannot open"):
            sources.open_video(f"http://127.0.0.1:{server.getsockname()[1]}/camera.mjpg")
        assert time.monotonic() - start < 8
    finally:
        server.close()
