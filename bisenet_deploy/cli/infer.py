"""``bisenet-infer``: segment images, folders, videos or a camera and write the results."""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from ..errors import InputError, UserError
from .common import HelpFormatter, cli_entry

PROG = "bisenet-infer"

EXAMPLES = """\
examples:
  bisenet-infer model.onnx photo.jpg frames/ -o masks/        # palette PNG masks (pixel = class id)
  bisenet-infer model.onnx street.mp4 -o out/ --mode overlay   # overlay video
  bisenet-infer person.onnx 0 -o out/ --background beach.jpg --max-frames 300   # webcam 0
  bisenet-infer model.int8.engine clip.mp4 -o out/ --network-size  # fastest: masks at network size
"""


@dataclass
class Source:
    kind: str  # "image", "video" or "camera"
    target: Path | int
    name: str  # output path stem relative to OUTDIR


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=PROG,
        description="Segment images, image folders, videos or a camera with a BiSeNet model.",
        epilog=EXAMPLES,
        formatter_class=HelpFormatter,
    )
    p.add_argument("model", type=Path, help="model: .onnx, .engine/.plan or .pth")
    p.add_argument("inputs", nargs="+", help="image files, folders, video files or a camera index (0, 1, ...)")
    p.add_argument("-o", "--output", type=Path, required=True, help="output folder (created if missing)")
    p.add_argument("--mode", choices=("mask", "overlay", "background"), help="what to write (default: mask, "
                   "or background when --background is given)")
    p.add_argument("--background", type=Path, help="image that replaces the background (label 0)")
    p.add_argument("--alpha", type=float, default=0.5, help="overlay opacity")
    p.add_argument("--max-frames", type=int, help="stop after this many frames per video/camera")
    p.add_argument("--network-size", action="store_true", help="keep masks at the network resolution (no upscale)")
    p.add_argument("--backend", choices=("onnxruntime", "tensorrt", "torch"), help="force a backend")
    p.add_argument("--device", default="auto", help="backend device: auto, cpu, cuda, tensorrt")
    p.add_argument("--threads", type=int, default=0, help="CPU threads for onnxruntime/torch (0: default)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    return p


def collect_sources(inputs: list[str]) -> list[Source]:
    from ..runtime.sources import is_image, is_video, list_images

    sources: list[Source] = []
    for item in inputs:
        path = Path(item)
        if item.isdigit() and not path.exists():
            sources.append(Source("camera", int(item), f"camera{item}"))
        elif path.is_dir():
            images = list_images(path)
            if not images:
                raise InputError(f"folder '{path}' contains no images")
            sources += [Source("image", p, str(p.relative_to(path).with_suffix(""))) for p in images]
        elif not path.exists():
            raise InputError(f"input '{item}' does not exist")
        elif is_image(path):
            sources.append(Source("image", path, path.stem))
        elif is_video(path):
            sources.append(Source("video", path, path.stem))
        else:
            raise InputError(f"'{item}' is neither an image nor a video file")
    return sources


@cli_entry(PROG)
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    import cv2
    from tqdm import tqdm

    from ..runtime import Segmenter, processing
    from ..runtime.rendering import VideoSink, render, write_image, write_palette_png
    from ..runtime.sources import open_video, read_image

    mode = args.mode or ("background" if args.background else "mask")
    background = None
    if mode == "background":
        if args.background is None:
            raise UserError("--mode background needs --background IMG")
        background = read_image(args.background) if args.background.is_file() else None
        if background is None:
            raise UserError(f"cannot read background image '{args.background}'")
    if args.max_frames is not None and args.max_frames < 1:
        raise UserError("--max-frames must be >= 1")
    if not args.model.is_file():
        raise UserError(f"model '{args.model}' not found")
    sources = collect_sources(args.inputs)
    args.output.mkdir(parents=True, exist_ok=True)

    options = {"threads": args.threads} if args.threads else {}
    seg = Segmenter(args.model, backend=args.backend, device=args.device, backend_options=options,
                    output_size="network" if args.network_size else "frame")
    palette = processing.palette_for(max(2, seg.spec.num_classes), seg.spec.class_names)
    suffix = ".png" if mode == "mask" else f".{mode}.png"

    def draw(frame, mask):
        shown = processing.resize_bilinear(frame, mask.shape[:2]) if args.network_size else frame
        return render(shown, mask, mode, palette, background, args.alpha)

    frames_done, skipped, videos = 0, 0, []
    start = time.perf_counter()
    bar = tqdm(total=_total_frames(sources, args.max_frames, cv2), unit="frame", disable=args.quiet,
               file=sys.stderr, dynamic_ncols=True)
    try:
        for source in sources:
            if source.kind == "image":
                frame = read_image(source.target)
                if frame is None:
                    skipped += 1
                    bar.write(f"skipped unreadable image {source.target}")
                    continue
                out = args.output / (source.name + suffix)
                out.parent.mkdir(parents=True, exist_ok=True)
                mask = seg(frame)
                if mode == "mask":
                    write_palette_png(out, mask, palette)
                else:
                    write_image(out, draw(frame, mask))
                frames_done += 1
                bar.update(1)
                continue
            cap = open_video(str(source.target) if source.kind == "video" else source.target)
            fps = cap.get(cv2.CAP_PROP_FPS) or 25.0
            sink = None
            out = args.output / f"{source.name}.{mode}.mp4"
            try:
                count = 0
                while args.max_frames is None or count < args.max_frames:
                    ok, frame = cap.read()
                    if not ok:
                        break
                    image = draw(frame, seg(frame))
                    if sink is None:
                        sink = VideoSink(out, fps, image.shape[:2])
                    sink.write(image)
                    count += 1
                    frames_done += 1
                    bar.update(1)
                    bar.set_postfix(fps=f"{frames_done / (time.perf_counter() - start):.1f}")
            except BaseException:
                if sink is not None:
                    sink.abort()
                raise
            finally:
                cap.release()
            if sink is None:
                raise InputError(f"no frames could be read from {source.kind} {source.target}")
            sink.close()
            videos.append((out, sink.frames))
    finally:
        bar.close()
        seg.close()
    elapsed = time.perf_counter() - start
    print(f"{frames_done} frames in {elapsed:.1f} s ({frames_done / max(elapsed, 1e-9):.1f} FPS) -> {args.output}")
    for path, count in videos:
        print(f"  {path} ({count} frames)")
    if skipped:
        print(f"  skipped {skipped} unreadable images")
    return 0 if frames_done else 1


def _total_frames(sources: list[Source], max_frames: int | None, cv2) -> int | None:
    total = 0
    for s in sources:
        if s.kind == "image":
            total += 1
        elif s.kind == "camera":
            return None
        else:
            cap = cv2.VideoCapture(str(s.target))
            n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
            cap.release()
            total += min(n, max_frames) if max_frames else n
    return total


if __name__ == "__main__":
    sys.exit(main())
