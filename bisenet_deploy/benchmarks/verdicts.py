"""Plain-language conclusions drawn from a finished result (a dict, as written to JSON).

Pure functions of the result, so they can be tested on synthetic results and re-derived
from any saved JSON.
"""

from __future__ import annotations

from typing import Any

from .stats import median_ratio

#: INT8 must beat FP16 by this factor to be worth its calibration and accuracy risk.
INT8_MIN_GAIN = 1.10
#: ... and lose at most this many points of label agreement.
INT8_MAX_AGREEMENT_LOSS = 1.0
SEGMENTER_MAX_OVERHEAD_PCT = 10.0
NOISY_CV = 0.10
#: 1-minute load average per usable CPU above which the machine counts as busy
BUSY_LOAD = 0.75


def _v(level: str, text: str) -> dict[str, str]:
    return {"level": level, "text": text}


def _agreement(row: dict[str, Any]) -> float | None:
    fid = row.get("fidelity")
    return fid.get("label_agreement") if fid else None


def _pair(rows: list[dict[str, Any]], row: dict[str, Any], precision: str) -> dict[str, Any] | None:
    """The row of ``precision`` on the same backend (TensorRT INT8 vs TensorRT FP16): across
    backends a precision comparison would mostly measure the backends."""
    return next((r for r in rows if r["precision"] == precision and r["backend"] == row["backend"]), None)


def int8_verdicts(cell: dict[str, Any]) -> list[dict[str, str]]:
    """INT8 against FP16 (or FP32 when there is no FP16): speed from per-round ratios of
    the same rounds, accuracy as label agreement with the reference."""
    out = []
    where = f"{cell['size']} batch {cell['batch']}"
    for row in cell["rows"]:
        if row["precision"] != "int8":
            continue
        base = _pair(cell["rows"], row, "fp16") or _pair(cell["rows"], row, "fp32")
        if base is None:
            continue
        gain = median_ratio(base["samples_ms"], row["samples_ms"])
        a_int8, a_base = _agreement(row), _agreement(base)
        loss = None if a_int8 is None or a_base is None else a_base - a_int8
        label = base["precision"].upper()
        facts = f"{row['name']} vs {base['name']} at {where}: {gain:.2f}x" + (
            f", label agreement {a_int8:.2f}% vs {a_base:.2f}%" if loss is not None else "")
        problems = []
        if gain < INT8_MIN_GAIN:
            problems.append(f"INT8 is less than {INT8_MIN_GAIN - 1:.0%} faster than {label}")
        if loss is not None and loss > INT8_MAX_AGREEMENT_LOSS:
            problems.append(f"INT8 loses more than {INT8_MAX_AGREEMENT_LOSS:g} point of label agreement")
        if problems:
            out.append(_v("verdict", f"{'; '.join(problems)} ({facts}): recommend {label}"))
        else:
            out.append(_v("verdict", f"INT8 pays off over {label} ({facts})"))
    return out


#: the automatic backend choice may be this much slower than the fastest row before a warning
AUTO_TOLERANCE = 0.05


def _agree_text(row: dict[str, Any]) -> str:
    a = _agreement(row)
    return f"label agreement with the reference {a:.2f}%" if a is not None else "the reference itself"


#: per-round speed-ups below 1 + TIE do not make a row "the fastest" on a shared machine
TIE = 0.03


def _fastest(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The row with the best worst-case per-round speed-up over the others, so the verdict never
    calls a row fastest while printing a ratio below 1 against another (medians of latencies and
    medians of per-round ratios can disagree by a few percent)."""
    def speedup(row: dict[str, Any], other: dict[str, Any]) -> float:
        x = median_ratio(other["samples_ms"], row["samples_ms"])
        return 1.0 if x is None else x

    def worst(row: dict[str, Any]) -> float:
        return min((speedup(row, o) for o in rows if o is not row), default=1.0)

    return max(rows, key=lambda r: (worst(r), -r["latency_ms"]["median"]))


def backend_verdicts(cell: dict[str, Any]) -> list[dict[str, str]]:
    """Per artifact timed with several backends: the fastest one on this machine (per-round
    ratios against the others), with its agreement; and whether the automatic choice came
    within AUTO_TOLERANCE of it and of onnxruntime."""
    out = []
    where = f"{cell['size']} batch {cell['batch']}"
    by_artifact: dict[str, list[dict[str, Any]]] = {}
    for row in cell["rows"]:
        if row["backend"] != "torch" and row.get("artifact"):
            by_artifact.setdefault(row["artifact"], []).append(row)
    for artifact, rows in by_artifact.items():
        if len(rows) < 2:
            continue
        timed = [r for r in rows if r["backend"] != "auto"] or rows
        fastest = _fastest(timed)
        others = [r for r in timed if r is not fastest]
        speedups = [(median_ratio(o["samples_ms"], fastest["samples_ms"]) or 1.0, o) for o in others]
        ratios = ", ".join(f"{x:.2f}x {o['name']}" for x, o in speedups)
        name = artifact.rsplit("/", 1)[-1]
        ties = [o["name"] for x, o in speedups if x < 1 + TIE]
        tie = f"; within {TIE:.0%} of {', '.join(ties)}: a tie on this machine" if ties else ""
        out.append(_v("verdict", f"fastest for {name} at {where}: {fastest['name']} ({fastest['latency_ms']['median']:.1f}"
                      f" ms; {ratios}){tie}, {_agree_text(fastest)}"))
        for auto in (r for r in rows if r["backend"] == "auto"):
            same = [r for r in timed if r["precision"] == auto["precision"]] or timed  # bf16 hints are opt-in
            best = min(same, key=lambda r: r["latency_ms"]["median"])
            vs_best = median_ratio(auto["samples_ms"], best["samples_ms"])  # > 1: auto is slower
            ort = next((r for r in rows if r["backend"] == "onnxruntime"), None)
            vs_ort = median_ratio(auto["samples_ms"], ort["samples_ms"]) if ort else None
            text = (f"{auto['name']} at {where}: {vs_best:.2f}x the time of the fastest {auto['precision']} row "
                    f"({best['name']})" + (f", {vs_ort:.2f}x onnxruntime's" if vs_ort is not None else ""))
            guard = auto.get("choice_agreement")
            if guard:
                text += ("; excluded for computing other labels than the file's exact arithmetic on the probe "
                         "frames: " + ", ".join(f"{k} {v:.2f}%" for k, v in guard.items()))
            slower = vs_ort is not None and vs_ort > 1 + AUTO_TOLERANCE
            out.append(_v("warning" if slower else "note", text + ("; the automatic choice is slower than "
                          "onnxruntime here (a choice cached from a noisier probe? delete backend-choice.json in the "
                          "cache folder)" if slower else "")))
    return out


def precision_offer_verdicts(cell: dict[str, Any], flags: list[str]) -> list[dict[str, str]]:
    """Per artifact: the OpenVINO bf16 row that is the best free speed-up over the same
    artifact's exact-precision OpenVINO row (same pre/post form), when it keeps
    ``precision_offer.MIN_AGREEMENT`` % label agreement with the reference (the bench's
    fidelity, computed by compare.py); nothing on CPUs without bf16 (see ``verdicts``)."""
    from ..runtime.precision_offer import BENCH_OPTION, OPTION, Measurement, offer

    where = f"{cell['size']} batch {cell['batch']}"
    best: dict[str, tuple[float, str]] = {}
    for row in cell["rows"]:
        if row["backend"] != "openvino" or not row["precision"].endswith("bf16"):
            continue
        exact_precision = row["precision"][: -len("+bf16")] if "+" in row["precision"] else "fp32"
        host = "host-pre/post" in row["name"]
        base = next((r for r in cell["rows"] if r["backend"] == "openvino" and r["artifact"] == row["artifact"]
                     and r["precision"] in (exact_precision, "fp16" if exact_precision == "fp32" else "")
                     and ("host-pre/post" in r["name"]) == host), None)
        agreement = _agreement(row)
        if base is None or agreement is None:
            continue
        ratio = median_ratio(base["samples_ms"], row["samples_ms"])
        m = Measurement(base["latency_ms"]["median"], row["latency_ms"]["median"], agreement, 0, ratio)
        text = offer(flags, m, base["precision"], option=f"{BENCH_OPTION} here, {OPTION} in Segmenter")
        key = row["artifact"] or row["name"]
        if text and (key not in best or m.gain > best[key][0]):
            best[key] = (m.gain, f"{row['name']} vs {base['name']} at {where}: {text}")
    return [_v("verdict", text) for _, text in best.values()]


def row_warnings(cell: dict[str, Any]) -> list[dict[str, str]]:
    out = []
    where = f"{cell['size']} batch {cell['batch']}"
    for row in cell["rows"]:
        overhead = row.get("segmenter_overhead_pct")
        if overhead is not None and overhead > SEGMENTER_MAX_OVERHEAD_PCT:
            stages = row["stages_ms"]
            worst = max(("preprocess", "postprocess"), key=lambda k: stages.get(k) or 0.0)
            hint = (" (export with --argmax to move the argmax into the graph, or use output_size='network')"
                    if worst == "postprocess" else " (frames larger than the network input are resized on the host)")
            out.append(_v("warning", f"{row['name']} at {where}: Segmenter end to end is {overhead:.1f}% over the raw "
                          f"backend call (> {SEGMENTER_MAX_OVERHEAD_PCT:g}%); largest host stage: {worst} "
                          f"{stages.get(worst) or 0:.1f} ms{hint}"))
        agreement = _agreement(row)
        floor = {"fp32": 99.9, "fp16": 99.0}.get(row["precision"])
        if row["role"] != "reference" and agreement is not None and floor is not None and agreement < floor:
            out.append(_v("warning", f"{row['name']} at {where}: label agreement with the reference is only "
                          f"{agreement:.2f}% (expected >= {floor}% for {row['precision'].upper()})"))
        cv = row["latency_ms"]["std"] / row["latency_ms"]["mean"] if row["latency_ms"]["mean"] else 0.0
        if cv > NOISY_CV:
            out.append(_v("warning", f"{row['name']} at {where}: noisy timings (std is {cv:.0%} of the mean); "
                          "rerun on an idle machine before quoting them"))
        if not row.get("warmup_stable", True):
            out.append(_v("warning", f"{row['name']} at {where}: latency did not settle during "
                          f"{row['warmup_runs']} warm-up calls"))
        wins = row.get("windows") or []
        if len(wins) >= 2 and wins[-1]["median_ms"] > 1.10 * wins[0]["median_ms"]:
            out.append(_v("warning", f"{row['name']} at {where}: FPS fell from {wins[0]['fps']:.1f} to "
                          f"{wins[-1]['fps']:.1f} over the run (thermal throttling or clock changes?)"))
    return out


def verdicts(result: dict[str, Any]) -> list[dict[str, str]]:
    out = [_v("note", n) for n in result["protocol"]["reference"].get("notes", [])]
    system = result["protocol"]["system"]
    jetson = system.get("jetson") or {}
    out += [_v("warning", w) for w in jetson.get("warnings", [])]
    load, cpus = system.get("load_average"), system["cpu"].get("usable_cpus") or 1
    if load and load[0] > BUSY_LOAD * cpus:
        out.append(_v("warning", f"the machine was busy when the run started (load average {load[0]:.1f} on {cpus} "
                      "CPUs, including anything run just before): other work competes for the cores"))
    flags = system["cpu"].get("isa_flags") or []
    openvino = any(r["backend"] == "openvino" for c in result["cells"] for r in c["rows"])
    bf16_rows = any(r["backend"] == "openvino" and r["precision"].endswith("bf16")
                    for c in result["cells"] for r in c["rows"])
    if openvino and not bf16_rows:
        from ..machine import has_bf16
        from ..runtime.precision_offer import BENCH_OPTION, MIN_AGREEMENT, no_offer_reason

        out.append(_v("note", no_offer_reason(flags) if not has_bf16(flags) else
                      f"this CPU has bf16 in hardware: add {BENCH_OPTION} to see whether OpenVINO's bf16 keeps "
                      f">= {MIN_AGREEMENT}% label agreement at a lower latency"))
    for cell in result["cells"]:
        out += int8_verdicts(cell)
        out += backend_verdicts(cell)
        out += precision_offer_verdicts(cell, flags)
        out += row_warnings(cell)
    return out
