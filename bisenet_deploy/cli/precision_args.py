"""``--precision`` and the calibration / fidelity options of ``bisenet-export`` (parsing only)."""

from __future__ import annotations

import argparse
import contextlib
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

from ..errors import UserError
from .common import choices_list, nonnegative_int, percentile, positive_int

EXAMPLES = """\
  bisenet-export model.pth --precision fp32,fp16,int8 --calib frames/   # + model.fp16.onnx, model.int8.onnx
  bisenet-export model.onnx --precision int8 --calib clip.mp4 --val-images val/img --val-labels val/lbl
"""


# Appended to help texts that say their default themselves: renders as nothing and keeps
# HelpFormatter (cli.common) from adding a default.(as in engine_args).
_SAID = "%(default).0s"


def add_precision_arguments(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group(
        "precision",
        "write FP16 / INT8 ONNX models (model.fp16.onnx, model.int8.onnx) beside the FP32 one, "
        "with a fidelity report (model.fidelity.json)",
    )
    g.add_argument("--precision", type=choices_list(("fp32", "fp16", "int8")), default=("fp32",), metavar="LIST",
                   help=f"models to write, comma-separated: fp32,fp16,int8 (default: fp32){_SAID}")
    g.add_argument("--calib", type=Path, metavar="PATH",
                   help="calibration data: image folder, video or .npy of uint8 frames "
                   f"(default: two thirds of the built-in sample photos){_SAID}")
    g.add_argument("--calib-count", type=positive_int, default=64, metavar="N",
                   help="calibration frames (a seeded random subset)")
    g.add_argument("--calib-method", choices=("minmax", "entropy", "percentile"), default="entropy",
                   help="how INT8 ranges are chosen")
    g.add_argument("--percentile", type=percentile, default=99.99, metavar="PCT", help="for --calib-method percentile")
    g.add_argument("--calib-seed", type=nonnegative_int, default=0, metavar="N", help="seed of the calibration subset")
    g.add_argument("--no-calib-cache", action="store_true",
                   help=f"recalibrate even when model.calib.json matches{_SAID}")
    g.add_argument("--val-images", type=Path, metavar="DIR",
                   help=f"held-out images for the fidelity report (default: calibration items not used){_SAID}")
    g.add_argument("--val-labels", type=Path, metavar="DIR",
                   help=f"ground-truth label maps for --val-images (same names, class ids){_SAID}")
    g.add_argument("--val-count", type=positive_int, default=16, metavar="N", help="held-out frames in the fidelity report")
    g.add_argument("--int8-fallback", choices=("none", "auto"), default="none",
                   help="auto: keep the convolutions whose INT8 rounding costs most agreement in FP32")
    g.add_argument("--int8-weight-bits", type=int, choices=(7, 8), default=8,
                   help="8: exact for TensorRT, OpenVINO and VNNI/AMX CPUs; 7: for onnxruntime on x86 CPUs "
                   "without VNNI (AVX2), whose int8 kernels saturate int16 sums of 8-bit weights")
    g.add_argument("--int8-target", type=percentile, default=99.0, metavar="PCT",
                   help="label agreement (%%) --int8-fallback auto aims for")
    g.add_argument("--fp16-keep", type=lambda t: tuple(x for x in t.split(",") if x), default=(), metavar="OPS",
                   help=f"op types or node names kept in FP32 in the FP16 model, comma-separated{_SAID}")


def reduced_precisions(args: argparse.Namespace) -> list[str]:
    return [p for p in args.precision if p != "fp32"]


#: Options that act only when a model of some precision is made: "reduced" (FP16 or INT8: the
#: fidelity report, whose held-out frames default to calibration items not used), "int8", "fp16".
_ACTS_FOR = {"calib": "reduced", "calib_count": "reduced", "calib_seed": "reduced", "val_images": "reduced",
             "val_labels": "reduced", "val_count": "reduced", "calib_method": "int8", "percentile": "int8",
             "no_calib_cache": "int8", "int8_fallback": "int8", "int8_weight_bits": "int8", "int8_target": "int8",
             "fp16_keep": "fp16"}
_NEEDED = {"reduced": "--precision fp16 or int8", "int8": "--precision int8", "fp16": "--precision fp16"}


def _idle_options(args: argparse.Namespace, given: frozenset[str]) -> list[tuple[str, str]]:
    """(flag, what it needs) for each option given that would do nothing with these precisions."""
    made = set(args.precision)
    acting = {"reduced": bool(made - {"fp32"}), "int8": "int8" in made, "fp16": "fp16" in made}
    idle = [(f"--{dest.replace('_', '-')}", _NEEDED[need]) for dest, need in _ACTS_FOR.items()
            if dest in given and not acting[need]]
    if acting["int8"] and "percentile" in given and args.calib_method != "percentile":
        idle.append(("--percentile", "--calib-method percentile"))
    if acting["int8"] and "int8_target" in given and args.int8_fallback != "auto":
        idle.append(("--int8-target", "--int8-fallback auto"))
    return idle


def check_precision_args(args: argparse.Namespace, given: frozenset[str]) -> None:
    """Fail before a long export on options or calibration sources that cannot work, and on
    options ``given`` on the command line that would do nothing (a user who gives --calib
    expects a calibrated model)."""
    idle = _idle_options(args, given)
    if idle:
        flag, need = idle[0]
        raise UserError(f"{flag} does nothing without {need}: add it, or drop {flag}")
    if not reduced_precisions(args):
        return
    if args.calib_count < 1 or args.val_count < 1:
        raise UserError("--calib-count and --val-count must be >= 1")
    if args.val_labels is not None and args.val_images is None:
        raise UserError("--val-labels needs --val-images")
    from ..calibration.data import open_frame_source

    open_frame_source(args.calib)  # a missing or empty source fails now


def make_precisions_from_args(
    args: argparse.Namespace, fp32_path: Path, base: Path, log: Callable[[str], None]
) -> list[Path]:
    """Write the reduced-precision models; returns the ONNX models the command made or was
    given, in --precision order (what --engine builds)."""
    with _demo_scenes(args, log) as (calib, val_images, val_labels, descriptions):
        return _make_precisions(args, fp32_path, base, log, calib, val_images, val_labels, descriptions)


@contextlib.contextmanager
def _demo_scenes(args: argparse.Namespace, log: Callable[[str], None]) -> Iterator[tuple]:
    """(calib, val_images, val_labels, descriptions): as given, except with --demo (the trained shapes
    model), where missing ones become shapes scenes in a temporary folder: training-photo
    scenes for calibration, held-out ones with labels for the report. The built-in sample
    photos show none of the demo model's classes."""
    given = (args.calib, args.val_images, args.val_labels)
    if not getattr(args, "demo", False) or None not in given[:2]:
        yield (*given, {})
        return
    from ..model.demo import demo_checkpoint_path  # imports torch: only for --demo

    if demo_checkpoint_path() is None:  # untrained fallback: no shapes classes to calibrate on
        yield (*given, {})
        return
    from ..datasets import shapes

    size = tuple(args.size) if getattr(args, "size", None) else (512, 512)
    calib, val_images, val_labels = given
    from ..fileio import temporary_folder

    tmp = temporary_folder("bisenet-demo-scenes")  # removed below; by the next run if this one is killed
    descriptions = {}  # the folder is gone after the run: provenance names what the scenes were
    h, w = size
    try:
        if calib is None:
            log(f"--demo without --calib: calibrating on {args.calib_count} shapes scenes over the training photos")
            items = shapes.scenes(args.calib_count, size, "train", seed=7)
            calib, _ = shapes.write_scene_folder(Path(tmp) / "calib", items)
            descriptions["calib"] = f"{args.calib_count} generated shapes scenes {h}x{w} (training photos, seed 7)"
        if val_images is None:
            log(f"--demo without --val-images: measuring on {args.val_count} held-out shapes scenes with labels")
            val_images, val_labels = shapes.write_scene_folder(Path(tmp) / "val", shapes.validation_scenes(args.val_count, size))
            descriptions["val"] = f"{args.val_count} generated shapes scenes {h}x{w} (held-out photos, with labels)"
        yield calib, val_images, val_labels, descriptions
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _make_precisions(
    args: argparse.Namespace, fp32_path: Path, base: Path, log: Callable[[str], None],
    calib: Path | None, val_images: Path | None, val_labels: Path | None, descriptions: dict[str, str],
) -> list[Path]:
    from ..calibration.precision import PrecisionOptions, make_precisions
    from ..calibration.ranges import CalibrationMethod

    options = PrecisionOptions(
        precisions=args.precision,
        calib=calib,
        calib_count=args.calib_count,
        seed=args.calib_seed,
        method=CalibrationMethod(args.calib_method, args.percentile),
        use_cache=not args.no_calib_cache,
        val_images=val_images,
        val_labels=val_labels,
        val_count=args.val_count,
        calib_description=descriptions.get("calib"),
        val_description=descriptions.get("val"),
        int8_fallback=args.int8_fallback,
        int8_weight_bits=args.int8_weight_bits,
        target_agreement=args.int8_target,
        fp16_keep=args.fp16_keep,
        progress=not args.quiet,
    )
    result = make_precisions(fp32_path, options, output_base=base, log=log)
    for line in result.lines():
        print(line)
    if result.report_path is not None:
        print(f"fidelity report -> {result.report_path}")
    return [fp32_path if p == "fp32" else result.paths[p] for p in args.precision]


__all__ = [
    "EXAMPLES",
    "add_precision_arguments",
    "check_precision_args",
    "make_precisions_from_args",
    "reduced_precisions",
]
