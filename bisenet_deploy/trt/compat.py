"""TensorRT builder API differences, chosen by feature checks (never by version strings).

One function per difference between TensorRT 8.6 (JetPack 6.0), 10, 11 and TensorRT-RTX.
Each takes the TensorRT module (or its objects) as a value and returns which API it used,
so the sidecar records what a build actually did.

| feature                 | 8.6                 | 10                    | 11 / TensorRT-RTX      |
|-------------------------|---------------------|-----------------------|------------------------|
| network typing          | weak + EXPLICIT_BATCH| STRONGLY_TYPED flag  | always strong          |
| precision               | FP16/INT8 flags, OBEY_PRECISION_CONSTRAINTS, FP32 layers pinned | from the ONNX | from the ONNX |
| workspace               | set_memory_pool_limit (max_workspace_size before 8.4)            |
| progress                | none                 | IProgressMonitor     | IProgressMonitor       |
| timing cache            | yes                  | yes                  | 11 yes; RTX: no-op     |
| target GPUs             | the build GPU        | the build GPU        | RTX: compute capabilities |
| CUDA-graph capture      | as is                | as is                | RTX: REQUIRE_USER_ALLOCATION |
| TF32 (on by default)    | cleared for fp32 builds (``--tf32`` keeps it); recorded as build.tf32           |

The decisions themselves (which flags, which calls) are plain functions in ``features.py``.
"""

from __future__ import annotations

import json
import warnings
from types import ModuleType
from typing import Any

from ..errors import UserError
from .features import (
    PRECISION_FLAGS,
    TypingPlan,
    capture_builder_flags,
    clears_tf32,
    dla_note,
    flag_bits,
    typing_plan,
)
from .loading import flavour, version_of

__all__ = ["PRECISION_FLAGS"]


def network_flags(trt: ModuleType) -> tuple[int, bool]:
    """(create_network flags, strongly typed?) for this TensorRT (see ``features.typing_plan``)."""
    plan = typing_plan(trt, "fp32")
    return flag_bits(trt.NetworkDefinitionCreationFlag, plan.network_flags), plan.strongly_typed


def create_network(trt: ModuleType, builder: Any, plan: TypingPlan | None = None) -> tuple[Any, bool]:
    plan = plan or typing_plan(trt, "fp32")
    flags = flag_bits(trt.NetworkDefinitionCreationFlag, plan.network_flags)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # EXPLICIT_BATCH / STRONGLY_TYPED in 10.x / 11
        return builder.create_network(flags), plan.strongly_typed


def apply_typing(trt: ModuleType, network: Any, config: Any, plan: TypingPlan, precision: str) -> dict[str, Any]:
    """Set the plan's builder flags and (8.6, FP16) pin the ONNX's FP32 layers; the record of it.

    A strongly typed network takes every type from the ONNX (casts, Q/DQ): nothing is set.
    """
    for name in plan.builder_flags:
        config.set_flag(getattr(trt.BuilderFlag, name))
    record: dict[str, Any] = {
        "precision_flags": [n for n in plan.builder_flags if n in ("FP16", "INT8")],
        "precision_constraints": "obey" if "OBEY_PRECISION_CONSTRAINTS" in plan.builder_flags else None,
    }
    if plan.pin_fp32_layers:
        from .precision import pin_fp32_layers

        record["fp32_layers_pinned"] = len(pin_fp32_layers(trt, network, precision))
    return record


def set_fp32_math(trt: ModuleType, config: Any, precision: str, allow_tf32: bool = False) -> bool | None:
    """Clear TF32 unless asked (``features.clears_tf32``); whether TF32 is on in the build
    (None where this TensorRT has no TF32 flag), for the sidecar."""
    if not hasattr(trt.BuilderFlag, "TF32"):
        return None
    if clears_tf32(trt, precision, allow_tf32):
        config.clear_flag(trt.BuilderFlag.TF32)
    return bool(config.get_flag(trt.BuilderFlag.TF32))


def set_capture_flags(trt: ModuleType, config: Any) -> list[str]:
    """Flags that make the engine's enqueue capturable in a CUDA graph (TensorRT-RTX 1.2+)."""
    names = list(capture_builder_flags(trt))
    for name in names:
        config.set_flag(getattr(trt.BuilderFlag, name))
    return names


def set_profile_shape(profile: Any, name: str, lo: tuple[int, ...], opt: tuple[int, ...], hi: tuple[int, ...]) -> None:
    """``IOptimizationProfile.set_shape``: the binding raises RuntimeError when TensorRT's
    ``setDimensions`` returns false (PY_ASSERT_RUNTIME_ERROR in pyCore.cpp, 8.6 to 11.1),
    before ``add_optimization_profile`` could return -1: one line either way."""
    try:
        profile.set_shape(name, lo, opt, hi)
    except RuntimeError as exc:
        text = " ".join(str(exc).split()) or "no reason given"
        raise UserError(
            f"TensorRT rejected the optimization profile of '{name}' (min {lo}, opt {opt}, max {hi}): {text}"
        ) from None


def add_profile(config: Any, profile: Any) -> int:
    """``add_optimization_profile`` returns the profile's index, or -1 when it is invalid."""
    index = int(config.add_optimization_profile(profile))
    if index < 0:
        raise UserError("TensorRT rejected the optimization profile (min <= opt <= max per dimension, within limits)")
    return index


def set_workspace(trt: ModuleType, config: Any, nbytes: int) -> str:
    if hasattr(config, "set_memory_pool_limit"):
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(nbytes))
        return "set_memory_pool_limit"
    config.max_workspace_size = int(nbytes)
    return "max_workspace_size"


def set_optimization_level(config: Any, level: int) -> bool:
    """Builder optimization level 0..5 (TensorRT 8.6+); False where it does not exist."""
    if not hasattr(config, "builder_optimization_level"):
        return False
    config.builder_optimization_level = int(level)
    return True


def set_detailed_profiling(trt: ModuleType, config: Any) -> bool:
    """Keep layer names and details in the engine so the inspector can report them."""
    if hasattr(config, "profiling_verbosity") and hasattr(trt, "ProfilingVerbosity"):
        config.profiling_verbosity = trt.ProfilingVerbosity.DETAILED
        return True
    return False


def set_compute_capabilities(trt: ModuleType, config: Any, targets: tuple[str, ...]) -> list[str]:
    """TensorRT-RTX: build for these compute capabilities (e.g. ``8.6``) without their GPUs."""
    if not targets:
        return []
    if not hasattr(config, "set_compute_capability") or not hasattr(trt, "ComputeCapability"):
        raise UserError(
            "--compute-capability needs TensorRT-RTX (pip install 'bisenet-deploy[rtx]'); "
            "TensorRT builds for the GPU it runs on"
        )
    members = trt.ComputeCapability.__members__
    config.num_compute_capabilities = len(targets)
    for index, target in enumerate(targets):
        key = "SM" + target.replace(".", "")
        if key not in members:
            known = sorted((m[2:-1] + "." + m[-1] for m in members if m.startswith("SM")), key=float)
            raise UserError(
                f"compute capability {target} is not a target of this TensorRT-RTX; choose from {', '.join(known)}"
            )
        if not config.set_compute_capability(members[key], index):  # the binding returns False, not raises
            raise UserError(f"TensorRT-RTX refused compute capability {target} as target {index + 1} of {len(targets)}")
    return list(targets)


def use_dla(trt: ModuleType, builder: Any, config: Any, core: int) -> None:
    """Run layers on DLA core ``core`` (Jetson), falling back to the GPU where DLA cannot."""
    cores = int(getattr(builder, "num_DLA_cores", 0) or 0)
    if cores == 0:
        note = dla_note(flavour(trt), version_of(trt))
        raise UserError(
            f"--dla {core}: this machine has no DLA cores (Jetson AGX/NX Orin and Xavier have them)"
            + (f"; {note}" if note else "")
        )
    if not 0 <= core < cores:
        raise UserError(f"--dla {core}: this machine has DLA cores 0..{cores - 1}")
    config.default_device_type = trt.DeviceType.DLA
    config.DLA_core = int(core)
    config.set_flag(trt.BuilderFlag.GPU_FALLBACK)


def attach_timing_cache(config: Any, data: bytes) -> tuple[Any, bool, bool]:
    """(cache, whether ``data`` was accepted, whether the cache does anything).

    The cache is None where TensorRT has none. A cache from another GPU or TensorRT version
    is rejected; then the build starts from an empty one (and overwrites the file). TensorRT-RTX
    keeps the API but documents it as a no-op and says so with a DeprecationWarning, which we
    read instead of guessing from the package name.
    """
    if not hasattr(config, "create_timing_cache"):
        return None, False, False
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", DeprecationWarning)
        cache = config.create_timing_cache(data)
        # None: the binding could not deserialize ``data`` (another version, a foreign file);
        # False from set_timing_cache: another GPU. Either way start from an empty cache, as
        # trtexec does, and record that the file was not used.
        accepted = cache is not None and bool(config.set_timing_cache(cache, False))
        if not accepted:
            cache = config.create_timing_cache(b"")
            if cache is None or not config.set_timing_cache(cache, False):
                raise UserError("TensorRT could not create even an empty timing cache (rebuild with --no-timing-cache)")
    no_op = any("no-op" in str(w.message) for w in caught if issubclass(w.category, DeprecationWarning))
    return cache, accepted and bool(data), not no_op


def timing_cache_bytes(config: Any) -> bytes | None:
    if not hasattr(config, "get_timing_cache"):
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        cache = config.get_timing_cache()
        return None if cache is None else bytes(memoryview(cache.serialize()))


def progress_monitor(trt: ModuleType, config: Any, bar: Any) -> Any:
    """Feed TensorRT's build phases into a tqdm bar (TensorRT 10+); None where unsupported.

    The top-level phase sets the bar's length; nested phases show as its description.
    The caller must keep the returned object alive until the build ends.
    """
    if not hasattr(trt, "IProgressMonitor") or not hasattr(config, "progress_monitor"):
        return None

    class Monitor(trt.IProgressMonitor):
        def __init__(self) -> None:
            trt.IProgressMonitor.__init__(self)
            self.top: str | None = None

        def phase_start(self, phase_name: str, parent_phase: str | None, num_steps: int) -> None:
            if parent_phase is None and self.top is None:
                self.top = phase_name
                bar.reset(total=max(1, num_steps))
            bar.set_description_str(phase_name, refresh=False)

        def step_complete(self, phase_name: str, step: int) -> bool:
            if phase_name == self.top:
                bar.n = step + 1
                bar.refresh()
            return True  # False would cancel the build

        def phase_finish(self, phase_name: str) -> None:
            if phase_name == self.top:
                bar.n = bar.total
                bar.refresh()

    monitor = Monitor()
    config.progress_monitor = monitor
    return monitor


def build_serialized(builder: Any, network: Any, config: Any) -> tuple[bytes | None, str]:
    """Serialized engine bytes (None on failure) and the API used."""
    if hasattr(builder, "build_serialized_network"):
        host = builder.build_serialized_network(network, config)
        return (None if host is None else bytes(memoryview(host))), "build_serialized_network"
    engine = builder.build_engine(network, config)
    return (None if engine is None else bytes(memoryview(engine.serialize()))), "build_engine"


def parse_onnx(parser: Any, onnx_path: str, data: bytes) -> bool:
    """Parse from the file where possible (it resolves external weight files)."""
    if hasattr(parser, "parse_from_file"):
        return bool(parser.parse_from_file(onnx_path))
    return bool(parser.parse(data, onnx_path))


def _call_or(obj: Any, name: str, default: Any = None) -> Any:
    fn = getattr(obj, name, None)
    try:
        return fn() if callable(fn) else default
    except Exception:  # noqa: BLE001 - optional details only
        return default


def parser_failure(parser: Any, logger: Any) -> str:
    """TensorRT's first parser error as one line, naming the failing node."""
    if getattr(parser, "num_errors", 0):
        error = parser.get_error(0)
        desc = " ".join(str(_call_or(error, "desc", "")).split())
        if "Plugin not found" in desc:  # TensorRT's wording is an assertion expression
            desc = "operator not supported by this TensorRT (no built-in importer and no plugin)"
        node = _call_or(error, "node", -1)
        name = _call_or(error, "node_name", "")
        op = _call_or(error, "node_operator", "")
        if node is not None and int(node) >= 0:
            what = f"node {node}" + (f" '{name}'" if name else "") + (f" ({op})" if op else "")
            return f"{what}: {desc}"
        return desc or "unknown parser error"
    return logger.last_error() or "the ONNX parser failed without a message"


def layer_report(trt: ModuleType, logger: Any, engine_bytes: bytes, dla_core: int | None = None) -> dict[str, Any] | None:
    """The engine inspector's JSON (layers, tactics, formats); needs a GPU to deserialize."""
    runtime = trt.Runtime(logger)
    if dla_core is not None:  # a DLA engine deserializes only on its core (trtexec sets it first)
        runtime.DLA_core = int(dla_core)
    engine = runtime.deserialize_cuda_engine(engine_bytes)
    if engine is None or not hasattr(engine, "create_engine_inspector"):
        return None
    inspector = engine.create_engine_inspector()
    text = inspector.get_engine_information(trt.LayerInformationFormat.JSON)
    del inspector, engine, runtime
    return json.loads(text)
