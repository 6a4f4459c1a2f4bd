"""Agreement between two models' outputs, and against ground-truth labels (NumPy only).

Used by export verification, the precision fidelity report and the benchmark, so every
"agreement" figure in this project means the same thing.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np


def label_agreement(a: np.ndarray, b: np.ndarray) -> float:
    """Percentage of pixels with the same label (0..100)."""
    if a.shape != b.shape:
        raise ValueError(f"label maps differ in shape: {a.shape} vs {b.shape}")
    return 100.0 * float(np.count_nonzero(a == b)) / a.size


def confusion_matrix(pred: np.ndarray, target: np.ndarray, num_classes: int, ignore_index: int | None = 255) -> np.ndarray:
    pred = pred.reshape(-1).astype(np.int64)
    target = target.reshape(-1).astype(np.int64)
    valid = (target >= 0) & (target < num_classes)
    if ignore_index is not None:
        valid &= target != ignore_index
    idx = target[valid] * num_classes + pred[valid]
    return np.bincount(idx, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def mean_iou(pred: np.ndarray, target: np.ndarray, num_classes: int, ignore_index: int | None = 255) -> float:
    """Mean IoU in percent over the classes present in either map (absent classes skipped).

    ``num_classes`` counts labels, so a binary model (one logit) has 2 label classes.
    """
    cm = confusion_matrix(pred, target, num_classes, ignore_index)
    inter = np.diag(cm).astype(np.float64)
    union = cm.sum(0) + cm.sum(1) - np.diag(cm)
    present = union > 0
    if not present.any():
        return 100.0
    return 100.0 * float(np.mean(inter[present] / union[present]))


@dataclass
class OutputComparison:
    """How far a candidate's output is from a reference's, on the same inputs."""

    label_agreement: float
    miou_vs_reference: float
    max_abs_diff: float | None = None  # None when either side only gives labels
    mean_abs_diff: float | None = None
    max_abs_reference: float | None = None
    pixels: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


def compare_outputs(
    ref_labels: np.ndarray,
    cand_labels: np.ndarray,
    num_label_classes: int,
    ref_logits: np.ndarray | None = None,
    cand_logits: np.ndarray | None = None,
) -> OutputComparison:
    """Compare label maps (and logits where both sides have them)."""
    result = OutputComparison(
        label_agreement=label_agreement(ref_labels, cand_labels),
        miou_vs_reference=mean_iou(cand_labels, ref_labels, num_label_classes, ignore_index=None),
        pixels=int(ref_labels.size),
    )
    if ref_logits is not None and cand_logits is not None:
        diff = np.abs(ref_logits.astype(np.float32) - cand_logits.astype(np.float32))
        result.max_abs_diff = float(diff.max())
        result.mean_abs_diff = float(diff.mean())
        result.max_abs_reference = float(np.abs(ref_logits).max())
    return result
