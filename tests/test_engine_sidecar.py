"""Engine sidecar round trip, compatibility checks, and the backend refusing engines clearly."""

from __future__ import annotations

import json
import shutil

import pytest

from bisenet_deploy.cli.export import main
from bisenet_deploy.errors import ArtifactError, UserError
from bisenet_deploy.runtime.backends import open_backend
from bisenet_deploy.spec import ModelSpec
from bisenet_deploy.trt.builder import EngineOptions, build_engine
from bisenet_deploy.trt.cuda_buffers import CudaUnavailable
from bisenet_deploy.trt.sidecar import (
    EngineSidecar,
    compatibility_problem,
    gpu_identity_problem,
    mismatch_error,
    rebuild_hint,
    sidecar_path,
)
from tests.tiny_onnx import tiny_onnx
from tests.trt_fixtures import builder_module, gpu_problem

GPU_A = {"name": "NVIDIA Jetson AGX Orin", "compute_capability": "8.7", "multiprocessors": 16,
         "total_memory_mb": 62800, "uuid": "GPU-a"}
GPU_B = {"name": "NVIDIA GeForce RTX 4090", "compute_capability": "8.9", "multiprocessors": 128,
         "total_memory_mb": 24080, "uuid": "GPU-b"}


def sidecar(**changes) -> EngineSidecar:
    base = dict(
        engine_sha256="ab" * 32,
        spec=ModelSpec(num_classes=3, class_names=("a", "b", "c"), input_size=(64, 128), dynamic_axes=("batch",)),
        precision="int8",
        tensorrt={"package": "tensorrt", "version": "10.3.0", "strongly_typed": True},
        gpu=GPU_A,
        calibration={"images": 16, "sha256": "cd" * 32},
        rebuild_command="bisenet-export m.int8.onnx --engine -o m.int8.engine",
    )
    base.update(changes)
    return EngineSidecar(**base)


def test_round_trip(tmp_path):
    engine = tmp_path / "m.int8.engine"
    written = sidecar()
    assert written.write(engine) == tmp_path / "m.int8.engine.json"
    read = EngineSidecar.read(engine)
    assert read.to_dict() == written.to_dict() and read.spec == written.spec
    assert EngineSidecar.read(tmp_path / "other.engine") is None


@pytest.mark.parametrize(
    "text, message",
    [("{not json", "unreadable"), ("[1, 2]", "not a JSON object"), (json.dumps({"format": 99}), "newer")],
    ids=["syntax", "not-object", "future-format"],
)
def test_unreadable_sidecar(tmp_path, text, message):
    engine = tmp_path / "m.engine"
    sidecar_path(engine).write_text(text)
    with pytest.raises(ArtifactError, match=message):
        EngineSidecar.read(engine)


def test_compatibility_rules():
    s = sidecar()
    assert compatibility_problem(s, "tensorrt", "10.3.0", GPU_A) is None
    assert compatibility_problem(s, "tensorrt", "10.3.0", None) is None  # version only, before a GPU is known
    assert "10.3.0, this machine has tensorrt 10.7.0" in compatibility_problem(s, "tensorrt", "10.7.0", GPU_A)
    assert "built with tensorrt, but it is being loaded with tensorrt_rtx" in compatibility_problem(
        s, "tensorrt_rtx", "10.3.0", GPU_A
    )
    assert "built for NVIDIA Jetson AGX Orin (compute capability 8.7, 16 SMs, 61 GiB)" in compatibility_problem(
        s, "tensorrt", "10.3.0", GPU_B
    )
    rtx = sidecar(tensorrt={"package": "tensorrt_rtx", "version": "1.7"}, gpu=None, target_compute_capabilities=["8.6"])
    assert compatibility_problem(rtx, "tensorrt_rtx", "1.7", {"name": "x", "compute_capability": "8.6"}) is None
    other = {"name": "RTX", "compute_capability": "8.9"}
    assert "this GPU (RTX) has 8.9" in compatibility_problem(rtx, "tensorrt_rtx", "1.7", other)
    portable = sidecar(tensorrt={"package": "tensorrt_rtx", "version": "1.7"}, build={"portable_across_gpus": True})
    assert compatibility_problem(portable, "tensorrt_rtx", "1.7", GPU_B) is None  # built on GPU_A, runs on GPU_B


def test_gpu_identity_tells_jetson_modules_apart():
    """Orin modules share a name and compute capability; SM count and memory differ."""
    agx64 = dict(GPU_A, uuid=None)
    agx32 = dict(agx64, multiprocessors=14, total_memory_mb=30500)
    nx16 = {"name": "Orin", "compute_capability": "8.7", "multiprocessors": 8, "total_memory_mb": 15400}
    nano8 = dict(nx16, total_memory_mb=7450)
    assert gpu_identity_problem(agx64, dict(agx64, total_memory_mb=62100, uuid="GPU-other")) is None  # same model
    assert "14 SMs" in gpu_identity_problem(agx32, agx64)
    assert "7 GiB" in gpu_identity_problem(nx16, nano8)  # same SM count, half the memory
    assert gpu_identity_problem(dict(GPU_A), dict(GPU_A, name="renamed")) is None  # same physical device (UUID)
    assert "cannot be compared" in gpu_identity_problem({"name": "Orin", "compute_capability": "8.7"}, nx16)
    assert "names no build GPU" in gpu_identity_problem(None, nx16)
    # A TensorRT engine whose sidecar has no GPU (built without working cuda-python) is refused.
    assert "names no build GPU" in compatibility_problem(sidecar(gpu=None), "tensorrt", "10.3.0", GPU_A)


def test_mismatch_error_is_one_line_with_the_rebuild_command(tmp_path, monkeypatch):
    s = sidecar()
    (tmp_path / "m.int8.onnx").write_bytes(b"onnx")  # the hint names an ONNX only where it exists
    problem = "it was built with tensorrt 10.3.0, this machine has tensorrt 10.7.0"
    err = mismatch_error(tmp_path / "m.int8.engine", s, problem)
    text = str(err)
    assert "\n" not in text and isinstance(err, UserError)
    assert f"Rebuild it here: cd {tmp_path} && bisenet-export m.int8.onnx --engine -o m.int8.engine" in text
    monkeypatch.chdir(tmp_path)
    assert rebuild_hint("m.int8.engine", s) == s.rebuild_command


# --- the backend refuses what it cannot run, in one line, before touching TensorRT's runtime ---


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    trt = builder_module()
    folder = tmp_path_factory.mktemp("engines")
    onnx = tiny_onnx(folder / "tiny.onnx")
    build = build_engine(onnx, options=EngineOptions(progress=False, timing_cache=None), trt=trt)
    return build.engine_path


def _copy(engine, folder):
    shutil.copy(engine, folder / engine.name)
    shutil.copy(sidecar_path(engine), sidecar_path(folder / engine.name))
    shutil.copy(engine.parent / "tiny.onnx", folder / "tiny.onnx")
    return folder / engine.name


def test_engine_without_sidecar_is_refused(built, tmp_path):
    lonely = tmp_path / "lonely.engine"
    shutil.copy(built, lonely)
    with pytest.raises(ArtifactError, match="has no sidecar 'lonely.engine.json'.*bisenet-export"):
        open_backend(lonely)


def test_modified_engine_is_refused(built, tmp_path):
    engine = _copy(built, tmp_path)
    with open(engine, "ab") as f:
        f.write(b"\0")
    with pytest.raises(ArtifactError, match="does not match its sidecar"):
        open_backend(engine)


def test_other_tensorrt_version_is_refused_with_a_command_that_works(built, tmp_path, monkeypatch, capsys):
    engine = _copy(built, tmp_path)
    side = json.loads(sidecar_path(engine).read_text())
    side["tensorrt"]["version"] = "0.0.1"
    sidecar_path(engine).write_text(json.dumps(side))
    with pytest.raises(ArtifactError) as info:
        open_backend(engine)
    message = str(info.value)
    assert "built with" in message and "0.0.1, this machine has" in message
    command = message.split("Rebuild it here: ")[1]
    assert command.startswith(f"cd {tmp_path} && bisenet-export tiny.onnx --engine -o tiny.fp32.engine")
    # Run the suggested command: it rebuilds the engine and the new one passes the version check.
    monkeypatch.chdir(tmp_path)
    argv = command.split(" && ")[1].split()[1:]
    assert main(argv + ["-q"]) == 0
    capsys.readouterr()
    if gpu_problem() is not None:
        with pytest.raises(CudaUnavailable, match="needs an NVIDIA GPU"):
            open_backend(engine)


@pytest.mark.skipif(gpu_problem() is None, reason="this machine has a GPU")
def test_no_gpu_is_one_clear_line(built):
    from bisenet_deploy.runtime import Segmenter

    for opener in (open_backend, Segmenter):
        with pytest.raises(CudaUnavailable) as info:
            opener(built)
        assert "needs an NVIDIA GPU" in str(info.value) and "\n" not in str(info.value)


def test_cpu_device_is_refused_clearly(built):
    from bisenet_deploy.runtime import Segmenter

    with pytest.raises(UserError, match="runs on a CUDA GPU, not on 'cpu'"):
        Segmenter(built, device="cpu")


def test_trt_package_imports_neither_torch_nor_tensorrt_nor_onnx():
    """The runtime half and even the builder module import nothing heavy until used."""
    import subprocess
    import sys

    code = (
        "import sys, bisenet_deploy.trt, bisenet_deploy.trt.runner, bisenet_deploy.trt.sidecar,"
        " bisenet_deploy.trt.features, bisenet_deploy.trt.builder, bisenet_deploy.runtime.backends;"
        "from bisenet_deploy.runtime.backends import backend_class; backend_class('tensorrt');"
        "bad = [m for m in ('torch', 'tensorrt', 'tensorrt_rtx', 'onnx', 'tqdm') if m in sys.modules];"
        "sys.exit(str(bad) if bad else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
