"""``backend="auto"`` for ONNX models: the fastest installed CPU backend for this artifact on
this machine, by measurement, cached.

No CPU runtime wins everywhere: OpenVINO ran the demo INT8 model 4.35x faster than
onnxruntime FP32 on an AMX Xeon and was slower than onnxruntime on an AVX2 EPYC. So the
candidates (onnxruntime; OpenVINO with its in-graph and with host pre/postprocessing) are
opened and timed on the artifact through Segmenter's own stages, end to end, interleaved,
for a bounded probe (``PROBE_SECONDS``, at least ``MIN_CALLS`` timed calls each). A
candidate replaces onnxruntime only when its median is more than ``MARGIN`` faster, so the
choice is never meaningfully slower than onnxruntime.

Speed is not bought with accuracy: for INT8 models every candidate's labels on the probe
frames (a synthetic frame and the sample photos that are installed) are compared with the
file's exact Q/DQ arithmetic (onnxruntime with graph optimizations off), and a candidate
below ``MIN_AGREEMENT`` is not chosen. (OpenVINO computes int8 convolutions over a Concat
wrongly, which cost it 1.2 points of agreement on the demo INT8 model until its backend
compiled them split, ``openvino_concat.py``: this guard is what kept ``auto`` on onnxruntime
then, and is there for the next such bug.) An explicit ``backend="openvino"`` always runs it.
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

from ...errors import UserError
from ...fileio import write_text_atomic
from ..timing import balanced_orders
from .base import Backend

log = logging.getLogger("bisenet_deploy")

PROBE_SECONDS = 2.0
MIN_CALLS = 3
MAX_CALLS = 25
#: another backend must be at least this much faster than onnxruntime to replace it
MARGIN = 0.05
#: INT8 models: a candidate must give the file's exact labels on this share of probe pixels (%)
MIN_AGREEMENT = 99.5
CACHE_FILE = "backend-choice.json"
_FORMAT = 2

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
    try:
        import onnxruntime
    except ImportError:
        return False
    return any(p in onnxruntime.get_available_providers() for p in ("CUDAExecutionProvider",
                                                                     "TensorrtExecutionProvider"))


def _versions() -> dict[str, str]:
    from ...versions import tool_versions

    return tool_versions("onnxruntime", "openvino", "numpy", "opencv")


@functools.lru_cache(maxsize=1)
def _runtime_code() -> str:
    """A hash of the runtime's own source: what the candidates run besides the libraries (a
    backend that compiles a model differently, as the OpenVINO Concat workaround did, must
    not inherit a choice measured before it)."""
    digest = hashlib.sha256()
    runtime = Path(__file__).resolve().parents[1]
    for source in sorted(runtime.rglob("*.py")):
        digest.update(source.relative_to(runtime).as_posix().encode())
        digest.update(source.read_bytes())
    return digest.hexdigest()


def choice_key(path: Path, options: dict[str, Any]) -> str:
    """What the choice depends on: the artifact's bytes, the CPU, the options, the library
    versions and the runtime's own code."""
    from ...fileio import sha256_file
    from ...machine import cpu_facts

    cpu = cpu_facts()
    parts = {"artifact": sha256_file(path), "cpu": cpu["model"], "flags": cpu["isa_flags"],
             "cpus": cpu["usable_cpus"], "options": {k: str(v) for k, v in sorted(options.items())},
             "versions": _versions(), "code": _runtime_code(), "format": _FORMAT}
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


def _cache_path() -> Path | None:
    from ...cache import cache_dir

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


def _write_cache(key: str, record: dict[str, Any]) -> None:
    path = _cache_path()
    if path is None:
        return
    data = _read_cache()
    data[key] = record
    if len(data) > 200:  # keep the newest 200
        data = dict(sorted(data.items(), key=lambda kv: kv[1].get("when", ""))[-200:])
    try:
        write_text_atomic(path, json.dumps(data, indent=1, sort_keys=True) + "\n")
    except (OSError, UserError):
        pass  # a read-only home: the choice is simply made again next time


def _open(path: Path, candidate: str, options: dict[str, Any]) -> Backend:
    from . import backend_class

    backend, extra = CANDIDATES[candidate]
    accepted = {k: v for k, v in options.items() if k in _ACCEPTS[backend]}
    return backend_class(backend)(path, **{**accepted, **extra})


def _probe_frame(spec) -> np.ndarray:  # noqa: ANN001 - a ModelSpec
    h, w = spec.input_size
    rng = np.random.default_rng(0)
    coarse = rng.integers(0, 256, size=(max(2, h // 16), max(2, w // 16), 3), dtype=np.uint8)
    import cv2

    return cv2.resize(coarse, (w, h), interpolation=cv2.INTER_LINEAR)


def probe(path: Path, candidates: list[str], options: dict[str, Any], seconds: float = PROBE_SECONDS,
          ready: dict[str, Backend] | None = None) -> tuple[dict[str, Backend], dict[str, float], dict[str, str]]:
    """Open the candidates (``ready``: those the caller opened already) and time them end to
    end (Segmenter's stages) on one frame at the network size; for INT8 models also measure
    their agreement with the file's exact arithmetic (key ``_agreement``). Returns (open
    backends, median ms per candidate, why others failed)."""
    from ..segmenter import Segmenter

    opened: dict[str, Backend] = {}
    failed: dict[str, UserError] = {}
    segmenters = {}
    for name in candidates:
        try:
            backend = (ready or {}).get(name) or _open(path, name, options)
        except UserError as exc:
            failed[name] = exc
            continue
        try:
            segmenters[name] = Segmenter(backend)
            opened[name] = backend
        except UserError as exc:
            backend.close()
            failed[name] = exc
    if not opened:
        return opened, {}, failed
    frame = _probe_frame(next(iter(segmenters.values())).spec)
    times: dict[str, list[float]] = {name: [] for name in opened}
    for seg in segmenters.values():
        seg(frame)  # warm-up: first-call allocations stay out of the timing
    began = time.perf_counter()
    deadline = began + seconds
    rounds = 0
    items = list(segmenters.items())
    # Each candidate runs right after every other equally often: onnxruntime's spinning
    # threads slow whatever runs next, and must not slow one candidate only.
    orders = balanced_orders(len(items))
    while rounds < MAX_CALLS and (rounds < MIN_CALLS or time.perf_counter() < deadline):
        for name, seg in (items[i] for i in orders[rounds % len(orders)]):
            start = time.perf_counter()
            seg(frame)
            times[name].append(time.perf_counter() - start)
        rounds += 1
    medians: dict[str, Any] = {name: float(np.median(t) * 1e3) for name, t in times.items()}
    medians["_seconds"] = time.perf_counter() - began
    if any(b.precision not in ("fp32", "fp16") for b in opened.values()):
        medians["_agreement"] = exact_agreement(path, segmenters)
    return opened, medians, failed


def probe_frames(spec) -> list[np.ndarray]:  # noqa: ANN001 - a ModelSpec
    """The synthetic probe frame and up to two installed sample photos (no download)."""
    from ...samples import sample_photos

    return [_probe_frame(spec)] + [img for _, img in sample_photos(2)]


def exact_agreement(path: Path, segmenters: dict[str, Any]) -> dict[str, float]:
    """Per candidate, label agreement (%) with the file's exact arithmetic: onnxruntime with
    every graph optimization off runs each QuantizeLinear/DequantizeLinear as written."""
    from ..segmenter import Segmenter
    from .onnxruntime import OnnxRuntimeBackend

    reference = Segmenter(OnnxRuntimeBackend(path, device="cpu", optimization="disable"), output_size="network")
    frames = probe_frames(reference.spec)
    truth = [reference(f) for f in frames]
    reference.close()
    out = {}
    for name, seg in segmenters.items():
        masks = [processing_labels(seg, f) for f in frames]
        same = sum(int(np.count_nonzero(m == t)) for m, t in zip(masks, truth))
        out[name] = 100.0 * same / sum(t.size for t in truth)
    return out


def processing_labels(seg, frame: np.ndarray) -> np.ndarray:  # noqa: ANN001 - a Segmenter
    """Labels at the network resolution, whatever the Segmenter's output size."""
    from .. import processing

    output = seg.infer(seg.preprocess([frame] * (seg.batch_size or 1)))[:1]
    return processing.labels_from_output(output, seg.spec)[0]


def decide(medians: dict[str, float], agreement: dict[str, float] | None = None) -> str:
    """onnxruntime unless another candidate is more than MARGIN faster; then the fastest.
    With ``agreement``, only candidates at or above MIN_AGREEMENT count (if none is, the
    most faithful one)."""
    if agreement:
        faithful = {k: v for k, v in medians.items() if agreement.get(k, 0.0) >= MIN_AGREEMENT}
        if not faithful:
            return max(agreement, key=agreement.get)
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
    from ..segmenter import spec_mismatch

    if "onnxruntime" not in installed():
        return None, True
    backend = _open(path, "onnxruntime", options)
    return backend, backend.spec is not None and not spec_mismatch(backend, backend.spec)


def choose(path: str | Path, options: dict[str, Any], use_cache: bool = True,
           exclude: tuple[str, ...] = ()) -> Backend:
    """The backend ``auto`` picks for this ONNX model (see the module docstring);
    ``exclude``: candidates the caller cannot use (Segmenter leaves OpenVINO's in-graph
    pre/post out when it overrides the normalization)."""
    path = Path(path)
    candidates = [c for c in installed() if c not in exclude]
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
    key = choice_key(path, {**options, "exclude": exclude}) if use_cache else None
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
    opened, medians, failed = probe(path, candidates, options, ready=ready)
    spent = medians.pop("_seconds", 0.0)
    agreement = medians.pop("_agreement", None)
    if not opened:
        raise next(iter(failed.values()))  # the first candidate's own clear error (onnxruntime's)
    winner = decide(medians, agreement)
    for name, backend in opened.items():
        if name != winner:
            backend.close()
    record = {"backend": winner, "medians_ms": {k: round(v, 3) for k, v in medians.items()},
              "exact_agreement_pct": None if agreement is None else {k: round(v, 3) for k, v in agreement.items()},
              "failed": {k: str(v) for k, v in failed.items()},
              "when": time.strftime("%Y-%m-%dT%H:%M:%S"), "artifact": str(path)}
    if key:
        _write_cache(key, record)
    chosen = opened[winner]
    chosen.choice = {**record, "cached": False}
    faith = ""
    if agreement:
        faith = "; labels as the file's exact arithmetic: " + ", ".join(f"{k} {v:.2f}%" for k, v in agreement.items())
    log.info("backend auto: %s (%s%s; probed for %.1f s, cached for next time)", winner,
             _summary(record["medians_ms"]), faith, spent)
    return chosen


def _summary(medians: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:.1f} ms" for k, v in sorted(medians.items(), key=lambda kv: kv[1]))
