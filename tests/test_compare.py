"""The one comparator (``compare.py``): each field of a Comparison holds what its name says."""

from __future__ import annotations

import numpy as np
import pytest

from bisenet_deploy.compare import Comparator, Tolerance, compare


def _outputs(seed: int, shift: float = 0.0):
    logits = np.random.default_rng(seed).normal(0, 1, (2, 3, 8, 16)).astype(np.float32) + shift
    return logits.argmax(1), logits


def test_a_comparison_names_its_figures():
    ref = _outputs(0)
    cand = (ref[0].copy(), ref[1] + 0.01)
    cand[0][0, :4] = (cand[0][0, :4] + 1) % 3  # 64 of 256 pixels differ
    tol = Tolerance(min_agreement=70.0, max_abs=0.005, rel=0.001)
    result = compare(ref, cand, tol, "c", num_classes=3)
    assert result.agreement == pytest.approx(100 * (1 - 64 / 256))
    assert isinstance(result.miou, float) and 0 < result.miou < 100
    assert result.max_abs_reference == pytest.approx(float(np.abs(ref[1]).max()))
    assert result.allowed_abs_diff == pytest.approx(0.005 + 0.001 * result.max_abs_reference)
    assert result.tolerance == {"min_agreement": 70.0, "max_abs": 0.005, "rel": 0.001, "mean_abs": None, "tie": 0.0}
    assert result.max_abs_diff == pytest.approx(0.01, abs=1e-5)
    assert not result.passed and "max |logit diff|" in result.why and "label agreement" not in result.why


def test_streamed_frames_give_the_figures_of_one_call():
    ref, cand = _outputs(1), _outputs(2)
    whole = compare(ref, cand, Tolerance(min_agreement=0.0), num_classes=3)
    streamed = Comparator(3, Tolerance(min_agreement=0.0))
    for i in range(2):
        streamed.add((ref[0][i:i + 1], ref[1][i:i + 1]), (cand[0][i:i + 1], cand[1][i:i + 1]))
    parts = streamed.result()
    assert parts.agreement == pytest.approx(whole.agreement) and parts.miou == pytest.approx(whole.miou)
    assert parts.max_abs_diff == pytest.approx(whole.max_abs_diff) and parts.passed
