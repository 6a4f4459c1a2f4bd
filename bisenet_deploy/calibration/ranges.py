"""Activation ranges from calibration data: minmax, entropy and percentile, and their cache.

The FP32 model runs in onnxruntime with the tensors of interest added as outputs. For each
tensor we keep its running max |x| and, for the histogram methods, a histogram of |x|
(symmetric quantization only needs the magnitude). The histogram keeps a fixed bin width
chosen on the first batch and grows when later batches reach further; past ``MAX_BINS``
neighbouring bins are merged (width doubles). Bins therefore always align, so merging is
exact: the histogram depends only on the values and the order they arrive in.

Methods (``amax`` is the clipping threshold; the INT8 scale is ``amax / 127``):

* ``minmax``: the largest |x| seen. No clipping; one outlier pixel costs resolution.
* ``percentile``: the |x| below which ``percentile`` % of all values lie.
* ``entropy``: TensorRT's method (Migacz, "8-bit inference with TensorRT", GTC 2017): the
  threshold whose 128-level quantized distribution is closest (KL divergence) to the
  clipped reference distribution.

Ranges are cached in ``<model>.calib.json`` beside the FP32 model, keyed by the graph hash,
the data hash, the preprocessing and the method; a key that does not match is reported as
stale and recomputed.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
from tqdm import tqdm

from ..errors import UserError
from ..fileio import write_text_atomic
from .graph import with_outputs

METHODS = ("minmax", "entropy", "percentile")
DEFAULT_METHOD = "entropy"
BINS = 2048
MAX_BINS = 8192
ENTROPY_LEVELS = 128  # positive levels of a symmetric int8 grid
MIN_AMAX = 1e-5  # a tensor that is always zero still needs a positive scale
#: Part of every cache key: bump it whenever the histogram or threshold algorithms change,
#: so ranges computed by older code are recalibrated.
CACHE_FORMAT = 3


@dataclass(frozen=True)
class CalibrationMethod:
    """How to turn observed values into a clipping threshold (``amax``)."""

    name: str = DEFAULT_METHOD
    percentile: float = 99.99

    def __post_init__(self) -> None:
        if self.name not in METHODS:
            raise UserError(f"unknown calibration method {self.name!r}; choose from {', '.join(METHODS)}")
        if not 50.0 < self.percentile <= 100.0:
            raise UserError(f"--percentile must be in (50, 100], got {self.percentile}")

    def key(self) -> dict:
        return {"name": self.name, "percentile": self.percentile} if self.name == "percentile" else {"name": self.name}


class AbsHistogram:
    """Histogram of |x| with aligned bins that grows as larger values arrive."""

    def __init__(self) -> None:
        self.width: float | None = None
        self.counts = np.zeros(0, dtype=np.int64)
        self.zeros = 0  # values seen while every value so far was 0 (no width yet)

    def add(self, values: np.ndarray) -> None:
        a = np.abs(values.reshape(-1).astype(np.float32, copy=False))
        if a.size == 0:
            return
        top = float(a.max())
        if self.width is None:
            if top == 0.0:
                self.zeros += a.size
                return
            self.width = top / BINS
            self.counts = np.zeros(BINS, dtype=np.int64)
            self.counts[0] += self.zeros
        needed = max(1, int(np.ceil(top / self.width)))
        while needed > MAX_BINS:
            if len(self.counts) % 2:
                self.counts = np.append(self.counts, 0)
            self.counts = self.counts.reshape(-1, 2).sum(axis=1)
            self.width *= 2.0
            needed = max(1, int(np.ceil(top / self.width)))
        if needed > len(self.counts):
            self.counts = np.concatenate([self.counts, np.zeros(needed - len(self.counts), dtype=np.int64)])
        index = np.minimum((a * np.float32(1.0 / self.width)).astype(np.int64), len(self.counts) - 1)
        self.counts += np.bincount(index, minlength=len(self.counts))

    def rebinned(self, bins: int = BINS) -> tuple[np.ndarray, float]:
        """Counts merged down to at most ``bins`` bins, and the new bin width."""
        factor = max(1, int(np.ceil(len(self.counts) / bins)))
        counts = self.counts
        if len(counts) % factor:
            counts = np.append(counts, np.zeros(factor - len(counts) % factor, dtype=np.int64))
        return counts.reshape(-1, factor).sum(axis=1), (self.width or 0.0) * factor


def percentile_amax(counts: np.ndarray, width: float, percentile: float) -> float:
    total = counts.sum()
    if total == 0:
        return 0.0
    cdf = np.cumsum(counts)
    index = int(np.searchsorted(cdf, total * percentile / 100.0))
    return (min(index, len(counts) - 1) + 1) * width


def _xlogx(x: np.ndarray) -> np.ndarray:
    return np.where(x > 0, x * np.log(np.where(x > 0, x, 1.0)), 0.0)


def entropy_amax(counts: np.ndarray, width: float, levels: int = ENTROPY_LEVELS) -> float:
    """Threshold (a bin edge) minimising KL(P || Q), all candidate edges at once.

    For a candidate edge ``i``, ``P`` is ``hist[:i]`` with the mass beyond it folded into its
    last bin (what clipping does to the values); ``Q`` merges the unclipped ``hist[:i]`` into
    ``levels`` groups and spreads each group's mass evenly over the bins where ``P`` is
    non-zero (what ``levels`` quantization steps can represent). Clipping too much piles
    mass into ``P``'s last bin that ``Q`` lacks; clipping too little makes the groups coarse.
    A candidate whose last group is empty but must hold clipped mass cannot represent it and
    is skipped. With prefix sums every candidate costs a few lookups per group, so the search
    is one vectorized pass.
    """
    hist = counts.astype(np.float64)
    n = int(np.max(np.nonzero(hist)[0]) + 1) if hist.any() else 0
    if n <= levels:
        return n * width
    hist = hist[:n].copy()
    # The first bin holds the exact zeros a ReLU produces (often half of all values); that
    # spike would dominate the divergence and push the threshold far too low, so it is
    # flattened to its neighbour's height, as NVIDIA's pytorch-quantization does.
    hist[0] = hist[1]
    mass = np.concatenate([[0.0], np.cumsum(hist)])
    nonzero = np.concatenate([[0.0], np.cumsum(hist > 0)])
    plogp_prefix = np.concatenate([[0.0], np.cumsum(_xlogx(hist))])
    total = mass[n]
    edges = np.arange(levels, n + 1)
    last, tail = hist[edges - 1], total - mass[edges]
    starts = (np.arange(levels + 1)[None, :] * edges[:, None]) // levels
    group_mass = mass[starts[:, 1:]] - mass[starts[:, :-1]]
    group_nonzero = nonzero[starts[:, 1:]] - nonzero[starts[:, :-1]]
    group_nonzero[:, -1] += (last + tail > 0).astype(np.float64) - (last > 0)
    level = np.divide(group_mass, group_nonzero, out=np.zeros_like(group_mass), where=group_nonzero > 0)
    log_level = np.log(np.where(level > 0, level, 1.0))
    plogq = np.sum(group_mass * log_level, axis=1) + tail * log_level[:, -1]
    plogp = plogp_prefix[edges - 1] + _xlogx(last + tail)
    kept = mass[edges]
    kl = (plogp - plogq) / total - np.log(total) + np.log(np.where(kept > 0, kept, 1.0))
    kl = np.where(((level[:, -1] == 0) & (tail > 0)) | (kept == 0), np.inf, kl)
    return int(edges[np.argmin(kl)]) * width


@dataclass
class TensorRanges:
    """Per-tensor clipping thresholds for INT8 and plain max |x| for every observed tensor."""

    amax: dict[str, float] = field(default_factory=dict)
    absmax: dict[str, float] = field(default_factory=dict)
    method: dict = field(default_factory=dict)

    def scale(self, tensor: str) -> float:
        return max(self.amax[tensor], MIN_AMAX) / 127.0


def inference_session(model: onnx.ModelProto | str | Path, threads: int = 0):
    """A CPU onnxruntime session (no extra logging) for a model proto or path."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.intra_op_num_threads = threads
    source = model.SerializeToString() if isinstance(model, onnx.ModelProto) else str(model)
    return ort.InferenceSession(source, sess_options=options, providers=["CPUExecutionProvider"])


def collect_ranges(
    model: onnx.ModelProto,
    quantized: Iterable[str],
    observed: Iterable[str],
    batches: Iterator[tuple[np.ndarray, int]],
    method: CalibrationMethod,
    total: int | None = None,
    progress: bool = True,
) -> TensorRanges:
    """Run ``model`` over ``batches``; thresholds for ``quantized`` tensors by ``method``,
    max |x| for ``quantized`` and ``observed`` ones."""
    quantized = sorted(set(quantized))
    names = sorted(set(quantized) | set(observed))
    session = inference_session(with_outputs(model, names))
    input_name = session.get_inputs()[0].name
    absmax = dict.fromkeys(names, 0.0)
    hists = {t: AbsHistogram() for t in quantized} if method.name != "minmax" else {}
    bar = tqdm(total=total, desc=f"calibrating ({method.name})", unit="frame", disable=not progress, leave=False)
    try:
        for batch, real in batches:
            outputs = session.run(names, {input_name: batch})
            for name, value in zip(names, outputs):
                value = value[:real]
                if value.size:
                    absmax[name] = max(absmax[name], float(np.abs(value).max()))
                if name in hists:
                    hists[name].add(value)
            bar.update(real)
    finally:
        bar.close()
    amax = {}
    for name in quantized:
        if method.name == "minmax":
            amax[name] = absmax[name]
            continue
        counts, width = hists[name].rebinned()
        if method.name == "percentile":
            amax[name] = percentile_amax(counts, width, method.percentile)
        else:
            amax[name] = entropy_amax(counts, width)
    return TensorRanges(amax=amax, absmax=absmax, method=method.key())


# --- cache -----------------------------------------------------------------------------------


def cache_path_for(onnx_path: str | Path) -> Path:
    """``model.onnx`` -> ``model.calib.json``."""
    onnx_path = Path(onnx_path)
    return onnx_path.with_name(onnx_path.stem + ".calib.json")


def load_cached_ranges(path: Path, key: dict) -> tuple[TensorRanges | None, str]:
    """The cached ranges if ``path`` holds an entry for ``key``; else None and why not."""
    if not path.is_file():
        return None, "no calibration cache yet"
    try:
        data = json.loads(path.read_text())
        stored = data["key"]
        ranges = TensorRanges(amax=data["amax"], absmax=data["absmax"], method=stored["method"])
    except (OSError, ValueError, KeyError, TypeError):
        return None, f"calibration cache {path.name} is unreadable; recalibrating"
    if stored != key:
        changed = [part for part in key if stored.get(part) != key[part]]
        what = ", ".join(f"{part} changed" for part in changed) or "format changed"
        return None, f"calibration cache {path.name} is stale ({what}); recalibrating"
    return ranges, f"reused calibration cache {path.name}"


def save_ranges(path: Path, key: dict, ranges: TensorRanges, provenance: dict) -> None:
    payload = {"key": key, "provenance": provenance, "amax": ranges.amax, "absmax": ranges.absmax}
    write_text_atomic(path, json.dumps(payload, indent=1, sort_keys=True) + "\n")


def cache_key(
    model_sha256: str, data_sha256: str, preprocessing: dict, method: CalibrationMethod, tensors: Iterable[str]
) -> dict:
    """What the cached ranges depend on; ``tensors`` changes when the placement code does."""
    tensor_hash = hashlib.sha256("\n".join(sorted(set(tensors))).encode()).hexdigest()
    return {
        "format": CACHE_FORMAT,
        "model": model_sha256,
        "data": data_sha256,
        "preprocessing": preprocessing,
        "method": method.key(),
        "tensors": tensor_hash,
    }
