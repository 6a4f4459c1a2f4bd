"""From timed samples to report rows: statistics, stages, speed-ups, FLOP rates, memory."""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from ..errors import ArtifactError
from ..runtime import processing
from ..runtime.choice import MIN_AGREEMENT
from .contestants import fixed_dims
from .flops import onnx_gflop
from .harness import STAGES
from .stats import fps, median_ms, median_ratio, summarize, windows


class FlopCounter:
    """GFLOP per call at any (size, batch), counted from the contestants' ONNX graphs.

    A graph with dynamic height/width is counted at the exact size. A fixed-size graph is
    counted at its own size and scaled by pixel count elsewhere (BiSeNet is fully
    convolutional; the global-context branch is a constant well under 0.1%), which the
    report says.
    """

    def __init__(self, contestants: list[Any]) -> None:
        self.sources = []
        for c in contestants:
            b, h, w = fixed_dims(c.backend, c.spec)
            self.sources.append((c, b, h is None or w is None))
        # one source per file: a file timed with several backends is counted once
        self.sources = list({str(c.path): (c, b, d) for c, b, d in self.sources}.values())
        self.sources.sort(key=lambda s: not s[2])  # dynamic graphs first
        self._cache: dict[tuple[Any, ...], float | None] = {}
        self.notes: list[str] = []

    def _count(self, c: Any, batch: int, size: tuple[int, int]) -> float | None:
        key = (str(c.path), batch, size)
        if key not in self._cache:
            spec = c.artifact_spec  # the graph in the file, not what a backend compiled around it
            shape = (batch, size[0], size[1], 3) if spec.input_layout == "NHWC_UINT8" else (batch, 3, *size)
            try:
                self._cache[key] = onnx_gflop(c.path, shape)
            except ArtifactError as exc:
                self.notes.append(str(exc))
                self._cache[key] = None
        return self._cache[key]

    def own_gflop(self, c: Any, size: tuple[int, int], batch: int) -> float | None:
        """GFLOP of ``c``'s own ONNX graph at (size, batch), when it is an ONNX row that runs
        there: a run may compare different networks (ResNet-18 against Xception-39)."""
        if c.path is None or c.path.suffix.lower() != ".onnx" or c.backend is None:
            return None
        fixed_batch, h, w = fixed_dims(c.backend, c.spec)
        if h is not None and (h, w) != tuple(size):
            return None
        per_call = self._count(c, fixed_batch or batch, tuple(size))
        return None if per_call is None else per_call / (fixed_batch or batch) * batch

    def gflop(self, size: tuple[int, int], batch: int) -> tuple[float | None, str]:
        """(GFLOP of one call with ``batch`` frames of ``size``, how it was obtained)."""
        size = tuple(size)
        # Graphs that can be counted at exactly this size first, then fixed ones to scale.
        for c, fixed_batch, dynamic in sorted(self.sources, key=lambda s: not (s[2] or tuple(s[0].spec.input_size) == size)):
            own = tuple(c.spec.input_size)
            at = size if dynamic else own
            per_call = self._count(c, fixed_batch or 1, at)
            if per_call is None:
                continue
            value = per_call / (fixed_batch or 1) * batch
            if at == size:
                return value, f"counted from {c.path.name}"
            return value * (size[0] * size[1]) / (own[0] * own[1]), f"scaled by pixels from {c.path.name} at {own[0]}x{own[1]}"
        return None, "no ONNX model in the run to count FLOPs from"

    def describe(self) -> dict[str, Any]:
        return {
            "method": "2 x multiply-accumulates of Conv/ConvTranspose/MatMul/Gemm (and quantized forms) "
            "from ONNX shape inference",
            "sources": [str(c.path) for c, _, _ in self.sources],
            "notes": self.notes,
        }


def flop_counter(onnx_contestants: list[Any]) -> FlopCounter:
    return FlopCounter(onnx_contestants)


def _bytes_to_mb(value: int | None) -> float | None:
    return None if value is None else round(value / 2**20, 1)


#: which peak a row's precision is measured against
PEAK_OF = {"fp32": "fp32", "fp16": "fp32", "bf16": "bf16", "int8": "int8", "mixed": "int8", "int8+bf16": "int8",
           "mixed+bf16": "int8"}


def cell_rows(runners, cell, reference, fidelity, flops: FlopCounter, peak: dict[str, Any] | None,
              peaks: dict[str, Any] | None = None) -> list[dict]:
    """One row per runner of a finished cell."""
    size, batch = (cell["height"], cell["width"]), cell["batch"]
    ref_runner = next((r for c, r in runners if c is reference), None)
    gflop, gflop_how = flops.gflop(size, batch)
    rows = []
    # Sustained runs: one time grid for the whole cell, from its first timed call.
    origin = min((r.samples[0].finished_at - r.samples[0].e2e for _, r in runners if r.samples), default=0.0)
    for c, runner in runners:
        e2e = runner.series("e2e")
        infer = runner.series("infer")
        stats = summarize(e2e)
        stages = {k: median_ms(runner.series(k)) for k in STAGES if runner.series(k)}
        compute_ms = stages.get("compute") or stages.get("infer")
        own_flops = flops.own_gflop(c, size, batch)
        row_gflop = own_flops if own_flops is not None else gflop
        row: dict[str, Any] = {
            "name": c.name,
            "role": c.role,
            "backend": c.kind,
            "precision": c.precision,
            "device": c.backend.device,
            "artifact": None if c.path is None else str(c.path),
            "size": cell["size"],
            "batch": batch,
            "warmup_runs": len(runner.warmup_seconds),
            "warmup_stable": runner.warmup_stable,
            "iterations": len(e2e),
            "latency_ms": stats.to_dict(),
            "fps": fps(batch, stats.median),
            "throughput_fps": batch * len(e2e) / float(np.sum(e2e)),
            "stages_ms": stages,
            # Same-call ratio: a slow spell hits both sides of it.
            "segmenter_overhead_pct": 100.0 * (median_ratio(e2e, infer) - 1.0) if infer else None,
            "speedup": None,
            "speedup_infer": None,
            "fidelity": fidelity.get((c.name, size)),
            "file_mb": _bytes_to_mb(c.facts.get("file_bytes")),
            "build_s": c.facts.get("build_seconds"),
            "host_mb": _bytes_to_mb(c.facts.get("host_bytes")),
            "gpu_mb": _bytes_to_mb(c.facts.get("gpu_bytes")),
            "gflop": row_gflop,
            "gflops_achieved": row_gflop / (compute_ms / 1e3) if row_gflop and compute_ms else None,
            "peak_fraction": None,
            "peak_precision": None,
            "sgemm_fraction": None,
            "samples_ms": [round(s * 1e3, 4) for s in e2e],
        }
        choice = getattr(c.backend, "choice", None)
        if c.kind == "auto" and choice:
            row["choice"] = choice.get("backend")
            agreement = choice.get("exact_agreement_pct") or {}
            row["choice_agreement"] = {k: v for k, v in agreement.items() if v < MIN_AGREEMENT} or None
        if row["gflops_achieved"] and c.backend.device == "cpu":
            own = PEAK_OF.get(c.precision, "fp32")
            if peaks and own in peaks:
                row["peak_fraction"] = row["gflops_achieved"] / peaks[own]["gops"]
                row["peak_precision"] = own
            if peak:
                row["sgemm_fraction"] = row["gflops_achieved"] / peak["value"]
        if ref_runner is not None:
            row["speedup"] = median_ratio(ref_runner.series("e2e"), e2e)
            row["speedup_infer"] = median_ratio(ref_runner.series("infer"), infer)
        if cell.get("window_s"):
            finished = [s.finished_at for s in runner.samples]
            row["windows"] = [dict(w, fps=fps(batch, w["median_ms"])) for w in windows(finished, e2e, cell["window_s"], origin)]
        rows.append(row)
    cell["gflop_source"] = gflop_how
    return rows


def postprocess_probe(contestants: list[Any], size: tuple[int, int], repeats: int = 5) -> dict[str, Any] | None:
    """Host argmax cost on logits of the first size: ``np.argmax`` vs the runtime's
    ``processing.argmax_channels``. An in-graph argmax (``bisenet-export --argmax``) removes
    it from the host altogether; its rows show the postprocess stage without it."""
    spec = next((c.spec for c in contestants if c.spec.output_kind == "logits" and c.spec.num_classes > 1), None)
    if spec is None:
        return None
    logits = np.random.default_rng(0).standard_normal((1, spec.num_classes, *size), dtype=np.float32)

    def median_of(fn) -> float:
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            fn(logits)
            times.append(time.perf_counter() - start)
        return float(np.median(times) * 1e3)

    return {
        "logits": f"1x{spec.num_classes}x{size[0]}x{size[1]} float32",
        "numpy_argmax_ms": median_of(lambda x: np.argmax(x, axis=1).astype(np.uint8)),
        "argmax_channels_ms": median_of(processing.argmax_channels),
    }
