"""Calibration thresholds: entropy, percentile, minmax and the growing histogram."""

import numpy as np
import pytest

from bisenet_deploy.calibration.ranges import BINS, MAX_BINS, AbsHistogram, entropy_amax, percentile_amax


def _hist(values):
    h = AbsHistogram()
    h.add(np.asarray(values, dtype=np.float32))
    return h.rebinned()


def test_entropy_threshold_of_a_relu_output():
    """Half-normal values, half of them exact zeros as after a ReLU: the threshold clips
    only the far tail, and the zeros do not move it (they would without special care)."""
    rng = np.random.default_rng(0)
    dense = np.abs(rng.standard_normal(200_000))
    relu = np.concatenate([dense, np.zeros(200_000)])
    plain, spiked = entropy_amax(*_hist(dense)), entropy_amax(*_hist(relu))
    assert spiked == pytest.approx(plain, rel=0.02)
    assert np.percentile(dense, 99.9) < plain < dense.max()


def test_entropy_matches_the_reference_loop():
    """The vectorized search against a direct loop over candidate edges (the algorithm as
    published: P clipped into its last bin, Q from the unclipped bins in 128 groups)."""
    rng = np.random.default_rng(1)
    values = np.abs(rng.standard_t(3, size=50_000))
    values[:10_000] = 0
    counts, edges = np.histogram(values, bins=700, range=(0, values.max()))
    width = edges[1]
    hist = counts.astype(float)
    hist[0] = hist[1]
    best, best_edge = np.inf, None
    for i in range(128, len(hist) + 1):
        p = hist[:i].copy()
        p[-1] += hist[i:].sum()
        starts = (np.arange(129) * i) // 128
        q = np.zeros(i)
        for a, b in zip(starts[:-1], starts[1:]):
            used = p[a:b] > 0
            if used.any():
                q[a:b] = np.where(used, hist[a:b].sum() / used.sum(), 0)
        m = p > 0
        if (q[m] == 0).any():
            continue
        kl = np.sum(p[m] / p.sum() * np.log((p[m] / p.sum()) / (q[m] / q.sum())))
        if kl < best:
            best, best_edge = kl, i
    assert entropy_amax(counts, width) == pytest.approx(best_edge * width)


def test_percentile_threshold():
    values = np.arange(1, 10_001, dtype=np.float32)  # |x| uniform on 1..10000
    counts, width = _hist(values)
    assert percentile_amax(counts, width, 99.0) == pytest.approx(9900, rel=2e-3)
    assert percentile_amax(counts, width, 100.0) == pytest.approx(10_000, rel=2e-3)


def test_histogram_grows_and_merges_without_losing_counts():
    h = AbsHistogram()
    h.add(np.zeros(10, np.float32))  # no width yet: zeros are kept aside
    h.add(np.linspace(0, 1, 1000, dtype=np.float32))
    assert len(h.counts) == BINS
    h.add(np.array([100.0], np.float32))  # 100x the first range: bins must merge
    assert len(h.counts) <= MAX_BINS and h.counts.sum() == 1011
    assert h.counts[0] >= 10 and h.width * len(h.counts) >= 100.0
    counts, width = h.rebinned()
    assert len(counts) <= BINS and counts.sum() == 1011 and width * len(counts) >= 100.0
