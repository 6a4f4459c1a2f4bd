"""Statistics of latency samples: summaries, stability, per-round ratios, windows over time.

Pure NumPy on plain lists of seconds, so every figure in a report can be recomputed from
the raw samples that the JSON keeps.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True)
class LatencyStats:
    """Summary of latencies, in milliseconds.

    Percentiles use linear interpolation between samples (NumPy's default), ``std`` is the
    sample standard deviation (ddof=1; 0 for a single sample).
    """

    count: int
    mean: float
    median: float
    p90: float
    p99: float
    min: float
    max: float
    std: float

    def to_dict(self) -> dict[str, float]:
        return asdict(self)

    @property
    def cv(self) -> float:
        """Coefficient of variation (std / mean): 0.02 is a quiet machine, 0.2 a noisy one."""
        return self.std / self.mean if self.mean else 0.0


def summarize(seconds: Sequence[float]) -> LatencyStats:
    """Summary in milliseconds of latencies given in seconds."""
    ms = np.asarray(seconds, dtype=np.float64) * 1e3
    if ms.size == 0:
        raise ValueError("no samples to summarize")
    p90, p99, median = np.percentile(ms, [90, 99, 50])
    return LatencyStats(
        count=int(ms.size),
        mean=float(ms.mean()),
        median=float(median),
        p90=float(p90),
        p99=float(p99),
        min=float(ms.min()),
        max=float(ms.max()),
        std=float(ms.std(ddof=1)) if ms.size > 1 else 0.0,
    )


def median_ms(seconds: Sequence[float]) -> float | None:
    return float(np.median(seconds) * 1e3) if len(seconds) else None


def fps(batch: int, latency_ms: float) -> float:
    """Frames per second when each call of ``latency_ms`` handles ``batch`` frames."""
    return 1e3 * batch / latency_ms if latency_ms > 0 else float("inf")


def is_stable(samples: Sequence[float], window: int, tolerance: float) -> bool:
    """Whether the median of the last ``window`` samples is within ``tolerance`` (relative)
    of the median of the ``window`` samples before them."""
    if window < 1 or len(samples) < 2 * window:
        return False
    last = float(np.median(samples[-window:]))
    previous = float(np.median(samples[-2 * window : -window]))
    return abs(last - previous) <= tolerance * previous


def median_ratio(numerators: Sequence[float], denominators: Sequence[float]) -> float | None:
    """Median of element-wise ratios (per-round speed-ups: reference time / candidate time).

    Both sides of a ratio come from the same round, so a slow spell of the machine cancels
    out instead of favouring whichever backend happened to run outside it.
    """
    n = min(len(numerators), len(denominators))
    if n == 0:
        return None
    num = np.asarray(numerators[:n], dtype=np.float64)
    den = np.asarray(denominators[:n], dtype=np.float64)
    return float(np.median(num / den))


def windows(
    timestamps: Sequence[float], seconds: Sequence[float], width: float, origin: float | None = None
) -> list[dict[str, float]]:
    """Split samples by the time they finished into windows of ``width`` seconds.

    Returns one entry per non-empty window: start/end (seconds since ``origin``, by
    default when the first sample started), sample count and median latency in ms.
    Thermal throttling shows up as a median that grows from window to window.
    """
    if width <= 0:
        raise ValueError("window width must be positive")
    if not timestamps:
        return []
    t = np.asarray(timestamps, dtype=np.float64)
    s = np.asarray(seconds, dtype=np.float64)
    origin = t[0] - s[0] if origin is None else origin
    index = np.floor((t - origin) / width).astype(int)
    out = []
    for k in np.unique(index):
        chosen = s[index == k]
        out.append(
            {
                "start_s": float(k * width),
                "end_s": float((k + 1) * width),
                "count": int(chosen.size),
                "median_ms": float(np.median(chosen) * 1e3),
            }
        )
    return out
