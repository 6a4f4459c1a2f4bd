"""``bisenet-bench``: FPS and accuracy of artifacts against the PyTorch reference, one run."""

from __future__ import annotations

import argparse
import functools
import shlex
import sys
from pathlib import Path

from ..benchmarks.contestants import ONNX_BACKENDS
from ..errors import UserError
from . import bench_rate
from .common import (
    HelpFormatter,
    Parser,
    choices_list,
    cli_entry,
    fraction,
    given_flags,
    model_arg,
    positive_float,
    positive_int,
    set_quiet,
    size_arg,
    spec_arg,
    spec_for,
)

PROG = "bisenet-bench"

EXAMPLES = """\
examples:
  bisenet-bench model.onnx model.int8.onnx          # PyTorch reference found through the metadata
  bisenet-bench --engine model.int8.engine --engine model.fp16.engine --onnx model.onnx
  bisenet-bench --checkpoint model.pth model.onnx --sizes 512x1024,768x1536,1024x2048 --batch 1,4
  bisenet-bench --demo demo/model.onnx --sizes 512x512 --json out.json --plot out.png
  bisenet-bench --checkpoint model.pth --device cuda --torch-variant fp16 --torch-variant fp16+channels_last
  bisenet-bench model.fp16.engine --duration 60        # sustained: FPS over time (Jetson throttling)
  bisenet-bench model.int8.onnx --backend openvino --streams 1,4 --rate max --json s.json  # N cameras

The reference is the PyTorch model (--checkpoint, --demo, or the checkpoint recorded in the
artifact's metadata when it is present with a matching SHA-256); without one, the FP32 ONNX
model is the reference and the report says so.
"""


def _list(kind):
    def parse(text: str):
        try:
            return [kind(t) for t in text.split(",") if t.strip()]
        except (ValueError, argparse.ArgumentTypeError) as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    return parse


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog=PROG, description="Honest FPS and accuracy of BiSeNet artifacts against the "
                                "PyTorch reference, in one run.", epilog=EXAMPLES, formatter_class=HelpFormatter)
    g = p.add_argument_group("what to compare")
    g.add_argument("artifacts", nargs="*", type=model_arg,
                   help=".onnx, .engine/.plan or .pth files, or served models (grpc://HOST:PORT/NAME) (any mix)")
    g.add_argument("--onnx", action="append", type=Path, default=[], help="ONNX model (repeatable)")
    g.add_argument("--engine", action="append", type=Path, default=[], help="TensorRT engine (repeatable)")
    g.add_argument("--checkpoint", action="append", type=Path, default=[],
                   help="PyTorch checkpoint; the first one is the reference (repeatable)")
    g.add_argument("--demo", action="store_true", help="the built-in demo model is the PyTorch reference")
    g.add_argument("--torch-variant", action="append", default=[], metavar="OPTS",
                   help="extra PyTorch row: fp16, bf16, channels_last, cuda_graph joined with '+' (fp16 and "
                   "cuda_graph need CUDA; bf16+channels_last is PyTorch's fastest on a CPU; repeatable)")
    g.add_argument("--backend", type=choices_list(ONNX_BACKENDS), metavar="LIST",
                   help="backends each ONNX model is timed with, comma-separated: onnxruntime, openvino, auto "
                   "(default: every one installed; auto = what Segmenter picks by measurement)")
    g.add_argument("--ov-hint", type=choices_list(("f32", "bf16", "f16")), default=("f32",), metavar="LIST",
                   help="OpenVINO precision hints, one row each: f32 (the artifact's own precision), bf16 "
                   "(AVX-512-BF16/AMX CPUs)")
    g.add_argument("--ov-prepost", type=choices_list(("graph", "host")), default=("graph",), metavar="LIST",
                   help="OpenVINO pre/postprocessing, one row each: graph (compiled in) or host (Segmenter's NumPy)")
    g.add_argument("--trust-checkpoint", action="store_true", help="fully unpickle checkpoints (trusted files only)")
    g.add_argument("--spec", type=spec_arg, metavar="JSON",
                   help="ModelSpec fields (JSON, or a .json file) for ONNX models that carry none, e.g. "
                   "'{\"num_classes\": 2, \"mean\": [0.5, 0.5, 0.5], \"std\": [0.5, 0.5, 0.5]}'; size and dynamic "
                   "axes default to the model's input")
    g.add_argument("--no-reference", action="store_true",
                   help="time only the named artifacts: no PyTorch reference (the FP32 ONNX model, if named, is "
                   "the reference for speed-ups and agreement)")

    g = p.add_argument_group("what to measure")
    g.add_argument("--sizes", type=_list(size_arg), help="input sizes HxW, comma-separated (default: the artifacts')")
    g.add_argument("--batch", type=_list(positive_int), help="batch sizes, comma-separated (default: 1)")
    g.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="where backends run")
    g.add_argument("--threads", type=positive_int, help="CPU threads for torch and onnxruntime (default: the usable CPUs)")
    g.add_argument("--iterations", type=positive_int, default=30, help="timed rounds (each backend once per round)")
    g.add_argument("--concurrency", type=_list(positive_int), metavar="LIST",
                   help="served models: also N clients at once for each N, e.g. 1,4,8 (latency, throughput, batching)")
    g.add_argument("--duration", type=positive_float, help="sustained mode: seconds per cell instead of --iterations")
    g.add_argument("--window", type=positive_float, help="sustained mode: FPS-over-time window in seconds (default: duration/10)")
    g.add_argument("--warmup", type=positive_int, default=3, help="minimum warm-up calls per backend and cell")
    g.add_argument("--warmup-max", type=positive_int, default=20, help="maximum warm-up calls")
    g.add_argument("--warmup-tolerance", type=fraction, default=0.05,
                   help="warm-up ends when the median of the last 3 calls moves less than this (relative)")
    g.add_argument("--images", type=Path, help="folder of images for inputs and fidelity (default: sample photos)")
    g.add_argument("--labels", type=Path, metavar="DIR",
                   help="ground-truth label maps for --images (same relative names, class ids): mIoU per row")
    g.add_argument("--max-images", type=positive_int, default=8, help="at most this many images")
    g.add_argument("--frame-size", type=size_arg, help="resize inputs to this camera size first (default: network size)")
    g.add_argument("--peak-gflops", type=positive_float, help="the CPU's fp32 peak, instead of measuring it")
    g.add_argument("--sysfs-root", type=Path, default=Path("/"), help=argparse.SUPPRESS)

    g = p.add_argument_group("output")
    g.add_argument("--json", type=Path, help="write the full result (with raw samples) as JSON")
    g.add_argument("--csv", type=Path, help="write one CSV row per backend and cell")
    g.add_argument("--markdown", type=Path, help="write the report as markdown")
    g.add_argument("--plot", type=Path, help="write a PNG plot (needs matplotlib)")
    g.add_argument("-q", "--quiet", action="store_true", help="no progress bar or log; print only the report")
    bench_rate.add_arguments(p)
    return p


def _outputs(args: argparse.Namespace) -> dict:
    """bisenet-bench's output files by option (both modes)."""
    return {"--json": args.json, "--csv": args.csv, "--markdown": args.markdown, "--plot": args.plot}


def _inputs(args: argparse.Namespace) -> list:
    """Every local file or folder bisenet-bench reads (models, checkpoints, images, labels)."""
    models = [a for a in args.artifacts if isinstance(a, Path)]
    return models + list(args.onnx) + list(args.engine) + list(args.checkpoint) + [args.images, args.labels]


#: suffixes of checkpoints (the PyTorch reference); everything else is an artifact to time.
_CHECKPOINTS = (".pth", ".pt", ".safetensors")


def _refuse_idle_openvino_options(args: argparse.Namespace, given: frozenset[str], artifacts: list) -> None:
    """--ov-hint / --ov-prepost shape OpenVINO's rows: without an OpenVINO row they would do nothing."""
    named = given_flags(given, ("ov_hint", "ov_prepost"))
    if not named:
        return
    from ..benchmarks.contestants import installed_onnx_backends

    flags = " and ".join(named)
    if not any(isinstance(a, Path) and a.suffix.lower() == ".onnx" for a in artifacts):
        raise UserError(f"{flags} shape{'' if len(named) > 1 else 's'} the OpenVINO rows of an ONNX model; "
                        "give an .onnx model, or drop it")
    if "openvino" not in (args.backend or installed_onnx_backends()):
        raise UserError(f"{flags} shape{'' if len(named) > 1 else 's'} the OpenVINO rows; "
                        + ("add openvino to --backend" if args.backend else "OpenVINO is not installed"))


@cli_entry(PROG, trust_option="--trust-checkpoint")
def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, given = parser.parse_given(argv)
    set_quiet(args.quiet)
    if bench_rate.wanted(args):  # N cameras at a rate: its own benchmark (benchmarks/streams.py)
        return bench_rate.run(args, parser, lambda msg: None if args.quiet else print(f"{PROG}: {msg}", file=sys.stderr,
                                                                                      flush=True))
    from ..benchmarks.contestants import parse_torch_variant
    from ..benchmarks.harness import WarmUp
    from ..benchmarks.runner import BenchConfig, run_benchmark
    from ..fileio import check_output_files, check_output_path

    local = [a for a in args.artifacts if isinstance(a, Path)]
    checkpoints = list(args.checkpoint) + [a for a in local if a.suffix.lower() in _CHECKPOINTS]
    artifacts = [a for a in args.artifacts if not isinstance(a, Path) or a.suffix.lower() not in _CHECKPOINTS]
    artifacts += args.onnx + args.engine
    if args.concurrency and not any(not isinstance(a, Path) for a in artifacts):
        raise UserError("--concurrency measures served models: give a grpc:// or http:// URL too")
    if not artifacts and not checkpoints and not args.demo:
        raise UserError("nothing to benchmark: give artifacts (.onnx/.engine/.pth), --checkpoint or --demo")
    if args.demo and checkpoints:
        raise UserError("--demo and --checkpoint both name the reference; give one of them")
    if args.no_reference and (args.demo or checkpoints):
        raise UserError("--no-reference leaves PyTorch out; it cannot be combined with --demo or --checkpoint")
    if args.no_reference and not artifacts:
        raise UserError("--no-reference times only the named artifacts: give at least one .onnx or .engine")
    if args.labels is not None and args.images is None:
        raise UserError("--labels needs --images (the label maps belong to those images)")
    _refuse_idle_openvino_options(args, given, artifacts)
    if args.duration is not None and args.duration <= 0:
        raise UserError("--duration must be positive")
    if args.threads is not None and args.threads < 1:
        raise UserError("--threads must be >= 1")
    outputs = [p for p in (args.json, args.csv, args.markdown, args.plot) if p is not None]
    check_output_files(_outputs(args), _inputs(args))  # never write over a model, an image or another output
    for path in outputs:
        check_output_path(path)  # fail before minutes of timing, not after
    plot_problem = None
    if args.plot is not None:
        from ..benchmarks.plot import matplotlib_missing

        plot_problem = matplotlib_missing()

    config = BenchConfig(
        artifacts=artifacts,
        checkpoints=checkpoints,
        demo=args.demo,
        torch_variants=[parse_torch_variant(v) for v in args.torch_variant],
        onnx_backends=args.backend,
        concurrency=args.concurrency or [],
        ov_hints=args.ov_hint,
        ov_prepost=args.ov_prepost,
        sizes=args.sizes,
        batches=args.batch,
        device=args.device,
        threads=args.threads,
        iterations=args.iterations,
        duration=args.duration,
        window=args.window,
        warmup=WarmUp(min_runs=args.warmup, max_runs=max(args.warmup, args.warmup_max), tolerance=args.warmup_tolerance),
        images=args.images,
        labels=args.labels,
        no_reference=args.no_reference,
        max_images=args.max_images,
        frame_size=args.frame_size,
        peak_gflops=args.peak_gflops,
        sysfs_root=str(args.sysfs_root),
        progress=not args.quiet,
        trust_checkpoint=args.trust_checkpoint,
        spec=None if args.spec is None else functools.partial(spec_for, args.spec),
        command=" ".join([PROG] + [shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv)]),
    )

    def log(msg: str) -> None:
        if not args.quiet:
            print(f"{PROG}: {msg}", file=sys.stderr, flush=True)

    from ..benchmarks import report

    result = run_benchmark(config, log)
    sys.stdout.write(report.format_terminal(result))
    for path in report.write_outputs(result, args.json, args.csv, args.markdown):
        log(f"wrote {path}")
    if args.plot is not None:
        if plot_problem:
            print(f"{PROG}: note: {plot_problem}", file=sys.stderr)
        else:
            from ..benchmarks.plot import write_plot

            log(f"wrote {write_plot(result, args.plot)}")
    if result["not_run"]:
        names = "; ".join(f"{n['name']}: {n['reason']}" for n in result["not_run"])
        print(f"{PROG}: error: {len(result['not_run'])} of the models asked for did not run: {names}",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
