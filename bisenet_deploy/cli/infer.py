"""``bisenet-infer``: segment images, folders, videos or a camera and write the results."""

from __future__ import annotations

import math
import sys
from pathlib import Path

from ..errors import UserError
from .common import Parser, cli_entry, model_arg, set_quiet

PROG = "bisenet-infer"

EXAMPLES = """\
examples:
  bisenet-infer model.onnx photo.jpg frames/ -o masks/        # palette PNG masks (pixel = class id)
  bisenet-infer model.onnx street.mp4 -o out/                  # out/street/000000.png ... one mask per frame
  bisenet-infer model.onnx street.mp4 -o out/ --mode overlay --legend   # out/street.overlay.mp4
  bisenet-infer person.onnx 0 -o out/ --background beach.jpg --max-frames 300   # webcam 0
  bisenet-infer model.int8.engine clip.mp4 -o out/ --network-size  # fastest: masks at network size
  bisenet-infer model.onnx drive_bag/ --topic /camera/image_raw -o out/   # out/drive_bag_segmentation/ (MCAP)

Outputs never replace inputs: the output folder may not be, contain or lie inside an input.
Each input gets its own output name (inputs that would share one are renamed; the log says
how), frames whose output exists are kept (--overwrite redoes them), and OUT/summary.csv
has one row per frame. An input that cannot be read is reported and skipped; the exit code
is then 1, after the rest has been processed.
"""


def _alpha(text: str) -> float:
    import argparse

    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number in [0, 1], got {text!r}") from None
    if not math.isfinite(value) or not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be in [0, 1], got {text}")
    return value


def _count(minimum: int):
    import argparse

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a whole number, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be >= {minimum}, got {value}")
        return value

    return parse


def build_parser() -> Parser:
    p = Parser(prog=PROG, description="Segment images, image folders, videos or a camera with a BiSeNet model.",
               epilog=EXAMPLES)
    p.add_argument("model", type=model_arg, help="model: .onnx, .engine/.plan, .pth, or a served model's URL "
                   "(grpc://HOST:PORT/NAME, http://HOST:PORT/NAME: bisenet-serve)")
    p.add_argument("inputs", nargs="+", help="image files, folders, video files or a camera index (0, 1, ...)")
    p.add_argument("-o", "--output", type=Path, required=True, metavar="OUT",
                   help="output folder (created if missing)")
    p.add_argument("--mode", choices=("mask", "overlay", "background"),
                   help="what to write: mask (class ids), overlay, background (default: mask, or background "
                   "when --background is given)")
    p.add_argument("--background", type=Path, help="image that replaces the background (label 0)")
    p.add_argument("--alpha", type=_alpha, help="overlay opacity, 0..1 (default: 0.5)")
    p.add_argument("--legend", action="store_true", help="draw class names and colours on overlays")
    p.add_argument("--max-frames", type=_count(1), help="stop after this many frames per video/camera")
    p.add_argument("--network-size", action="store_true",
                   help="masks at the network resolution (no upscale); overlays keep the frame's aspect ratio")
    p.add_argument("--overwrite", action="store_true", help="redo frames whose output already exists")
    p.add_argument("--backend", choices=("auto", "onnxruntime", "openvino", "tensorrt", "torch"),
                   help="backend (default: by file type; for .onnx the faster of onnxruntime and OpenVINO, measured "
                   "once and cached, where both are installed)")
    p.add_argument("--device", default="auto", help="backend device: auto, cpu, cuda, tensorrt")
    p.add_argument("--threads", type=_count(0), default=0, help="CPU threads for onnxruntime/torch (0: default)")
    g = p.add_argument_group("ROS bags (rosbag2 folders, .mcap/.db3, ROS 1 .bag; pip install 'bisenet-deploy[ros]')")
    g.add_argument("--topic", action="append", metavar="TOPIC",
                   help="camera topic to segment (repeatable; default: auto, every sensor_msgs/Image or "
                   "CompressedImage topic)")
    g.add_argument("--mask-topic", default="/segmentation", metavar="SUFFIX",
                   help="appended to each camera topic for its mask topic")
    g.add_argument("--copy-topics", action="store_true",
                   help="copy the camera topics into the output bag, so it opens alone in Foxglove or RViz")
    g = p.add_argument_group("Ray (fleet-scale batch runs; pip install 'bisenet-deploy[ray]')")
    g.add_argument("--ray", nargs="?", const="local", metavar="ADDRESS",
                   help="run as a Ray Data pipeline: local (a private cluster on this machine, stopped afterwards; "
                   "the default when ADDRESS is left out), auto (the cluster this machine belongs to) or a cluster "
                   "address. Same outputs as a plain run")
    g.add_argument("--workers", type=_count(1), help="Ray actors, each holding one model (default: one per 4 CPUs)")
    g.add_argument("--batch", type=_count(1), default=8, help="frames per model call on Ray")
    g.add_argument("--gpus-per-worker", type=float, default=0.0, metavar="G", help="GPUs each Ray actor reserves")
    g.add_argument("--verbose", action="store_true", help="Ray's own logs and per-stage progress bars")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    return p


def _check_options(args) -> str:  # noqa: ANN001
    mode = args.mode or ("background" if args.background else "mask")
    if not args.mask_topic.startswith("/") or args.mask_topic.strip("/") == "":
        raise UserError(f"--mask-topic must look like /segmentation, got {args.mask_topic!r}")
    if mode == "background" and args.background is None:
        raise UserError("--mode background needs --background IMG")
    if args.background is not None and mode != "background":
        raise UserError(f"--background is used only by --mode background, not --mode {mode}; drop one of them")
    if args.legend and mode == "mask":
        raise UserError("--legend draws on overlays; masks hold class ids only (add --mode overlay)")
    if args.alpha is not None and mode != "overlay":
        raise UserError(f"--alpha sets the overlay opacity; it has no effect with --mode {mode}")
    return mode


@cli_entry(PROG)
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    set_quiet(args.quiet)
    mode = _check_options(args)
    from tqdm import tqdm

    from ..jobs.local import LocalJob, total_frames
    from ..jobs.outputs import Renderer
    from ..jobs.plan import check_output_against_inputs, collect_sources
    from ..jobs.summary import Summary, check_manifest, class_columns, manifest_for, write_manifest
    from ..runtime import Segmenter
    from ..runtime.sources import read_image

    background = None
    if mode == "background":
        background = read_image(args.background) if args.background.is_file() else None
        if background is None:
            raise UserError(f"cannot read background image '{args.background}'")
    if isinstance(args.model, Path) and not args.model.is_file():
        raise UserError(f"model '{args.model}' not found")
    if args.ray is None and (args.workers or args.gpus_per_worker or args.verbose):
        raise UserError("--workers, --gpus-per-worker and --verbose apply to Ray runs: add --ray")
    if args.ray is not None:
        return _ray_main(args, mode, background)
    plan = collect_sources(args.inputs)
    check_output_against_inputs(args.output, args.inputs)

    def log(msg: str) -> None:
        (bar.write if bar is not None else print)(f"{PROG}: {msg}", file=sys.stderr)

    bar = None
    for note in plan.notes:
        log(note)
    options = {"threads": args.threads} if args.threads else {}
    seg = Segmenter(args.model, backend=args.backend, device=args.device, backend_options=options,
                    output_size="network" if args.network_size else "frame")
    try:
        manifest = manifest_for(args.model, mode, args.network_size, seg.spec.num_classes)
        check_manifest(args.output, manifest, args.overwrite)
        renderer = Renderer.for_spec(seg.spec, mode=mode, background=background,
                                     alpha=0.5 if args.alpha is None else args.alpha,
                                     legend=args.legend, network_size=args.network_size)
        summary = Summary(class_columns(seg.spec.num_classes, renderer.class_names), getattr(args.model, "name",
                                                                                          args.model),
                          seg.backend.name)
        bag = _bag_options(args)
        bar = tqdm(total=total_frames(plan, args.max_frames, bag), unit="frame", disable=args.quiet, file=sys.stderr,
                   dynamic_ncols=True)
        job = LocalJob(seg, plan, args.output, renderer, summary, max_frames=args.max_frames,
                       overwrite=args.overwrite, log=log, progress=bar.update, bag=bag)
        try:
            result = job.run()
        finally:
            bar.close()
            if summary.rows:
                write_manifest(args.output, manifest)
    finally:
        seg.close()
    bar = None
    return _report(result, args.output)


def _ray_main(args, mode: str, background) -> int:  # noqa: ANN001
    from ..distributed import RayOptions, segment

    def log(msg: str) -> None:
        if not args.quiet or msg.startswith("failed:"):
            print(f"{PROG}: {msg}", file=sys.stderr, flush=True)

    options = {"threads": args.threads} if args.threads else {}
    if args.device != "auto":
        options["device"] = args.device
    result = segment(args.model, args.inputs, args.output, mode=mode, background=background,
                     alpha=0.5 if args.alpha is None else args.alpha, legend=args.legend,
                     network_size=args.network_size, max_frames=args.max_frames, overwrite=args.overwrite,
                     backend=args.backend, backend_options=options,
                     ray=RayOptions(address=args.ray, workers=args.workers, batch=args.batch,
                                    gpus_per_worker=args.gpus_per_worker, threads=args.threads or None,
                                    verbose=args.verbose),
                     progress=not args.quiet, log=log, bag=_bag_options(args))
    ran = f"; Ray startup {result.startup_s:.1f} s, {result.workers} worker(s)" if result.startup_s else \
        "; nothing left to run on Ray"
    return _report(result, args.output, ran)


def _bag_options(args):  # noqa: ANN001, ANN202 - a BagOptions
    from ..jobs.local import BagOptions

    return BagOptions(topics=tuple(args.topic or ("auto",)), mask_suffix=args.mask_topic,
                      copy_topics=args.copy_topics)


def _report(result, output: Path, extra: str = "") -> int:  # noqa: ANN001
    """The closing lines of a run, local or on Ray; exit code 1 when any input failed."""
    print(_final_line(result, output) + extra)
    for path, count in result.videos:
        print(f"  {path} ({count} frames)")
    for path in result.summary_paths[:1]:
        print(f"  summary: {path}")
    if result.failed:
        print(f"{PROG}: {len(result.failed)} input(s) failed; see the lines above and the summary", file=sys.stderr)
        return 1
    return 0


def _final_line(result, output: Path) -> str:  # noqa: ANN001
    fps = result.frames / max(result.seconds, 1e-9)
    parts = [f"{result.frames} frames segmented in {result.seconds:.1f} s ({fps:.1f} FPS) -> {output}"]
    if result.existing:
        parts.append(f"{result.existing} kept from an earlier run (--overwrite redoes them)")
    if result.failed:
        parts.append(f"{len(result.failed)} failed")
    return "; ".join(parts)


if __name__ == "__main__":
    sys.exit(main())
