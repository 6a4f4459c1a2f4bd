"""ONNX -> TensorRT engine + JSON sidecar (+ layer report), for TensorRT 8.6 to 11 and TensorRT-RTX.

Precision comes from the ONNX: where TensorRT has strongly typed networks (10 and later,
always in 11 and TensorRT-RTX) every type is taken from the graph's casts and Q/DQ nodes;
on TensorRT 8.6 the network is weakly typed and gets the FP16/INT8 flags the ONNX's
recorded precision implies, plus OBEY_PRECISION_CONSTRAINTS with the ONNX's FP32 layers
pinned to FP32 (``precision.py``). The builder never adds precision on its own.

The TensorRT module is a parameter (``trt=``): the same code builds with ``tensorrt`` on a
GPU machine and with ``tensorrt_rtx`` (no GPU needed) in CI. API differences live in
``compat`` (calls) and ``features`` (decisions).
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import re
import shlex
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from ..errors import ArtifactError, ExportError, UserError
from ..fileio import atomic_output, write_bytes_atomic, write_text_atomic
from ..versions import tool_versions
from . import compat
from .artifacts import check_build_outputs, check_timing_cache_path, layers_path_for
from .cuda_buffers import cuda_versions, gpu_info, gpu_problem
from .features import typing_plan
from .loading import flavour, load_tensorrt, logger_for, version_of
from .onnx_facts import PRECISIONS, OnnxFacts, read_onnx_facts
from .profiles import Shape, fmt, profile_for
from .sidecar import EngineSidecar

Log = Callable[[str], None]


@dataclass(frozen=True)
class EngineOptions:
    """How to build.

    Attributes:
        min_shape, opt_shape, max_shape: optimization profile of a dynamic input (all or
            none; default derived from the ModelSpec, see ``tensorrt_profiles``).
        workspace_mb: limit of TensorRT's scratch memory (None: TensorRT's default).
        optimization_level: builder optimization level 0..5 (None: TensorRT's default, 3).
        timing_cache: timing cache file reused across builds; ``"auto"`` keeps one per
            TensorRT package, version and GPU in the user's cache folder (never next to the
            outputs; not written where it does nothing, i.e. TensorRT-RTX); None disables it.
        dla_core: build for this DLA core (Jetson) with GPU fallback.
        compute_capabilities: TensorRT-RTX target GPUs, e.g. ``("8.6", "8.9")``.
        layer_report: save the engine inspector's JSON (needs a GPU to load the engine).
        allow_tf32: let FP32 math (an fp32 engine, the FP32 layers of the others) run in
            TF32 on Ampere+ (TensorRT's default; off here so that FP32 means FP32 math).
        tensorrt: ``auto``, ``tensorrt`` or ``tensorrt_rtx`` (ignored when ``trt`` is passed).
        progress: show a tqdm bar on stderr.
        verbose: print TensorRT's own log.
    """

    min_shape: Shape | None = None
    opt_shape: Shape | None = None
    max_shape: Shape | None = None
    workspace_mb: int | None = None
    optimization_level: int | None = None
    timing_cache: str | Path | None = "auto"
    dla_core: int | None = None
    compute_capabilities: tuple[str, ...] = ()
    layer_report: bool = True
    allow_tf32: bool = False
    tensorrt: str = "auto"
    progress: bool = True
    verbose: bool = False


@dataclass
class EngineBuild:
    engine_path: Path
    sidecar_path: Path
    sidecar: EngineSidecar
    layers_path: Path | None = None
    notes: list[str] = field(default_factory=list)

    def summary(self) -> str:
        s = self.sidecar
        mb = self.engine_path.stat().st_size / 1e6
        target = s.gpu["name"] if s.gpu else "GPUs with compute capability " + (
            ", ".join(s.target_compute_capabilities) or "of TensorRT-RTX's default set"
        )
        profile = s.build.get("profile")
        shapes = f", shapes {profile['min']}..{profile['max']}" if profile else ""
        return (
            f"wrote {self.engine_path} ({mb:.1f} MB, {s.precision}, {s.tensorrt['package']} {s.tensorrt['version']}, "
            f"for {target}{shapes}, built in {s.build_seconds:.1f}s) + {self.sidecar_path.name}"
        )


def engine_path_for(onnx_path: str | Path, precision: str) -> Path:
    """``model.int8.onnx`` -> ``model.int8.engine``; ``model.onnx`` (fp32) -> ``model.fp32.engine``."""
    onnx_path = Path(onnx_path)
    stem = onnx_path.stem
    if Path(stem).suffix.lstrip(".") not in PRECISIONS:
        stem = f"{stem}.{precision}"
    return onnx_path.with_name(stem + ".engine")


def _timing_cache_path(option: str | Path | None, trt: ModuleType, gpu: dict[str, Any] | None) -> Path | None:
    """The cache file: a named one, or (``auto``) one per TensorRT and GPU model in the user's
    cache folder, so that builds leave no file next to their outputs; None: no cache."""
    if option is None:
        return None
    if str(option) != "auto":
        return Path(option)
    from ..cache import cache_dir

    folder = cache_dir("tensorrt-timing")
    if folder is None:  # no writable cache folder: build without one (cache_dir warned)
        return None
    target = re.sub(r"[^A-Za-z0-9.]+", "-", f"{gpu['name']}-sm{gpu.get('compute_capability')}") if gpu else "no-gpu"
    return folder / f"{flavour(trt)}-{version_of(trt)}-{target}.timing-cache"


def _rebuild_command(facts: OnnxFacts, engine_path: Path, trt: ModuleType, options: EngineOptions, profile) -> str:
    folder = engine_path.parent.resolve()
    args = ["bisenet-export", os.path.relpath(facts.path.resolve(), folder), "--engine", "-o", engine_path.name]
    if profile is not None:
        args += ["--min-shape", fmt(profile[0]), "--opt-shape", fmt(profile[1]), "--max-shape", fmt(profile[2])]
    if options.workspace_mb is not None:
        args += ["--workspace", str(options.workspace_mb)]
    if options.optimization_level is not None:
        args += ["--opt-level", str(options.optimization_level)]
    if options.allow_tf32:
        args += ["--tf32"]
    if options.dla_core is not None:
        args += ["--dla", str(options.dla_core)]
    if options.compute_capabilities:
        args += ["--compute-capability", ",".join(options.compute_capabilities)]
    if flavour(trt) != "tensorrt":
        args += ["--tensorrt", flavour(trt)]
    return shlex.join(args)


def build_engine(
    onnx_path: str | Path,
    engine_path: str | Path | None = None,
    options: EngineOptions = EngineOptions(),
    trt: ModuleType | None = None,
    log: Log = lambda msg: None,
) -> EngineBuild:
    """Build ``onnx_path`` into an engine; write engine, sidecar (and layer report) atomically."""
    facts = read_onnx_facts(onnx_path)
    engine_path = Path(engine_path) if engine_path is not None else engine_path_for(facts.path, facts.precision)
    check_build_outputs(facts.path, engine_path)
    if options.optimization_level is not None and not 0 <= options.optimization_level <= 5:
        raise UserError(f"--opt-level must be 0..5, got {options.optimization_level}")
    trt = trt if trt is not None else load_tensorrt(options.tensorrt)
    logger = logger_for(trt, options.verbose)
    logger.clear()
    notes: list[str] = []
    gpu = _build_gpu(trt, log)
    log(f"building a {facts.precision} engine from {facts.path.name} with {flavour(trt)} {version_of(trt)} "
        f"on {gpu['name'] if gpu else 'no GPU (ahead-of-time build)'}")

    builder = trt.Builder(logger)
    plan = typing_plan(trt, facts.precision)
    network, strongly_typed = compat.create_network(trt, builder, plan)
    parser = trt.OnnxParser(network, logger)
    if not compat.parse_onnx(parser, str(facts.path), facts.path.read_bytes()):
        raise ArtifactError(f"TensorRT cannot parse '{facts.path}': {compat.parser_failure(parser, logger)}")
    if network.num_inputs != 1:
        raise ArtifactError(f"'{facts.path}' has {network.num_inputs} inputs; a segmentation model needs one")
    config = builder.create_builder_config()
    build, targets, profile = _configure(trt, builder, network, config, facts, options, notes, log, plan)
    cache_path, cache_info = _attach_timing_cache(config, options, engine_path, trt, notes, facts.path, gpu, log)

    from tqdm import tqdm

    start = time.perf_counter()
    with tqdm(total=1, desc="building engine", file=sys.stderr, disable=not options.progress, leave=False) as bar:
        monitor = compat.progress_monitor(trt, config, bar)
        if monitor is None and options.progress:
            log("  building (this TensorRT reports no progress; large models take minutes)")
        engine_bytes, build["build_api"] = compat.build_serialized(builder, network, config)
    seconds = time.perf_counter() - start
    if engine_bytes is None:
        raise ExportError(f"TensorRT could not build '{facts.path}': {logger.last_error() or 'no reason given'}")
    build["progress_monitor"] = monitor is not None
    ignored = ("timing cache",) if cache_info and not cache_info["effective"] else ()
    for warning in [w for w in logger.warnings() if not any(i in w.lower() for i in ignored)][:5]:
        log(f"  TensorRT warning: {warning[:300]}")
    if cache_path is not None:
        data = compat.timing_cache_bytes(config) or b""
        if data:
            write_bytes_atomic(cache_path, data)
        cache_info = {**cache_info, "saved_bytes": len(data)}
    if cache_info:
        build["timing_cache"] = cache_info
    del parser, network, config, builder, monitor

    sidecar = EngineSidecar(
        engine_sha256=hashlib.sha256(engine_bytes).hexdigest(),
        spec=facts.spec,
        precision=facts.precision,
        tensorrt={"package": flavour(trt), "version": version_of(trt), "strongly_typed": strongly_typed},
        gpu=gpu,
        target_compute_capabilities=targets,
        cuda=cuda_versions(),
        build=build,
        onnx={"path": _relative(facts.path, engine_path), "sha256": facts.sha256,
              "precision_source": facts.precision_source, "opset": facts.opset},
        calibration=facts.calibration,
        built_at=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        build_seconds=round(seconds, 3),
        rebuild_command=_rebuild_command(facts, engine_path, trt, options, profile),
        tool_versions=tool_versions("tensorrt", "tensorrt_rtx", "onnx", "cuda-python"),
    )
    with atomic_output(engine_path) as tmp:
        tmp.write_bytes(engine_bytes)
        layers_path = None
        if options.layer_report:
            layers_path = _write_layer_report(trt, logger, engine_bytes, engine_path, gpu, notes, options.dla_core)
        build["layer_report"] = layers_path.name if layers_path else None
        side = sidecar.write(engine_path)
    if facts.spec is None:
        notes.append(f"{facts.path.name} carries no ModelSpec: the runtime will need one from you")
    for note in notes:
        log(f"  {note}")
    return EngineBuild(engine_path, side, sidecar, layers_path, notes)


def _relative(path: Path, engine_path: Path) -> str:
    """``path`` as seen from the engine's folder (sidecars travel with their engine)."""
    return os.path.relpath(path.resolve(), engine_path.parent.resolve())


def _configure(trt, builder, network, config, facts: OnnxFacts, options: EngineOptions, notes: list[str], log: Log,
               plan):
    """Apply precision, memory, level, targets, DLA and the profile; (build record, targets, profile)."""
    net_input = network.get_input(0)
    dims = tuple(int(d) for d in net_input.shape)
    build: dict[str, Any] = {"strongly_typed": plan.strongly_typed, "input": {"name": net_input.name, "shape": fmt(dims)}}
    build.update(compat.apply_typing(trt, network, config, plan, facts.precision))
    build["tf32"] = compat.set_fp32_math(trt, config, facts.precision, options.allow_tf32)
    build["capture_flags"] = compat.set_capture_flags(trt, config)
    if options.workspace_mb is not None:
        build["workspace_mb"] = options.workspace_mb
        build["workspace_api"] = compat.set_workspace(trt, config, options.workspace_mb << 20)
    if options.optimization_level is not None:
        if compat.set_optimization_level(config, options.optimization_level):
            build["optimization_level"] = options.optimization_level
        else:
            notes.append("this TensorRT has no builder optimization level; --opt-level ignored")
    compat.set_detailed_profiling(trt, config)
    targets = compat.set_compute_capabilities(trt, config, tuple(options.compute_capabilities))
    # Builders that can target other GPUs (TensorRT-RTX) make engines that are not tied to this one.
    build["portable_across_gpus"] = hasattr(config, "set_compute_capability")
    if build["portable_across_gpus"]:
        # The sidecar's target_compute_capabilities lists explicit targets only; [] is the
        # builder's default set, which the API does not enumerate: say so where it is read.
        build["targets"] = (f"compute capabilities {', '.join(targets)} (--compute-capability)" if targets else
                            f"{flavour(trt)} {version_of(trt)}'s default set (target_compute_capabilities [] means "
                            "this set: Ampere and later per its support matrix, not Turing 7.5; its runtime checks "
                            "the engine against the GPU at load)")
    if options.dla_core is not None:
        compat.use_dla(trt, builder, config, options.dla_core)
        build["dla_core"] = options.dla_core
        if facts.precision == "fp32":
            notes.append("DLA runs FP16/INT8 only: an fp32 ONNX runs on the GPU (export --precision fp16 or int8)")
    profile = profile_for(dims, facts.spec, (options.min_shape, options.opt_shape, options.max_shape))
    if profile is not None:
        opt_profile = builder.create_optimization_profile()
        compat.set_profile_shape(opt_profile, net_input.name, *profile)
        compat.add_profile(config, opt_profile)
        build["profile"] = {"min": fmt(profile[0]), "opt": fmt(profile[1]), "max": fmt(profile[2])}
        lo, opt, hi = (fmt(s) for s in profile)
        log(f"  optimization profile {net_input.name}: min {lo}, opt {opt}, max {hi}")
    return build, targets, profile


def _attach_timing_cache(config, options: EngineOptions, engine_path: Path, trt, notes: list[str],
                         onnx_path: Path, gpu: dict[str, Any] | None = None, log: Log = lambda msg: None):
    """(cache file to write after the build, or None; its record for the sidecar).

    Where the cache does nothing (TensorRT-RTX documents it as a no-op) nothing is read,
    checked or written, and a cache the user named gets one line saying it is ignored. Where
    it works, a named file must be a timing cache of this TensorRT and GPU (or absent, in an
    existing folder): anything else is refused before the build, never replaced after it.
    """
    cache_path = _timing_cache_path(options.timing_cache, trt, gpu)
    if cache_path is None:
        return None, {}
    given = str(options.timing_cache) != "auto"
    shown = _relative(cache_path, engine_path) if given else str(cache_path)
    probe, _, effective = compat.attach_timing_cache(config, b"")
    if probe is None:
        notes.append("this TensorRT has no timing cache")
        return None, {}
    if not effective:
        if given:
            log(f"note: --timing-cache '{cache_path}' ignored: {flavour(trt)} has no timing cache "
                "(nothing read or written)")
        return None, {"path": shown, "loaded_bytes": 0, "accepted": False, "effective": False, "saved_bytes": 0}
    if given:
        check_timing_cache_path(cache_path, onnx_path, engine_path)
    cache_read = cache_path.read_bytes() if cache_path.is_file() else b""
    accepted = False
    if cache_read:
        _, accepted, _ = compat.attach_timing_cache(config, cache_read)
    if given and cache_read and not accepted:
        # A file the user named that this TensorRT does not read as its cache is never replaced.
        raise UserError(f"--timing-cache '{cache_path}' is not a timing cache of this TensorRT and GPU; "
                        "remove it or name another file")
    if cache_read and not accepted:
        notes.append(f"timing cache {cache_path.name} is from another GPU or TensorRT; starting a new one")
    return cache_path, {"path": shown, "loaded_bytes": len(cache_read), "accepted": accepted, "effective": True}


def _build_gpu(trt: ModuleType, log: Log) -> dict[str, Any] | None:
    """The GPU this build is for, as the sidecar records it (name, SMs, memory, UUID).

    TensorRT builds for the GPU it runs on: an engine whose sidecar cannot name that GPU
    could never be checked at load time, so a build that cannot see it (cuda-python missing,
    or too new for the driver) is refused with the reason and the fix. TensorRT-RTX builds
    ahead of time for compute capabilities and needs no GPU: one line says so.
    """
    problem = gpu_problem(0)
    if problem is None:
        return gpu_info(0)
    if flavour(trt) == "tensorrt":
        raise ExportError(
            f"cannot identify the GPU this engine is built for: {problem} (the engine's sidecar must name it, "
            "or no runtime can check that the engine fits its GPU)"
        )
    from .cuda_buffers import nvidia_driver_present

    # A driver that cuda-python cannot use is worth a warning even with -q; no driver at all
    # is the normal case of an ahead-of-time TensorRT-RTX build.
    prefix = "warning: " if nvidia_driver_present() else "  "
    log(f"{prefix}no GPU visible ({problem}): building ahead of time for compute capabilities, no layer report")
    return None


def _write_layer_report(trt, logger, engine_bytes: bytes, engine_path: Path, gpu, notes: list[str],
                        dla_core: int | None = None) -> Path | None:
    """Engine inspector JSON next to the engine, where this machine can load the engine."""
    if gpu is None:
        notes.append("layer report skipped: loading the engine for the inspector needs a GPU (and cuda-python)")
        return None
    try:
        report = compat.layer_report(trt, logger, engine_bytes, dla_core)
    except Exception as exc:  # noqa: BLE001 - the report is a by-product; the engine is fine
        report = None
        logger.log(trt.ILogger.Severity.ERROR, f"{type(exc).__name__}: {exc}")
    if report is None:
        reason = logger.last_error() or "no reason"
        notes.append(f"layer report skipped: the engine could not be loaded here ({reason})")
        return None
    if dla_core is not None:
        from .features import dla_layers

        on_dla = dla_layers(report)
        if not on_dla:  # GPU fallback took everything: say so, the engine is still valid
            notes.append(f"no layer runs on DLA core {dla_core}: every layer fell back to the GPU (see the layer report)")
    path = layers_path_for(engine_path)
    write_text_atomic(path, json.dumps(report, indent=1) + "\n")
    return path


def build_engines(
    onnx_paths: list[Path], options: EngineOptions, output: Path | None = None, log: Log = lambda m: None
) -> list[EngineBuild]:
    """Build one engine per ONNX file (``output`` names the engine when there is one ONNX)."""
    if output is not None and len(onnx_paths) != 1:
        raise UserError("an engine output path needs exactly one ONNX model")
    trt = load_tensorrt(options.tensorrt)
    return [build_engine(p, output, options, trt=trt, log=log) for p in onnx_paths]
