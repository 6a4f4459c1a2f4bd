"""OpenVINO's four ways to label a Cityscapes-size frame, stage by stage, interleaved:
the low-resolution export (default) and the --full-size-output one, each with compiled
pre/postprocessing (``prepost=graph``) and with host pre/postprocessing.

    scripts/bench_cityscapes.sh                       # writes build/bench-cpu/cityscapes/city*.onnx
    PYTHONPATH=. python scripts/bench_ov_forms.py [DIR] [--rounds 12] [--precision int8|fp32]

Frames: the packaged sample photos resized to the model's input. Rounds run the forms in
balanced orders (``runtime.timing``); medians of each stage; one run.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np


def main() -> None:
    import time

    from bisenet_deploy.runtime import Segmenter
    from bisenet_deploy.runtime.timing import balanced_orders
    from bisenet_deploy.samples import sample_photos

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("folder", nargs="?", type=Path, default=Path("build/bench-cpu/cityscapes"))
    p.add_argument("--rounds", type=int, default=12)
    p.add_argument("--precision", choices=("int8", "fp32"), default="int8")
    args = p.parse_args()
    suffix = ".int8.onnx" if args.precision == "int8" else ".onnx"
    segs = {}
    for form, name in (("low-res", "city"), ("full-size", "city.full-size")):
        for prepost in ("graph", "host"):
            segs[f"{form} {prepost}"] = Segmenter(args.folder / f"{name}{suffix}", backend="openvino",
                                                  backend_options={"prepost": prepost})
    h, w = next(iter(segs.values())).spec.input_size
    frames = [cv2.resize(img, (w, h)) for _, img in sample_photos(limit=2)]
    names = list(segs)
    stages = {k: {"pre": [], "infer": [], "post": [], "e2e": []} for k in names}
    masks = {k: [segs[k](f) for f in frames] for k in names}  # warm-up, and the labels compared
    orders = balanced_orders(len(names))
    for r in range(args.rounds):
        for i in orders[r % len(orders)]:
            seg, frame, st = segs[names[i]], frames[r % len(frames)], stages[names[i]]
            t0 = time.perf_counter()
            x = seg.preprocess([frame])
            t1 = time.perf_counter()
            y = seg.infer(x)
            t2 = time.perf_counter()
            seg.postprocess(y, [frame.shape[:2]])
            t3 = time.perf_counter()
            for key, value in (("pre", t1 - t0), ("infer", t2 - t1), ("post", t3 - t2), ("e2e", t3 - t0)):
                st[key].append(value * 1e3)
    ref = float(np.median(stages["full-size graph"]["e2e"]))
    print(f"OpenVINO {args.precision} at {h}x{w}, {args.rounds} rounds (medians, ms):")
    for k in names:
        m = {key: float(np.median(v)) for key, v in stages[k].items()}
        same = np.mean([(a == b).mean() for a, b in zip(masks[k], masks["full-size graph"])]) * 100
        print(f"  {k:16s} e2e {m['e2e']:8.1f}  pre {m['pre']:6.1f}  infer {m['infer']:8.1f}  post {m['post']:6.1f}"
              f"  {ref / m['e2e']:.3f}x the full-size graph form; labels {same:.3f}% equal")
    for seg in segs.values():
        seg.close()


if __name__ == "__main__":
    main()
