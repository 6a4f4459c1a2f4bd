"""``bisenet-export``: PyTorch checkpoint -> verified ONNX model (+ FP16 / INT8 copies)."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from ..errors import UserError
from .common import HelpFormatter, choices_list, cli_entry, size_arg

PROG = "bisenet-export"

EXAMPLES = """\
examples:
  bisenet-export model.pth                      # -> model.onnx, verified against PyTorch
  bisenet-export model.pth -o out/seg.onnx --size 720x1280
  bisenet-export model.pth --dynamic batch,height,width
  bisenet-export model.pth --argmax --fuse-preprocess   # uint8 BGR frames in, int32 labels out
  bisenet-export --demo                          # built-in demo model, no checkpoint needed
  bisenet-export their.pth --arch bisenet_v1 --trust-checkpoint
  bisenet-export model.pth --precision fp32,fp16,int8 --calib frames/   # + model.fp16.onnx, model.int8.onnx
  bisenet-export model.onnx --precision int8 --calib clip.mp4 --val-images val/img --val-labels val/lbl
"""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=PROG,
        description="Export a BiSeNet checkpoint to a verified ONNX model.",
        epilog=EXAMPLES,
        formatter_class=HelpFormatter,
    )
    p.add_argument("checkpoint", nargs="?", type=Path, help="PyTorch checkpoint (.pth/.pt), or an exported .onnx with --precision")
    p.add_argument("-o", "--output", type=Path, help="output .onnx path (default: next to the checkpoint)")
    p.add_argument("--demo", action="store_true", help="export the built-in demo model instead of a checkpoint")

    g = p.add_argument_group("model")
    g.add_argument("--arch", help="architecture family, overriding auto-detection")
    g.add_argument(
        "--trust-checkpoint",
        action="store_true",
        help="fully unpickle the checkpoint (runs code inside it; only for files you trust)",
    )

    g = p.add_argument_group("graph")
    g.add_argument("--size", type=size_arg, help="input HxW (default: the model's own, 512x1024 for BiSeNet V1)")
    g.add_argument("--batch", type=int, default=1, help="batch size (fixed unless --dynamic includes batch)")
    g.add_argument(
        "--dynamic",
        type=choices_list(("batch", "height", "width")),
        default=(),
        help="axes left dynamic, comma-separated: batch,height,width",
    )
    g.add_argument("--opset", type=int, default=17, help="ONNX opset (TensorRT 8.6 / JetPack 6.0 parse <= 17)")
    g.add_argument("--argmax", action="store_true", help="compute int32 labels in the graph (output 'labels')")
    g.add_argument(
        "--fuse-preprocess",
        action="store_true",
        help="graph takes uint8 NHWC frames and normalizes them itself",
    )
    g.add_argument("--frame-order", choices=("BGR", "RGB"), default="BGR", help="frame channel order for --fuse-preprocess")
    g.add_argument("--no-simplify", action="store_true", help="skip onnxslim simplification")

    g = p.add_argument_group("verification")
    g.add_argument("--no-verify", action="store_true", help="skip the comparison with PyTorch")
    g.add_argument("--verify-images", type=Path, help="folder of real images to verify on as well")
    g.add_argument("--atol", type=float, default=1e-3, help="allowed max |logit diff| (absolute part)")
    g.add_argument("--rtol", type=float, default=1e-4, help="allowed max |logit diff| per unit of max |logit|")
    g.add_argument("--min-agreement", type=float, default=99.9, help="minimum label agreement in percent")

    g = p.add_argument_group("precision (FP16 / INT8 ONNX beside the FP32 model)")
    g.add_argument(
        "--precision",
        type=choices_list(("fp32", "fp16", "int8")),
        default=("fp32",),
        help="models to write, comma-separated: fp32,fp16,int8 (-> model.onnx, model.fp16.onnx, model.int8.onnx)",
    )
    g.add_argument("--calib", type=Path, help="calibration data: image folder, video or .npy uint8 frames (default: built-in photos)")
    g.add_argument("--calib-count", type=int, default=64, help="calibration frames (a seeded random subset)")
    g.add_argument("--calib-method", choices=("minmax", "entropy", "percentile"), default="entropy", help="INT8 range method")
    g.add_argument("--percentile", type=float, default=99.99, help="percentile for --calib-method percentile")
    g.add_argument("--calib-seed", type=int, default=0, help="seed of the calibration subset")
    g.add_argument("--no-calib-cache", action="store_true", help="recalibrate even if model.calib.json matches")
    g.add_argument("--val-images", type=Path, help="held-out images for the fidelity report (default: unused calibration items)")
    g.add_argument("--val-labels", type=Path, help="ground-truth label maps for --val-images (same names, PNG class ids)")
    g.add_argument("--val-count", type=int, default=16, help="held-out frames in the fidelity report")
    g.add_argument("--int8-fallback", choices=("none", "auto"), default="none", help="auto: keep the most sensitive convolutions in FP32")
    g.add_argument("--int8-target", type=float, default=99.0, help="label agreement (%%) --int8-fallback auto aims for")
    g.add_argument("--fp16-keep", type=lambda t: tuple(x for x in t.split(",") if x), default=(), help="op types or node names kept in FP32 in the FP16 model")
    p.add_argument("-q", "--quiet", action="store_true", help="print only the result line")
    return p


def _precision_options(args: argparse.Namespace):
    from ..calibration.precision import PrecisionOptions
    from ..calibration.ranges import CalibrationMethod

    return PrecisionOptions(
        precisions=args.precision,
        calib=args.calib,
        calib_count=args.calib_count,
        seed=args.calib_seed,
        method=CalibrationMethod(args.calib_method, args.percentile),
        use_cache=not args.no_calib_cache,
        val_images=args.val_images,
        val_labels=args.val_labels,
        val_count=args.val_count,
        int8_fallback=args.int8_fallback,
        target_agreement=args.int8_target,
        fp16_keep=args.fp16_keep,
        progress=not args.quiet,
    )


def _log(quiet: bool):
    start = time.perf_counter()

    def log(msg: str) -> None:
        if not quiet:
            print(f"[{time.perf_counter() - start:6.1f}s] {msg}", flush=True)

    return log


@cli_entry(PROG)
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    log = _log(args.quiet)
    if args.demo == (args.checkpoint is not None):
        raise UserError("give a checkpoint path or --demo (one of them)")
    if args.batch < 1:
        raise UserError("--batch must be >= 1")
    if args.verify_images is not None and not args.verify_images.is_dir():
        raise UserError(f"--verify-images '{args.verify_images}' is not a folder")
    reduced = [p for p in args.precision if p != "fp32"]
    from_onnx = args.checkpoint is not None and args.checkpoint.suffix.lower() == ".onnx"
    if from_onnx and not reduced:
        raise UserError(
            f"'{args.checkpoint}' is already an ONNX model; give the PyTorch checkpoint to export, "
            "or --precision fp16,int8 to make reduced-precision copies of it"
        )
    if reduced:
        from ..calibration.data import open_frame_source

        if args.calib_count < 1 or args.val_count < 1:
            raise UserError("--calib-count and --val-count must be >= 1")
        if args.val_labels is not None and args.val_images is None:
            raise UserError("--val-labels needs --val-images")
        open_frame_source(args.calib)  # a missing or empty source fails now, not after the export
    if from_onnx:
        return _precision_copies(args.checkpoint, args.output or args.checkpoint, args, log)

    # torch is imported here, not at module import, so `--help` stays instant.
    from ..export.onnx import ExportOptions
    from ..export.pipeline import export_loaded
    from ..export.verify import Tolerance
    from ..fileio import check_output_path
    from ..model.checkpoint import load_checkpoint
    from ..model.demo import demo_model

    if args.demo:
        output = args.output or Path("bisenet_demo.onnx")
        check_output_path(output)
        log("building the demo model")
        loaded = demo_model()
    else:
        output = args.output or args.checkpoint.with_suffix(".onnx")
        check_output_path(output)
        log(f"loading {args.checkpoint}")
        loaded = load_checkpoint(args.checkpoint, arch=args.arch, trust=args.trust_checkpoint)
    for note in loaded.notes:
        log(f"  {note}")

    size = args.size or loaded.spec.input_size
    divisor = loaded.spec.size_divisor
    if size[0] % divisor or size[1] % divisor:
        raise UserError(f"--size {size[0]}x{size[1]}: this architecture needs sides that are multiples of {divisor}")
    options = ExportOptions(
        size=tuple(size),
        batch=args.batch,
        dynamic=args.dynamic,
        opset=args.opset,
        argmax=args.argmax,
        fuse_preprocess=args.fuse_preprocess,
        frame_color_order=args.frame_order,
        simplify=not args.no_simplify,
    )
    tolerance = Tolerance(abs=args.atol, rel=args.rtol, min_agreement=args.min_agreement)
    outcome = export_loaded(
        loaded,
        output,
        options,
        verify=not args.no_verify,
        tolerance=tolerance,
        verify_images=args.verify_images,
        log=log,
    )
    spec = outcome.spec
    mb = outcome.onnx_path.stat().st_size / 1e6
    h, w = spec.input_size
    inp = f"{args.batch}x{h}x{w}x3 uint8" if spec.input_layout == "NHWC_UINT8" else f"{args.batch}x3x{h}x{w} float32"
    out = "labels int32" if spec.output_kind == "labels" else f"logits {spec.num_classes} classes"
    dyn = f", dynamic {','.join(spec.dynamic_axes)}" if spec.dynamic_axes else ""
    print(f"wrote {outcome.onnx_path} ({mb:.1f} MB, opset {args.opset}, input {inp}, output {out}{dyn})")
    if outcome.report is not None:
        print(f"{outcome.report.summary()} -> {outcome.report_path}")
    else:
        print("verification skipped (--no-verify)")
    if "UNTRAINED" in str(spec.extra.get("weights", "")):
        print(f"note: {spec.extra['weights']}")
    if reduced:
        return _precision_copies(outcome.onnx_path, outcome.onnx_path, args, log)
    return 0


def _precision_copies(fp32_path: Path, base: Path, args: argparse.Namespace, log) -> int:
    from ..calibration.precision import make_precisions

    result = make_precisions(fp32_path, _precision_options(args), output_base=base, log=log)
    for line in result.lines():
        print(line)
    print(f"fidelity report -> {result.report_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
