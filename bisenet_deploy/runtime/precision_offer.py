"""Saying when a faster precision is free on this CPU, without making it the default.

On CPUs with bf16 in hardware (AVX512-BF16 or AMX), OpenVINO's ``bf16`` precision hint ran
the FP32 demo model 4.4x faster than ``f32`` at 99.885 % label agreement. Exact precision
stays the default (bf16 changes ~0.1 % of the labels), but ``bisenet-bench``'s verdicts and
``bisenet-infer``'s start line say so when the faster precision keeps at least
``MIN_AGREEMENT`` % of the exact labels, and name the option that enables it.

* ``offer``: the decision, a pure function of the CPU flags and a measurement (tested with
  the flag sets of real CPUs).
* ``measure``: OpenVINO ``f32`` against ``bf16`` on one artifact: labels on the probe frames
  compared with the one comparator (``compare.py``), end-to-end time of a few interleaved
  calls. ``cached_offer`` runs it once per artifact, CPU, threads, library versions and
  runtime code (the key of the backend choice) and keeps it in the user's cache folder, so
  only the first start on a bf16 CPU pays a few seconds; CPUs without bf16 pay nothing.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..compare import Tolerance, compare
from ..errors import UserError
from ..fileio import write_text_atomic
from ..machine import has_bf16

log = logging.getLogger("bisenet_deploy")

#: the faster precision must keep this share (%) of the exact precision's labels
MIN_AGREEMENT = 99.5
#: ... and be at least this much faster end to end to be worth a line
MIN_GAIN = 1.10
#: what enables it, per place it is used
OPTION = "backend='openvino', backend_options={'precision_hint': 'bf16'}"
BENCH_OPTION = "--ov-hint bf16"
CACHE_FILE = "precision-offer.json"
CALLS = 3


@dataclass(frozen=True)
class Measurement:
    """OpenVINO on one artifact: median end-to-end ms at the exact precision and with the bf16
    hint, and the bf16 labels' agreement (%) with the exact ones on ``pixels`` pixels."""

    exact_ms: float
    bf16_ms: float
    agreement: float
    pixels: int
    #: exact over bf16 time as the caller measured it (the bench: median of per-round ratios)
    ratio: float | None = None

    @property
    def gain(self) -> float:
        if self.ratio is not None:
            return self.ratio
        return self.exact_ms / self.bf16_ms if self.bf16_ms > 0 else 0.0


def offer(flags: list[str], m: Measurement | None, precision: str = "fp32", option: str = OPTION) -> str | None:
    """The line to show, or None: only on a CPU with bf16 in hardware, only when the bf16 hint
    was measured at least ``MIN_GAIN`` faster with at least ``MIN_AGREEMENT`` % agreement."""
    if not has_bf16(flags) or m is None:
        return None
    if m.gain < MIN_GAIN or m.agreement < MIN_AGREEMENT:
        return None
    faster = "bf16" if precision in ("fp32", "fp16") else f"{precision}+bf16"
    return (f"faster precision available: OpenVINO {faster} ran this model {m.gain:.1f}x faster than its exact "
            f"{precision} on this CPU ({m.bf16_ms:.1f} vs {m.exact_ms:.1f} ms) with {m.agreement:.3f}% of its labels "
            f"(>= {MIN_AGREEMENT}%); exact precision stays the default; enable it with {option}")


def no_offer_reason(flags: list[str]) -> str | None:
    """Why no faster precision is offered on this CPU (None where bf16 is there)."""
    if has_bf16(flags):
        return None
    return ("no bf16 offer: this CPU has neither AVX512-BF16 nor AMX, so OpenVINO's bf16 hint would not run "
            "faster than exact precision here")


def measure_backends(exact: Any, fast: Any, frames: list[np.ndarray], calls: int = CALLS) -> Measurement:
    """Two open backends of one artifact (exact precision, faster precision): the faster one's
    labels against the exact ones on ``frames`` by ``compare.compare``, then ``calls``
    interleaved end-to-end calls of each on the first frame."""
    from . import pipeline

    spec = exact.spec
    ref = pipeline.network_outputs(exact, spec, frames)
    got = pipeline.network_outputs(fast, fast.spec, frames)
    check = compare(ref, got, Tolerance(min_agreement=MIN_AGREEMENT), "faster precision",
                    num_classes=spec.num_classes)
    times: dict[str, list[float]] = {"exact": [], "fast": []}
    pair = (("exact", exact), ("fast", fast))
    for i in range(calls):
        for name, backend in pair if i % 2 == 0 else pair[::-1]:  # each follows the other equally often
            start = time.perf_counter()
            pipeline.frame_labels(backend, backend.spec, frames[0])
            times[name].append(time.perf_counter() - start)
    return Measurement(float(np.median(times["exact"]) * 1e3), float(np.median(times["fast"]) * 1e3),
                       check.agreement, check.pixels)


def measure(path: str | Path, threads: int = 0, frames: list[np.ndarray] | None = None,
            calls: int = CALLS) -> Measurement:
    """OpenVINO ``f32`` vs ``bf16`` on ``path`` (host pre/post, so both give class scores to
    the same label stage) on ``frames`` (default: the backend choice's probe frames)."""
    from .backends.openvino import OpenVinoBackend
    from .choice import probe_frames

    with OpenVinoBackend(path, device="CPU", threads=threads, precision_hint="f32", prepost="host") as exact, \
            OpenVinoBackend(path, device="CPU", threads=threads, precision_hint="bf16", prepost="host") as fast:
        if exact.spec is None:
            raise UserError(f"'{path}' carries no ModelSpec: nothing to compare bf16 with")
        return measure_backends(exact, fast, probe_frames(exact.spec) if frames is None else frames, calls)


def _cache_path() -> Path | None:
    from ..cache import cache_dir

    folder = cache_dir()
    return None if folder is None else folder / CACHE_FILE


def cached_offer(path: str | Path, threads: int = 0, flags: list[str] | None = None) -> str | None:
    """``offer`` for an ONNX artifact on this CPU: nothing to do without bf16 (or OpenVINO);
    else the cached measurement, or one measured now and cached for next time."""
    import importlib.util

    from ..machine import cpu_flags
    from ..spec import PRECISION_KEY
    from .onnx_metadata import read_onnx_metadata

    flags = cpu_flags() if flags is None else flags
    if not has_bf16(flags) or Path(path).suffix.lower() != ".onnx" or importlib.util.find_spec("openvino") is None:
        return None
    precision = read_onnx_metadata(Path(path)).get(PRECISION_KEY, "fp32")
    from .choice import choice_key

    key = choice_key(Path(path), {"threads": threads, "question": "bf16 offer"})
    cache = _cache_path()
    records: dict[str, Any] = {}
    if cache is not None:
        try:
            records = json.loads(cache.read_text())
        except (OSError, ValueError):
            records = {}
    record = records.get(key) if isinstance(records, dict) else None
    if record is None:
        try:
            m = measure(path, threads)
        except Exception as exc:  # noqa: BLE001 - advice must never fail a run: no offer, why in the debug log
            log.debug("bf16 offer not measured: %s", exc)
            return None
        record = {**asdict(m), "when": time.strftime("%Y-%m-%dT%H:%M:%S")}
        if cache is not None:
            records = {**(records if isinstance(records, dict) else {}), key: record}
            try:
                write_text_atomic(cache, json.dumps(records, indent=1, sort_keys=True) + "\n")
            except (OSError, UserError):
                pass  # unwritable: measured again next time
    m = Measurement(**{k: record[k] for k in ("exact_ms", "bf16_ms", "agreement", "pixels")})
    return offer(flags, m, precision)


def offer_for(backend: Any, threads: int = 0, flags: list[str] | None = None) -> str | None:
    """``cached_offer`` for an open CPU backend of an ONNX file (onnxruntime or OpenVINO at its
    exact precision); None for anything else (an engine, a served model, bf16 already on)."""
    if getattr(backend, "name", None) not in ("onnxruntime", "openvino") or getattr(backend, "device", None) != "cpu":
        return None
    if getattr(backend, "precision_hint", "f32") == "bf16" or getattr(backend, "path", None) is None:
        return None
    return cached_offer(backend.path, threads, flags)
