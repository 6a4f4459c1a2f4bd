"""Reports of a benchmark result: terminal table, JSON, CSV, markdown (plot: ``plot.py``).

Every output starts from the same protocol header, so no figure travels without the
conditions it was measured under.
"""

from __future__ import annotations

import csv
import io
import json
import textwrap
from pathlib import Path
from typing import Any

from ..fileio import write_text_atomic

#: list-valued row fields that only the JSON keeps
_LIST_FIELDS = ("samples_ms", "windows")


# --- formatting helpers ---------------------------------------------------------------------


def _f(value: Any, digits: int = 1, suffix: str = "") -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.{digits}f}{suffix}"
    return f"{value}{suffix}"


def _table(headers: list[str], rows: list[list[str]], markdown: bool) -> list[str]:
    if markdown:
        lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---:" if i else "---" for i in range(len(headers))) + "|"]
        return lines + ["| " + " | ".join(r) + " |" for r in rows]
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    fmt = lambda cells: "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))  # noqa: E731
    return [fmt(headers), fmt(["-" * w for w in widths])] + [fmt(r) for r in rows]


# --- protocol -------------------------------------------------------------------------------


def protocol_lines(result: dict[str, Any]) -> list[tuple[str, str]]:
    p = result["protocol"]
    system, settings = p["system"], p["settings"]
    cpu = system["cpu"]
    flags = f", {' '.join(cpu['isa_flags'])}" if cpu.get("isa_flags") else ""
    device = (f"CPU {cpu['model']} ({cpu['usable_cpus']} usable of {cpu['logical_cpus']} logical CPUs, "
              f"{cpu['machine']}{flags})")
    if system.get("memory_total_mb"):
        device += f", {system['memory_total_mb'] / 1024:.0f} GB RAM"
    gpu = system.get("gpu")
    if gpu:
        device += (f"; GPU {gpu.get('name')}, driver {gpu.get('driver', '-')}, CUDA "
                   f"{gpu.get('cuda_runtime') or gpu.get('cuda_torch') or '-'}, compute {gpu.get('compute_capability', '-')}")
    else:
        device += "; no GPU"
    versions = system["versions"]
    keys = ("bisenet_deploy", "python", "torch", "onnxruntime", "openvino", "tensorrt", "tensorrt_rtx", "numpy",
            "opencv")
    lines = [
        ("device", device),
        ("versions", ", ".join(f"{k} {versions[k]}" for k in keys if versions.get(k))),
    ]
    jetson = system.get("jetson")
    if jetson:
        mode = jetson.get("power_mode") or {}
        gpu_f = jetson.get("gpu_frequency") or {}
        temps = ", ".join(f"{k} {v:.0f}C" for k, v in list((jetson.get("temperatures_c") or {}).items())[:6])
        lines.append(("jetson", f"{jetson.get('model')}, {jetson.get('l4t')}, power mode {mode.get('name')} "
                      f"({mode.get('id')}), clocks locked: {_f(jetson.get('clocks_locked'))}, GPU "
                      f"{_f(gpu_f.get('cur_mhz'), 0)} MHz (max {_f(gpu_f.get('max_mhz'), 0)}); {temps}"))
    run = f"{settings['iterations']} rounds" if settings["iterations"] else f"{settings['duration_s']:g} s per cell"
    lines += [
        ("settings", f"device {settings['device']}, threads {settings['threads']}, sizes {', '.join(settings['sizes'])}, "
                     f"batch {', '.join(map(str, settings['batches']))}, frames at the {settings['frame_size']}"),
        ("backends", "; ".join(_backend_line(c) for c in result["contestants"])),
        ("warm-up", settings["warmup"]),
        ("timing", f"{run}; {settings['order']}"),
        ("timed", p["timed"]),
        ("reference", f"{p['reference']['name'] or 'none'}" + "".join(f"; {n}" for n in p["reference"]["notes"])),
        ("fidelity", f"{settings['images']}, label maps at the network resolution vs the reference"),
    ]
    lines.append(("memory", "host MB = RSS added by loading the backend + peak RSS above the level before its first "
                  "calls; GPU MB = device memory in use after its first calls minus before loading; process peak RSS "
                  f"{_f(result.get('peak_rss_mb'), 0)} MB"))
    peak = p.get("cpu_peak_gflops")
    peaks = p.get("cpu_peaks") or {}
    if peak or peaks:
        parts = [f"{k} {v['gops']:.0f} GOP/s ({v['formula']})" for k, v in peaks.items()]
        if peak:
            parts.append(f"measured sgemm {peak['value']:.0f} GFLOP/s fp32 ({peak['source']})")
        lines.append(("cpu peak", "; ".join(parts) + ". 'of peak' compares a row with the peak of its own "
                      "precision (fp16 rows: fp32); FLOPs are counted as direct convolutions "
                      f"({p['flops']['method']}), so a backend that computes fewer (Winograd) or a clock above the "
                      "visible one shows more than 100%"))
    return lines


def _backend_line(c: dict[str, Any]) -> str:
    """``ort int8 = onnxruntime CPUExecutionProvider, int8, threads 2, graph opt all, model.int8.onnx``."""
    if c.get("error"):
        return f"{c['name']} = not run ({c['error']})"
    info = c.get("backend") or {}
    parts = [info.get("backend", c["kind"])]
    if info.get("providers"):
        parts.append(info["providers"][0])
    parts.append(f"{info.get('device', '?')}, {c['precision']}")
    if c["kind"] == "torch":
        parts.append("eager, eval, inference_mode")
        parts += [k for k in ("fp16", "channels_last", "cuda_graph") if info.get(k)]
    if info.get("threads") is not None:
        parts.append(f"threads {info['threads']}")
    if info.get("optimization"):
        parts.append(f"graph optimization {info['optimization']}")
    if c.get("path"):
        parts.append(Path(c["path"]).name)
    return f"{c['name']} = " + ", ".join(parts)


# --- per-cell tables ------------------------------------------------------------------------


def _peak_cell(row: dict[str, Any]) -> str:
    if row.get("peak_fraction") is None:
        return "-"
    return f"{100 * row['peak_fraction']:.0f}% {row.get('peak_precision') or ''}".strip()


def cell_tables(cell: dict[str, Any], markdown: bool = False) -> list[str]:
    rows = cell["rows"]
    lines = []
    lat = [[r["name"] + (" (ref)" if r["role"] == "reference" else ""), r["precision"], r["device"],
            *(_f(r["latency_ms"][k], 1) for k in ("median", "mean", "p90", "p99", "min", "max", "std")),
            _f(r["fps"], 2), _f(r["throughput_fps"], 2), _f(r["speedup"], 2, "x"), _f(r["speedup_infer"], 2, "x")]
           for r in rows]
    lines += _table(["backend", "prec", "device", "median", "mean", "p90", "p99", "min", "max", "std", "FPS",
                     "thru FPS", "speed-up", "speed-up infer"], lat, markdown)
    lines.append("")
    stages = [[r["name"], *(_f(r["stages_ms"].get(k), 1) for k in ("preprocess", "h2d", "compute", "d2h",
                                                                    "postprocess", "infer", "e2e")),
               _f(r["segmenter_overhead_pct"], 1, "%"), _f(r["gflops_achieved"], 0),
               _peak_cell(r)] for r in rows]
    lines += _table(["stages (median ms)", "pre", "h2d", "compute", "d2h", "post", "infer (raw)", "e2e",
                     "Segmenter overhead", "GFLOP/s", "of peak"], stages, markdown)
    lines.append("")
    fid = []
    with_truth = any((r.get("fidelity") or {}).get("miou_vs_labels") is not None for r in rows)
    for r in rows:
        f = r.get("fidelity") or {}
        truth = [_f(f.get("miou_vs_labels"), 2)] if with_truth else []
        fid.append([r["name"], _f(f.get("label_agreement"), 3), _f(f.get("miou_vs_reference"), 2), *truth,
                    _f(f.get("max_abs_diff"), 4), _f(r["file_mb"], 1), _f(r["host_mb"], 0), _f(r["gpu_mb"], 0),
                    _f(r["build_s"], 1), f"{r['warmup_runs']}{'' if r['warmup_stable'] else ' (unsettled)'}"])
    lines += _table(["fidelity & resources", "agree %", "mIoU %", *(["mIoU vs labels %"] if with_truth else []),
                     "max abs diff", "file MB", "host MB", "GPU MB", "build s", "warm-up calls"], fid, markdown)
    if any(r.get("windows") for r in rows):
        lines.append("")
        starts = sorted({w["start_s"] for r in rows for w in r.get("windows") or []})
        by_start = [{w["start_s"]: w["fps"] for w in r.get("windows") or []} for r in rows]
        lines += _table(["FPS over time"] + [f"{s:g}s" for s in starts],
                        [[r["name"]] + [_f(fps.get(s), 1) for s in starts] for r, fps in zip(rows, by_start)], markdown)
    if not any(r["role"] == "reference" for r in rows):
        lines += ["", f"the reference does not run at {cell['size']} batch {cell['batch']}: no speed-ups or fidelity here"]
    if cell.get("skipped"):
        lines.append("")
        lines += [f"- not run at {cell['size']} batch {cell['batch']}: {s['name']}"
                  + (f" ({s['artifact']})" if s.get("artifact") and s["artifact"] not in s["name"] else "")
                  + f": {s['reason']}" for s in cell["skipped"]]
    if cell.get("gflop_source"):
        lines += ["", f"FLOPs: {cell['gflop_source']}"]  # a blank line first: in markdown, not a table row
    return lines


def _body(result: dict[str, Any], markdown: bool) -> list[str]:
    lines = []
    for cell in result["cells"]:
        title = f"{cell['size']}, batch {cell['batch']}" + (f" ({cell['rounds']} rounds)" if "rounds" in cell else "")
        lines += ["", f"### {title}" if markdown else f"== {title} ==", ""]
        lines += cell_tables(cell, markdown) if cell["rows"] else ["(nothing could run here)"]
    probe = result.get("postprocess_probe")
    if probe:
        lines += ["", f"host argmax over {probe['logits']} logits: np.argmax {probe['numpy_argmax_ms']:.1f} ms, "
                  f"processing.argmax_channels {probe['argmax_channels_ms']:.1f} ms; an in-graph argmax "
                  "(bisenet-export --argmax) leaves only the label upscale on the host"]
    if result.get("concurrency"):
        lines += ["", "### Served models under load" if markdown else "== served models under load ==", ""]
        rows = [[r["name"], str(r["clients"]), str(r["calls"]),
                 *(_f((r["latency_ms"] or {}).get(k), 1) for k in ("median", "p90", "p99")),
                 _f(r["throughput_fps"], 2), f"{r['inferences']}/{r['executions']}",
                 _f(r["requests_per_execution"], 2)] for r in result["concurrency"]]
        lines += _table(["served model", "clients", "calls", "median", "p90", "p99", "thru FPS",
                         "requests/executions", "batched"], rows, markdown)
        lines += ["", "latency of one call in ms; thru FPS = frames / wall time of the level; batched = requests "
                  "Triton merged into one model execution (dynamic batching)"]
    if result.get("not_run"):
        lines += ["", "### Not run" if markdown else "== not run ==", ""]
        lines += [f"- {n['name']}" + (f" ({Path(n['path']).name})" if n.get("path") and Path(n["path"]).name
                                       not in n["name"] else "") + f": {n['reason']}" for n in result["not_run"]]
    if result.get("verdicts"):
        lines += ["", "### Verdicts" if markdown else "== verdicts ==", ""]
        lines += [f"- {v['level']}: {v['text']}" for v in result["verdicts"]]
    if result["cells"] and any(c["rows"] for c in result["cells"]):
        lines += ["", "### Columns" if markdown else "== columns ==", ""]
        lines += [f"- {name}: {text}" for name, text in COLUMNS]
    return lines


#: What every column of the tables means (printed under them).
COLUMNS = (
    ("median, mean, p90, p99, min, max, std", "end-to-end latency of one timed call in ms (see 'timed')"),
    ("FPS", "frames per second at the median latency: batch / median"),
    ("thru FPS", "throughput over the timed calls: frames / total time of the calls"),
    ("speed-up", "end to end against the reference: median of per-round ratios (reference / this)"),
    ("speed-up infer", "the same for the raw backend call only (no pre/postprocessing)"),
    ("pre, post", "Segmenter preprocessing (resize, normalize, layout) and postprocessing (argmax, upscale)"),
    ("h2d, compute, d2h", "the backend's own split of its call (CUDA events on a GPU); on a CPU only compute"),
    ("infer (raw)", "the whole backend call, as the 'speed-up infer' column uses it"),
    ("Segmenter overhead", "end to end over the raw backend call, minus 1 (median of per-call ratios)"),
    ("GFLOP/s", "FLOPs of one call (counted from the ONNX graph) / median compute time"),
    ("of peak", "GFLOP/s over the theoretical peak of the row's own precision (fp32, bf16 or int8; see "
                "'cpu peak'): cores x clock x operations per cycle of the vector units its flags name"),
    ("agree %", "pixels whose label equals the reference's, on the fidelity images at the network resolution"),
    ("mIoU %", "mean IoU of the labels against the reference's labels"),
    ("mIoU vs labels %", "mean IoU against the ground-truth label maps (--labels)"),
    ("max abs diff", "largest |logit difference| to the reference (models with logits on both sides)"),
    ("file MB, host MB, GPU MB", "artifact size; memory added by loading and running it (see 'memory')"),
    ("build s", "TensorRT engine build time from its sidecar"),
    ("warm-up calls", "untimed calls until the median latency settled ('unsettled': it never did)"),
)


def format_terminal(result: dict[str, Any], width: int = 110) -> str:
    lines = ["bisenet-bench"]
    for key, value in protocol_lines(result):
        lines += textwrap.wrap(value, width=width, initial_indent=f"  {key:<10} ", subsequent_indent=" " * 13,
                               break_on_hyphens=False) or [f"  {key}"]
    return "\n".join(lines + _body(result, markdown=False)) + "\n"


def format_markdown(result: dict[str, Any]) -> str:
    lines = ["## bisenet-bench", "", f"`{result.get('command') or 'bisenet-bench'}` ({result['created']})", ""]
    lines += [f"- **{k}**: {v}" for k, v in protocol_lines(result)]
    return "\n".join(lines + _body(result, markdown=True)) + "\n"


# --- JSON and CSV ---------------------------------------------------------------------------


def to_json(result: dict[str, Any]) -> str:
    return json.dumps(result, indent=2, sort_keys=False, default=str) + "\n"


def load_json(path: str | Path) -> dict[str, Any]:
    return json.loads(Path(path).read_text())


def flat_rows(result: dict[str, Any]) -> list[dict[str, Any]]:
    """One flat dict per (cell, backend), all with the same keys, led by where and when it was
    measured (``machine_columns``): nested fields as ``a.b``
    (a missing group, like the reference's fidelity, gives None in each), lists left out."""
    rows = [(cell, row) for cell in result["cells"] for row in cell["rows"]]
    groups = {k for _, row in rows for k, v in row.items() if isinstance(v, dict)}
    machine = machine_columns(result)
    out = []
    for cell, row in rows:
        flat: dict[str, Any] = {**machine, "cell": f"{cell['size']} b{cell['batch']}"}
        for key, value in row.items():
            if key in _LIST_FIELDS or (key in groups and value is None):
                continue
            if isinstance(value, dict):
                flat.update({f"{key}.{k}": v for k, v in value.items() if not isinstance(v, (list, dict))})
            else:
                flat[key] = value
        out.append(flat)
    columns = list(dict.fromkeys(k for row in out for k in row))
    return [{k: row.get(k) for k in columns} for row in out]


def machine_columns(result: dict[str, Any]) -> dict[str, Any]:
    """Where and when a row was measured, on every CSV row, so files from several machines
    can be concatenated and still be told apart."""
    system = result["protocol"]["system"]
    cpu = system["cpu"]
    gpu = system.get("gpu") or {}
    versions = system.get("versions") or {}
    return {
        "created": result.get("created"),
        "host": system.get("hostname"),
        "cpu": cpu.get("model"),
        "cpu_flags": " ".join(cpu.get("isa_flags") or []),
        "usable_cpus": cpu.get("usable_cpus"),
        "gpu": gpu.get("name"),
        "threads": result["protocol"]["settings"].get("threads"),
        **{f"version.{k}": versions.get(k) for k in ("bisenet_deploy", "onnxruntime", "openvino", "torch", "tensorrt")},
    }


def to_csv(result: dict[str, Any]) -> str:
    rows = flat_rows(result)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]) if rows else ["cell"], lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: "" if v is None else repr(v) if isinstance(v, float) else v for k, v in row.items()})
    return buffer.getvalue()


def _parse(text: str) -> Any:
    if text == "":
        return None
    if text in ("True", "False"):
        return text == "True"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def read_csv(path: str | Path) -> list[dict[str, Any]]:
    """Rows of a CSV written by ``to_csv``, values typed back (numbers, booleans, None)."""
    with open(path, newline="") as f:
        return [{k: _parse(v) for k, v in row.items()} for row in csv.DictReader(f)]


def write_outputs(result: dict[str, Any], json_path=None, csv_path=None, markdown_path=None) -> list[Path]:
    """Write the requested files atomically; returns the paths written."""
    written = []
    for path, text in ((json_path, to_json), (csv_path, to_csv), (markdown_path, format_markdown)):
        if path is not None:
            written.append(write_text_atomic(path, text(result)))
    return written
