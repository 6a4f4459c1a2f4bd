"""How far FP16 / INT8 models are from their FP32 source, on held-out frames.

Every model runs in onnxruntime on the CPU over the same preprocessed frames. Logits come
from the network's logits tensor (added as an extra output where the graph ends in ArgMax),
labels from the model's own output. Figures come from the one comparator (``compare.py``), so
"agreement", "mIoU" and "max |diff|" mean the same everywhere in the project.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
import onnx

from ..compare import Comparator, Tolerance, compare
from ..metrics import mean_iou
from ..runtime import processing
from ..spec import ModelSpec
from .data import calibration_batches
from .graph import ensure_node_names, network_body, with_outputs
from .ranges import inference_session


class ModelRunner:
    """A CPU session that returns (labels, logits) for preprocessed batches."""

    def __init__(self, model: onnx.ModelProto, spec: ModelSpec, logits_name: str) -> None:
        self.spec = spec
        self.session = inference_session(with_outputs(model, [logits_name]))
        self.input = self.session.get_inputs()[0].name
        self.names = [self.session.get_outputs()[0].name]
        if logits_name != self.names[0]:
            self.names.append(logits_name)

    def run(self, batch: np.ndarray, real: int) -> tuple[np.ndarray, np.ndarray]:
        outputs = self.session.run(self.names, {self.input: batch})
        labels = processing.labels_from_output(outputs[0][:real], self.spec)
        logits = outputs[-1][:real].astype(np.float32, copy=False)
        return labels, logits


def logits_tensor(model: onnx.ModelProto) -> str:
    ensure_node_names(model.graph)
    return network_body(model.graph).logits


@dataclass
class Fidelity:
    """One candidate against the FP32 reference (and optionally ground truth)."""

    label_agreement: float
    miou_vs_fp32: float
    max_abs_logit_diff: float
    mean_abs_logit_diff: float
    frames: int
    pixels: int
    miou_vs_ground_truth: float | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def compare_models(
    reference: onnx.ModelProto,
    candidates: dict[str, onnx.ModelProto],
    spec: ModelSpec,
    frames: Sequence[np.ndarray],
    batch: int = 1,
    ground_truth: Sequence[np.ndarray] | None = None,
) -> tuple[dict[str, Fidelity], float | None]:
    """Each candidate against ``reference`` on ``frames``: one pass, all models per batch,
    each batch streamed into the one comparator (``compare.Comparator``), so no logits are
    kept (labels only where ground truth asks for them). Also returns the reference's mIoU
    against ground truth."""
    logits_name = logits_tensor(reference)
    ref_runner = ModelRunner(reference, spec, logits_name)
    runners = {name: ModelRunner(model, spec, logits_name) for name, model in candidates.items()}
    classes = max(2, spec.num_classes)
    # the figures, not a verdict: the callers (INT8 fallback, the report) apply their thresholds
    comparators = {name: Comparator(classes, Tolerance(min_agreement=0.0), name) for name in candidates}
    kept: dict[str, list[np.ndarray]] = {name: [] for name in ["", *candidates]} if ground_truth is not None else {}
    for array, real in calibration_batches(frames, spec, batch):
        reference_outputs = ref_runner.run(array, real)
        if kept:
            kept[""].append(reference_outputs[0])
        for name, runner in runners.items():
            outputs = runner.run(array, real)
            comparators[name].add(reference_outputs, outputs)
            if kept:
                kept[name].append(outputs[0])
    results = {}
    for name, comparator in comparators.items():
        found = comparator.result()
        results[name] = Fidelity(
            label_agreement=found.agreement,
            miou_vs_fp32=found.miou,
            max_abs_logit_diff=found.max_abs_diff,
            mean_abs_logit_diff=found.mean_abs_diff,
            frames=len(frames),
            pixels=found.pixels,
            miou_vs_ground_truth=None if not kept else ground_truth_miou(np.concatenate(kept[name]), ground_truth,
                                                                        classes),
        )
    ref_gt = None if not kept else ground_truth_miou(np.concatenate(kept[""]), ground_truth, classes)
    return results, ref_gt


def model_labels(model: onnx.ModelProto, spec: ModelSpec, frames: Sequence[np.ndarray], batch: int = 1) -> np.ndarray:
    """The labels a model gives for ``frames`` (N, H, W)."""
    runner = ModelRunner(model, spec, model.graph.output[0].name)
    return np.concatenate([runner.run(array, real)[0] for array, real in calibration_batches(frames, spec, batch)])


def ground_truth_miou(labels: np.ndarray, ground_truth: Sequence[np.ndarray], classes: int) -> float:
    return mean_iou(labels, np.stack(list(ground_truth)), classes, ignore_index=255)


def agreement_with(
    candidate: onnx.ModelProto, spec: ModelSpec, frames: Sequence[np.ndarray], batch: int, ref_labels: np.ndarray
) -> float:
    """Label agreement (%) of ``candidate`` with reference labels (no logits needed): the
    comparator's figure, which the INT8 fallback steers by."""
    labels = model_labels(candidate, spec, frames, batch)
    return compare((ref_labels, None), (labels, None), Tolerance(min_agreement=0.0), "candidate",
                   num_classes=max(2, spec.num_classes)).agreement
