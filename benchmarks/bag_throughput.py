"""Bag I/O against PNG files through bisenet-infer: the same frames, one run.

    python benchmarks/bag_throughput.py [--frames 200] [--size 512] [--out benchmarks/results/bag-<cpu>.json]

Writes the frames (held-out shapes scenes) once as PNG files and once as a rosbag2 MCAP bag
of raw ``bgr8`` sensor_msgs/Image messages, then times ``bisenet-infer`` (in-process, the
demo model on onnxruntime, masks written) on each, alternating A B A B so drift hits both.
Bag I/O is not the bottleneck when bag FPS / PNG FPS >= 0.9. Where Ray is installed (unless
``--no-ray``), the bag once more through ``bisenet-infer --ray local --workers 1`` (cluster
start included in its time, reported apart), its mask messages compared with the plain run's.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> int:
    import cv2
    from rosbags.rosbag2 import StoragePlugin, Writer
    from rosbags.typesys import Stores, get_typestore

    from bisenet_deploy.cli.infer import main as infer
    from bisenet_deploy.datasets import shapes
    from bisenet_deploy.fileio import write_text_atomic
    from bisenet_deploy.machine import cpu_facts

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--frames", type=int, default=200)
    p.add_argument("--size", type=int, default=512)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--model", type=Path, default=ROOT / "demo" / "model.onnx")
    p.add_argument("--out", type=Path)
    p.add_argument("--no-ray", action="store_true", help="skip the --ray run")
    args = p.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bag-bench-"))
    try:
        images, _ = shapes.write_scene_folder(work / "scenes",
                                              shapes.validation_scenes(args.frames, (args.size, args.size)))
        ts = get_typestore(Stores.ROS2_HUMBLE)
        Image, Header, Time = (ts.types[n] for n in ("sensor_msgs/msg/Image", "std_msgs/msg/Header",
                                                     "builtin_interfaces/msg/Time"))
        bag = work / "drive"
        with Writer(bag, version=9, storage_plugin=StoragePlugin.MCAP) as writer:
            conn = writer.add_connection("/camera/image_raw", "sensor_msgs/msg/Image", typestore=ts)
            for i, path in enumerate(sorted(images.glob("*.png"))):
                frame = cv2.imread(str(path))
                h, w = frame.shape[:2]
                msg = Image(header=Header(stamp=Time(sec=i, nanosec=0), frame_id="cam"), height=h, width=w,
                            encoding="bgr8", is_bigendian=0, step=w * 3, data=frame.reshape(-1))
                writer.write(conn, i * 33_000_000, ts.serialize_cdr(msg, "sensor_msgs/msg/Image"))
        times = {"png": [], "bag": []}
        for r in range(args.repeats):
            for kind, src in (("png", images), ("bag", bag)):
                out = work / f"out-{kind}-{r}"
                start = time.perf_counter()
                code = infer([str(args.model), str(src), "-o", str(out), "--backend", "onnxruntime", "-q"])
                times[kind].append(time.perf_counter() - start)
                assert code == 0, kind
        fps = {k: args.frames / statistics.median(v) for k, v in times.items()}
        ray = None if args.no_ray or importlib.util.find_spec("ray") is None else \
            ray_run(args.model, bag, work / "out-bag-0", work / "out-ray", args.frames)
        cpu = cpu_facts()
        report = {"cpu": cpu["model"], "flags": cpu["isa_flags"], "frames": args.frames, "size": args.size,
                  "seconds": times, "fps": {k: round(v, 2) for k, v in fps.items()},
                  "bag_vs_png": round(fps["bag"] / fps["png"], 3),
                  "bag_mb": round(sum(f.stat().st_size for f in bag.iterdir()) / 1e6, 1)}
        if ray is not None:
            ray["vs_plain_bag"] = round(ray["fps"] / fps["bag"], 2)
            report["bag_ray_local_1_worker"] = ray
        print(json.dumps(report, indent=1))
        if args.out:
            write_text_atomic(args.out, json.dumps(report, indent=1) + "\n")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


def ray_run(model: Path, bag: Path, plain_out: Path, out: Path, frames: int) -> dict:
    """``bisenet-infer BAG --ray local --workers 1``: seconds (cluster start included), the
    start reported apart, and whether its mask messages equal the plain run's."""
    import contextlib
    import io
    import re

    import numpy as np

    from bisenet_deploy.cli.infer import main as infer
    from bisenet_deploy.rosbag.bags import BagReader

    printed = io.StringIO()
    start = time.perf_counter()
    with contextlib.redirect_stdout(printed):
        code = infer([str(model), str(bag), "-o", str(out), "--ray", "local", "--workers", "1", "--backend",
                      "onnxruntime", "-q"])
    seconds = time.perf_counter() - start
    assert code == 0, printed.getvalue()
    startup = float(re.search(r"Ray startup ([0-9.]+) s", printed.getvalue()).group(1))

    def masks(folder: Path) -> list:
        with BagReader(folder / "drive_segmentation") as reader:
            return [(f.timestamp, f.stamp, f.image) for f in reader.frames(["/camera/image_raw/segmentation"])]

    a, b = masks(out), masks(plain_out)
    equal = len(a) == len(b) == frames and all(x[:2] == y[:2] and np.array_equal(x[2], y[2]) for x, y in zip(a, b))
    return {"seconds": round(seconds, 2), "startup_s": startup, "fps": round(frames / seconds, 2),
            "masks_equal_plain": equal}


if __name__ == "__main__":
    sys.exit(main())
