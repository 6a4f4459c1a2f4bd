"""Calibration and validation frames: image folders, videos, .npy arrays, built-in photos.

Frames are decoded once, hashed (the calibration cache is keyed by that hash), resized to
the network input size and kept as BGR uint8. ``calibration_batches`` then preprocesses them
with ``runtime.processing.preprocess`` and the artifact's own spec, so calibration sees
exactly the pixels the runtime will feed.

Sources (``open_frame_source``):

* a folder: images found recursively (``runtime.sources.list_images``);
* a video file: frames sampled evenly over its length;
* a ``.npy`` array of uint8 frames, (N, H, W, 3) BGR or (N, H, W) gray;
* nothing: the photographs that ship with scikit-image / scikit-learn / matplotlib.

A calibration run takes a seeded random subset of ``count`` items (evenly spaced frames for
a video); items that cannot be decoded are skipped, replaced by further items where there
are any, and counted. The items a run did not use are the default held-out frames for the
fidelity report.
"""

from __future__ import annotations

import abc
import hashlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from ..errors import InputError
from ..runtime import processing
from ..runtime.sources import IMAGE_SUFFIXES, VIDEO_SUFFIXES, is_video, list_images, open_video, read_image
from ..samples import sample_photo_paths
from ..spec import ModelSpec

#: Bumped whenever the way frames become network inputs changes (invalidates caches).
PREPROCESSING_VERSION = 1


class CalibrationDataError(InputError):
    """A calibration or validation source that yields no usable frames."""


@dataclass
class Frames:
    """Decoded frames, resized to the network input, and where they came from."""

    frames: list[np.ndarray]
    names: list[str]
    source: str
    skipped: int = 0
    items: list = field(default_factory=list)  # the source item of each frame
    used_items: set = field(default_factory=set)  # items consumed (read or unreadable)
    digest: str = ""

    def __len__(self) -> int:
        return len(self.frames)

    def provenance(self) -> dict:
        return {"source": self.source, "count": len(self.frames), "skipped": self.skipped, "sha256": self.digest}


class FrameSource(abc.ABC):
    """Enumerates items (files, frame indices, rows) and decodes them to BGR frames."""

    kind = "source"
    evenly_spaced = False  # video: sample evenly over time instead of at random

    def __init__(self, description: str) -> None:
        self.description = description

    @property
    @abc.abstractmethod
    def items(self) -> list: ...

    @abc.abstractmethod
    def read(self, items: Sequence) -> Iterator[tuple[str, np.ndarray | None]]:
        """(name, frame or None when it cannot be decoded) for each item, in order."""


class FolderSource(FrameSource):
    kind = "folder"

    def __init__(self, paths: list[Path], description: str) -> None:
        super().__init__(description)
        self._paths = paths

    @property
    def items(self) -> list:
        return list(range(len(self._paths)))

    def read(self, items: Sequence) -> Iterator[tuple[str, np.ndarray | None]]:
        for i in items:
            path = self._paths[i]
            try:
                image = read_image(path)
            except OSError:
                image = None
            yield path.name, image


class ArraySource(FrameSource):
    kind = "array"

    def __init__(self, path: Path) -> None:
        super().__init__(f"array {path}")
        try:
            array = np.load(path, mmap_mode="r", allow_pickle=False)
        except (ValueError, OSError) as exc:
            raise CalibrationDataError(f"cannot read '{path}' as a .npy array: {exc}") from None
        if array.ndim not in (3, 4) or (array.ndim == 4 and array.shape[-1] not in (1, 3, 4)):
            raise CalibrationDataError(
                f"'{path}' holds an array of shape {array.shape}; expected frames (N, H, W, 3) BGR or (N, H, W) gray"
            )
        if array.dtype != np.uint8:
            raise CalibrationDataError(
                f"'{path}' holds {array.dtype} values; expected uint8 frames 0..255 (the same frames the "
                "runtime gets, before any normalization)"
            )
        if array.shape[0] == 0:
            raise CalibrationDataError(f"'{path}' holds no frames (shape {array.shape})")
        self._array = array

    @property
    def items(self) -> list:
        return list(range(self._array.shape[0]))

    def read(self, items: Sequence) -> Iterator[tuple[str, np.ndarray | None]]:
        for i in items:
            yield f"frame {i}", processing.as_bgr_frame(np.ascontiguousarray(self._array[i]), f"frame {i}")


class VideoSource(FrameSource):
    kind = "video"
    evenly_spaced = True

    def __init__(self, path: Path) -> None:
        super().__init__(f"video {path}")
        self._path = path
        cap = open_video(str(path))
        try:
            count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
            if count <= 0:  # some containers do not say; count by decoding headers
                count = 0
                while cap.grab():
                    count += 1
        finally:
            cap.release()
        if count == 0:
            raise CalibrationDataError(f"video '{path}' has no frames that can be read")
        self._count = count

    @property
    def items(self) -> list:
        return list(range(self._count))

    def read(self, items: Sequence) -> Iterator[tuple[str, np.ndarray | None]]:
        wanted = sorted(set(items))
        cap = open_video(str(self._path))
        try:
            position = 0
            for index in wanted:
                ok = True
                while ok and position < index:
                    ok = cap.grab()
                    position += 1
                ok, frame = cap.read() if ok else (False, None)
                position += 1
                yield f"frame {index}", frame if ok else None
        finally:
            cap.release()


def open_frame_source(path: str | Path | None) -> FrameSource:
    """The frame source for a calibration / validation path (None: built-in photos)."""
    if path is None:
        photos = sample_photo_paths()
        if not photos:
            raise CalibrationDataError(
                "no calibration data: pass --calib with a folder of images, a video or a .npy array "
                "(the built-in sample photos need scikit-image, scikit-learn or matplotlib)"
            )
        return FolderSource(photos, f"{len(photos)} built-in sample photos")
    path = Path(path)
    if not path.exists():
        raise CalibrationDataError(f"calibration source '{path}' does not exist")
    if path.is_dir():
        images = list_images(path)
        if not images:
            raise CalibrationDataError(
                f"no images ({' '.join(IMAGE_SUFFIXES)}) found under '{path}'"
            )
        return FolderSource(images, f"folder {path}")
    if path.suffix.lower() == ".npy":
        return ArraySource(path)
    if is_video(path):
        return VideoSource(path)
    if path.suffix.lower() in IMAGE_SUFFIXES:
        return FolderSource([path], f"image {path}")
    raise CalibrationDataError(
        f"calibration source '{path}' is not a folder of images, a video ({' '.join(VIDEO_SUFFIXES)}) "
        "or a .npy array"
    )


def _order(source: FrameSource, count: int, seed: int | None, exclude: set) -> list:
    """Items to try, in order: evenly spaced for videos, else a seeded random permutation
    (``seed=None``: the source's own order)."""
    items = [i for i in source.items if i not in exclude]
    if not items or count <= 0 or seed is None:
        return items
    if source.evenly_spaced:
        if count >= len(items):
            return items
        # Centres of ``count`` equal segments: never only the first or last frame.
        picks = ((np.arange(count) + 0.5) * len(items) / count).astype(int)
        chosen = [items[p] for p in picks]
        return chosen + [i for i in items if i not in set(chosen)]
    rng = np.random.default_rng(seed)
    return [items[i] for i in rng.permutation(len(items))]


def read_frames(
    source: FrameSource,
    count: int,
    size_hw: tuple[int, int],
    seed: int | None = 0,
    exclude: set | None = None,
    progress: bool = True,
    what: str = "calibration",
) -> Frames:
    """Decode up to ``count`` frames, skipping (and counting) unreadable items.

    Frames are hashed as decoded, then resized to ``size_hw`` with the runtime's resize.
    Returns an empty ``Frames`` when the source has no items left (callers decide whether
    that is an error).
    """
    order = _order(source, count, seed, exclude or set())
    if source.evenly_spaced:
        order = order[:count]  # no replacements: the frames would no longer be evenly spaced
    digest = hashlib.sha256()
    out = Frames([], [], source.description)
    bar = tqdm(
        total=min(count, len(order)), desc=f"reading {what} frames", unit="frame", disable=not progress, leave=False
    )
    try:
        position = 0
        while len(out.frames) < count and position < len(order):
            batch = order[position : position + count - len(out.frames)]
            position += len(batch)
            for item, (name, frame) in zip(batch, source.read(batch)):
                out.used_items.add(item)
                if frame is None or frame.size == 0:
                    out.skipped += 1
                    continue
                frame = processing.as_bgr_frame(frame, name)
                digest.update(repr(frame.shape).encode())
                digest.update(np.ascontiguousarray(frame).data)
                out.frames.append(processing.resize_bilinear(frame, size_hw))
                out.names.append(name)
                out.items.append(item)
                bar.update(1)
    finally:
        bar.close()
    out.digest = digest.hexdigest()
    return out


def calibration_frames(
    source: FrameSource, count: int, size_hw: tuple[int, int], seed: int = 0, progress: bool = True
) -> Frames:
    """Frames to calibrate on; an empty or entirely unreadable source is an error."""
    if count < 1:
        raise CalibrationDataError(f"--calib-count must be >= 1, got {count}")
    frames = read_frames(source, count, size_hw, seed, progress=progress)
    if not frames.frames:
        raise CalibrationDataError(
            f"none of the {frames.skipped} items of the calibration {source.description} could be decoded"
        )
    return frames


def preprocessing_key(spec: ModelSpec) -> dict:
    """Everything that decides how a frame becomes the network input (for cache keys)."""
    return {
        "version": PREPROCESSING_VERSION,
        "resize": "bilinear",
        "input_size": list(spec.input_size),
        "input_layout": spec.input_layout,
        "frame_color_order": spec.frame_color_order,
        "color_order": spec.color_order,
        "mean": list(spec.mean),
        "std": list(spec.std),
        "scale": spec.scale,
    }


def calibration_batches(
    frames: Sequence[np.ndarray], spec: ModelSpec, batch: int = 1
) -> Iterator[tuple[np.ndarray, int]]:
    """(network input batch, number of real frames in it): ``preprocess`` with the artifact's
    spec. A fixed batch size larger than what is left is filled up by repeating frames; the
    count tells callers which rows are real."""
    frames = list(frames)
    for start in range(0, len(frames), batch):
        chunk = frames[start : start + batch]
        real = len(chunk)
        while len(chunk) < batch:
            chunk.append(frames[(start + len(chunk)) % len(frames)])
        yield processing.preprocess(chunk, spec), real


def label_map_paths(image_names: Sequence[Path], images_root: Path, labels_root: Path) -> list[Path]:
    """For each image under ``images_root``, its label map under ``labels_root``: same
    relative path and stem, any image suffix (PNG usually)."""
    found = []
    for image in image_names:
        rel = image.relative_to(images_root) if images_root.is_dir() else Path(image.name)
        candidates = [labels_root / rel.with_suffix(s) for s in (".png", ".bmp", ".tif", ".tiff", rel.suffix)]
        match = next((c for c in candidates if c.is_file()), None)
        if match is None:
            raise CalibrationDataError(f"no label map for '{image}' under '{labels_root}' (expected {candidates[0]})")
        found.append(match)
    return found


@dataclass
class ValidationSet:
    """Held-out frames (resized to the network input) and optional ground-truth labels."""

    frames: Frames
    labels: list[np.ndarray] | None = None


def validation_set(
    images: str | Path,
    labels: str | Path | None,
    count: int,
    size_hw: tuple[int, int],
    progress: bool = True,
) -> ValidationSet:
    """``--val-images`` (and ``--val-labels``): the first ``count`` images in sorted order."""
    images = Path(images)
    if not images.exists():
        raise CalibrationDataError(f"--val-images '{images}' does not exist")
    paths = list_images(images)[:count]
    if not paths:
        raise CalibrationDataError(f"no images found under --val-images '{images}'")
    source = FolderSource(paths, f"folder {images}")
    frames = read_frames(source, len(paths), size_hw, seed=None, progress=progress, what="validation")
    if not frames.frames:
        raise CalibrationDataError(f"none of the images under --val-images '{images}' could be decoded")
    if labels is None:
        return ValidationSet(frames)
    labels = Path(labels)
    if not labels.is_dir():
        raise CalibrationDataError(f"--val-labels '{labels}' is not a folder")
    readable = [paths[i] for i in frames.items]
    maps = []
    for path in label_map_paths(readable, images, labels):
        label = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        if label is None or label.ndim != 2:
            raise CalibrationDataError(f"label map '{path}' must be a single-channel image of class ids")
        maps.append(processing.resize_labels(label, size_hw))
    return ValidationSet(frames, maps)
