"""Webcam virtual background (the use case this project started from).

Replaces everything that is not the foreground class with an image or a colour. Uses camera 0
when there is one; otherwise, or with --video, it reads a video file. Without a display it
writes the result to a video file instead of opening a window.

    python examples/virtual_background.py person.onnx --background beach.jpg
    python examples/virtual_background.py person.onnx --video talk.mp4 --output out.mp4
    python examples/virtual_background.py cityscapes.onnx --video street.mp4 --foreground 11,12
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import cv2

from bisenet_deploy.errors import UserError
from bisenet_deploy.runtime import Segmenter, replace_background
from bisenet_deploy.runtime.rendering import VideoSink
from bisenet_deploy.runtime.sources import read_image


def open_source(video: str | None) -> cv2.VideoCapture:
    if video is None:
        cap = cv2.VideoCapture(0)
        if cap.isOpened():
            return cap
        raise UserError("no camera found (camera 0 cannot be opened): pass --video FILE to read a video instead, "
                        "e.g. --video talk.mp4")
    if not Path(video).is_file():
        raise UserError(f"video '{video}' not found")
    cap = cv2.VideoCapture(video)
    if not cap.isOpened():
        raise UserError(f"cannot open video '{video}' (not a video, or no decoder for it)")
    return cap


def main() -> int:
    try:
        return run()
    except UserError as exc:
        print(f"virtual_background: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def run() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", help=".onnx / .engine / .pth (binary person model, or multi-class)")
    p.add_argument("--video", help="video file instead of the camera")
    p.add_argument("--background", help="background image (default: green)")
    p.add_argument("--foreground", default=None, help="comma-separated foreground labels (default: any non-zero)")
    p.add_argument("--output", default="virtual_background.mp4", help="output video when there is no display")
    p.add_argument("--max-frames", type=int, default=None)
    args = p.parse_args()

    seg = Segmenter(args.model)
    background = None
    if args.background:
        background = read_image(args.background) if Path(args.background).is_file() else None
        if background is None:
            raise UserError(f"cannot read background image '{args.background}'")
    fill = background if background is not None else (0, 177, 64)
    keep = [int(x) for x in args.foreground.split(",")] if args.foreground else None
    headless = not os.environ.get("DISPLAY")
    cap = open_source(args.video)
    sink, count, start = None, 0, time.perf_counter()
    try:
        while args.max_frames is None or count < args.max_frames:
            ok, frame = cap.read()
            if not ok:
                break
            out = replace_background(frame, seg(frame), fill, keep)
            count += 1
            if headless:
                sink = sink or VideoSink(args.output, cap.get(cv2.CAP_PROP_FPS) or 25.0, out.shape[:2])
                sink.write(out)
            else:
                cv2.imshow("virtual background (q quits)", out)
                if cv2.waitKey(1) & 0xFF == ord("q"):
                    break
    finally:
        cap.release()
        if sink is not None:
            sink.close()
    fps = count / max(time.perf_counter() - start, 1e-9)
    where = f" -> {args.output}" if sink is not None else ""
    print(f"{count} frames, {fps:.1f} FPS{where}")
    return 0 if count else 1


if __name__ == "__main__":
    sys.exit(main())
