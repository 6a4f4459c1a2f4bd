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
    return miou_from_confusion(confusion_matrix(pred, target, num_classes, ignore_index))


def miou_from_confusion(cm: np.ndarray) -> float:
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


class ComparisonAccumulator:
    """``compare_outputs`` over many images without keeping them: counts, a confusion
    matrix and running maxima, so large logits never pile up in memory."""

    def __init__(self, num_label_classes: int) -> None:
        self.num_label_classes = num_label_classes
        self.equal = 0
        self.pixels = 0
        self.confusion = np.zeros((num_label_classes, num_label_classes), dtype=np.int64)
        self.max_abs_diff: float | None = None
        self.max_abs_reference: float | None = None
        self._abs_diff_sum = 0.0
        self._logit_count = 0
        self._logits_everywhere = True

    def add(
        self,
        ref_labels: np.ndarray,
        cand_labels: np.ndarray,
        ref_logits: np.ndarray | None = None,
        cand_logits: np.ndarray | None = None,
    ) -> None:
        if ref_labels.shape != cand_labels.shape:
            raise ValueError(f"label maps differ in shape: {ref_labels.shape} vs {cand_labels.shape}")
        self.equal += int(np.count_nonzero(ref_labels == cand_labels))
        self.pixels += int(ref_labels.size)
        self.confusion += confusion_matrix(cand_labels, ref_labels, self.num_label_classes, ignore_index=None)
        if ref_logits is None or cand_logits is None:
            self._logits_everywhere = False
            return
        diff = np.abs(ref_logits.astype(np.float32) - cand_logits.astype(np.float32))
        peak = float(np.abs(ref_logits).max())
        self.max_abs_diff = max(self.max_abs_diff or 0.0, float(diff.max()))
        self.max_abs_reference = max(self.max_abs_reference or 0.0, peak)
        self._abs_diff_sum += float(diff.sum(dtype=np.float64))
        self._logit_count += diff.size

    def result(self) -> OutputComparison:
        if self.pixels == 0:
            raise ValueError("nothing compared")
        result = OutputComparison(
            label_agreement=100.0 * self.equal / self.pixels,
            miou_vs_reference=miou_from_confusion(self.confusion),
            pixels=self.pixels,
        )
        if self._logits_everywhere and self._logit_count:
            result.max_abs_diff = self.max_abs_diff
            result.mean_abs_diff = self._abs_diff_sum / self._logit_count
            result.max_abs_reference = self.max_abs_reference
        return result


def compare_outputs(
    ref_labels: np.ndarray,
    cand_labels: np.ndarray,
    num_label_classes: int,
    ref_logits: np.ndarray | None = None,
    cand_logits: np.ndarray | None = None,
) -> OutputComparison:
    """Compare label maps (and logits where both sides have them)."""
    acc = ComparisonAccumulator(num_label_classes)
    acc.add(ref_labels, cand_labels, ref_logits, cand_logits)
    return acc.result()
