"""Checkpoint -> verified ONNX, written atomically, with a JSON verification report."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import ExportError
from ..fileio import atomic_output, check_output_path, write_text_atomic
from ..model.checkpoint import LoadedCheckpoint
from .onnx import ExportOptions, export_onnx
from .verify import Tolerance, VerificationReport, verification_frames, verify_onnx

Log = Callable[[str], None]


@dataclass
class ExportOutcome:
    onnx_path: Path
    spec: object
    report: VerificationReport | None = None
    report_path: Path | None = None
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0


def report_path_for(onnx_path: Path) -> Path:
    """``model.onnx`` -> ``model.verify.json``."""
    return onnx_path.with_name(onnx_path.stem + ".verify.json")


def export_loaded(
    loaded: LoadedCheckpoint,
    output: str | Path,
    options: ExportOptions = ExportOptions(),
    verify: bool = True,
    tolerance: Tolerance = Tolerance(),
    verify_images: str | Path | None = None,
    log: Log = lambda msg: None,
) -> ExportOutcome:
    """Export a loaded model; verify it before it replaces anything at ``output``."""
    output = check_output_path(output)
    start = time.perf_counter()
    notes = list(loaded.notes)
    with atomic_output(output) as tmp:
        log(f"exporting to ONNX (opset {options.opset}, {options.size[0]}x{options.size[1]})")
        result = export_onnx(loaded.model, loaded.spec, tmp, options)
        for note in result.notes:
            log(f"  {note}")
        rule = result.spec.upsample
        if rule is not None:
            log(f"  class scores at 1/{result.spec.output_stride} of the input; the head's bilinear upsample "
                f"(align_corners={rule.align_corners}) is in the ModelSpec and the runtime's labels are the full "
                "upsample's (--full-size-output keeps it in the graph)")
        notes += result.notes
        report = None
        report_file = None
        if verify:
            frames = verification_frames(result.spec, images=verify_images)
            log(f"verifying against PyTorch on {len(frames)} inputs")
            report = verify_onnx(tmp, loaded.model, result.spec, frames, tolerance)
            report_file = report_path_for(output)
            payload = {"onnx": str(output), **report.to_dict()}
            write_text_atomic(report_file, json.dumps(payload, indent=2) + "\n")
            if not report.passed:
                raise ExportError(
                    f"verification failed ({report.failures[0]}); {output} was not written. "
                    f"Details in {report_file}; --no-verify skips the check"
                )
    return ExportOutcome(output, result.spec, report, report_file, notes, time.perf_counter() - start)
