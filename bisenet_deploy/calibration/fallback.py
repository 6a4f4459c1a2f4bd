"""``--int8-fallback auto``: keep the convolutions whose INT8 rounding costs most in FP32.

Sensitivity is measured, one layer at a time: the INT8 model with just that convolution
kept in FP32, against the FP32 labels. Then layers are moved back to FP32 greedily, most
helpful first, re-measuring the whole model after each and keeping a layer only if the
whole model improves, until the target agreement is met (or no helpful layer is left).
Measured on the search frames (calibration frames), so the held-out
frames of the fidelity report stay an independent check.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import onnx
from tqdm import tqdm

from ..spec import ModelSpec
from .fidelity import agreement_with, model_labels
from .int8 import DEFAULT_WEIGHT_BITS, plan_int8, quantize_int8
from .ranges import TensorRanges

REASON = "kept in FP32 by --int8-fallback auto (agreement +{gain:.3f} points when kept)"


@dataclass
class FallbackResult:
    fp32_convs: dict[str, str]
    baseline_agreement: float
    agreement: float
    target: float
    sensitivity: list[tuple[str, float]] = field(default_factory=list)  # (conv, gain)

    @property
    def met(self) -> bool:
        return self.agreement >= self.target

    def to_dict(self) -> dict:
        return {
            "target_agreement": self.target,
            "agreement_before": self.baseline_agreement,
            "agreement_after": self.agreement,
            "met": self.met,
            "kept_fp32": [c for c, r in self.fp32_convs.items() if r.startswith("kept in FP32 by --int8-fallback")],
            "sensitivity": [{"conv": c, "agreement_gain": g} for c, g in self.sensitivity],
        }


def int8_fallback(
    model: onnx.ModelProto,
    ranges: TensorRanges,
    spec: ModelSpec,
    frames: Sequence[np.ndarray],
    target: float,
    base_fp32: dict[str, str],
    batch: int = 1,
    weight_bits: int = DEFAULT_WEIGHT_BITS,
    log: Callable[[str], None] = lambda msg: None,
    progress: bool = True,
) -> FallbackResult:
    """Grow ``base_fp32`` until the INT8 model agrees with FP32 on ``frames`` >= ``target`` %."""
    ref = model_labels(model, spec, frames, batch)

    def agreement(fp32: dict[str, str]) -> float:
        candidate = quantize_int8(model, plan_int8(model, fp32), ranges, weight_bits, check=False)
        return agreement_with(candidate, spec, frames, batch, ref)

    kept = dict(base_fp32)
    baseline = agreement(kept)
    result = FallbackResult(dict(kept), baseline, baseline, target)
    # The fallback chooses on calibration frames; the fidelity report measures on held-out
    # ones. Its own figures stay in the report (fidelity.json) so the console shows one
    # agreement figure per model, the held-out one.
    where = f"{len(frames)} calibration frames"
    if baseline >= target:
        log(f"INT8 fallback: the default placement meets the target {target}% on {where}; nothing more kept in FP32")
        return result
    convs = plan_int8(model, kept).convs
    gains = []
    for conv in tqdm(convs, desc="INT8 layer sensitivity", unit="layer", disable=not progress, leave=False):
        gains.append((conv, agreement({**kept, conv: ""}) - baseline))
    gains.sort(key=lambda item: -item[1])
    result.sensitivity = gains
    current = baseline
    for conv, gain in gains:
        if current >= target or gain <= 0:
            break
        trial = {**kept, conv: REASON.format(gain=gain)}
        measured = agreement(trial)
        # Layers interact: one that helped alone may not help on top of the others.
        if measured > current:
            kept, current = trial, measured
            log(f"INT8 fallback: {conv} -> FP32")
    result.fp32_convs, result.agreement = kept, current
    met = "meets" if current >= target else "still misses"
    log(f"INT8 fallback: {len(kept) - len(base_fp32)} more convolutions in FP32; the target {target}% {met} on {where}")
    return result
