"""FP32 ONNX -> ``model.fp16.onnx`` / ``model.int8.onnx`` + ``model.fidelity.json``.

The one entry point the CLI calls (``make_precisions``). Steps: read the FP32 model and its
ModelSpec; decode calibration frames; measure activation ranges (or reuse the cache);
convert (FP16) / quantize (INT8, optionally with automatic FP32 fallback); record precision
and calibration provenance in the ONNX metadata; compare every result with FP32 on held-out
frames; write the models (atomically) and the report.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import onnx

from ..errors import ArtifactError, ExportError, UserError
from ..export.metadata import opset_of, read_metadata, set_metadata
from ..fileio import atomic_output, check_output_path, sha256_file, write_text_atomic
from ..spec import CALIBRATION_KEY, METADATA_KEY, PRECISION_KEY, VERSIONS_KEY, ModelSpec, SpecError
from ..versions import tool_versions
from .data import (
    CalibrationDataError,
    Frames,
    calibration_batches,
    calibration_frames,
    open_frame_source,
    preprocessing_key,
    read_frames,
    validation_set,
)
from .fallback import int8_fallback
from .fidelity import compare_models
from .fp16 import body_float_tensors, convert_fp16, fp16_summary, nodes_matching, overflow_nodes
from .graph import ensure_node_names, graph_sha256
from .int8 import DEFAULT_WEIGHT_BITS, default_fp32_convs, int8_summary, plan_int8, qdq_problems, quantize_int8
from .ranges import (
    CalibrationMethod,
    TensorRanges,
    cache_key,
    cache_path_for,
    collect_ranges,
    load_cached_ranges,
    save_ranges,
)

PRECISIONS = ("fp32", "fp16", "int8")
Log = Callable[[str], None]


@dataclass(frozen=True)
class PrecisionOptions:
    """What to make and from which data (CLI: ``bisenet-export --precision ...``)."""

    precisions: tuple[str, ...] = ("fp16", "int8")
    calib: Path | None = None  # folder / video / .npy; None: built-in sample photos
    calib_count: int = 64
    seed: int = 0
    method: CalibrationMethod = CalibrationMethod()
    use_cache: bool = True
    val_images: Path | None = None
    val_labels: Path | None = None
    val_count: int = 16
    int8_fallback: str = "none"  # "auto": keep sensitive convolutions in FP32
    int8_weight_bits: int = DEFAULT_WEIGHT_BITS
    target_agreement: float = 99.0
    fp16_keep: tuple[str, ...] = ()
    progress: bool = True
    # How the report and the models' provenance name the data, where its path says nothing
    # lasting (scenes generated into a temporary folder); None: the path.
    calib_description: str | None = None
    val_description: str | None = None


@dataclass
class PrecisionOutcome:
    paths: dict[str, Path] = field(default_factory=dict)
    report: dict = field(default_factory=dict)
    report_path: Path | None = None

    def lines(self) -> list[str]:
        out = []
        for precision in self.paths:  # this run's models (the report also keeps earlier ones)
            fid = self.report["models"][precision]["fidelity"]
            gt_miou = fid.get("miou_vs_ground_truth")
            gt = f", mIoU vs labels {gt_miou:.2f}%" if gt_miou is not None else ""
            out.append(
                f"{precision}: label agreement {fid['label_agreement']:.3f}%, mIoU vs FP32 {fid['miou_vs_fp32']:.2f}%, "
                f"max |logit diff| {fid['max_abs_logit_diff']:.3g} (mean {fid['mean_abs_logit_diff']:.3g}){gt} "
                f"-> {self.paths[precision]}"
            )
        return out


def precision_path(base: str | Path, precision: str) -> Path:
    """``model.onnx`` -> ``model.int8.onnx``."""
    base = Path(base)
    return base.with_name(f"{base.stem}.{precision}.onnx")


def fidelity_report_path(base: str | Path) -> Path:
    base = Path(base)
    return base.with_name(f"{base.stem}.fidelity.json")


def load_fp32_model(path: str | Path) -> tuple[onnx.ModelProto, ModelSpec]:
    """The FP32 model and its ModelSpec; clear errors for anything else."""
    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"ONNX model '{path}' not found")
    try:
        model = onnx.load(str(path))
    except Exception as exc:  # noqa: BLE001 - protobuf raises several types
        raise ArtifactError(f"'{path}' is not a readable ONNX model: {str(exc).strip().splitlines()[0]}") from None
    meta = read_metadata(model)
    if METADATA_KEY not in meta:
        raise ArtifactError(f"'{path}' carries no ModelSpec; export it with bisenet-export first")
    if meta.get(PRECISION_KEY, "fp32") != "fp32":
        raise ArtifactError(f"'{path}' is already reduced to {meta[PRECISION_KEY]}; start from the FP32 ONNX")
    try:
        spec = ModelSpec.from_json(meta[METADATA_KEY])
    except SpecError as exc:
        raise ArtifactError(f"'{path}' carries an unreadable ModelSpec: {exc}") from None
    ensure_node_names(model.graph)
    return model, spec


def _batch_size(model: onnx.ModelProto) -> int:
    dim = model.graph.input[0].type.tensor_type.shape.dim[0]
    return dim.dim_value if dim.HasField("dim_value") and dim.dim_value > 0 else 1


def _measure_ranges(
    model: onnx.ModelProto, spec: ModelSpec, frames: Frames, options: PrecisionOptions, cache: Path, log: Log
) -> tuple[TensorRanges, str]:
    """Activation ranges for every tensor INT8 might quantize and every tensor FP16 checks."""
    quantized = plan_int8(model, fp32_convs={}).tensors
    observed = body_float_tensors(model)
    key = cache_key(graph_sha256(model), frames.digest, preprocessing_key(spec), options.method, quantized + observed)
    if options.use_cache:
        ranges, why = load_cached_ranges(cache, key)
        log(why)
        if ranges is not None:
            return ranges, "reused"
    log(f"calibrating on {len(frames)} frames ({options.method.name})")
    batches = calibration_batches(frames.frames, spec, _batch_size(model))
    ranges = collect_ranges(model, quantized, observed, batches, options.method, len(frames), options.progress)
    if options.use_cache:
        save_ranges(cache, key, ranges, {**frames.provenance(), "method": options.method.key()})
    return ranges, "computed"


def _heldout(source, calib: Frames, spec: ModelSpec, options: PrecisionOptions, log: Log):
    """Validation frames: --val-images, else items of the calibration source it did not use,
    else the built-in sample photos; ground truth only with --val-labels."""
    size = spec.input_size
    if options.val_images is not None:
        val = validation_set(options.val_images, options.val_labels, options.val_count, size, options.progress)
        if options.val_description:
            val.frames.source = options.val_description
        return val.frames, val.labels, True
    seed, progress = options.seed + 1, options.progress
    frames = read_frames(source, options.val_count, size, seed, calib.used_items, progress, "validation")
    if frames.frames:
        return frames, None, True
    if options.calib is not None:
        samples = open_frame_source(None)
        frames = read_frames(samples, options.val_count, size, seed, progress=progress, what="validation")
        if frames.frames:
            log(f"note: calibration used every frame of {source.description}; the fidelity report uses "
                f"{len(frames)} built-in sample photos instead (give --val-images for frames like yours)")
            return frames, None, True
    log("note: no frames left that calibration did not use; fidelity is measured on calibration frames")
    return calib, None, False


def _stamp(model: onnx.ModelProto, precision: str, calibration: dict) -> None:
    versions = json.loads(read_metadata(model).get(VERSIONS_KEY, "{}") or "{}")
    versions.update(tool_versions("onnx", "onnxruntime"))
    set_metadata(
        model,
        {
            PRECISION_KEY: precision,
            CALIBRATION_KEY: json.dumps(calibration, sort_keys=True),
            VERSIONS_KEY: json.dumps(versions, sort_keys=True),
        },
    )


def make_precisions(
    fp32_path: str | Path,
    options: PrecisionOptions = PrecisionOptions(),
    output_base: str | Path | None = None,
    log: Log = lambda msg: None,
) -> PrecisionOutcome:
    """Write the requested reduced-precision models next to ``output_base`` (default: the
    FP32 model) and the fidelity report; returns paths and the report."""
    wanted = [p for p in options.precisions if p != "fp32"]
    unknown = set(options.precisions) - set(PRECISIONS)
    if unknown:
        raise UserError(f"unknown precision {sorted(unknown)}; choose from {', '.join(PRECISIONS)}")
    if options.int8_fallback not in ("none", "auto"):
        raise UserError(f"--int8-fallback must be none or auto, got {options.int8_fallback!r}")
    base = Path(output_base or fp32_path)
    outcome = PrecisionOutcome()
    if not wanted:
        return outcome
    paths = {p: check_output_path(precision_path(base, p)) for p in wanted}
    model, spec = load_fp32_model(fp32_path)
    fp32_sha = sha256_file(fp32_path)
    opset = opset_of(model)

    source = open_frame_source(options.calib)
    if options.calib_description:
        source.description = options.calib_description
    count = options.calib_count
    if options.calib is None:  # leave a third of the built-in photos for the fidelity check
        count = min(count, max(1, len(source.items) * 2 // 3))
        if count < options.calib_count:
            log(f"note: calibrating on {count} of the {len(source.items)} built-in sample photos (not "
                f"{options.calib_count}: a third is kept for the fidelity report); --calib DIR for your own frames")
    calib = calibration_frames(source, count, spec.input_size, options.seed, options.progress)
    skipped = f" ({calib.skipped} unreadable, skipped)" if calib.skipped else ""
    log(f"calibration data: {len(calib)} frames from {source.description}{skipped}")
    if options.calib is not None and len(calib) < count:
        log(f"note: --calib-count {count} asked for more frames than {source.description} holds; "
            f"calibrating on all {len(calib)}")
    ranges, cache_state = _measure_ranges(model, spec, calib, options, cache_path_for(base), log)
    # Provenance goes into the models; whether the cache served it is only for the report,
    # so the same inputs give byte-identical models either way.
    calibration = {**calib.provenance(), "method": options.method.key()}
    report: dict = {"fp32": str(fp32_path), "calibration": {**calibration, "cache": cache_state}, "models": {}}
    built: dict[str, onnx.ModelProto] = {}

    if "fp16" in wanted:
        keep = {**overflow_nodes(model, ranges.absmax), **nodes_matching(model, options.fp16_keep)}
        half = convert_fp16(model, keep)
        _stamp(half, "mixed" if keep else "fp16", {**calibration, "method": {"name": "absmax (FP16 overflow check)"}})
        built["fp16"] = half
        summary = fp16_summary(half)
        report["models"]["fp16"] = {"fp32_nodes": keep, **summary}
        log(f"FP16: {summary['fp16_node_count']} nodes in FP16, {len(keep)} kept in FP32")

    if "int8" in wanted:
        defaults = default_fp32_convs(model)
        fp32_convs = defaults
        fallback = None
        if options.int8_fallback == "auto":
            fallback = int8_fallback(
                model, ranges, spec, calib.frames[:8], options.target_agreement, fp32_convs,
                _batch_size(model), options.int8_weight_bits, log, options.progress,
            )
            fp32_convs = fallback.fp32_convs
        quantized = quantize_int8(model, plan_int8(model, fp32_convs), ranges, options.int8_weight_bits)
        problems = qdq_problems(quantized, opset)
        if problems:
            raise ExportError(f"INT8 model breaks a TensorRT Q/DQ rule: {problems[0]}")
        extra = len(fp32_convs) > len(defaults)
        _stamp(quantized, "mixed" if extra else "int8", {**calibration, "weight_bits": options.int8_weight_bits})
        built["int8"] = quantized
        summary = int8_summary(quantized)
        report["models"]["int8"] = {"fp32_convs": fp32_convs, **summary}
        if fallback is not None:
            report["models"]["int8"]["fallback"] = fallback.to_dict()
        log(f"INT8: {summary['int8_conv_count']} convolutions in INT8, {summary['fp32_conv_count']} in FP32")

    val_frames, gt, held_out = _heldout(source, calib, spec, options, log)
    log(f"comparing with FP32 on {len(val_frames)} {'held-out ' if held_out else ''}frames")
    results, ref_gt = compare_models(model, built, spec, val_frames.frames, _batch_size(model), gt)
    report["validation"] = {**val_frames.provenance(), "held_out": held_out, "ground_truth": gt is not None}
    if ref_gt is not None:
        report["fp32_miou_vs_ground_truth"] = ref_gt
    for precision, proto in built.items():
        with atomic_output(paths[precision]) as tmp:
            onnx.save_model(proto, str(tmp))
        outcome.paths[precision] = paths[precision]
        report["models"][precision] = {
            "path": str(paths[precision]),
            "precision": read_metadata(proto)[PRECISION_KEY],
            "fidelity": results[precision].to_dict(),
            **report["models"][precision],
        }
        # Each record carries the data it was measured on: a later run may use other frames.
        report["models"][precision].update(validation=report["validation"], calibration=report["calibration"],
                                           fp32_sha256=fp32_sha)
    report["fp32_sha256"] = fp32_sha
    report_path = fidelity_report_path(base)
    report["models"] = {**earlier_records(report_path, fp32_sha, set(built)), **report["models"]}
    outcome.report = report
    outcome.report_path = write_text_atomic(report_path, json.dumps(report, indent=2) + "\n")
    return outcome


def earlier_records(report_path: Path, fp32_sha: str, rebuilt: set[str]) -> dict[str, dict]:
    """The records of an earlier report that still hold: precisions not rebuilt now, whose
    model file is still there and was made from the same FP32 model (an ``--precision int8``
    run keeps the FP16 record of an earlier ``--precision fp16`` run)."""
    try:
        earlier = json.loads(report_path.read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(earlier, dict) or not isinstance(earlier.get("models"), dict):
        return {}
    kept = {}
    for precision, record in earlier["models"].items():
        if precision in rebuilt or not isinstance(record, dict):
            continue
        source = record.get("fp32_sha256") or earlier.get("fp32_sha256")
        path = record.get("path")
        if source != fp32_sha or not path or not (Path(path).is_file() or (report_path.parent / Path(path).name).is_file()):
            continue
        kept[precision] = {"validation": earlier.get("validation"), "calibration": earlier.get("calibration"),
                           **record}
    return kept


__all__ = [
    "PRECISIONS",
    "CalibrationDataError",
    "PrecisionOptions",
    "PrecisionOutcome",
    "make_precisions",
    "precision_path",
]
