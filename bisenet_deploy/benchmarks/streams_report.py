"""The rate benchmark's table, JSON and plot (latency against offered load)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..fileio import atomic_output, write_text_atomic
from . import stream_ceiling


def _f(value: Any, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def format_table(result: dict[str, Any], markdown: bool = False) -> str:
    """One line per backend x way x N, then the pipeline/sync ratios."""
    head = ["backend", "mode", "streams", "rate Hz", "offered FPS", "delivered FPS", "drop %", "p50 ms", "p90 ms",
            "p99 ms", "max ms", "CPU %"]
    body = []
    for r in result["streams"]:
        lat = r["latency_ms"]
        mode = r["mode"] if r["mode"] == "sync" else f"pipeline/{r.get('pipeline_mode', '')}"
        rate = _f(r["rate_hz"]) + ("" if r.get("peak_found", True) else " (no peak)")
        name = r["backend"] if r.get("backend_used", r["backend"]) == r["backend"] else f"{r['backend']} ({r['backend_used']})"
        body.append([name, mode, str(r["streams"]), rate, _f(r["offered_fps"]), _f(r["delivered_fps"]),
                     _f(100 * r["drop_rate"]), _f(lat["p50"]), _f(lat["p90"]), _f(lat["p99"]), _f(lat["max"]),
                     _f(r["cpu_percent"], 0)])
    if markdown:
        lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        lines += ["| " + " | ".join(row) + " |" for row in body]
    else:
        widths = [max(len(x) for x in col) for col in zip(head, *body)]
        lines = ["  ".join(x.ljust(w) for x, w in zip(row, widths)).rstrip() for row in [head, *body]]
    lines.append("")
    for backend, ms in result["single_frame_ms"].items():
        lines.append(f"{backend}: one frame at a time, median {ms:.1f} ms")
    for text in ratio_lines(result):
        lines.append(text)
    for row in result.get("backend_ceiling", []):
        lines.append(stream_ceiling.format_line(row["backend"], row))
    lines.append(f"rate: {result['rate']} ({'highest per-stream rate with < ' + str(int(100 * result['max_drop_rate'])) + ' % drops' if result['rate'] == 'max' else 'Hz per stream'}); "
                 "latency: capture -> mask; CPU: process CPU time / wall time (100 % = one core)")
    return "\n".join(lines) + "\n"


def ratio_lines(result: dict[str, Any]) -> list[str]:
    """pipeline / sync delivered FPS and p99 latency per backend and N."""
    out = []
    sync = {(r["backend"], r["streams"]): r for r in result["streams"] if r["mode"] == "sync"}
    for r in result["streams"]:
        s = sync.get((r["backend"], r["streams"]))
        if r["mode"] != "pipeline" or s is None or not s["delivered_fps"]:
            continue
        fps = r["delivered_fps"] / s["delivered_fps"]
        p99 = (r["latency_ms"]["p99"] / s["latency_ms"]["p99"]) if s["latency_ms"]["p99"] and r["latency_ms"]["p99"] else None
        out.append(f"{r['backend']} x{r['streams']} pipeline/{r.get('pipeline_mode')}: {fps:.2f}x the sync FPS, "
                   f"p99 {_f(p99, 2)}x the sync p99")
    return out


def write_json(result: dict[str, Any], path: str | Path) -> Path:
    return write_text_atomic(path, json.dumps(result, indent=1, default=str) + "\n")


def write_plot(result: dict[str, Any], path: str | Path) -> Path:
    """p50 (solid) and p99 (dashed) latency against the total offered FPS, one colour per
    backend x way x N, every trial of the run (the rate search's steps included, not its probes)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .streams import PROBE_FPS

    series: dict[str, list[tuple[float, float, float]]] = {}
    for t in result["trials"]:
        if t["latency_ms"]["p50"] is None or abs(t["rate_hz"] * t["streams"] - PROBE_FPS) < 1e-6:
            continue  # the rate search's overload probes would squash the axis
        mode = t["mode"] if t["mode"] == "sync" else f"pipeline/{t.get('pipeline_mode')}"
        key = f"{t['backend']} {mode} x{t['streams']}"
        series.setdefault(key, []).append((t["offered_fps"], t["latency_ms"]["p50"], t["latency_ms"]["p99"]))
    fig, ax = plt.subplots(figsize=(9, 5.5))
    for i, (key, points) in enumerate(sorted(series.items())):
        points.sort()
        xs = [p[0] for p in points]
        ax.plot(xs, [p[1] for p in points], marker="o", color=f"C{i % 10}", label=f"{key} p50")
        ax.plot(xs, [p[2] for p in points], linestyle="--", marker=".", color=f"C{i % 10}", label=f"{key} p99")
    ax.set_xlabel("offered load (frames per second, all streams)")
    ax.set_ylabel("capture -> mask latency (ms)")
    ax.set_yscale("log")
    ax.set_title("Latency against offered load")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    with atomic_output(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)
    return Path(path)
