"""Triton serving (issue 12) with a real tritonserver: the repository of a tiny model, served
by ``bisenet-serve run`` from the serving environment (``.venv-serve``: nvidia-pytriton needs
numpy < 2), on free ports of 127.0.0.1, always stopped; clients over HTTP and gRPC.
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from bisenet_deploy.errors import UserError
from bisenet_deploy.runtime import Segmenter
from bisenet_deploy.serving.server import stop_process_group

from .conftest import TINY, random_frame
from .ports import free_ports

ROOT = Path(__file__).resolve().parent.parent
SERVE_PYTHON = Path(os.environ.get("BISENET_SERVE_PYTHON", ROOT / ".venv-serve" / "bin" / "python"))

if importlib.util.find_spec("tritonclient") is None:
    pytest.skip("needs tritonclient (pip install 'bisenet-deploy[triton-client]')", allow_module_level=True)




def _shm() -> set[str]:
    return {p.name for p in Path("/dev/shm").glob("triton_python_backend_shm_region_*")}


@pytest.fixture(scope="module")
def repo(export_model5, tmp_path_factory):
    from bisenet_deploy.serving.repository import RepoOptions, write_repository

    path = tmp_path_factory.mktemp("triton") / "repo"
    write_repository(export_model5(dynamic=("batch",)), path, RepoOptions(max_batch=8, backend="onnxruntime",
                                                                           native=True))
    return path


@pytest.fixture(scope="module")
def server(repo):
    """``bisenet-serve run`` in the serving environment, stopped (and checked) at the end."""
    if not SERVE_PYTHON.is_file():
        pytest.skip(f"no serving environment at {SERVE_PYTHON} (make serve-setup builds it)")
    http, grpc, metrics = free_ports(3)
    shm_before = _shm()
    proc = subprocess.Popen([str(SERVE_PYTHON), "-m", "bisenet_deploy.cli.serve", "run", str(repo),
                             "--http-port", str(http), "--grpc-port", str(grpc), "--metrics-port", str(metrics),
                             "--timeout", "90"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    lines: list[str] = []

    def read() -> None:
        for line in proc.stdout:
            lines.append(line)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not any("ready in" in ln for ln in lines):
            if proc.poll() is not None:
                pytest.fail("bisenet-serve run exited: " + "".join(lines[-20:]))
            time.sleep(0.2)
        assert any("ready in" in ln for ln in lines), "".join(lines[-20:])
        yield {"http": f"http://127.0.0.1:{http}", "grpc": f"grpc://127.0.0.1:{grpc}", "proc": proc, "lines": lines}
    finally:
        stop_process_group(proc, ((signal.SIGTERM, 40.0), (signal.SIGKILL, 10.0)))
        reader.join(timeout=5)
        assert proc.returncode == 0, "".join(lines[-20:])
        assert any("server stopped" in ln for ln in lines)
        leftover = subprocess.run(["pgrep", "-f", f"--grpc-port={grpc}"], capture_output=True, text=True).stdout
        assert not leftover.strip(), f"tritonserver outlived its stop: {leftover}"
        assert _shm() <= shm_before, "shared-memory regions left behind"


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_remote_segmenter_gives_the_local_labels(server, export_model5, photos, protocol):
    local = Segmenter(export_model5(dynamic=("batch",)), backend="onnxruntime")
    remote = Segmenter(f"{server[protocol]}/bisenet")
    assert remote.backend.name == "triton" and remote.spec.num_classes == 5
    frames = [img for _, img in photos[:3]] + [random_frame(37, 91, 5)]
    for frame in frames:
        np.testing.assert_array_equal(remote(frame), local(frame))
    assert all((a == b).all() for a, b in zip(remote.predict_batch(frames), local.predict_batch(frames)))


def test_concurrent_requests_are_batched(server):
    from bisenet_deploy.runtime.backends.triton import TritonBackend

    backend = TritonBackend(f"{server['grpc']}/bisenet")
    before = backend.statistics()
    frame = random_frame(*TINY, seed=3)
    errors = []

    def call() -> None:
        try:
            Segmenter(f"{server['grpc']}/bisenet")(frame)
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=call) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    # Triton updates its statistics after it has sent a response: wait (bounded) for all 8.
    deadline = time.monotonic() + 10
    while True:
        after = backend.statistics()
        requests = after["inference_count"] - before["inference_count"]
        executions = after["execution_count"] - before["execution_count"]
        if requests >= 8 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert not errors and requests == 8 and executions < requests, (requests, executions)


def test_dead_server_is_one_clear_line_within_seconds():
    port = free_ports(1)[0]
    start = time.monotonic()
    with pytest.raises(UserError, match="no Triton server answers"):
        Segmenter(f"grpc://127.0.0.1:{port}/bisenet")
    assert time.monotonic() - start < 10
    with pytest.raises(UserError, match="not a served model"):
        Segmenter("grpc://127.0.0.1/")


def test_every_config_parses_back_through_the_protobuf(repo, tmp_path, export_model5):
    from bisenet_deploy.fileio import sha256_file
    from bisenet_deploy.serving import config as cfg
    from bisenet_deploy.serving.repository import RepoOptions, write_repository
    from bisenet_deploy.spec import ModelSpec
    from bisenet_deploy.trt.sidecar import EngineSidecar

    names = {p.name: cfg.read(p / "config.pbtxt") for p in repo.iterdir()}
    assert set(names) == {"bisenet", "bisenet_onnx", "bisenet_pre", "bisenet_post", "bisenet_ensemble"}
    served = names["bisenet"]
    assert served.backend == "python" and served.max_batch_size == 8 and served.dynamic_batching is not None
    assert ModelSpec.from_json(served.parameters[cfg.SPEC_PARAMETER].string_value).num_classes == 5
    assert names["bisenet_onnx"].platform == "onnxruntime_onnx"
    assert [s.model_name for s in names["bisenet_ensemble"].ensemble_scheduling.step] == \
        ["bisenet_pre", "bisenet_onnx", "bisenet_post"]
    assert (repo / "bisenet" / "1" / "model.py").is_file() and (repo / "bisenet_onnx" / "1" / "model.onnx").is_file()

    engine = tmp_path / "m.fp16.engine"
    engine.write_bytes(b"ftrt plan bytes")
    EngineSidecar(engine_sha256=sha256_file(engine), spec=ModelSpec(num_classes=5, input_size=TINY), precision="fp16",
                  tensorrt={"package": "tensorrt", "version": "10.3"}).write(engine)
    trt_repo = write_repository(engine, tmp_path / "trt", RepoOptions(native=True, gpu=True))
    plan = cfg.read(trt_repo / "bisenet_trt" / "config.pbtxt")
    assert plan.platform == "tensorrt_plan" and (trt_repo / "bisenet_trt" / "1" / "model.plan").is_file()
    assert json.loads(plan.parameters["tensorrt"].string_value)["version"] == "10.3"
    with pytest.raises(UserError, match="exists"):
        write_repository(export_model5(), trt_repo)
    with pytest.raises(Exception, match="not_a_field"):
        cfg.parse("name: 'x'\nnot_a_field: 3\n")


def test_run_refuses_a_folder_that_is_not_a_repository(tmp_path):
    from bisenet_deploy.cli.serve import main

    code = main(["run", str(tmp_path)])
    assert code == 2


def test_bench_gives_remote_rows_and_load_levels(server, export_model5, tmp_path):
    from bisenet_deploy.benchmarks import report
    from bisenet_deploy.cli.bench import main

    code = main([str(export_model5(dynamic=("batch",))), f"{server['grpc']}/bisenet", "--backend", "onnxruntime",
                 "--no-reference", "--iterations", "3", "--warmup", "1", "--warmup-max", "2", "--max-images", "2",
                 "--concurrency", "1,4", "--json", str(tmp_path / "r.json"), "-q"])
    assert code == 0
    result = report.load_json(tmp_path / "r.json")
    rows = result["cells"][0]["rows"]
    assert rows[1]["name"] == "triton grpc bisenet" and rows[1]["fidelity"]["label_agreement"] == 100.0
    levels = {r["clients"]: r for r in result["concurrency"]}
    assert set(levels) == {1, 4} and levels[4]["inferences"] == levels[4]["calls"] == 16


def test_serve_demo_script_serves_compares_and_stops(export_model5, tmp_path):
    """`make serve-demo`'s script, on a tiny model in a temporary demo folder."""
    if not SERVE_PYTHON.is_file():
        pytest.skip(f"no serving environment at {SERVE_PYTHON} (make serve-setup builds it)")
    import shutil

    from bisenet_deploy.datasets.shapes import scenes, write_scene_folder

    demo = tmp_path / "demo"
    demo.mkdir()
    shutil.copy(export_model5(dynamic=("batch",)), demo / "model.onnx")
    write_scene_folder(demo / "scenes", scenes(3, (96, 128)))
    shm_before = _shm()
    env = dict(os.environ, DEMO_DIR=str(demo), WORK=str(tmp_path / "work"), BISENET_SERVE_PYTHON=str(SERVE_PYTHON))
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "serve_demo.py")], env=env, capture_output=True,
                          text=True, timeout=240)
    out = done.stdout + done.stderr
    assert done.returncode == 0, out[-3000:]
    assert "grpc://127.0.0.1:" in out and out.count("3/3 held-out scenes with labels identical") == 2, out[-3000:]
    assert "server stopped (exit 0)" in out
    assert (tmp_path / "work" / "repo" / "bisenet" / "config.pbtxt").is_file()
    assert _shm() <= shm_before, "shared-memory regions left behind"
    leftover = subprocess.run(["pgrep", "-f", str(tmp_path / "work")], capture_output=True, text=True).stdout
    assert not leftover.strip(), f"a server outlived the script: {leftover}"


def test_stop_with_a_client_still_connected_says_why_the_exit_code_is_one(repo):
    if not SERVE_PYTHON.is_file():
        pytest.skip(f"no serving environment at {SERVE_PYTHON} (make serve-setup builds it)")
    # The serving environment has the wheel's tritonserver: drive start/stop_server there.
    http, grpc, metrics = free_ports(3)
    code = f"""
import http.client, json
from bisenet_deploy.serving.server import ServerOptions, start_server, stop_server
server = start_server({str(repo)!r}, ServerOptions(http_port={http}, grpc_port={grpc}, metrics_port={metrics},
                      ready_timeout=90, exit_timeout=2))
conn = http.client.HTTPConnection("127.0.0.1", {http}, timeout=5)
conn.request("GET", "/v2/health/ready"); conn.getresponse().read()   # keep-alive: stays open
print(json.dumps({{"code": stop_server(server), "note": server.stop_note}}))
"""
    done = subprocess.run([str(SERVE_PYTHON), "-c", code], capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr[-2000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["code"] == 1 and "still connected" in result["note"], result
    leftover = subprocess.run(["pgrep", "-f", f"--grpc-port={grpc}"], capture_output=True, text=True).stdout
    assert not leftover.strip()
