"""``--engine`` and the TensorRT build options of ``bisenet-export`` (parsing only)."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

from ..errors import UserError
from .common import nonnegative_int, positive_int

EXAMPLES = """\
  bisenet-export model.pth --engine              # -> model.onnx + model.fp32.engine (+ .engine.json)
  bisenet-export model.int8.onnx --engine        # engine from an existing ONNX model
  bisenet-export model.onnx --engine --min-shape 1x3x256x512 --opt-shape 1x3x512x1024 --max-shape 2x3x720x1280
  bisenet-export model.fp16.onnx --engine --dla 0   # Jetson DLA core 0, GPU fallback
"""


# Appended to help texts that already say what "not given" means: renders as nothing and keeps
# HelpFormatter (cli.common) from adding a default.
_SAID = "%(default).0s"


def shape_arg(text: str) -> tuple[int, ...]:
    """``1x3x512x1024`` -> (1, 3, 512, 1024)."""
    try:
        shape = tuple(int(p) for p in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"shape must look like 1x3x512x1024 (NxCxHxW), or 1x512x1024x3 (NxHxWxC) for a --fuse-preprocess "
            f"model, got {text!r}") from None
    if not shape or min(shape) < 1:
        raise argparse.ArgumentTypeError(f"shape must have positive dimensions, got {text!r}")
    return shape


def add_engine_arguments(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group(
        "TensorRT engine",
        "build model.<precision>.engine (+ .engine.json sidecar) from each ONNX model; precision comes from the ONNX",
    )
    g.add_argument("--engine", action="store_true", help=f"build a TensorRT engine from each ONNX model{_SAID}")
    for which in ("min", "opt", "max"):
        g.add_argument(f"--{which}-shape", type=shape_arg, metavar="SHAPE",
                       help=f"{which} input shape of a dynamic model in its input layout: NxCxHxW, or NxHxWxC "
                       f"(uint8 frames) for a --fuse-preprocess export (default: from the export size){_SAID}")
    g.add_argument("--workspace", type=positive_int, metavar="MB",
                   help=f"TensorRT scratch memory limit (default: TensorRT's){_SAID}")
    g.add_argument("--opt-level", type=int, choices=range(6), metavar="0-5",
                   help=f"builder optimization level (default: TensorRT's, 3){_SAID}")
    g.add_argument("--timing-cache", type=Path, metavar="PATH",
                   help="timing cache file reused across builds "
                   f"(default: in the cache folder, per TensorRT version and GPU){_SAID}")
    g.add_argument("--no-timing-cache", action="store_true", help=f"build without a timing cache{_SAID}")
    g.add_argument("--tf32", action="store_true",
                   help="let FP32 math run in TF32 on Ampere+: all of an fp32 engine, the FP32 layers of an "
                   f"fp16/int8 one (faster, 10-bit mantissa; default: FP32){_SAID}")
    g.add_argument("--dla", type=nonnegative_int, metavar="CORE",
                   help=f"run on this DLA core (Jetson), GPU fallback for the rest{_SAID}")
    g.add_argument("--compute-capability", type=_cc_list, default=(), metavar="8.6,8.9",
                   help=f"TensorRT-RTX only: GPUs to build for (default: its portable set){_SAID}")
    g.add_argument("--tensorrt", choices=("auto", "tensorrt", "tensorrt_rtx"), default="auto",
                   help="TensorRT package to build with (auto: tensorrt, else tensorrt_rtx)")
    g.add_argument("--no-layer-report", action="store_true",
                   help=f"do not save the engine inspector's layer report{_SAID}")
    g.add_argument("--trt-verbose", action="store_true", help=f"print TensorRT's own log{_SAID}")


def _cc_list(text: str) -> tuple[str, ...]:
    items = tuple(t.strip() for t in text.split(",") if t.strip())
    if not items or any(not t.replace(".", "", 1).isdigit() or "." not in t for t in items):
        raise argparse.ArgumentTypeError(f"compute capabilities look like 8.6,8.9, got {text!r}")
    return items


_ENGINE_ONLY = ("min_shape", "opt_shape", "max_shape", "workspace", "opt_level", "timing_cache", "dla")


def _refuse_conflicts(args: argparse.Namespace) -> None:
    if args.timing_cache is not None and args.no_timing_cache:
        raise UserError("--timing-cache and --no-timing-cache conflict; give one of them")


def check_engine_args(args: argparse.Namespace, given: frozenset[str]) -> None:
    """Engine options need --engine; with it, fail before a long export when TensorRT is missing."""
    _refuse_conflicts(args)
    if not args.engine:
        named = [name for name in _ENGINE_ONLY if getattr(args, name) is not None]
        flags = ("no_timing_cache", "no_layer_report", "trt_verbose", "compute_capability", "tf32")
        named += [name for name in flags if getattr(args, name)]
        named += ["tensorrt"] if "tensorrt" in given else []
        if named:
            raise UserError(f"--{named[0].replace('_', '-')} is a TensorRT build option; add --engine")
        return
    from ..trt.loading import load_tensorrt

    load_tensorrt(args.tensorrt)


def build_engines_from_args(
    args: argparse.Namespace, onnx_paths: list[Path], output: Path | None, log: Callable[[str], None]
) -> int:
    """Build an engine for each ONNX model with the options given on the command line."""
    from ..trt.builder import EngineOptions, build_engines

    _refuse_conflicts(args)  # also where no export ran check_engine_args first (an .onnx input)
    options = EngineOptions(
        min_shape=args.min_shape,
        opt_shape=args.opt_shape,
        max_shape=args.max_shape,
        workspace_mb=args.workspace,
        optimization_level=args.opt_level,
        timing_cache=None if args.no_timing_cache else (args.timing_cache or "auto"),
        dla_core=args.dla,
        compute_capabilities=args.compute_capability,
        layer_report=not args.no_layer_report,
        allow_tf32=args.tf32,
        tensorrt=args.tensorrt,
        progress=not args.quiet,
        verbose=args.trt_verbose,
    )
    for build in build_engines(onnx_paths, options, output, log):
        print(build.summary())
    return 0


__all__ = ["EXAMPLES", "add_engine_arguments", "build_engines_from_args", "check_engine_args", "shape_arg"]
