"""``bisenet-export``: PyTorch checkpoint -> verified ONNX model (-> FP16 / INT8 ONNX, -> TensorRT engine)."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from ..errors import UserError
from .common import (
    HelpFormatter,
    Parser,
    choices_list,
    cli_entry,
    given_flags,
    nonnegative_float,
    percentile,
    positive_int,
    set_quiet,
    size_arg,
)
from .engine_args import EXAMPLES as ENGINE_EXAMPLES
from .engine_args import add_engine_arguments, build_engines_from_args, check_engine_args
from .precision_args import EXAMPLES as PRECISION_EXAMPLES
from .precision_args import add_precision_arguments, check_precision_args, make_precisions_from_args, reduced_precisions

PROG = "bisenet-export"

EXAMPLES = """\
examples:
  bisenet-export model.pth                      # -> model.onnx, verified against PyTorch
  bisenet-export model.pth -o out/seg.onnx --size 720x1280
  bisenet-export model.pth --dynamic batch,height,width
  bisenet-export model.pth --argmax --fuse-preprocess   # uint8 BGR frames in, int32 labels out
  bisenet-export model.pth --full-size-output   # scores at the input size (default: at 1/8, labels exact)
  bisenet-export --demo                          # built-in demo model, no checkpoint needed
  bisenet-export their.pth --arch bisenet_v1 --trust-checkpoint
  bisenet-export 79999_iter.pth                  # face-parsing.PyTorch, detected from the weights
  bisenet-export epoch-last.pth --size 512x1024  # TorchSeg (the paper's code): R18/R101/X39 and .speed
""" + PRECISION_EXAMPLES + ENGINE_EXAMPLES


def build_parser() -> argparse.ArgumentParser:
    p = Parser(
        prog=PROG,
        description="Export a BiSeNet checkpoint to a verified ONNX model.",
        epilog=EXAMPLES,
        formatter_class=HelpFormatter,
    )
    p.add_argument(
        "checkpoint", nargs="?", type=Path,
        help="PyTorch checkpoint (.pth/.pt), or an .onnx model with --precision or --engine",
    )
    p.add_argument(
        "-o",
        "--output",
        type=Path,
        help="output .onnx path (default: next to the checkpoint); for an .onnx input, the .engine path "
        "(--engine) or the name the FP16/INT8 copies are named after (--precision)",
    )
    p.add_argument("--demo", action="store_true",
                   help="export the built-in demo model instead of a checkpoint (writes bisenet_demo.onnx unless -o)")

    g = p.add_argument_group("model")
    g.add_argument(
        "--arch",
        help="architecture family, overriding auto-detection: bisenet_v1, ooooverflow, "
        "coincheung_v1, coincheung_v2, face_parsing, torchseg",
    )
    g.add_argument("--variant", metavar="NAME",
                   help="configuration the weights cannot tell, e.g. X39.speed for a TorchSeg Xception-39 "
                   "trained with its speed head (X39 and X39.speed have identical weights)")
    g.add_argument("--native-resolution", action="store_true",
                   help="TorchSeg .speed models: keep the network's 1/8 scores instead of resizing them to the input "
                   "in the graph as its eval.py does (faster; the runtime upsamples the labels)")
    g.add_argument(
        "--trust-checkpoint",
        action="store_true",
        help="fully unpickle the checkpoint (runs code inside it; only for files you trust)",
    )

    g = p.add_argument_group("graph")
    g.add_argument("--size", type=size_arg, help="input HxW (default: the model's own, 512x1024 for BiSeNet V1)")
    g.add_argument("--batch", type=positive_int, default=1, help="batch size (fixed unless --dynamic includes batch)")
    g.add_argument(
        "--dynamic",
        type=choices_list(("batch", "height", "width")),
        default=(),
        help="axes left dynamic, comma-separated: batch,height,width",
    )
    g.add_argument("--opset", type=positive_int, default=17, help="ONNX opset (TensorRT 8.6 / JetPack 6.0 parse <= 17)")
    g.add_argument("--argmax", action="store_true",
                   help="compute int32 labels in the graph (output 'labels'; the graph keeps its full-size head)")
    g.add_argument("--full-size-output", action="store_true",
                   help="keep the head's upsampling in the graph: class scores at the input size (default: at the "
                        "network's output stride, 1/8, with the upsampling rule in the ModelSpec; 64x fewer score bytes, "
                        "same labels through bisenet-deploy's runtime)")
    g.add_argument(
        "--fuse-preprocess",
        action="store_true",
        help="graph takes uint8 NHWC frames and normalizes them itself",
    )
    g.add_argument("--frame-order", choices=("BGR", "RGB"),
                   help="frame channel order for --fuse-preprocess (default: BGR, as OpenCV reads frames)%(default).0s")
    g.add_argument("--no-simplify", action="store_true", help="skip onnxslim simplification")

    g = p.add_argument_group("verification")
    g.add_argument("--no-verify", action="store_true", help="skip the comparison with PyTorch")
    g.add_argument("--verify-images", type=Path, help="folder of real images to verify on as well")
    g.add_argument("--atol", type=nonnegative_float, default=1e-3, help="allowed max |logit diff| (absolute part)")
    g.add_argument("--rtol", type=nonnegative_float, default=1e-4, help="allowed max |logit diff| per unit of max |logit|")
    g.add_argument("--min-agreement", type=percentile, default=99.9, help="minimum label agreement in percent")
    add_precision_arguments(p)
    add_engine_arguments(p)
    p.add_argument("-q", "--quiet", action="store_true", help="print only the result line")
    return p


def _log(quiet: bool):
    start = time.perf_counter()

    def log(msg: str) -> None:
        if msg.startswith(("note:", "warning:")):  # said even with -q: they change what the run means
            print(f"{PROG}: {msg}", file=sys.stderr, flush=True)
        elif not quiet:
            print(f"[{time.perf_counter() - start:6.1f}s] {msg}", flush=True)

    return log


#: Options (dests) that shape the export of a checkpoint; an ONNX input ignores them.
_EXPORT_ONLY = ("size", "dynamic", "batch", "opset", "argmax", "full_size_output", "fuse_preprocess", "frame_order",
                "no_simplify", "no_verify", "verify_images", "atol", "rtol", "min_agreement", "arch", "trust_checkpoint",
                "variant", "native_resolution")


@cli_entry(PROG, trust_option="--trust-checkpoint")
def main(argv: list[str] | None = None) -> int:
    args, given = build_parser().parse_given(argv)
    set_quiet(args.quiet)
    log = _log(args.quiet)
    if args.demo == (args.checkpoint is not None):
        raise UserError("give a checkpoint path or --demo (one of them)")
    if args.batch < 1:
        raise UserError("--batch must be >= 1")
    if args.demo:
        about_a_file = given_flags(given, ("arch", "variant", "native_resolution", "trust_checkpoint"))
        if about_a_file:
            raise UserError(f"{', '.join(about_a_file)} describe{'s' if len(about_a_file) == 1 else ''} a checkpoint "
                            "file; --demo builds the demo model, which has none")
    if "frame_order" in given and not args.fuse_preprocess:
        raise UserError("--frame-order sets the channel order of the frames a --fuse-preprocess graph takes; "
                        "without it the runtime takes BGR frames (convert RGB ones) or add --fuse-preprocess")
    if args.no_verify:
        unused = given_flags(given, ("verify_images", "atol", "rtol", "min_agreement"))
        if unused:
            raise UserError(f"{', '.join(unused)} set{'s' if len(unused) == 1 else ''} how the export is verified; "
                            "--no-verify skips the verification: give one or the other")
    if args.native_resolution and args.full_size_output:
        raise UserError("--native-resolution exports the head's own 1/8 output; --full-size-output asks for the "
                        "upsampled one: give one of them")
    if args.verify_images is not None and not args.verify_images.is_dir():
        raise UserError(f"--verify-images '{args.verify_images}' is not a folder")
    reduced = reduced_precisions(args)
    if args.checkpoint is not None and args.checkpoint.suffix.lower() == ".onnx":
        ignored = given_flags(given, _EXPORT_ONLY)
        if ignored:
            raise UserError(
                f"{', '.join(ignored)} {'apply' if len(ignored) > 1 else 'applies'} when exporting a checkpoint; "
                f"'{args.checkpoint}' is already an ONNX graph. Export the .pth again with "
                f"{'them' if len(ignored) > 1 else 'it'}, or drop {'them' if len(ignored) > 1 else 'it'}"
            )
        if not args.engine and not reduced:
            raise UserError(
                f"'{args.checkpoint}' is already an ONNX model; give the PyTorch checkpoint to export, "
                "or add --precision fp16,int8 or --engine to make FP16/INT8 copies or a TensorRT engine of it"
            )
        if not reduced:
            return build_engines_from_args(args, [args.checkpoint], args.output, log)
        check_engine_args(args, given)
        check_precision_args(args, given)
        models = make_precisions_from_args(args, args.checkpoint, args.output or args.checkpoint, log)
        return build_engines_from_args(args, models, None, log) if args.engine else 0
    check_engine_args(args, given)
    check_precision_args(args, given)

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
        loaded = load_checkpoint(args.checkpoint, arch=args.arch, trust=args.trust_checkpoint,
                                 options={"variant": args.variant, "native": args.native_resolution})
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
        frame_color_order=args.frame_order or "BGR",
        simplify=not args.no_simplify,
        full_size_output=args.full_size_output,
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
    models = [outcome.onnx_path]
    if reduced:
        models = make_precisions_from_args(args, outcome.onnx_path, outcome.onnx_path, log)
    if args.engine:
        return build_engines_from_args(args, models, None, log)
    return 0


if __name__ == "__main__":
    sys.exit(main())
