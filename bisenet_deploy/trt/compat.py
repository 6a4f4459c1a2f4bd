"""TensorRT builder API differences, chosen by feature checks (never by version strings).

One function per difference between TensorRT 8.6 (JetPack 6.0), 10, 11 and TensorRT-RTX.
Each takes the TensorRT module (or its objects) as a value and returns which API it used,
so the sidecar records what a build actually did.

| feature                 | 8.6                 | 10                    | 11 / TensorRT-RTX      |
|-------------------------|---------------------|-----------------------|------------------------|
| network typing          | weak + EXPLICIT_BATCH| STRONGLY_TYPED flag  | always strong          |
| precision               | FP16/INT8 flags      | from the ONNX        | from the ONNX          |
| workspace               | set_memory_pool_limit (max_workspace_size before 8.4)            |
| progress                | none                 | IProgressMonitor     | IProgressMonitor       |
| timing cache            | yes                  | yes                  | 11 yes; RTX: no-op     |
| target GPUs             | the build GPU        | the build GPU        | RTX: compute capabilities |
"""

from __future__ import annotations

import json
import warnings
from types import ModuleType
from typing import Any

from ..errors import UserError

#: builder flags that a weakly typed (TensorRT 8.6) network needs for each ONNX precision
PRECISION_FLAGS = {"fp32": (), "fp16": ("FP16",), "int8": ("INT8",), "mixed": ("FP16", "INT8")}


def network_flags(trt: ModuleType) -> tuple[int, bool]:
    """(create_network flags, strongly typed?) for this TensorRT.

    STRONGLY_TYPED where the flag exists (10, RTX; in 11 it is deprecated and ignored, but
    harmless); where weak typing is gone too (no BuilderFlag.FP16) networks are strongly
    typed by default. Otherwise (8.x) the network is weakly typed and needs EXPLICIT_BATCH.
    """
    flag = trt.NetworkDefinitionCreationFlag
    if hasattr(flag, "STRONGLY_TYPED"):
        return 1 << int(flag.STRONGLY_TYPED), True
    if not hasattr(trt.BuilderFlag, "FP16"):
        return 0, True
    return (1 << int(flag.EXPLICIT_BATCH) if hasattr(flag, "EXPLICIT_BATCH") else 0), False


def create_network(trt: ModuleType, builder: Any) -> tuple[Any, bool]:
    flags, strongly_typed = network_flags(trt)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return builder.create_network(flags), strongly_typed


def set_precision_flags(trt: ModuleType, config: Any, precision: str, strongly_typed: bool) -> list[str]:
    """On a weakly typed network, the builder flags the ONNX precision implies.

    A strongly typed network takes every type from the ONNX (casts, Q/DQ); setting
    precision flags there is an error, so nothing is added.
    """
    if strongly_typed:
        return []
    names = PRECISION_FLAGS.get(precision)
    if names is None:
        raise UserError(f"unknown precision {precision!r} in the ONNX metadata; expected {', '.join(PRECISION_FLAGS)}")
    missing = [n for n in names if not hasattr(trt.BuilderFlag, n)]
    if missing:
        raise UserError(f"this TensorRT has no {'/'.join(missing)} builder flag for a weakly typed {precision} build")
    for name in names:
        config.set_flag(getattr(trt.BuilderFlag, name))
    return list(names)


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
        config.set_compute_capability(members[key], index)
    return list(targets)


def use_dla(trt: ModuleType, builder: Any, config: Any, core: int) -> None:
    """Run layers on DLA core ``core`` (Jetson), falling back to the GPU where DLA cannot."""
    cores = int(getattr(builder, "num_DLA_cores", 0) or 0)
    if cores == 0:
        raise UserError(f"--dla {core}: this machine has no DLA cores (Jetson AGX/NX Orin and Xavier have them)")
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
        accepted = bool(config.set_timing_cache(cache, False))
        if not accepted:
            cache = config.create_timing_cache(b"")
            config.set_timing_cache(cache, False)
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


def layer_report(trt: ModuleType, logger: Any, engine_bytes: bytes) -> dict[str, Any] | None:
    """The engine inspector's JSON (layers, tactics, formats); needs a GPU to deserialize."""
    runtime = trt.Runtime(logger)
    engine = runtime.deserialize_cuda_engine(engine_bytes)
    if engine is None or not hasattr(engine, "create_engine_inspector"):
        return None
    inspector = engine.create_engine_inspector()
    text = inspector.get_engine_information(trt.LayerInformationFormat.JSON)
    del inspector, engine, runtime
    return json.loads(text)
