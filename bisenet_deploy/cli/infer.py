"""``bisenet-infer``: segment images, folders, videos or a camera and write the results."""

from __future__ import annotations

import math
import sys
from pathlib import Path

from ..errors import UserError
from .common import Parser, cli_entry, model_arg, set_quiet, spec_arg

PROG = "bisenet-infer"

EXAMPLES = """\
examples:
  bisenet-infer model.onnx photo.jpg frames/ -o masks/        # palette PNG masks (pixel = class id)
  bisenet-infer model.onnx street.mp4 -o out/                  # out/street/000000.png ... one mask per frame
  bisenet-infer model.onnx street.mp4 -o out/ --mode overlay --legend   # out/street.overlay.mp4
  bisenet-infer person.onnx 0 -o out/ --background beach.jpg --max-frames 300   # webcam 0
  bisenet-infer model.int8.engine clip.mp4 -o out/ --network-size  # fastest: masks at network size
  bisenet-infer model.onnx drive_bag/ --topic /camera/image_raw -o out/   # out/drive_bag_segmentation/ (MCAP)
  bisenet-infer model.onnx drive_bag/ -o out/ --color-mask --confidence   # + LabelInfo, colour, confidence (Nav2)
  bisenet-infer model.onnx 0 1 rtsp://cam/stream front.mp4 -o out/ --live   # all at once, per-stream drops/latency

Outputs never replace inputs: the output folder may not be, contain or lie inside an input.
Each input gets its own output name (inputs that would share one are renamed; the log says
how), frames whose output exists are kept (--overwrite redoes them), and OUT/summary.csv
has one row per frame. An input that cannot be read is reported and skipped; the exit code
is then 1, after the rest has been processed (also while an earlier run's failure is in the
summary: rerun that input). A folder holds one model's results: another model or other
options are refused (--overwrite replaces them), and so is a second run while one is writing.
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
    p.add_argument("inputs", nargs="+", help="image files, folders, video files, a camera index (0, 1, ...), a bag, "
                   "or with --live a stream's URL")
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
    p.add_argument("--spec", type=spec_arg, metavar="JSON",
                   help="ModelSpec fields (JSON, or a .json file) for an ONNX model that carries none, e.g. "
                   "'{\"num_classes\": 2, \"mean\": [0.5, 0.5, 0.5], \"std\": [0.5, 0.5, 0.5]}'; size and dynamic "
                   "axes default to the model's input")
    g = p.add_argument_group("ROS bags (rosbag2 folders, .mcap/.db3, ROS 1 .bag; pip install 'bisenet-deploy[ros]')")
    g.add_argument("--topic", action="append", metavar="TOPIC",
                   help="camera topic to segment (repeatable; default: auto, every sensor_msgs/Image or "
                   "CompressedImage topic)")
    g.add_argument("--mask-topic", metavar="SUFFIX",
                   help="appended to each camera topic for its mask topic (default: /segmentation)")
    g.add_argument("--copy-topics", action="store_true",
                   help="copy the camera topics into the output bag, so it opens alone in Foxglove or RViz")
    g.add_argument("--color-mask", action="store_true",
                   help="also write an rgb8 colour mask (the model's palette) on <mask topic>/color")
    g.add_argument("--confidence", action="store_true",
                   help="also write a mono8 confidence image (top class probability x 255, for Nav2's semantic "
                   "segmentation layer) on <mask topic>/confidence")
    g = p.add_argument_group("Ray (fleet-scale batch runs; pip install 'bisenet-deploy[ray]')")
    g.add_argument("--ray", nargs="?", const="local", metavar="ADDRESS",
                   help="run as a Ray Data pipeline: local (a private cluster on this machine, stopped afterwards; "
                   "the default when ADDRESS is left out), auto (the cluster this machine belongs to) or a cluster "
                   "address. Same outputs as a plain run")
    g.add_argument("--workers", type=_count(1), help="Ray actors, each holding one model (default: one per 4 CPUs)")
    g.add_argument("--batch", type=_count(1), help="frames per model call on Ray (default: 8)")
    g.add_argument("--gpus-per-worker", type=float, metavar="G", help="GPUs each Ray actor reserves")
    g.add_argument("--verbose", action="store_true", help="Ray's own logs and per-stage progress bars")
    p.add_argument("--live", action="store_true",
                   help="read cameras, streams (rtsp://, http://) and videos (at their own frame rate) all at once "
                   "through one streaming runtime: frames that arrive while the model is busy are dropped, and the "
                   "run ends with each stream's drop and latency figures")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    return p


@cli_entry(PROG)
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    set_quiet(args.quiet)
    from ..jobs.job import BagOptions, JobSpec

    ray_only = [f"--{k.replace('_', '-')}" for k in ("workers", "batch", "gpus_per_worker", "verbose")
                if getattr(args, k) not in (None, False)]
    if args.ray is None and ray_only:
        raise UserError(f"{', '.join(ray_only)} apply to Ray runs: add --ray")
    if args.live and args.ray is not None:
        raise UserError("--live runs its sources through one streaming runtime in this process; drop --ray")
    bag = None
    if args.topic or args.mask_topic is not None or args.copy_topics or args.color_mask or args.confidence:
        bag = BagOptions(topics=tuple(args.topic or ("auto",)), mask_suffix="/segmentation" if args.mask_topic is None else args.mask_topic,
                         copy_topics=args.copy_topics, color=args.color_mask, confidence=args.confidence)
    spec = JobSpec(args.model, args.inputs, args.output, mode=args.mode, background=args.background, alpha=args.alpha,
                   legend=args.legend, network_size=args.network_size, max_frames=args.max_frames,
                   overwrite=args.overwrite, backend=args.backend, device=args.device, threads=args.threads, bag=bag,
                   quiet=args.quiet, live=args.live, given_spec=args.spec)
    if args.live:
        from ..jobs.live import run
    elif args.ray is None:
        from ..jobs.local import run
    else:
        from ..distributed import RayOptions, run

        spec.ray = RayOptions(address=args.ray, workers=args.workers, batch=args.batch or 8,
                              gpus_per_worker=args.gpus_per_worker or 0.0, threads=args.threads or None,
                              verbose=args.verbose)
    return run(spec).report(args.output, PROG, ray=args.ray is not None)


if __name__ == "__main__":
    sys.exit(main())
