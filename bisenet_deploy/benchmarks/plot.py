"""PNG plot of a benchmark result: FPS vs input size per backend, latency distributions, and
FPS over time for sustained runs. matplotlib is optional (``bench`` extra)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..fileio import atomic_output


def matplotlib_missing() -> str | None:
    """Why no plot can be drawn here, or None."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return "matplotlib is not installed (pip install 'bisenet-deploy[bench]'); plot skipped"
    return None


def write_plot(result: dict[str, Any], path: str | Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cells = [c for c in result["cells"] if c["rows"]]
    sustained = any(r.get("windows") for c in cells for r in c["rows"])
    fig, axes = plt.subplots(1, 3 if sustained else 2, figsize=(16 if sustained else 12, 5), squeeze=False)
    ax_fps, ax_lat = axes[0][0], axes[0][1]

    # FPS vs input size: one line per backend and batch; fixed-size artifacts are points.
    series: dict[str, list[tuple[float, float, str]]] = {}
    for cell in cells:
        megapixels = cell["height"] * cell["width"] / 1e6
        for row in cell["rows"]:
            series.setdefault(f"{row['name']} b{cell['batch']}", []).append((megapixels, row["fps"], cell["size"]))
    ticks = sorted({(c["height"] * c["width"] / 1e6, c["size"]) for c in cells})
    if len(ticks) == 1:  # one size: a line would be a row of single points; bars compare them
        labels = list(series)
        values = [points[0][1] for points in series.values()]
        bars = ax_fps.barh(range(len(labels)), values, color=[f"C{i}" for i in range(len(labels))])
        ax_fps.bar_label(bars, fmt="%.1f", fontsize=8, padding=2)
        ax_fps.set_yticks(range(len(labels)), labels, fontsize=8)
        ax_fps.invert_yaxis()
        ax_fps.margins(x=0.15)
        ax_fps.set_xlabel("frames per second (end to end, median)")
        ax_fps.set_title(f"FPS at {ticks[0][1]}")
        ax_fps.grid(alpha=0.3, axis="x")
    else:
        for label, points in series.items():
            points.sort()
            ax_fps.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=label)
        ax_fps.set_xticks([t[0] for t in ticks], [t[1] for t in ticks])
        ax_fps.set_xlabel("input size (H x W)")
        ax_fps.set_ylabel("frames per second (end to end, median)")
        ax_fps.set_title("FPS vs input size")
        ax_fps.grid(alpha=0.3)
        ax_fps.legend(fontsize=8)

    # Latency distribution of every (cell, backend).
    data, labels = [], []
    for cell in cells:
        for row in cell["rows"]:
            data.append(row["samples_ms"])
            labels.append(f"{row['name']}\n{cell['size']} b{cell['batch']}")
    try:
        ax_lat.boxplot(data, orientation="horizontal", showfliers=True)
    except TypeError:  # matplotlib < 3.10
        ax_lat.boxplot(data, vert=False, showfliers=True)
    ax_lat.set_yticks(range(1, len(labels) + 1), labels, fontsize=7)
    ax_lat.set_xlabel("end-to-end latency per call (ms)")
    ax_lat.set_title("latency distribution")
    ax_lat.grid(alpha=0.3, axis="x")

    if sustained:
        ax_t = axes[0][2]
        for cell in cells:
            for row in cell["rows"]:
                wins = row.get("windows") or []
                ax_t.plot([w["end_s"] for w in wins], [w["fps"] for w in wins], marker=".",
                          label=f"{row['name']} {cell['size']} b{cell['batch']}")
        ax_t.set_xlabel("time (s)")
        ax_t.set_ylabel("FPS (median per window)")
        ax_t.set_title("sustained FPS over time")
        ax_t.grid(alpha=0.3)
        ax_t.legend(fontsize=7)

    device = result["protocol"]["system"]["cpu"]["model"]
    gpu = result["protocol"]["system"].get("gpu")
    if gpu:
        device = gpu.get("name") or device
    fig.suptitle(f"bisenet-bench on {device}, threads {result['protocol']['settings']['threads']}", fontsize=10)
    fig.tight_layout()
    with atomic_output(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    return Path(path)
