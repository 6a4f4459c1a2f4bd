"""``bisenet-bench MODEL --streams 1,2,4 --rate HZ|max --seconds S``: the rate-driven options
of bisenet-bench (argument parsing and checks only; the benchmark is ``benchmarks/streams.py``)."""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import Any

from ..errors import UserError

#: bisenet-bench options that mean nothing to a rate run (refused when given)
_NOT_APPLICABLE = ("onnx", "engine", "checkpoint", "demo", "torch_variant", "ov_hint", "ov_prepost",
                   "trust_checkpoint", "spec", "no_reference", "sizes", "batch", "device", "threads", "iterations",
                   "concurrency", "duration", "window", "warmup", "warmup_max", "warmup_tolerance", "labels",
                   "frame_size", "peak_gflops", "csv")

#: the shortest measurement (a shorter one measures the clock, not the model)
MIN_SECONDS = 0.1


def add_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("rate-driven streams (several cameras: sync Segmenter vs the streaming runtime)")
    g.add_argument("--streams", metavar="LIST", help="numbers of synthetic cameras, comma-separated, e.g. 1,2,4")
    g.add_argument("--rate", metavar="HZ|max",
                   help="frames per second per camera, or max: the highest rate with < 5 %% drops (default: max)")
    g.add_argument("--seconds", type=float, metavar="S",
                   help="seconds per measurement (default: 5; --rate max trials last for at least 40 frames)")
    g.add_argument("--pipeline-mode", metavar="LIST",
                   help="streaming runtime modes, one row each: throughput (OpenVINO THROUGHPUT hint, concurrent "
                   "requests), latency (one request at a time, host stages overlapped) (default: throughput)")


def wanted(args: argparse.Namespace) -> bool:
    return any(getattr(args, k) is not None for k in ("streams", "rate", "seconds", "pipeline_mode"))


#: the rate options that only a --streams run reads
_RATE_OPTIONS = ("rate", "seconds", "pipeline_mode")


def _streams(text: str | None, args: argparse.Namespace) -> list[int]:
    if text is None:
        given = [f"--{k.replace('_', '-')}" for k in _RATE_OPTIONS if getattr(args, k) is not None]
        raise UserError(f"{' and '.join(given)}: rate options, they need --streams (e.g. --streams 1,4)")
    try:
        values = [int(t) for t in text.split(",")]  # an empty item (1,,2) is a typo, not nothing
    except ValueError:
        values = []
    if not values or any(v < 1 or v > 64 for v in values):
        raise UserError(f"--streams takes camera counts from 1 to 64, comma-separated (e.g. 1,2,4), got {text!r}")
    return sorted(dict.fromkeys(values))


def _rate(text: str | None) -> float | None:
    if text is None or text.strip().lower() == "max":
        return None
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 < value <= 1000:
        raise UserError(f"--rate takes frames per second per camera (0 < HZ <= 1000) or 'max', got {text!r}")
    return value


def run(args: argparse.Namespace, parser: argparse.ArgumentParser, log: Any) -> int:
    """Check the options, run the benchmark, print the table and write the outputs."""
    mode_text = "throughput" if args.pipeline_mode is None else args.pipeline_mode
    modes = tuple(dict.fromkeys(m.strip().lower() for m in mode_text.split(",")))
    if not modes or any(m not in ("latency", "throughput") for m in modes):
        raise UserError(f"--pipeline-mode takes latency and/or throughput, comma-separated, got {mode_text!r}")
    streams = _streams(args.streams, args)
    rate = _rate(args.rate)
    seconds = 5.0 if args.seconds is None else args.seconds
    if not (math.isfinite(seconds) and seconds >= MIN_SECONDS):  # inf ran for ever; 1e-9 gave 1e9 FPS
        raise UserError(f"--seconds must be positive: a finite number of seconds >= {MIN_SECONDS:g}, got {args.seconds}")
    given = [k for k in _NOT_APPLICABLE if getattr(args, k) != parser.get_default(k)]
    if given:
        raise UserError(f"--{given[0].replace('_', '-')} does not apply to a --streams run")
    models = [a for a in args.artifacts]
    if len(models) != 1 or not isinstance(models[0], Path) or models[0].suffix.lower() != ".onnx":
        raise UserError("a --streams run takes one ONNX model (bisenet-bench MODEL.onnx --streams 1,4)")
    if not models[0].is_file():
        raise UserError(f"'{models[0]}' does not exist")
    from ..benchmarks import streams_report
    from ..fileio import check_output_files, check_output_path

    check_output_files({"--json": args.json, "--markdown": args.markdown, "--plot": args.plot},
                       [models[0], args.images])  # never write over the model, an image or another output
    for path in (args.json, args.markdown, args.plot):
        if path is not None:
            check_output_path(path)
    plot_problem = None
    if args.plot is not None:
        from ..benchmarks.plot import matplotlib_missing

        plot_problem = matplotlib_missing()
    from ..benchmarks.streams import RateConfig, run_rate_benchmark

    backends = list(args.backend or _installed())
    config = RateConfig(model=models[0], backends=backends, streams=streams, rate_hz=rate, seconds=seconds,
                        frames=_frames(args.images, args.max_images), pipeline_modes=modes, log=log)
    result = run_rate_benchmark(config)
    from ..benchmarks.system import system_facts

    result["system"] = system_facts(want_gpu=False)
    result["command"] = " ".join(["bisenet-bench"] + sys.argv[1:])
    sys.stdout.write(streams_report.format_table(result))
    if args.json is not None:
        log(f"wrote {streams_report.write_json(result, args.json)}")
    if args.markdown is not None:
        from ..fileio import write_text_atomic

        log(f"wrote {write_text_atomic(args.markdown, streams_report.format_table(result, markdown=True))}")
    if args.plot is not None:
        if plot_problem:
            print(f"bisenet-bench: note: {plot_problem}", file=sys.stderr)
        else:
            log(f"wrote {streams_report.write_plot(result, args.plot)}")
    return 0


def _installed() -> list[str]:
    import importlib.util

    return [b for b in ("onnxruntime", "openvino") if importlib.util.find_spec(b) is not None]


def _frames(images: Path | None, limit: int) -> list[Any]:
    """Camera frames: ``--images`` or demo scenes (512 x 512, like a camera at the demo model's size)."""
    if images is not None:
        from ..benchmarks.photos import benchmark_photos

        return [img for _, img in benchmark_photos(images, limit)[0]]
    from ..datasets.shapes import scenes

    return [s.image for s in scenes(max(limit, 2))]
