"""One benchmark run: open the contestants, pick the reference, time every (size, batch)
cell in interleaved rounds, measure fidelity on real photographs, and return one JSON-able result."""

from __future__ import annotations

import datetime
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import UserError
from . import contestants as cs
from . import system
from .harness import TIMED, Runner, StageTimedSegmenter, WarmUp, run_rounds
from .photos import benchmark_photos, frame_sets_for, ground_truth_for, measure_fidelity
from .rows import cell_rows, flop_counter, postprocess_probe
from .verdicts import verdicts

FORMAT = "bisenet-bench/1"
Log = Callable[[str], None]


@dataclass
class BenchConfig:
    """Everything that decides what a run measures (the CLI fills it from its options)."""

    artifacts: list[Path] = field(default_factory=list)
    checkpoints: list[Path] = field(default_factory=list)
    demo: bool = False
    torch_variants: list[dict[str, bool]] = field(default_factory=list)
    onnx_backends: tuple[str, ...] | None = None  # None: every installed one (cs.installed_onnx_backends)
    ov_hints: tuple[str, ...] = ("f32",)
    ov_prepost: tuple[str, ...] = ("graph",)
    concurrency: list[int] = field(default_factory=list)  # served models: clients at once
    sizes: list[tuple[int, int]] | None = None
    batches: list[int] | None = None
    device: str = "auto"
    threads: int | None = None  # None: the CPUs this process may use
    iterations: int = 30
    duration: float | None = None  # seconds per cell (sustained mode) instead of iterations
    window: float | None = None  # sustained mode: width of the FPS-over-time windows
    warmup: WarmUp = field(default_factory=WarmUp)
    images: Path | None = None
    labels: Path | None = None  # ground-truth label maps for ``images`` (same names)
    no_reference: bool = False  # time only the named artifacts: no PyTorch reference
    max_images: int = 8
    frame_size: tuple[int, int] | None = None  # None: frames arrive at the network size
    peak_gflops: float | None = None
    measure_peak: bool = True
    sysfs_root: str = "/"
    progress: bool = True
    trust_checkpoint: bool = False
    command: str = ""
    #: the ModelSpec of ONNX models that carry none (``--spec``), made from the opened backend
    spec: Callable[[Any], Any] | None = None


def run_benchmark(config: BenchConfig, log: Log = lambda msg: None) -> dict[str, Any]:
    threads = config.threads if config.threads is not None else system.cpu_facts()["usable_cpus"] or 1
    facts = system.system_facts(config.sysfs_root, want_gpu=config.device != "cpu")
    if facts["jetson"]:
        for warning in facts["jetson"]["warnings"]:
            log(f"warning: {warning}")
    contestants, reference, ref_notes = _contestants(config, threads, log)
    live = [c for c in contestants if c.backend is not None]
    if not live:
        reasons = dict.fromkeys(c.error if c.error and c.path is not None and str(c.path) in c.error
                                else f"{c.path}: {c.error}" for c in contestants)
        raise UserError("nothing to benchmark: " + "; ".join(reasons))
    for c in contestants:
        c.name = c.name or c.label()
    _unique_names(contestants)
    try:
        return _measure(config, threads, facts, contestants, live, reference, ref_notes, log)
    finally:
        for c in live:
            c.backend.close()


def _measure(config, threads, facts, contestants, live, reference, ref_notes, log) -> dict[str, Any]:
    photos, photo_source = benchmark_photos(config.images, config.max_images)
    truth = ground_truth_for(photos, config.images, config.labels)
    if truth is not None:
        photo_source += f", ground-truth labels from {config.labels}"
    sizes = config.sizes or _default_sizes(live, reference)
    batches = config.batches or _default_batches(live)
    on_cpu = any(c.backend.device == "cpu" for c in live)
    peak = _cpu_peak(config, log) if on_cpu else None
    peaks = _precision_peaks(config, threads, peak) if on_cpu else {}
    flops = flop_counter([c for c in live if c.path is not None and c.path.suffix.lower() == ".onnx"])

    cells = []
    fidelity: dict[tuple[str, tuple[int, int]], dict[str, Any] | None] = {}
    measured: set[int] = set()  # id() of contestants whose memory is known
    memory = system.PeakRss()
    runnable = sum(cs.cannot_run(c, s, b) is None for s in sizes for b in batches for c in live)
    bar = _progress(config, len(sizes) * len(batches), runnable)
    for size in sizes:
        for batch in batches:
            cell = _run_cell(config, contestants, reference, size, batch, photos, fidelity, measured, memory, bar,
                             truth)
            cell["rows"] = cell_rows(cell.pop("runners"), cell, reference, fidelity, flops, peak, peaks)
            cells.append(cell)
    bar.close()

    result = {
        "format": FORMAT,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": config.command,
        "protocol": {
            "system": facts,
            "settings": {
                "device": config.device,
                "threads": threads,
                "warmup": "one untimed first call (failure check, memory), then " + config.warmup.describe(),
                "iterations": None if config.duration else config.iterations,
                "duration_s": config.duration,
                "order": "interleaved: every round runs each backend once, in orders where each backend follows "
                         "every other equally often; speed-ups are medians of per-round ratios",
                "sizes": [f"{h}x{w}" for h, w in sizes],
                "batches": batches,
                "frame_size": "network input size" if config.frame_size is None
                else "x".join(map(str, config.frame_size)) + " camera size (resized inside the timed call)",
                "images": photo_source,
            },
            "timed": TIMED,
            "reference": {"name": reference.name if reference else None, "kind": reference.kind if reference else None,
                          "notes": ref_notes},
            "cpu_peak_gflops": peak,
            "cpu_peaks": peaks,
            "flops": flops.describe(),
        },
        "contestants": [_describe(c) for c in contestants],
        "cells": cells,
        "postprocess_probe": postprocess_probe(live, sizes[0]),
        "peak_rss_mb": _mb(memory.overall()),
    }
    result["not_run"] = not_run(contestants, cells)
    if config.concurrency:
        result["concurrency"] = _concurrency(config, live, photos, log)
    result["verdicts"] = verdicts(result)
    return result


def _concurrency(config: BenchConfig, live: list[cs.Contestant], photos, log: Log) -> list[dict[str, Any]]:  # noqa: ANN001
    from .concurrency import concurrency_run

    out = []
    frames = [img for _, img in photos]
    for c in live:
        if c.kind != "triton":
            continue
        for clients in config.concurrency:
            log(f"{c.name}: {clients} client(s) at once")
            run = concurrency_run(c.facts["url"], frames, clients, max(4, config.iterations))
            out.append({"name": c.name, "url": c.facts["url"], **{k: v for k, v in run.items() if k != "before"}})
    return out


def not_run(contestants: list[cs.Contestant], cells: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Contestants the command asked for that ran in no cell, with the reason."""
    ran = {row["name"] for cell in cells for row in cell["rows"]}
    out = []
    for c in contestants:
        if c.name in ran:
            continue
        reasons = [s["reason"] for cell in cells for s in cell["skipped"] if s["name"] == c.name]
        out.append({"name": c.name, "path": None if c.path is None else str(c.path),
                    "reason": c.error or (reasons[0] if reasons else "no cell it can run in")})
    return out


# --- contestants and the reference ------------------------------------------------------------


def _contestants(config: BenchConfig, threads: int, log: Log) -> tuple[list[cs.Contestant], cs.Contestant | None, list[str]]:
    backends = config.onnx_backends or cs.installed_onnx_backends()
    artifacts = [c for p in config.artifacts
                 for c in cs.artifact_contestants(p, backends, config.ov_hints, config.ov_prepost)]
    broken: set[Path] = set()  # artifacts whose file itself cannot run (no spec, ...)
    # An artifact's own error is said once: as a "skipped" line where something else runs,
    # or only as the final "nothing to benchmark" error line where nothing does.
    deferred: list[cs.Contestant] = []
    opened = []
    for c in artifacts:
        if c.path in broken:  # the same file on another backend: the same error, one row, said once
            continue
        opened.append(c)
        log(f"opening {c.path} as {c.label()}")
        cs.open_contestant(c, config.device, threads, spec=config.spec)
        if c.error:
            if c.facts.get("artifact_error") and c.path is not None:
                broken.add(c.path)
                c.name = c.path.name  # the row stands for the file, not one backend
                deferred.append(c)
            else:
                log(f"  skipped: {c.error}")
    artifacts = opened
    if config.no_reference:
        loaded, ckpt_path, load_bytes, notes = None, None, None, ["--no-reference: no PyTorch model loaded"]
    else:
        loaded, ckpt_path, load_bytes, notes = _torch_reference(config, artifacts, log)
    rows: list[cs.Contestant] = []
    reference = None
    if loaded is not None:
        reference = cs.torch_contestant(loaded, role="reference", path=ckpt_path)
        reference.facts["host_load_bytes"] = load_bytes  # weights read before the backend opened
        rows.append(reference)
        rows += [cs.torch_contestant(loaded, options=v, path=ckpt_path) for v in config.torch_variants]
        for extra in config.checkpoints[1:]:
            other, other_bytes = _load_counting_memory(lambda p=extra: _load_checkpoint(p, config.trust_checkpoint))
            rows.append(cs.torch_contestant(other, path=extra))
            rows[-1].facts["host_load_bytes"] = other_bytes
    elif config.torch_variants:
        raise UserError("--torch-variant needs a PyTorch model: give --checkpoint or --demo")
    for c in rows:
        log(f"opening PyTorch {c.label()}")
        cs.open_contestant(c, config.device, threads)
        if c.error:
            log(f"  skipped: {c.error}")
    if any(c.backend is not None for c in (*opened, *rows)) or (reference is not None and reference.backend is None):
        for c in deferred:
            log(f"  skipped {c.path.name}: {c.error}")
    if reference is not None and reference.backend is None:
        raise UserError(f"the PyTorch reference cannot run here: {reference.error}")
    if reference is None:
        fp32 = [c for c in artifacts if c.backend is not None and c.precision == "fp32" and c.kind == "onnxruntime"]
        reference = fp32[0] if fp32 else next((c for c in artifacts if c.backend is not None), None)
        if reference is not None:
            reference.role = "reference"
            what = "the FP32 ONNX model" if fp32 else "the first artifact (no FP32 ONNX model given)"
            notes.append(f"no PyTorch checkpoint available: {what} {reference.path} is the reference")
    if reference is not None:
        for c in artifacts:
            if c.backend is not None and c is not reference and not cs.same_model(reference.spec, c.spec):
                notes.append(f"{c.path} does not record the reference's weights: fidelity compares different models?")
    return rows + artifacts, reference, notes


def _load_checkpoint(path: Path, trust: bool) -> Any:
    from ..model.checkpoint import load_checkpoint

    return load_checkpoint(path, trust=trust)


def _load_counting_memory(load: Callable[[], Any]) -> tuple[Any, int | None]:
    """Run ``load`` and return its result with the host memory it added (torch is imported
    first, so the library itself is not counted as the model's memory)."""
    import torch  # noqa: F401

    rss = system.rss_bytes()
    obj = load()
    return obj, cs.growth(rss, system.rss_bytes())


def _torch_reference(config: BenchConfig, artifacts: list[cs.Contestant], log: Log):
    """(LoadedCheckpoint or None, its path, host bytes of loading it, notes): --checkpoint,
    --demo, or the checkpoint the artifacts record (when present with a matching hash)."""
    if config.checkpoints:
        path = config.checkpoints[0]
        log(f"loading the PyTorch reference {path}")
        loaded, load_bytes = _load_counting_memory(lambda: _load_checkpoint(path, config.trust_checkpoint))
        return loaded, path, load_bytes, []
    if config.demo:
        from ..model.demo import demo_checkpoint_path, demo_model

        loaded, load_bytes = _load_counting_memory(demo_model)
        return loaded, demo_checkpoint_path(), load_bytes, [f"the built-in demo model ({'; '.join(loaded.notes[:1])})"]
    found, notes = cs.recorded_checkpoint([(str(c.path), c.spec) for c in artifacts if c.spec is not None])
    if found is None:
        return None, None, None, notes
    log(f"loading the PyTorch reference {found} (recorded in the artifact, hash matches)")
    loaded, load_bytes = _load_counting_memory(lambda: _load_checkpoint(found, config.trust_checkpoint))
    return loaded, found, load_bytes, [f"reference checkpoint {found} found through the artifact's metadata (SHA-256 matches)"]


def _unique_names(contestants: list[cs.Contestant]) -> None:
    """Add the file name where two rows could meet in one cell under the same name. Fixed
    artifacts of different sizes never meet: they keep one name, so tables and the plot
    show them as one backend across sizes."""
    def fixed_size(c: cs.Contestant):
        if c.backend is None:
            return None
        _, h, w = cs.fixed_dims(c.backend, c.spec)
        return None if h is None or w is None else (h, w)

    clash = set()
    for i, a in enumerate(contestants):
        for b in contestants[i + 1 :]:
            fa, fb = fixed_size(a), fixed_size(b)
            if a.name == b.name and (fa is None or fb is None or fa == fb):
                clash.add(a.name)
    for c in contestants:
        if c.name in clash and c.path is not None:
            c.name = f"{c.name} [{c.path.name}]"


def _describe(c: cs.Contestant) -> dict[str, Any]:
    info = {"name": c.name, "role": c.role, "kind": c.kind, "path": None if c.path is None else str(c.path),
            "precision": c.precision, "error": c.error}
    if c.backend is not None:
        info["backend"] = c.backend.describe()
    info.update({k: v for k, v in c.facts.items() if not k.endswith("_bytes") and k != "file_bytes"})
    return info


def _default_sizes(live: list[cs.Contestant], reference: cs.Contestant | None) -> list[tuple[int, int]]:
    sizes = [tuple(c.spec.input_size) for c in live if c.kind != "torch"]
    if not sizes and reference is not None:
        sizes = [tuple(reference.spec.input_size)]
    return list(dict.fromkeys(sizes))


def _default_batches(live: list[cs.Contestant]) -> list[int]:
    fixed = [cs.fixed_dims(c.backend, c.spec)[0] for c in live]
    if any(b is None for b in fixed):
        return [1]
    return sorted(set(fixed))


def _precision_peaks(config: BenchConfig, threads: int, measured: dict[str, Any] | None) -> dict[str, Any]:
    """Theoretical peaks by precision for the threads used (``machine.theoretical_peaks``);
    --peak-gflops replaces the fp32 one; with no theoretical fp32 figure (an unknown ISA or
    clock) the measured sgemm stands in for it."""
    from ..machine import theoretical_peaks

    peaks = {k: dict(v, source="theoretical") for k, v in theoretical_peaks(system.cpu_facts(config.sysfs_root),
                                                                           threads).items() if v["gops"]}
    if config.peak_gflops:
        peaks["fp32"] = {"gops": config.peak_gflops, "formula": "given", "source": "--peak-gflops"}
    elif "fp32" not in peaks and measured:
        peaks["fp32"] = {"gops": measured["value"], "formula": measured["source"], "source": "measured"}
    return peaks


def _cpu_peak(config: BenchConfig, log: Log) -> dict[str, Any] | None:
    if config.peak_gflops:
        return {"value": config.peak_gflops, "source": "--peak-gflops"}
    if not config.measure_peak:
        return None
    log("measuring the CPU's fp32 peak (NumPy sgemm)")
    return {"value": system.measure_cpu_peak_gflops(), "source": "measured: NumPy float32 matmul 1536^3, best of 5"}


# --- one cell -------------------------------------------------------------------------------


def _first_call(c: cs.Contestant, runner: Runner, memory: system.PeakRss, measured: set[int]) -> str | None:
    """One untimed call: a backend that fails at this size fails here, with its reason,
    not in the middle of the timed rounds. A backend's first call of the run also gives its
    memory: what loading it added plus the peak above the level before the call
    (activations, arenas). On a GPU, caching allocators and arenas keep what they used, so
    device memory in use after the call shows the peak."""
    rss, gpu = system.rss_bytes(), system.gpu_used_bytes()
    memory.start()
    try:
        runner.call()
    except UserError as exc:
        memory.stop()
        return f"failed: {exc}"
    during = memory.stop()
    if id(c) not in measured:
        measured.add(id(c))
        c.facts["host_bytes"] = _sum(c.facts.get("host_load_bytes"), c.facts.get("host_open_bytes"),
                                     cs.growth(rss, during))
        c.facts["gpu_bytes"] = _sum(c.facts.get("gpu_open_bytes"), cs.growth(gpu, system.gpu_used_bytes()))
    return None


def _run_cell(config, contestants, reference, size, batch, photos, fidelity, measured, memory, bar,
              truth=None) -> dict[str, Any]:
    h, w = size
    cell: dict[str, Any] = {"size": f"{h}x{w}", "height": h, "width": w, "batch": batch, "skipped": [], "runners": []}
    frame_sets = frame_sets_for(photos, config.frame_size or size, batch)
    for c in contestants:
        reason = cs.cannot_run(c, size, batch)
        if reason is None:
            runner = Runner(c.name, StageTimedSegmenter(c.backend, spec=c.spec.replace(input_size=size)), frame_sets)
            reason = _first_call(c, runner, memory, measured)
        if reason is not None:
            cell["skipped"].append({"name": c.name, "artifact": c.path.name if c.path else None, "reason": reason})
            continue
        cell["runners"].append((c, runner))
    if not cell["runners"]:
        return cell
    bar.set_description(f"{h}x{w} fidelity on {len(photos)} images")
    measure_fidelity(reference, cell["runners"], size, photos, fidelity, truth)
    for c, runner in cell["runners"]:
        bar.set_description(f"{h}x{w} b{batch} warm-up {c.name}")
        runner.warm_up(config.warmup)
    bar.set_description(f"{h}x{w} b{batch} timing")
    runners = [r for _, r in cell["runners"]]
    thermal: list[dict[str, Any]] = []
    start = time.perf_counter()
    shown = [0.0]  # seconds of this cell already on the progress bar
    width = config.window or (config.duration / 10 if config.duration else None)

    def on_call(runner: Runner) -> None:
        if not config.duration:
            bar.update(1)
            return
        now = time.perf_counter() - start
        bar.update(min(now, config.duration) - shown[0])
        shown[0] = min(now, config.duration)
        if not thermal or now - thermal[-1]["t_s"] >= width:
            thermal.append({"t_s": round(now, 2), **system.thermal_sample(config.sysfs_root)})

    cell["rounds"] = run_rounds(runners, rounds=None if config.duration else config.iterations,
                                duration=config.duration, on_call=on_call)
    if config.duration:
        bar.update(config.duration - shown[0])
        cell["window_s"] = width
        cell["thermal"] = thermal
    return cell


def _sum(*values: int | None) -> int | None:
    known = [v for v in values if v is not None]
    return sum(known) if known else None


def _mb(value: int | None) -> float | None:
    return None if value is None else round(value / 2**20, 1)


def _progress(config: BenchConfig, cells: int, calls_per_round: int):
    from tqdm import tqdm

    # None: tqdm shows the bar on a terminal only; a log file (make, CI) would get hundreds of
    # carriage-return updates on one line.
    disable = None if config.progress else True
    if config.duration:
        return tqdm(total=cells * config.duration, unit="s", file=sys.stderr, disable=disable,
                    bar_format="{desc}: {percentage:3.0f}%|{bar}| {n:.0f}/{total:.0f} s")
    return tqdm(total=calls_per_round * config.iterations, unit="call", file=sys.stderr, disable=disable)
