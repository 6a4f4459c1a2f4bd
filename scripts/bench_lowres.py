"""Post stage and OpenVINO forms: low-resolution export (default) vs --full-size-output.

    PYTHONPATH=. python scripts/bench_lowres.py [--rounds 9] [--openvino [--int8]]

1. Post stage (host labels from the network output, ``processing.labels_from_output``) on
   real network outputs: a 19-class BiSeNetV1 in CoinCheung's layout at 1024x2048 (seeded
   random weights: speed only) and the trained demo model at 512x512 (7 classes), on the
   packaged sample photos: today's argmax over the full-size scores vs the exact label stage
   on the 1/8 scores. Interleaved rounds, one run, medians; labels compared.
2. ``--openvino``: end to end through Segmenter (OpenVINO, in-graph preprocessing) for the
   full-size artifact (in-graph TopK, today's default) and the low-resolution one (host exact
   label stage), interleaved in balanced orders (``runtime.timing``), at both sizes (4x the
   rounds at 512x512, where one frame is short and the machine's jitter is not); ``--int8``
   adds both forms of the INT8 export (``bisenet-export --precision int8``).
Prints one line per measurement and the score bytes per frame.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F


def _models():
    from bisenet_deploy.model.coincheung_v1 import CoinCheungBiSeNetV1
    from bisenet_deploy.model.demo import demo_model

    torch.manual_seed(0)
    cityscapes = CoinCheungBiSeNetV1(19).eval()
    from bisenet_deploy.model.coincheung_v1 import coincheung_spec
    from bisenet_deploy.spec import ModelSpec

    spec = ModelSpec(arch="coincheung_v1", **{**coincheung_spec(19, 32), "input_size": (1024, 2048)})
    demo = demo_model()
    return [("coincheung_v1 19 classes (random weights) 1024x2048", cityscapes, spec),
            ("demo 7 classes (trained) 512x512", demo.model, demo.spec.replace(input_size=(512, 512)))]


def _median_ms(values: list[float]) -> float:
    return float(np.median(values) * 1e3)


def post_stage(rounds: int) -> None:
    from bisenet_deploy.runtime import processing
    from bisenet_deploy.samples import sample_photos

    photos = sample_photos(limit=1)
    photo = photos[0][1] if photos else None
    for name, model, spec in _models():
        rule = model.upsample_rule
        low_spec = spec.replace(upsample=rule, output_stride=8)
        frame = photo if photo is not None else (np.random.default_rng(0).random((*spec.input_size, 3)) * 255).astype(np.uint8)
        x = torch.from_numpy(processing.preprocess([frame], spec))
        with torch.no_grad():
            low = model.low_resolution(x).numpy()
        full = F.interpolate(torch.from_numpy(low), size=spec.input_size, mode="bilinear",
                             align_corners=rule.align_corners).numpy()
        before, after = [], []
        for _ in range(rounds):
            t0 = time.perf_counter()
            ref = processing.labels_from_output(full, spec)
            t1 = time.perf_counter()
            got = processing.labels_from_output(low, low_spec)
            t2 = time.perf_counter()
            before.append(t1 - t0)
            after.append(t2 - t1)
        top = np.sort(full, axis=1)
        ties = (top[:, -1] - top[:, -2]) <= 1e-5 * max(1.0, float(np.abs(full).max()))
        differ = int(((got != ref) & ~ties).sum())
        print(f"post {name}: full-size argmax {_median_ms(before):.2f} ms, exact low-res stage "
              f"{_median_ms(after):.2f} ms (ratio {np.median(after) / np.median(before):.3f}); "
              f"labels differing outside float ties: {differ}; score bytes per frame {full.nbytes:,} -> {low.nbytes:,}")


def _int8(folder: Path, name: str, size: tuple[int, int], full: bool) -> Path:
    """The INT8 artifact of ``bisenet-export --precision int8`` (calibrated on the sample photos)
    for the model called ``name`` in ``_models()``: the demo model, or a 19-class CoinCheung V1
    checkpoint with seeded random weights (scripts/cityscapes_checkpoint.py)."""
    import subprocess
    import sys

    here = Path(__file__).resolve().parent
    if name.startswith("demo"):
        source = ["--demo"]
    else:
        ckpt = folder / "model_final.pth"
        if not ckpt.exists():
            subprocess.run([sys.executable, str(here / "cityscapes_checkpoint.py"), str(ckpt), "--classes", "19",
                            "--seed", "0"], check=True, stdout=subprocess.DEVNULL)
        source = [str(ckpt)]
    out = folder / f"{size[0]}-{int(full)}-q.onnx"
    subprocess.run([sys.executable, "-m", "bisenet_deploy.cli.export", *source, "-q", "--size", f"{size[0]}x{size[1]}",
                    "--precision", "int8", "--calib-count", "8", "--no-verify", "-o", str(out),
                    *(["--full-size-output"] if full else [])], check=True)
    return out.with_suffix(".int8.onnx")


def openvino_forms(rounds: int, folder: Path, int8: bool) -> None:
    from bisenet_deploy.export.onnx import ExportOptions, export_onnx
    from bisenet_deploy.runtime import Segmenter
    from bisenet_deploy.runtime.timing import balanced_orders

    for name, model, spec in _models():
        paths = {}
        for form, full in (("full-size + in-graph TopK", True), ("low-res + host exact labels", False)):
            paths[f"fp32 {form}"] = folder / f"{spec.input_size[0]}-{int(full)}.onnx"
            export_onnx(model, spec, paths[f"fp32 {form}"], ExportOptions(size=spec.input_size, full_size_output=full))
            if int8:
                paths[f"int8 {form}"] = _int8(folder, name, spec.input_size, full)
        frame = (np.random.default_rng(0).random((*spec.input_size, 3)) * 255).astype(np.uint8)
        segs = {form: Segmenter(path, backend="openvino") for form, path in paths.items()}
        names = list(segs)
        times: dict[str, list[float]] = {form: [] for form in segs}
        masks = {form: seg(frame) for form, seg in segs.items()}  # warm up
        orders = balanced_orders(len(names))
        # small inputs: more rounds (one frame is short, the machine's jitter is not)
        count = rounds * (4 if spec.input_size[0] * spec.input_size[1] <= 512 * 512 else 1)
        for r in range(count):
            for i in orders[r % len(orders)]:
                t0 = time.perf_counter()
                segs[names[i]](frame)
                times[names[i]].append(time.perf_counter() - t0)
        for precision in ("fp32", "int8") if int8 else ("fp32",):
            pair = [k for k in names if k.startswith(precision)]
            same = float((masks[pair[0]] == masks[pair[1]]).mean() * 100)
            full_ms, low_ms = (_median_ms(times[k]) for k in pair)
            print(f"openvino {precision} {name}: " + ", ".join(f"{k[5:]} {_median_ms(times[k]):.1f} ms" for k in pair)
                  + f" ({count} rounds; low-res {full_ms / low_ms:.3f}x faster); mask agreement {same:.3f}%")
        for seg in segs.values():
            seg.close()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=9)
    p.add_argument("--openvino", action="store_true")
    p.add_argument("--int8", action="store_true", help="--openvino: also the INT8 forms (calibrated on the sample photos)")
    args = p.parse_args()
    post_stage(args.rounds)
    if args.openvino:
        with tempfile.TemporaryDirectory() as tmp:
            openvino_forms(max(3, args.rounds // 2), Path(tmp), args.int8)


if __name__ == "__main__":
    main()
