"""Verify an exported ONNX model against the PyTorch model it came from.

Both sides get the same frames through ``runtime.processing``: PyTorch the host-normalized
NCHW batch, onnxruntime whatever the artifact takes (normalized NCHW, or raw uint8 frames
for a fused-preprocessing graph). Outputs are compared as logits (max/mean abs diff) and as
label maps (agreement), at the export size and, for dynamic models, at another batch and
size too.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .. import compare
from ..compare import frame_source, random_frames  # noqa: F401 - random_frames: part of this module's API
from ..runtime import processing
from ..runtime.backends.onnxruntime import OnnxRuntimeBackend
from ..spec import ModelSpec


@dataclass(frozen=True)
class Tolerance:
    """Pass criteria: |diff| <= abs + rel * max|logit|, and label agreement >= min_agreement %."""

    abs: float = 1e-3
    rel: float = 1e-4
    min_agreement: float = 99.9

    def allowed(self, max_abs_logit: float) -> float:
        return self.abs + self.rel * max_abs_logit


@dataclass
class VerificationReport:
    passed: bool
    tolerance: dict[str, float]
    max_abs_diff: float | None
    label_agreement: float
    cases: list[dict[str, Any]] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def summary(self) -> str:
        diff = "n/a (labels only)" if self.max_abs_diff is None else f"{self.max_abs_diff:.3g}"
        verdict = "PASS" if self.passed else "FAIL"
        return (
            f"verification {verdict}: {len(self.cases)} cases, max |logit diff| {diff}, "
            f"min label agreement {self.label_agreement:.3f}%"
        )


def verification_frames(
    spec: ModelSpec,
    num_random: int = 2,
    seed: int = 0,
    images: str | Path | None = None,
    num_samples: int = 2,
) -> list[tuple[str, np.ndarray]]:
    """Frames to verify on: seeded random ones, built-in sample photos, the user's images
    (the comparator's one frame source)."""
    return frame_source(spec.input_size, random=num_random, samples=num_samples, images=images, seed=seed)


def _cases(spec: ModelSpec, fixed_batch: int | None = None) -> list[tuple[tuple[int, int], int]]:
    """(size, batch) combinations to verify: the export shape plus the dynamic axes."""
    h, w = spec.input_size
    base = fixed_batch or 1
    cases = [((h, w), base)]
    if "batch" in spec.dynamic_axes:
        cases.append(((h, w), 2))
    if {"height", "width"} & set(spec.dynamic_axes):
        step = max(spec.size_divisor, 32)
        h2 = max(step, (h * 3 // 4) // step * step) if "height" in spec.dynamic_axes else h
        w2 = max(step, (w * 3 // 4) // step * step) if "width" in spec.dynamic_axes else w
        if (h2, w2) == (h, w):
            h2, w2 = h + step * ("height" in spec.dynamic_axes), w + step * ("width" in spec.dynamic_axes)
        cases.append(((h2, w2), base))
    return cases


def torch_reference(model: nn.Module, spec: ModelSpec, frames: list[np.ndarray], size_hw) -> np.ndarray:
    """PyTorch logits for frames, preprocessed on the host by ``runtime.processing``."""
    host_spec = spec.replace(input_layout="NCHW", output_kind="logits")
    batch = processing.preprocess(frames, host_spec, size_hw)
    with torch.no_grad():
        return model(torch.from_numpy(batch)).numpy()


def verify_onnx(
    onnx_path: str | Path,
    model: nn.Module,
    spec: ModelSpec,
    frames: list[tuple[str, np.ndarray]],
    tolerance: Tolerance = Tolerance(),
) -> VerificationReport:
    """Run the ONNX model and the PyTorch model on ``frames`` and compare."""
    label_classes = max(2, spec.num_classes)
    cases: list[dict[str, Any]] = []
    failures: list[str] = []
    with OnnxRuntimeBackend(onnx_path, device="cpu") as backend:
        fixed_batch = backend.inputs[0].shape[0] if "batch" not in spec.dynamic_axes else None
        if fixed_batch is not None and len(frames) < fixed_batch:  # enough inputs for one full batch
            frames = frames + [(f"{name}~{i}", f) for i, (name, f) in enumerate(frames * fixed_batch)]
        for size_hw, batch in _cases(spec, fixed_batch):
            for start in range(0, len(frames), batch):
                chunk = frames[start : start + batch]
                if len(chunk) < batch:
                    break
                names = "+".join(name for name, _ in chunk)
                images = [f for _, f in chunk]
                ref = torch_reference(model, spec, images, size_hw)
                out = backend.infer(processing.preprocess(images, spec, size_hw))
                expected_hw = tuple(-(-d // spec.output_stride) for d in size_hw)  # ceil: the network's own rounding
                if out.shape[0] != batch or tuple(out.shape[-2:]) != expected_hw:
                    failures.append(f"{names}: output shape {out.shape} for input {batch}x{size_hw}")
                    continue
                # A low-resolution artifact is judged by what the runtime makes of it: its full-size
                # labels (the exact label stage) and upsampled scores, against the PyTorch
                # model's own full head, so a wrong label stage or rule fails here.
                cand_logits = processing.scores_from_output(out, spec, size_hw) if spec.output_kind == "logits" else None
                ref_spec = spec.replace(output_kind="logits", upsample=None)
                result = compare.compare(
                    (processing.labels_from_output(ref, ref_spec), ref),
                    (processing.labels_from_output(out, spec, size_hw), cand_logits),
                    compare.Tolerance(min_agreement=tolerance.min_agreement, max_abs=tolerance.abs, rel=tolerance.rel),
                    name=f"{names} at {size_hw[0]}x{size_hw[1]}", num_classes=label_classes)
                case = {"input": names, "batch": batch, "size": list(size_hw),
                        "label_agreement": result.agreement, "miou_vs_reference": result.miou,
                        "max_abs_diff": result.max_abs_diff, "mean_abs_diff": result.mean_abs_diff,
                        "max_abs_reference": result.max_abs_reference, "pixels": result.pixels}
                if result.allowed_abs_diff is not None:
                    case["allowed_abs_diff"] = result.allowed_abs_diff
                if not result.passed:
                    failures.append(f"{result.name}: {result.why}")
                cases.append(case)
    diffs = [c["max_abs_diff"] for c in cases if c["max_abs_diff"] is not None]
    return VerificationReport(
        passed=not failures and bool(cases),
        tolerance=asdict(tolerance),
        max_abs_diff=max(diffs) if diffs else None,
        label_agreement=min((c["label_agreement"] for c in cases), default=0.0),
        cases=cases,
        failures=failures or ([] if cases else ["no verification inputs"]),
    )
