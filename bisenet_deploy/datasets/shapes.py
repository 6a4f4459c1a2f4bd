"""Textured shapes composited over real photographs: a segmentation task with exact labels.

Why it exists: quantization quality can only be judged on a model with decisive logits, and
the demo needs a model that visibly works. Both need a task that trains on a CPU in minutes,
ships with the package and has exact labels. Objects are drawn over random crops of the
sample photographs (``bisenet_deploy.samples``), so the background is real clutter.

Classes: ``background`` and six colour families (red, yellow, green, cyan, blue, magenta):
each object is painted in its class hue (jittered, any saturation and brightness that stays
vivid) and a dark or light neutral, in a random pattern (stripes, checker, dots, grid,
speckle) inside a random outline (ellipse, rectangle, triangle, star or blob, any size,
rotation and aspect). The class is the hue, not the outline or the pattern: texture- and
outline-defined classes were tried first, and a ResNet-18 trained from scratch on 2 CPU cores
had not started to separate them after 20 minutes, while hue classes are learnt in minutes
and the outlines, patterns, occlusions and photo clutter keep the label maps structured.
Objects may leave the frame and occlude each other (the later one wins); the frame then gets
random blur, contrast, brightness and noise.

Object and pattern sizes are in pixels, the same at every frame size (like objects in front
of a camera); bigger frames hold more objects. A network trained on small crops therefore
sees at 512x512 what it saw in training.

The photographs are split once, by name: ``heldout`` photos never appear in training
scenes, so scenes (and the raw photos) of that split are fair "unseen" inputs for
validation and fidelity checks, while ``train`` scenes serve as calibration data.

Everything is deterministic from ``(seed, index, split)``: the same call returns identical
label maps, and identical pixels on the same machine (OpenCV's float blur may round one
grey level differently on another CPU). Frames are BGR uint8 as OpenCV gives them; labels
are uint8 class ids. NumPy + OpenCV only: no torch.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from ..errors import InputError, UserError
from ..samples import sample_photos

CLASS_NAMES = ("background", "red", "yellow", "green", "cyan", "blue", "magenta")
NUM_CLASSES = len(CLASS_NAMES)
BACKGROUND = 0
#: OpenCV hue (0-180) at the centre of each object class; objects stay within +-HUE_JITTER.
CLASS_HUES = {1: 0, 2: 30, 3: 60, 4: 90, 5: 120, 6: 150}
HUE_JITTER = 8
#: Outlines and patterns an object can have, whatever its class.
OUTLINES = ("ellipse", "rectangle", "triangle", "star", "blob")
PATTERNS = ("stripes", "checker", "dots", "grid", "speckle")

#: Photos never used in training scenes. The two motorcycle photos are a stereo pair and
#: must stay on the same side, or "held-out" would be near-duplicates of training data.
HELD_OUT_PHOTOS = frozenset({"chelsea.png", "coffee.png", "flower.jpg", "grace_hopper.jpg"})
SPLITS = ("train", "heldout")

#: Seed of the validation scenes that training reports and tests check against.
VALIDATION_SEED = 1009
#: Object radius in pixels at zoom 1. Sizes are the same at every frame size, like objects
#: in front of a camera: a network trained on small crops sees what it sees at 512x512.
RADIUS_PX = (16.0, 48.0)
#: Objects per 256x256 pixels of frame at zoom 1.
OBJECTS_PER_256 = (5.0, 10.0)
#: Zoom range of training crops (a little scale variety around the validation's 1.0).
TRAINING_ZOOM = (0.8, 1.25)


@dataclass(frozen=True)
class Scene:
    """One rendered frame: BGR uint8 image, uint8 labels, its photo and the classes drawn
    (in drawing order; occluded or off-frame objects included)."""

    image: np.ndarray
    labels: np.ndarray
    photo: str
    classes: tuple[int, ...]


# --- background photographs ----------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def _all_photos() -> tuple[tuple[str, np.ndarray], ...]:
    photos = tuple(sample_photos())
    for _, image in photos:
        image.setflags(write=False)  # shared by every caller through the cache
    return photos


def background_photos(split: str) -> list[tuple[str, np.ndarray]]:
    """(name, BGR image) of the sample photos on one side of the train / held-out split."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    chosen = [(n, im) for n, im in _all_photos() if (n in HELD_OUT_PHOTOS) == (split == "heldout")]
    if not chosen:
        raise InputError(
            f"no {split} background photos found; the shapes scenes need the sample images of "
            "scikit-image, scikit-learn and matplotlib (pip install scikit-image scikit-learn matplotlib)"
        )
    return chosen


def _background(rng: np.random.Generator, photo: np.ndarray, size_hw: tuple[int, int]) -> np.ndarray:
    """Random crop (35-100% of what fits), flip and colour jitter, as float32 (H, W, 3)."""
    h, w = size_hw
    ph, pw = photo.shape[:2]
    fit = min(ph / h, pw / w)
    frac = rng.uniform(0.35, 1.0)
    ch, cw = max(1, min(ph, round(h * fit * frac))), max(1, min(pw, round(w * fit * frac)))
    y, x = int(rng.integers(0, ph - ch + 1)), int(rng.integers(0, pw - cw + 1))
    crop = photo[y : y + ch, x : x + cw]
    shrink = ch > h
    out = cv2.resize(crop, (w, h), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
    if rng.random() < 0.5:
        out = out[:, ::-1]
    gain = rng.uniform(0.8, 1.2, size=3).astype(np.float32)
    return out.astype(np.float32) * gain + np.float32(rng.uniform(-20, 20))


# --- object outlines and fills ---------------------------------------------------------------


def _outline(rng: np.random.Generator, r: float) -> np.ndarray:
    """Polygon vertices (N, 2) of a random outline of radius ``r`` around the origin."""
    kind = OUTLINES[int(rng.integers(len(OUTLINES)))]
    if kind == "ellipse":
        t = np.linspace(0, 2 * np.pi, 72, endpoint=False)
        return np.stack([r * np.cos(t), r * rng.uniform(0.45, 1.0) * np.sin(t)], axis=1)
    if kind == "rectangle":
        a, b = r, r * rng.uniform(0.35, 1.0)
        return np.array([[-a, -b], [a, -b], [a, b], [-a, b]], dtype=np.float64)
    if kind == "triangle":
        # Corners near 120 degrees apart: no slivers that would be lost at 1/8 resolution.
        angles = np.deg2rad([0.0, 120 + rng.uniform(-25, 25), 240 + rng.uniform(-25, 25)])
        radii = 1.15 * r * rng.uniform(0.85, 1.1, size=3)
        return np.stack([radii * np.cos(angles), radii * np.sin(angles)], axis=1)
    if kind == "star":
        points = int(rng.integers(5, 8))
        t = np.arange(2 * points) * np.pi / points
        radii = np.where(np.arange(2 * points) % 2 == 0, 1.2 * r, 1.2 * r * rng.uniform(0.38, 0.55))
        return np.stack([radii * np.cos(t), radii * np.sin(t)], axis=1)
    t = np.linspace(0, 2 * np.pi, 64, endpoint=False)
    radii = np.ones_like(t)
    for k in (2, 3, 4):
        radii += rng.uniform(0, 0.12) * np.cos(k * t + rng.uniform(0, 2 * np.pi))
    return np.stack([r * radii * np.cos(t), r * rng.uniform(0.6, 1.0) * radii * np.sin(t)], axis=1)


def _color_pair(kind: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """The class colour (its hue family, saturated) and a dark or light neutral partner, so
    the pattern shows over any photo and the hue alone names the class."""
    hue = (CLASS_HUES[kind] + int(rng.integers(-HUE_JITTER, HUE_JITTER + 1))) % 180
    hsv = np.array([[[hue, rng.integers(150, 256), rng.integers(130, 256)]]], dtype=np.uint8)
    color = cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)[0, 0].astype(np.float32)
    neutral = rng.uniform(0, 60) if rng.random() < 0.5 else rng.uniform(200, 255)
    return color, np.full(3, neutral, dtype=np.float32)


def _pattern(rng: np.random.Generator, zoom: float, dx: np.ndarray, dy: np.ndarray) -> np.ndarray:
    """Boolean (h, w) mask of a random pattern's second colour; ``dx`` (1, w) and ``dy``
    (h, 1) are pixel offsets from the object's centre. Periods are in pixels (x ``zoom``)."""
    kind = PATTERNS[int(rng.integers(len(PATTERNS)))]
    angle = rng.uniform(0, np.pi)
    cos, sin = np.float32(np.cos(angle)), np.float32(np.sin(angle))
    u, v = dx * cos + dy * sin, dy * cos - dx * sin
    if kind == "stripes":
        return np.mod(u / np.float32(zoom * rng.uniform(6, 14)), 1.0) < 0.5
    if kind == "checker":
        cell = np.float32(zoom * rng.uniform(4, 9))
        return (np.floor(u / cell) + np.floor(v / cell)) % 2 == 0
    if kind == "speckle":
        cell = np.float32(zoom * rng.uniform(2.5, 4.5))
        table = rng.random((64, 64)) < 0.5
        return table[np.floor(u / cell).astype(np.int64) % 64, np.floor(v / cell).astype(np.int64) % 64]
    lattice = np.float32(zoom * rng.uniform(8, 14))
    fu, fv = np.mod(u, lattice), np.mod(v, lattice)
    if kind == "dots":
        radius = lattice * np.float32(rng.uniform(0.25, 0.35))
        return (fu - lattice / 2) ** 2 + (fv - lattice / 2) ** 2 < radius**2
    width = max(np.float32(1.5), lattice * np.float32(0.2))  # grid
    return (fu < width) | (fv < width)


def _draw_object(rng: np.random.Generator, canvas: np.ndarray, labels: np.ndarray, kind: int, zoom: float) -> None:
    h, w = labels.shape
    r = zoom * rng.uniform(*RADIUS_PX)
    cx, cy = rng.uniform(-0.05, 1.05) * w, rng.uniform(-0.05, 1.05) * h
    theta = rng.uniform(0, 2 * np.pi)
    rot = np.array([[np.cos(theta), -np.sin(theta)], [np.sin(theta), np.cos(theta)]])
    pts = _outline(rng, r) @ rot.T + (cx, cy)
    x0, y0 = max(0, int(np.floor(pts[:, 0].min()))), max(0, int(np.floor(pts[:, 1].min())))
    x1, y1 = min(w, int(np.ceil(pts[:, 0].max())) + 1), min(h, int(np.ceil(pts[:, 1].max())) + 1)
    # A child generator: an object that misses the frame (no fill drawn) must not change
    # the objects after it.
    fill_rng = np.random.default_rng(rng.integers(2**63))
    if x1 <= x0 or y1 <= y0:
        return
    alpha = np.zeros((y1 - y0, x1 - x0), dtype=np.uint8)
    # 4 bits of sub-pixel precision and anti-aliasing: smooth edges in the image, while the
    # label is the same coverage thresholded at one half.
    poly = np.round((pts - (x0, y0)) * 16).astype(np.int32)
    cv2.fillPoly(alpha, [poly], 255, lineType=cv2.LINE_AA, shift=4)
    dx = (np.arange(x0, x1, dtype=np.float32) - np.float32(cx))[None, :]
    dy = (np.arange(y0, y1, dtype=np.float32) - np.float32(cy))[:, None]
    c1, c2 = _color_pair(kind, fill_rng)
    color = np.where(_pattern(fill_rng, zoom, dx, dy)[..., None], c2, c1)
    a = (alpha.astype(np.float32) / 255.0)[..., None]
    region = canvas[y0:y1, x0:x1]
    region += a * (color - region)
    labels[y0:y1, x0:x1][alpha >= 128] = kind


# --- scenes --------------------------------------------------------------------------------


def render_scene(
    rng: np.random.Generator,
    photos: Sequence[tuple[str, np.ndarray]],
    size_hw: tuple[int, int],
    zoom: float = 1.0,
) -> Scene:
    """Draw one scene of ``size_hw`` over a random crop of one of ``photos``.

    Objects have radii of ``RADIUS_PX`` x ``zoom`` pixels and their number grows with the
    frame's area, so any frame size shows the same object sizes (a 512x512 frame holds
    about 20-40 objects, a 128x128 crop one or two).
    """
    h, w = int(size_hw[0]), int(size_hw[1])
    if h < 8 or w < 8:
        raise InputError(f"scene size must be at least 8x8, got {h}x{w}")
    name, photo = photos[int(rng.integers(len(photos)))]
    canvas = _background(rng, photo, (h, w))
    labels = np.zeros((h, w), dtype=np.uint8)
    expected = rng.uniform(*OBJECTS_PER_256) * h * w / (256.0 * zoom) ** 2
    count = 0 if rng.random() < 0.04 else int(np.clip(round(expected), 1, 64))
    kinds = tuple(int(k) for k in rng.integers(1, NUM_CLASSES, size=count))
    for kind in kinds:
        _draw_object(rng, canvas, labels, kind, zoom)
    if rng.random() < 0.5:
        canvas = cv2.GaussianBlur(canvas, (0, 0), rng.uniform(0.4, 1.3))
    canvas = (canvas - 128.0) * np.float32(rng.uniform(0.75, 1.25)) + np.float32(128.0 + rng.uniform(-20, 20))
    canvas += rng.standard_normal(canvas.shape, dtype=np.float32) * np.float32(rng.uniform(0, 8))
    image = np.clip(canvas + 0.5, 0, 255).astype(np.uint8)
    return Scene(image=image, labels=labels, photo=name, classes=kinds)


def scene(
    index: int,
    split: str = "heldout",
    size_hw: tuple[int, int] = (512, 512),
    seed: int = VALIDATION_SEED,
    zoom: float = 1.0,
) -> Scene:
    """Scene number ``index`` of a seeded sequence over one side of the photo split."""
    rng = np.random.default_rng([seed, index, SPLITS.index(split)])
    return render_scene(rng, background_photos(split), size_hw, zoom)


def scenes(
    count: int,
    size_hw: tuple[int, int] = (512, 512),
    split: str = "heldout",
    seed: int = VALIDATION_SEED,
    start: int = 0,
) -> list[Scene]:
    """``count`` scenes at zoom 1 numbered from ``start``."""
    return [scene(i, split, size_hw, seed) for i in range(start, start + count)]


def validation_scenes(count: int = 16, size_hw: tuple[int, int] = (512, 512)) -> list[Scene]:
    """The fixed held-out validation scenes that training reports its mIoU on."""
    return scenes(count, size_hw, "heldout", VALIDATION_SEED)


def training_scene(
    index: int,
    seed: int,
    size_hw: tuple[int, int],
    zoom_range: tuple[float, float] = TRAINING_ZOOM,
) -> Scene:
    """A training frame over a ``train`` photo, zoom drawn from ``zoom_range``."""
    rng = np.random.default_rng([seed, index, SPLITS.index("train"), 7])
    return render_scene(rng, background_photos("train"), size_hw, rng.uniform(*zoom_range))


def write_scene_folder(folder: str | Path, items: Sequence[Scene]) -> tuple[Path, Path]:
    """Write ``images/NNNN.png`` (BGR) and ``labels/NNNN.png`` (class ids) under ``folder``.

    For ``--val-images/--val-labels`` style inputs and calibration folders; PNG keeps the
    pixels exact. Returns the two folders.
    """
    folder = Path(folder)
    images, labels = folder / "images", folder / "labels"
    for sub in (images, labels):
        try:
            sub.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UserError(f"cannot create folder '{sub}': {exc.strerror}") from None
    for i, item in enumerate(items):
        for path, data in ((images / f"{i:04d}.png", item.image), (labels / f"{i:04d}.png", item.labels)):
            if not cv2.imwrite(str(path), data):
                raise UserError(f"cannot write '{path}'")
    return images, labels


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m bisenet_deploy.datasets.shapes OUTDIR``: write scenes as PNG folders."""
    import argparse

    p = argparse.ArgumentParser(
        prog="python -m bisenet_deploy.datasets.shapes",
        description="Write synthetic shapes scenes (OUTDIR/images, OUTDIR/labels) for calibration, "
        "validation (--val-images/--val-labels) or benchmarks of the demo model.",
    )
    p.add_argument("outdir", type=Path)
    p.add_argument("--split", choices=SPLITS, default="heldout",
                   help="background photos: 'train' (calibration data) or 'heldout' (never seen in training)")
    p.add_argument("--count", type=int, default=16)
    p.add_argument("--size", default="512x512", help="HxW")
    p.add_argument("--seed", type=int, default=VALIDATION_SEED)
    args = p.parse_args(argv)
    try:
        h, w = (int(v) for v in args.size.lower().split("x"))
    except ValueError:
        p.error(f"--size must look like 512x512, got {args.size!r}")
    if args.count < 1:
        p.error("--count must be >= 1")
    try:
        images, _ = write_scene_folder(args.outdir, scenes(args.count, (h, w), args.split, args.seed))
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {args.count} {args.split} scenes ({h}x{w}) to {images} and {images.parent / 'labels'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
