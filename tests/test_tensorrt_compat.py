"""Feature-check shims against every real TensorRT module installed here (no fakes).

In CI that is TensorRT-RTX; on a GPU machine with TensorRT the same tests check its API.
Branches a module does not have (e.g. the weakly typed 8.6 path on RTX) are checked where
they can be: the shim must refuse, not silently do something else.
"""

from __future__ import annotations

import pytest

from bisenet_deploy.errors import UserError
from bisenet_deploy.trt import compat
from bisenet_deploy.trt.loading import (
    TensorRTUnavailable,
    flavour,
    load_tensorrt,
    logger_for,
    version_of,
)
from tests.tiny_onnx import tiny_onnx, unsupported_op_onnx
from tests.trt_fixtures import installed_flavours

MODULES = installed_flavours()
# ``tensorrt``: scripts/gpu_check.sh (-m "gpu or tensorrt") runs these against the real TensorRT too.
pytestmark = [pytest.mark.tensorrt,
              pytest.mark.skipif(not MODULES, reason="no TensorRT or TensorRT-RTX Python package installed")]


@pytest.fixture(params=MODULES, ids=[flavour(m) for m in MODULES])
def trt(request):
    return request.param


@pytest.fixture
def parts(trt):
    builder = trt.Builder(logger_for(trt))
    network, strongly_typed = compat.create_network(trt, builder)
    return builder, network, builder.create_builder_config(), strongly_typed


def test_loading_by_name_and_one_logger_per_module(trt):
    assert load_tensorrt(flavour(trt)) is trt
    assert logger_for(trt) is logger_for(trt, verbose=True)
    assert version_of(trt) == trt.__version__


def test_missing_package_is_one_line():
    for name in ("tensorrt", "tensorrt_rtx"):
        if name not in {flavour(m) for m in MODULES}:
            with pytest.raises(TensorRTUnavailable, match=f"{name}: .*pip install") as info:
                load_tensorrt(name)
            assert "\n" not in str(info.value)
    with pytest.raises(UserError, match="unknown TensorRT package"):
        load_tensorrt("tensorflow")


def test_network_typing_follows_the_available_flags(trt, parts):
    _, network, config, strongly_typed = parts
    flags, typed = compat.network_flags(trt)
    has_flag = hasattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED")
    weak_typing = hasattr(trt.BuilderFlag, "FP16")
    assert typed == (has_flag or not weak_typing) == strongly_typed
    if has_flag:
        assert flags == 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
        if hasattr(network, "get_flag"):
            assert network.get_flag(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)


@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8", "mixed"])
def test_typing_plan_applies_on_the_real_module(trt, precision, tmp_path):
    """The plan's flags exist on this module and apply; strongly typed builds set none."""
    from bisenet_deploy.trt.features import typing_plan

    plan = typing_plan(trt, precision)
    builder = trt.Builder(logger_for(trt))
    network, strongly_typed = compat.create_network(trt, builder, plan)
    assert strongly_typed == plan.strongly_typed
    onnx = tiny_onnx(tmp_path / "t.onnx", precision if precision != "mixed" else "fp16")
    assert compat.parse_onnx(trt.OnnxParser(network, logger_for(trt)), str(onnx), onnx.read_bytes())
    config = builder.create_builder_config()
    record = compat.apply_typing(trt, network, config, plan, precision)
    for name in plan.builder_flags:
        assert config.get_flag(getattr(trt.BuilderFlag, name))
    if strongly_typed:
        assert record == {"precision_flags": [], "precision_constraints": None}
    elif precision in ("fp16", "mixed"):  # TensorRT 8.6 on a GPU machine
        assert record["precision_constraints"] == "obey" and record["fp32_layers_pinned"] >= 0


def test_capture_flags_and_profile_check(trt, parts):
    builder, network, config, _ = parts
    names = compat.set_capture_flags(trt, config)
    assert names == (["REQUIRE_USER_ALLOCATION"] if hasattr(trt.BuilderFlag, "REQUIRE_USER_ALLOCATION") else [])
    for name in names:
        assert config.get_flag(getattr(trt.BuilderFlag, name))
    profile = builder.create_optimization_profile()
    # min > max: TensorRT may refuse it in set_shape (RuntimeError) or return -1 from
    # add_optimization_profile; either way one UserError line.
    with pytest.raises(UserError, match="rejected the optimization profile"):
        compat.set_profile_shape(profile, "input", (1, 3, 64, 64), (1, 3, 32, 32), (1, 3, 16, 16))
        compat.add_profile(config, profile)


def test_workspace_optimization_level_and_profiling(trt, parts):
    _, _, config, _ = parts
    api = compat.set_workspace(trt, config, 96 << 20)
    if api == "set_memory_pool_limit":
        assert config.get_memory_pool_limit(trt.MemoryPoolType.WORKSPACE) == 96 << 20
    else:
        assert config.max_workspace_size == 96 << 20
    if compat.set_optimization_level(config, 2):
        assert config.builder_optimization_level == 2
    if compat.set_detailed_profiling(trt, config):
        assert config.profiling_verbosity == trt.ProfilingVerbosity.DETAILED


def test_timing_cache_round_trip(trt, parts):
    _, _, config, _ = parts
    cache, accepted, _ = compat.attach_timing_cache(config, b"")
    if cache is None:
        pytest.skip("this TensorRT has no timing cache")
    assert accepted is False  # nothing was loaded
    data = compat.timing_cache_bytes(config)
    assert data
    _, accepted, _ = compat.attach_timing_cache(config, data)
    assert accepted is True


def test_parse_build_and_progress(trt, parts, tmp_path):
    from tqdm import tqdm

    builder, network, config, _ = parts
    onnx = tiny_onnx(tmp_path / "t.onnx")
    assert compat.parse_onnx(trt.OnnxParser(network, logger_for(trt)), str(onnx), onnx.read_bytes())
    with tqdm(total=1, disable=True) as bar:
        monitor = compat.progress_monitor(trt, config, bar)
        data, api = compat.build_serialized(builder, network, config)
        if monitor is not None:
            assert monitor.top is not None and bar.n == bar.total > 1
    assert api in ("build_serialized_network", "build_engine") and len(data) > 1000


def test_parser_failure_names_the_node(trt, tmp_path):
    builder = trt.Builder(logger_for(trt))
    network, _ = compat.create_network(trt, builder)
    parser = trt.OnnxParser(network, logger_for(trt))
    onnx = unsupported_op_onnx(tmp_path / "odd.onnx")
    assert not compat.parse_onnx(parser, str(onnx), onnx.read_bytes())
    line = compat.parser_failure(parser, logger_for(trt))
    assert line.startswith("node 1") and "FancyOp" in line and "\n" not in line


def test_dla_refused_without_cores(trt, parts):
    builder, _, config, _ = parts
    if getattr(builder, "num_DLA_cores", 0):
        compat.use_dla(trt, builder, config, 0)
        assert config.DLA_core == 0 and config.get_flag(trt.BuilderFlag.GPU_FALLBACK)
    else:
        with pytest.raises(UserError, match="no DLA cores"):
            compat.use_dla(trt, builder, config, 0)
