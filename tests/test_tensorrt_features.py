"""Version-dependent decisions, per TensorRT version, against each version's API surface.

The surfaces are what NVIDIA/TensorRT's binding sources define at v8.6.1 (JetPack 6.0),
v10.3.0 (JetPack 6.1/6.2) and v11.1 (``tests/trt_api_surfaces.py``); TensorRT-RTX is the
real module where installed. No GPU: the 8.6 path (weak typing, precision constraints,
FP32 layers pinned) runs here, not only its refusal.
"""

from __future__ import annotations

import enum
from types import SimpleNamespace

import pytest

from bisenet_deploy.errors import UserError
from bisenet_deploy.trt import compat, features
from bisenet_deploy.trt.features import LayerFacts, TypingPlan
from tests.trt_api_surfaces import ENUM_VALUES, SURFACES
from tests.trt_fixtures import importable
from tests.trt_versions import VERSIONS, api

RTX = importable("tensorrt_rtx")


@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8", "mixed"])
def test_typing_plan_per_version(precision):
    plans = {v: features.typing_plan(api(v), precision) for v in VERSIONS}
    weak = {"fp32": (), "fp16": ("FP16", "OBEY_PRECISION_CONSTRAINTS"), "int8": ("INT8",),
            "mixed": ("FP16", "INT8", "OBEY_PRECISION_CONSTRAINTS")}[precision]
    assert plans["8.6.1"] == TypingPlan(("EXPLICIT_BATCH",), False, weak, "FP16" in weak)
    # 10.3 still has EXPLICIT_BATCH and the FP16 flag, but STRONGLY_TYPED wins: types from the ONNX.
    assert plans["10.3.0"] == TypingPlan(("STRONGLY_TYPED",), True)
    # 11.1: no FP16/INT8 builder flags, no EXPLICIT_BATCH; STRONGLY_TYPED is still bound.
    assert plans["11.1"] == TypingPlan(("STRONGLY_TYPED",), True)
    if RTX is not None:
        assert features.typing_plan(RTX, precision) == TypingPlan(("STRONGLY_TYPED",), True)


def test_weak_typing_without_constraints_is_refused_not_silently_fp16():
    old = api("8.6.1", drop={"BuilderFlag": ("OBEY_PRECISION_CONSTRAINTS",)})
    with pytest.raises(UserError, match="cannot keep an FP16 ONNX's FP32 layers in FP32"):
        features.typing_plan(old, "fp16")
    assert features.typing_plan(old, "int8").builder_flags == ("INT8",)  # nothing to protect
    with pytest.raises(UserError, match="unknown precision"):
        features.typing_plan(api("8.6.1"), "bf16")


def test_network_flag_bits_follow_the_bound_enum():
    """``create_network`` takes ``1 << value``: the header values, not the member positions
    (11.1 renumbered STRONGLY_TYPED to 0 when EXPLICIT_BATCH went; 10.3 has it at 1)."""
    expected = {"8.6.1": 1 << 0, "10.3.0": 1 << 1, "11.1": 1 << 0}  # EXPLICIT_BATCH; STRONGLY_TYPED; STRONGLY_TYPED
    for version in VERSIONS:
        trt = api(version)
        plan = features.typing_plan(trt, "fp32")
        assert features.flag_bits(trt.NetworkDefinitionCreationFlag, plan.network_flags) == expected[version]
    if RTX is not None:
        assert features.flag_bits(RTX.NetworkDefinitionCreationFlag, ("STRONGLY_TYPED",)) == 1 << 0


def test_enum_values_name_exactly_the_bound_members():
    for version in VERSIONS:
        for name, pairs in ENUM_VALUES[version].items():
            assert tuple(n for n, _ in pairs) == SURFACES[version][name], (version, name)


def test_layer_precision_api_and_capture_flags():
    assert [features.layer_precision_api(api(v)) for v in VERSIONS] == [True, True, False]
    assert all(features.capture_builder_flags(api(v)) == () for v in VERSIONS)
    if RTX is not None and hasattr(RTX.BuilderFlag, "REQUIRE_USER_ALLOCATION"):
        assert features.capture_builder_flags(RTX) == ("REQUIRE_USER_ALLOCATION",)


def test_execute_api_and_capture_check():
    for version in VERSIONS:
        context = api(version).IExecutionContext()
        assert features.execute_api(context) == "execute_async_v3"
        assert not features.can_check_capture(context)
    pre_85 = api("8.6.1", drop={"IExecutionContext": ("execute_async_v3",)}).IExecutionContext()
    assert features.execute_api(pre_85) == "execute_async_v2"
    with pytest.raises(UserError):
        features.execute_api(object())
    if RTX is not None:
        assert features.can_check_capture(RTX.IExecutionContext)


def test_runtime_dla_core():
    for version in VERSIONS:
        runtime = api(version).Runtime()
        assert features.runtime_dla_core(runtime, None) is None
        runtime.num_DLA_cores = 0
        assert "this machine has 0 DLA core(s)" in features.runtime_dla_core(runtime, 0)
        runtime.num_DLA_cores = 2
        assert features.runtime_dla_core(runtime, 1) is None
        assert "DLA core 2" in features.runtime_dla_core(runtime, 2)
    assert "cannot select a DLA core" in features.runtime_dla_core(object(), 0)


@pytest.mark.parametrize(
    "package, version, gap",
    [("tensorrt", "8.6.2", False), ("tensorrt", "10.3.0", False), ("tensorrt", "11.0.0", True),
     ("tensorrt", "11.3.1", True), ("tensorrt", "11.4.0", True), ("tensorrt", "11.4", True),
     ("tensorrt", "11.4.0.7", True), ("tensorrt", "11.4.1", False), ("tensorrt", "11.5.0", False), ("tensorrt_rtx", "1.2.0", True)],
)
def test_dla_note(package, version, gap):
    assert (features.dla_note(package, version) is not None) == gap


LAYERS = [
    LayerFacts("cast_in", "CAST", ("HALF",)),
    LayerFacts("conv1", "CONVOLUTION", ("HALF",)),
    LayerFacts("softmax_keep", "SOFTMAX", ("FLOAT",)),
    LayerFacts("shape", "SHAPE", ("INT32",)),
    LayerFacts("const", "CONSTANT", ("FLOAT",)),
    LayerFacts("q_conv", "CONVOLUTION", ("FLOAT",), next_to_qdq=True),
    LayerFacts("argmax", "TOPK", ("FLOAT", "INT32")),
    LayerFacts("resize_keep", "RESIZE", ("FLOAT",)),
]


def test_pins_only_the_onnx_fp32_compute_layers():
    assert features.pins_for_layers(LAYERS, "fp16") == ["softmax_keep", "resize_keep"]
    assert features.pins_for_layers(LAYERS, "mixed") == ["softmax_keep", "resize_keep"]
    assert features.pins_for_layers(LAYERS, "fp32") == []  # no FP16 flag: nothing can drift
    assert features.pins_for_layers(LAYERS, "int8") == []  # Q/DQ place INT8, the rest stays FP32


class _Tensor:
    def __init__(self, name, dtype):
        self.name, self.dtype = name, dtype


def _network(trt):
    """A parsed FP16 network as TensorRT 8.6 types it: input cast to HALF, conv in HALF,
    a protected FP32 softmax, cast back. Layers use only names ILayer binds in 8.6.1."""
    used = {"name", "type", "num_inputs", "num_outputs", "get_input", "get_output", "precision", "set_output_type"}
    assert used <= set(SURFACES[trt.__version__]["ILayer"])
    f32, f16 = trt.DataType.FLOAT, trt.DataType.HALF

    class Layer(trt.ILayer):
        def __init__(self, name, kind, inputs, outputs):
            self.name, self.type = name, getattr(trt.LayerType, kind)
            self._in, self._out = inputs, outputs
            self.num_inputs, self.num_outputs = len(inputs), len(outputs)
            self.precision, self.output_types = None, {}

        def get_input(self, i):
            return self._in[i]

        def get_output(self, i):
            return self._out[i]

        def set_output_type(self, i, dtype):
            self.output_types[i] = dtype

    x, xh, c, s, y = (_Tensor("input", f32), _Tensor("input_fp16", f16), _Tensor("conv", f16),
                      _Tensor("soft", f32), _Tensor("logits", f32))
    layers = [Layer("cast_in", "CAST", [x], [xh]), Layer("conv1", "CONVOLUTION", [xh], [c]),
              Layer("cast_up", "CAST", [c], [_Tensor("conv32", f32)]),
              Layer("softmax_keep", "SOFTMAX", [_Tensor("conv32", f32)], [s]), Layer("out", "IDENTITY", [s], [y])]

    class Network:
        num_layers = len(layers)

        def get_layer(self, i):
            return layers[i]

    return Network(), {layer.name: layer for layer in layers}


class _Config:
    def __init__(self):
        self.flags = []

    def set_flag(self, flag):
        self.flags.append(flag)


def test_tensorrt_86_fp16_build_path_sets_constraints_and_pins_fp32_layers():
    trt = api("8.6.1")
    network, layers = _network(trt)
    config = _Config()
    plan = features.typing_plan(trt, "fp16")
    record = compat.apply_typing(trt, network, config, plan, "fp16")
    assert config.flags == [trt.BuilderFlag.FP16, trt.BuilderFlag.OBEY_PRECISION_CONSTRAINTS]
    assert record == {"precision_flags": ["FP16"], "precision_constraints": "obey", "fp32_layers_pinned": 1}
    keep = layers["softmax_keep"]
    assert keep.precision == trt.DataType.FLOAT and keep.output_types == {0: trt.DataType.FLOAT}
    assert layers["conv1"].precision is None and layers["cast_in"].precision is None


@pytest.mark.parametrize("version", ["10.3.0", "11.1"])
def test_strongly_typed_versions_set_nothing(version):
    trt = api(version)
    network, layers = _network(api("8.6.1"))
    config = _Config()
    record = compat.apply_typing(trt, network, config, features.typing_plan(trt, "fp16"), "fp16")
    assert config.flags == [] and record == {"precision_flags": [], "precision_constraints": None}
    assert all(layer.precision is None for layer in layers.values())


#: the calls the builder and the runner make without a feature check, per object
UNCHECKED_CALLS = {
    "Runtime": ("deserialize_cuda_engine", "DLA_core", "num_DLA_cores"),
    "ICudaEngine": ("num_io_tensors", "get_tensor_name", "get_tensor_mode", "get_tensor_shape", "get_tensor_dtype",
                    "get_tensor_profile_shape", "create_execution_context", "create_engine_inspector",
                    "num_optimization_profiles"),
    "IExecutionContext": ("set_input_shape", "set_tensor_address", "get_tensor_shape", "execute_async_v3",
                          "set_optimization_profile_async"),  # trt/streams.py: one profile per stream
    "IBuilderConfig": ("set_flag", "get_flag", "clear_flag", "add_optimization_profile", "create_timing_cache",
                       "set_timing_cache", "get_timing_cache", "set_memory_pool_limit", "builder_optimization_level",
                       "profiling_verbosity", "DLA_core", "default_device_type"),
    "Builder": ("create_network", "create_optimization_profile", "build_serialized_network", "num_DLA_cores",
                "create_builder_config"),
    "OnnxParser": ("parse", "num_errors", "get_error"),
    "IOptimizationProfile": ("set_shape",),
    "EngineInspector": ("get_engine_information",),
    "ITimingCache": ("serialize",),
    "ILayer": ("name", "type", "num_outputs", "get_output", "num_inputs", "get_input"),
}
#: calls made only behind a hasattr check (or, for the layer precision API, behind
#: ``features.layer_precision_api``), and the versions that have them
CHECKED_CALLS = {
    ("IExecutionContext", "execute_async_v2"): ("8.6.1",),
    ("IExecutionContext", "set_binding_shape"): ("8.6.1",),
    ("IExecutionContext", "is_stream_capturable"): (),  # TensorRT-RTX only
    ("ICudaEngine", "get_profile_shape"): ("8.6.1",),
    ("ICudaEngine", "num_bindings"): ("8.6.1",),
    ("ICudaEngine", "binding_is_input"): ("8.6.1",),
    ("ICudaEngine", "get_binding_name"): ("8.6.1",),
    ("ICudaEngine", "get_binding_shape"): ("8.6.1",),
    ("ICudaEngine", "get_binding_dtype"): ("8.6.1",),
    ("IBuilderConfig", "max_workspace_size"): ("8.6.1",),
    ("IBuilderConfig", "progress_monitor"): ("10.3.0", "11.1"),
    ("IBuilderConfig", "set_compute_capability"): (),  # TensorRT-RTX only
    ("IBuilderConfig", "num_compute_capabilities"): (),
    ("Runtime", "get_engine_validity"): (),
    ("Builder", "build_engine"): ("8.6.1",),
    ("OnnxParser", "parse_from_file"): ("8.6.1", "10.3.0", "11.1"),
    ("ILayer", "precision"): ("8.6.1", "10.3.0"),
    ("ILayer", "set_output_type"): ("8.6.1", "10.3.0"),
    ("IProgressMonitor", "phase_start"): ("10.3.0", "11.1"),
    ("IProgressMonitor", "step_complete"): ("10.3.0", "11.1"),
    ("IProgressMonitor", "phase_finish"): ("10.3.0", "11.1"),
}
#: names the package uses on objects that are not TensorRT's or whose class the surfaces do not
#: hold: tqdm's ``reset``, dict's ``update``, INetworkDefinition's ``num_layers`` (the network
#: is only walked on the 8.6 pinning path, tested with a stand-in network above)
NOT_TENSORRT = {"reset", "update", "num_layers"}


@pytest.mark.parametrize("version", VERSIONS)
def test_every_unchecked_call_exists_in_every_version(version):
    surface = SURFACES[version]
    missing = {cls: [n for n in names if n not in surface[cls]] for cls, names in UNCHECKED_CALLS.items()}
    assert not any(missing.values()), missing
    for (cls, name), where in CHECKED_CALLS.items():
        assert (name in surface.get(cls, ())) == (version in where), (cls, name)


def _attributes_used_by_the_trt_package() -> set[str]:
    """Every ``obj.name`` and ``hasattr(obj, "name")`` in ``bisenet_deploy/trt/*.py``."""
    import ast
    from pathlib import Path

    import bisenet_deploy.trt as package

    used = set()
    for path in Path(package.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute):
                used.add(node.attr)
            elif (isinstance(node, ast.Call) and getattr(node.func, "id", None) in ("hasattr", "getattr")
                  and len(node.args) >= 2 and isinstance(node.args[1], ast.Constant)):
                used.add(node.args[1].value)
    return used


def test_the_call_lists_name_every_tensorrt_call_the_package_makes():
    """A TensorRT method or property the code starts using must be listed above (and so be
    checked against every version), or this fails: the lists cannot go stale silently."""
    bound = {n for version in VERSIONS for cls, names in SURFACES[version].items() if cls[0] in "IBRO"
             and not cls.endswith(("Flag", "Type")) for n in names}
    bound |= {name for _, name in CHECKED_CALLS}  # RTX-only names are in no surface
    listed = {n for names in UNCHECKED_CALLS.values() for n in names} | {name for _, name in CHECKED_CALLS}
    unlisted = (_attributes_used_by_the_trt_package() & bound) - listed - NOT_TENSORRT
    assert not unlisted, f"TensorRT calls missing from UNCHECKED_CALLS / CHECKED_CALLS: {sorted(unlisted)}"


class _CacheConfig:
    """``create_timing_cache`` as the binding behaves: None for data it cannot read."""

    def __init__(self, readable: bool, compatible: bool = True):
        self.readable, self.compatible, self.set = readable, compatible, []

    def create_timing_cache(self, data):
        return None if data and not self.readable else ("cache", bytes(data))

    def set_timing_cache(self, cache, ignore_mismatch):
        self.set.append(cache)
        return self.compatible or cache == ("cache", b"")


@pytest.mark.parametrize("readable, compatible", [(False, True), (True, False)], ids=["unreadable", "other-gpu"])
def test_unusable_timing_cache_starts_empty_and_is_recorded(readable, compatible):
    config = _CacheConfig(readable, compatible)
    cache, accepted, effective = compat.attach_timing_cache(config, b"old cache")
    assert cache == ("cache", b"") and config.set[-1] == ("cache", b"")
    assert accepted is False and effective is True


def test_timing_cache_accepted_when_readable():
    config = _CacheConfig(True)
    assert compat.attach_timing_cache(config, b"old cache")[:2] == (("cache", b"old cache"), True)


def test_refused_compute_capability_is_one_line():
    class Capabilities(enum.IntEnum):
        NONE, SM86, SM89 = 0, 1, 2

    class Config:
        num_compute_capabilities = 0

        def set_compute_capability(self, cc, index):
            return cc != Capabilities.SM89  # the binding returns False rather than raising

    trt = SimpleNamespace(ComputeCapability=Capabilities)
    assert compat.set_compute_capabilities(trt, Config(), ("8.6",)) == ["8.6"]
    with pytest.raises(UserError, match="refused compute capability 8.9"):
        compat.set_compute_capabilities(trt, Config(), ("8.6", "8.9"))


def test_profile_shape_error_is_one_line():
    class Profile:
        def set_shape(self, name, lo, opt, hi):  # PY_ASSERT_RUNTIME_ERROR in pyCore.cpp
            raise RuntimeError("Assertion failed: setDimensions(...)\n  invalid dims")

    with pytest.raises(UserError, match=r"rejected the optimization profile of 'x' .*: Assertion failed.* invalid dims$"):
        compat.set_profile_shape(Profile(), "x", (1, 3, 32, 32), (1, 3, 64, 64), (1, 3, 16, 16))


class _FlagConfig:
    """IBuilderConfig's flags as TensorRT starts them: TF32 on by default."""

    def __init__(self, trt):
        self.on = {trt.BuilderFlag.TF32} if hasattr(trt.BuilderFlag, "TF32") else set()

    def clear_flag(self, flag):
        self.on.discard(flag)

    def get_flag(self, flag):
        return flag in self.on


@pytest.mark.parametrize("version", VERSIONS)
def test_fp32_builds_clear_tf32_unless_asked(version):
    trt = api(version)
    assert compat.set_fp32_math(trt, _FlagConfig(trt), "fp32") is False
    assert compat.set_fp32_math(trt, _FlagConfig(trt), "fp32", allow_tf32=True) is True
    # The FP32 layers of an fp16/int8 engine stay FP32 too (the builder adds no precision).
    for precision in ("fp16", "int8", "mixed"):
        assert compat.set_fp32_math(trt, _FlagConfig(trt), precision) is False
        assert compat.set_fp32_math(trt, _FlagConfig(trt), precision, allow_tf32=True) is True
    older = api(version, drop={"BuilderFlag": ("TF32",)})
    assert compat.set_fp32_math(older, _FlagConfig(older), "fp32") is None
    assert "clear_flag" in SURFACES[version]["IBuilderConfig"]


def test_dla_layers_from_the_inspector_report():
    detailed = {"Layers": [
        {"Name": "input to nvm", "LayerType": "Reformat"},
        {"Name": "{ForeignNode[conv1...relu3]}", "LayerType": "DLA"},
        {"Name": "{ForeignNode[attn]}", "LayerType": "Myelin"},  # a GPU ForeignNode is not DLA
    ]}
    assert features.dla_layers(detailed) == ["{ForeignNode[conv1...relu3]}"]
    assert features.dla_layers({"Layers": [{"Name": "conv1", "LayerType": "CaskConvolution"}]}) == []
    assert features.dla_layers({"Layers": ["[DlaLayer] {ForeignNode[conv1]}", "conv2"]}) == [
        "[DlaLayer] {ForeignNode[conv1]}"]
    assert features.dla_layers(None) == [] and features.dla_layers({"Layers": []}) == []
