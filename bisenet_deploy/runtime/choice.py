"""``backend="auto"`` for ONNX models: the fastest installed CPU backend for this artifact on
this machine, by measurement, cached.

No CPU runtime wins everywhere: OpenVINO ran the demo INT8 model 4.35x faster than
onnxruntime FP32 on an AMX Xeon and was slower than onnxruntime on an AVX2 EPYC. So the
candidates (onnxruntime; OpenVINO with its in-graph and with host pre/postprocessing) are
opened and timed on the artifact through Segmenter's own stages, end to end, interleaved,
for a bounded probe (``PROBE_SECONDS``, at least ``MIN_CALLS`` timed calls each). A
candidate replaces onnxruntime only when its median is more than ``MARGIN`` faster, so the
choice is never meaningfully slower than onnxruntime.

Speed is never bought with accuracy: every candidate, FP32 included, first runs the probe
frames (a seeded synthetic frame whose channels differ, and the sample photos that are
installed) and is compared (``compare.py``) with the file's exact arithmetic (onnxruntime with
graph optimizations off, which runs each QuantizeLinear/DequantizeLinear as written): FP32
files need the same labels wherever the reference is not a near-tie, FP16 and INT8 files at
least ``MIN_AGREEMENT`` %. Only candidates that pass are timed against each other. (OpenVINO's
in-graph preprocessing once fed dynamic-size FP32 models BGR where they wanted RGB, and it
computed int8 convolutions over a Concat wrongly: either would have been chosen for speed.)
An explicit ``backend="openvino"`` always runs it.
The winner is cached per (artifact hash, CPU model and flags, threads, device, library
versions, a hash of the runtime's own code) in the user's cache folder; a changed artifact,
library version or bisenet-deploy runtime probes again. The backend that comes back carries
the decision in ``backend.choice`` (and a log line on the ``bisenet_deploy`` logger).
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from ..compare import EXACT, Comparison, Tolerance, compare, frame_source
from ..errors import UserError
from ..fileio import write_text_atomic
from . import pipeline
from .backends import backend_class, backend_for
from .backends.base import Backend
from .timing import balanced_orders

log = logging.getLogger("bisenet_deploy")

PROBE_SECONDS = 2.0
MIN_CALLS = 3
MAX_CALLS = 25
#: another backend must be at least this much faster than onnxruntime to replace it
MARGIN = 0.05
#: FP16 / INT8 models: a candidate must give the file's exact labels on this share of probe pixels (%)
MIN_AGREEMENT = 99.5
#: FP32 models whose output is labels (no logits to tell near-ties): this share (%)
MIN_LABELS_AGREEMENT = 99.9
CACHE_FILE = "backend-choice.json"
_FORMAT = 3  # 3: every candidate checked against the reference

#: candidate name -> (backend, options it adds)
CANDIDATES = {
    "onnxruntime": ("onnxruntime", {}),
    "openvino": ("openvino", {"prepost": "graph"}),
    "openvino/host": ("openvino", {"prepost": "host"}),
}
#: options each backend accepts (others are not passed to it)
_ACCEPTS = {
    "onnxruntime": {"device", "threads", "optimization", "spinning"},
    "openvino": {"device", "threads", "precision_hint", "prepost", "cache"},
}


def installed() -> list[str]:
    """Candidates whose library is installed."""
    have = {"onnxruntime": importlib.util.find_spec("onnxruntime") is not None,
            "openvino": importlib.util.find_spec("openvino") is not None}
    return [name for name, (backend, _) in CANDIDATES.items() if have[backend]]


def backend_named_by(options: dict[str, Any]) -> str | None:
    """The backend that options only one backend understands point to (``optimization``:
    onnxruntime; ``precision_hint``, ``prepost``, ``cache``: OpenVINO), else None."""
    ort_only = set(options) & (_ACCEPTS["onnxruntime"] - _ACCEPTS["openvino"])
    ov_only = set(options) & (_ACCEPTS["openvino"] - _ACCEPTS["onnxruntime"])
    if ort_only and ov_only:
        raise UserError(f"options {', '.join(sorted(ort_only | ov_only))} belong to different backends; "
                        "choose one with backend=...")
    return "onnxruntime" if ort_only else "openvino" if ov_only else None


def wants_choice(device: str, options: dict[str, Any]) -> bool:
    """Whether ``backend=None`` on an ONNX model should mean ``auto``: more than one CPU
    backend installed, a CPU (or auto) device, no option only one backend understands."""
    if str(device).lower() not in ("auto", "cpu"):
        return False
    if set(options) - _ACCEPTS["onnxruntime"] - _ACCEPTS["openvino"]:
        return False
    if set(options) & (_ACCEPTS["onnxruntime"] ^ _ACCEPTS["openvino"]):
        return False  # e.g. optimization= (onnxruntime only): the caller means that backend
    return len({CANDIDATES[c][0] for c in installed()}) > 1 and not _has_gpu_provider(device)


def _has_gpu_provider(device: str) -> bool:
    """device="auto" with onnxruntime-gpu and a GPU: onnxruntime on the GPU, no CPU probe."""
    if str(device).lower() != "auto":
        return False
    from .library_imports import import_onnxruntime

    try:
        onnxruntime = import_onnxruntime()
    except ImportError:
        return False
    return any(p in onnxruntime.get_available_providers() for p in ("CUDAExecutionProvider",
                                                                     "TensorrtExecutionProvider"))


def _versions() -> dict[str, str]:
    from ..versions import tool_versions

    return tool_versions("onnxruntime", "openvino", "numpy", "opencv")


@functools.lru_cache(maxsize=1)
def _runtime_code() -> str:
    """A hash of the runtime's own source: what the candidates run besides the libraries (a
    backend that compiles a model differently, as the OpenVINO Concat workaround did, must
    not inherit a choice measured before it)."""
    digest = hashlib.sha256()
    runtime = Path(__file__).resolve().parent
    for source in sorted(runtime.rglob("*.py")):
        digest.update(source.relative_to(runtime).as_posix().encode())
        digest.update(source.read_bytes())
    return digest.hexdigest()


def choice_key(path: Path, options: dict[str, Any]) -> str:
    """What the choice depends on: the artifact's bytes, the CPU, the options, the library
    versions and the runtime's own code."""
    from ..fileio import sha256_file
    from ..machine import cpu_facts

    cpu = cpu_facts()
    parts = {"artifact": sha256_file(path), "cpu": cpu["model"], "flags": cpu["isa_flags"],
             "cpus": cpu["usable_cpus"], "options": {k: str(v) for k, v in sorted(options.items())},
             "versions": _versions(), "code": _runtime_code(), "format": _FORMAT}
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


def _cache_path() -> Path | None:
    from ..cache import cache_dir

    folder = cache_dir()
    return None if folder is None else folder / CACHE_FILE


def _read_cache() -> dict[str, Any]:
    path = _cache_path()
    if path is None:
        return {}
    try:
        data = json.loads(path.read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def _write_cache(key: str, record: dict[str, Any]) -> bool:
    """Store the choice; False where it could not be (no writable cache folder)."""
    path = _cache_path()
    if path is None:
        return False
    data = _read_cache()
    data[key] = record
    if len(data) > 200:  # keep the newest 200
        data = dict(sorted(data.items(), key=lambda kv: kv[1].get("when", ""))[-200:])
    try:
        write_text_atomic(path, json.dumps(data, indent=1, sort_keys=True) + "\n")
    except (OSError, UserError):
        return False  # a read-only home: the choice is simply made again next time
    return True


def _open(path: Path, candidate: str, options: dict[str, Any]) -> Backend:
    backend, extra = CANDIDATES[candidate]
    accepted = {k: v for k, v in options.items() if k in _ACCEPTS[backend]}
    return backend_class(backend)(path, **{**accepted, **extra})


def probe_frames(spec) -> list[np.ndarray]:  # noqa: ANN001 - a ModelSpec
    """A seeded synthetic frame (its channels differ, so a channel swap shows) and up to two
    installed sample photos (no download)."""
    return [frame for _, frame in frame_source(spec.input_size, random=1, samples=2)]


def tolerance_for(precision: str, has_logits: bool) -> Tolerance:
    """What a candidate must keep of the file's exact labels: FP32 the same labels (near-ties
    aside, where logits tell them), FP16 / INT8 ``MIN_AGREEMENT``."""
    if precision == "fp32":
        return EXACT if has_logits else Tolerance(min_agreement=MIN_LABELS_AGREEMENT)
    return Tolerance(min_agreement=MIN_AGREEMENT)


def check_candidates(path: Path, opened: dict[str, Backend], frames: list[np.ndarray]) -> dict[str, Comparison]:
    """Each open candidate against the file's exact arithmetic on ``frames``."""
    from .backends.onnxruntime import OnnxRuntimeBackend

    with OnnxRuntimeBackend(path, device="cpu", optimization="disable") as exact:
        reference = pipeline.network_outputs(exact, exact.spec, frames)
        tolerance = tolerance_for(exact.precision, reference[1] is not None)
    out = {}
    for name, backend in opened.items():
        try:
            outputs = pipeline.network_outputs(backend, backend.spec, frames)
        except UserError as exc:
            out[name] = Comparison(name, False, 0.0, int(reference[0].size), why=f"did not run: {exc}")
            continue
        out[name] = compare(reference, outputs, tolerance, name, num_classes=exact.spec.num_classes)
    return out


def probe(path: Path, candidates: list[str], options: dict[str, Any], seconds: float = PROBE_SECONDS,
          ready: dict[str, Backend] | None = None
          ) -> tuple[dict[str, Backend], dict[str, float], dict[str, str], dict[str, Comparison]]:
    """Open the candidates (``ready``: those the caller opened already), check each against
    the file's exact arithmetic on the probe frames, and time those that pass end to end
    (Segmenter's stages, ``pipeline.py``) on one frame at the network size. Returns (open
    backends, median ms per timed candidate, why others failed to open, the checks)."""
    opened: dict[str, Backend] = {}
    failed: dict[str, UserError] = {}
    for name in candidates:
        try:
            backend = (ready or {}).get(name) or _open(path, name, options)
        except UserError as exc:
            failed[name] = exc
            continue
        problem = pipeline.spec_mismatch(backend, backend.spec) if backend.spec is not None else "no ModelSpec"
        if problem:
            backend.close()
            failed[name] = UserError(problem)
            continue
        opened[name] = backend
    if not opened:
        return opened, {}, failed, {}
    frames = probe_frames(next(iter(opened.values())).spec)
    checks = check_candidates(path, opened, frames)
    timed = [(name, opened[name]) for name in opened if checks[name].passed] or list(opened.items())
    frame = frames[0]
    times: dict[str, list[float]] = {name: [] for name, _ in timed}
    for _, backend in timed:
        pipeline.frame_labels(backend, backend.spec, frame)  # warm-up: first-call allocations stay out
    began = time.perf_counter()
    deadline = began + seconds
    rounds = 0
    # Each candidate runs right after every other equally often: onnxruntime's spinning
    # threads slow whatever runs next, and must not slow one candidate only.
    orders = balanced_orders(len(timed))
    while rounds < MAX_CALLS and (rounds < MIN_CALLS or time.perf_counter() < deadline):
        for name, backend in (timed[i] for i in orders[rounds % len(orders)]):
            start = time.perf_counter()
            pipeline.frame_labels(backend, backend.spec, frame)
            times[name].append(time.perf_counter() - start)
        rounds += 1
    medians: dict[str, Any] = {name: float(np.median(t) * 1e3) for name, t in times.items()}
    medians["_seconds"] = time.perf_counter() - began
    return opened, medians, failed, checks


def decide(medians: dict[str, float], agreement: dict[str, float] | None = None,
           passed: dict[str, bool] | None = None) -> str:
    """onnxruntime unless another candidate is more than MARGIN faster; then the fastest.
    Only faithful candidates count: those that ``passed`` their check (or, given only
    ``agreement``, at or above MIN_AGREEMENT); if none is, the most faithful one."""
    if passed is None and agreement:
        passed = {k: v >= MIN_AGREEMENT for k, v in agreement.items()}
    if passed is not None:
        faithful = {k: v for k, v in medians.items() if passed.get(k)}
        if not faithful:
            scores = agreement or {k: float(v) for k, v in passed.items()}
            return max(scores, key=scores.get)
        medians = faithful
    if "onnxruntime" not in medians:
        return min(medians, key=medians.get)
    best = min(medians, key=medians.get)
    if best != "onnxruntime" and medians[best] < medians["onnxruntime"] * (1.0 - MARGIN):
        return best
    return "onnxruntime"


def _onnxruntime_first(path: Path, options: dict[str, Any]) -> tuple[Backend | None, bool]:
    """(onnxruntime opened on the artifact, whether it can run through Segmenter as it is).
    It cannot without a ModelSpec, or with one its graph contradicts: then there is nothing
    to time, and the caller's Segmenter (which may bring its own spec) says what is wrong.
    The backend is the onnxruntime candidate of the choice too, so it is opened once."""
    if "onnxruntime" not in installed():
        return None, True
    backend = _open(path, "onnxruntime", options)
    return backend, backend.spec is not None and not pipeline.spec_mismatch(backend, backend.spec)


def choose(path: str | Path, options: dict[str, Any], use_cache: bool = True, graph_prepost: bool = True) -> Backend:
    """The backend ``auto`` picks for this ONNX model (see the module docstring);
    ``graph_prepost=False`` leaves OpenVINO's in-graph pre/postprocessing out (a caller that
    brings its own normalization needs it to reach the model)."""
    path = Path(path)
    candidates = [c for c in installed() if graph_prepost or c != "openvino"]
    if not candidates:
        raise UserError("no ONNX backend is installed: pip install 'bisenet-deploy[ort]' (or [openvino])")
    ort, probeable = _onnxruntime_first(path, options)
    if not probeable:
        ort.choice = {"backend": "onnxruntime", "medians_ms": {}, "cached": False,
                      "why": "not probed: the artifact needs a ModelSpec from the caller"}
        return ort
    ready = {"onnxruntime": ort} if ort is not None and "onnxruntime" in candidates else {}
    if ort is not None and not ready:
        ort.close()
    key = choice_key(path, {**options, "graph_prepost": graph_prepost}) if use_cache else None
    cached = _read_cache().get(key) if key else None
    if cached and cached.get("backend") in candidates:
        try:
            backend = ready.get(cached["backend"]) or _open(path, cached["backend"], options)
        except UserError:
            cached = None
        else:
            for other in ready.values():
                if other is not backend:
                    other.close()
            backend.choice = {**cached, "cached": True}
            log.info("backend auto: %s (%s, cached)", cached["backend"], _summary(cached["medians_ms"]))
            return backend
    opened, medians, failed, checks = probe(path, candidates, options, ready=ready)
    spent = medians.pop("_seconds", 0.0)
    if not opened:
        raise next(iter(failed.values()))  # the first candidate's own clear error (onnxruntime's)
    agreement = {k: c.agreement for k, c in checks.items()}
    winner = decide(medians, agreement, {k: c.passed for k, c in checks.items()})
    for name, backend in opened.items():
        if name != winner:
            backend.close()
    record = {"backend": winner, "medians_ms": {k: round(v, 3) for k, v in medians.items()},
              "exact_agreement_pct": {k: round(v, 3) for k, v in agreement.items()},
              "refused": {k: c.why for k, c in checks.items() if not c.passed},
              "failed": {k: str(v) for k, v in failed.items()},
              "when": time.strftime("%Y-%m-%dT%H:%M:%S"), "artifact": str(path)}
    # the probe line says what happened: a run without a writable cache folder probes again
    stored = "cached for next time" if key and _write_cache(key, record) else (
        "not cached (no writable cache folder)" if key else "not cached")
    chosen = opened[winner]
    chosen.choice = {**record, "cached": False}
    faith = "; labels as the file's exact arithmetic: " + ", ".join(f"{k} {v:.2f}%" for k, v in agreement.items())
    log.info("backend auto: %s (%s%s; probed for %.1f s, %s)", winner,
             _summary(record["medians_ms"]), faith, spent, stored)
    for name, why in record["refused"].items():
        log.info("backend auto: %s not chosen: %s", name, why)
    return chosen


def default_backend(path: str | Path, options: dict[str, Any]) -> str:
    """What ``backend=None`` means: ``$BISENET_DEPLOY_BACKEND`` if set; for an ONNX model
    ``auto`` where more than one CPU backend is installed (onnxruntime and OpenVINO), the
    device is the CPU (or auto) and no option names one backend; else by suffix."""
    import os

    from .backends.triton import is_url

    if is_url(path):
        return "triton"
    forced = os.environ.get("BISENET_DEPLOY_BACKEND")
    if forced:
        return backend_for(path, forced)
    if Path(path).suffix.lower() == ".onnx":
        named = backend_named_by(options)
        if named:
            return named
        if wants_choice(options.get("device", "auto"), options):
            return "auto"
    return backend_for(path)


def open_model(path: str | Path, backend: str | None = None, graph_prepost: bool = True, **options: Any) -> Backend:
    """Open ``path`` with ``backend`` (None: ``default_backend``), ``auto`` included: the
    one entry that resolves the choice, so the factory in ``backends/`` stays policy-free.
    ``graph_prepost=False``: ``auto`` leaves OpenVINO's in-graph pre/post out (an explicit
    ``backend="openvino"`` keeps its own option, and Segmenter says if it conflicts)."""
    name = backend_for(path, backend) if backend is not None else default_backend(path, options)
    if name == "auto":
        return choose(path, options, graph_prepost=graph_prepost)
    return backend_class(name)(path, **options)


def _summary(medians: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:.1f} ms" for k, v in sorted(medians.items(), key=lambda kv: kv[1]))
