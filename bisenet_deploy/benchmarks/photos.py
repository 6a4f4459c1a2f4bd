"""Real photographs as benchmark inputs, and the fidelity measured on them.

The same photos (the sample photos shipped with scikit-image/scikit-learn/matplotlib, or
``--images DIR``) are the timed inputs and the fidelity set, so speed and accuracy figures
describe the same pixels.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import cv2
import numpy as np

from ..compare import Comparator, run_labels, run_outputs
from ..errors import UserError
from ..runtime import processing
from ..runtime.sources import list_images, read_image
from ..samples import sample_photos

Photos = list[tuple[str, np.ndarray]]


def benchmark_photos(images: Path | None, limit: int) -> tuple[Photos, str]:
    """(name, BGR image) pairs and a description for the protocol header."""
    if images is not None:
        if not images.is_dir():
            raise UserError(f"--images '{images}' is not a folder")
        found = [(p.relative_to(images).as_posix(), img) for p in list_images(images)[:limit]
                 if (img := read_image(p)) is not None]
        if not found:
            raise UserError(f"--images '{images}' holds no readable images")
        return found, f"{len(found)} images from {images}"
    found = sample_photos(limit)
    if found:
        return found, f"{len(found)} real photographs shipped with scikit-image/scikit-learn/matplotlib"
    from ..compare import random_frames

    frames = random_frames(4, (512, 512))
    return [(f"random-{i}", f) for i, f in enumerate(frames)], "4 seeded synthetic frames (no photographs found)"


def ground_truth_for(photos: Photos, images: Path | None, labels: Path | None) -> list[np.ndarray] | None:
    """``--labels DIR``: one label map per photo (same relative path and stem), or None."""
    if labels is None:
        return None
    if images is None:
        raise UserError("--labels needs --images (the label maps belong to those images)")
    if not labels.is_dir():
        raise UserError(f"--labels '{labels}' is not a folder")
    from ..calibration.data import label_map_paths

    maps = []
    for path in label_map_paths([images / name for name, _ in photos], images, labels):
        label = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        if label is None or label.ndim != 2:
            raise UserError(f"label map '{path}' must be a single-channel image of class ids")
        maps.append(label)
    return maps


def frame_sets_for(photos: Photos, frame_size: tuple[int, int], batch: int) -> list[list[np.ndarray]]:
    """Batches of photos resized to the frame size ahead of time (decoding is not timed);
    successive calls cycle through them."""
    h, w = frame_size
    frames = [cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA) for _, img in photos]
    count = max(1, min(len(frames), 4))
    return [[frames[(i * batch + j) % len(frames)] for j in range(batch)] for i in range(count)]


def measure_fidelity(reference: Any, runners: list, size: tuple[int, int], photos: Photos,
                     fidelity: dict[tuple[str, tuple[int, int]], dict[str, Any] | None],
                     truth: list[np.ndarray] | None = None) -> None:
    """Agreement of every (contestant, runner) with the reference on the photos, once per
    size; results go into ``fidelity`` under (name, size), None when the reference cannot
    run at this size. With ``truth`` (label maps of the photos), every runner, the reference
    too, also gets ``miou_vs_labels``. Photo by photo, so no logits pile up in memory."""
    if truth is not None:
        _ground_truth_miou(runners, size, photos, truth, fidelity)
    todo = [(c, r) for c, r in runners if c is not reference and "label_agreement" not in (fidelity.get((c.name, size))
                                                                                          or {})]
    if not todo:
        return
    ref = next((r for c, r in runners if c is reference), None)
    if ref is None:
        for c, _ in todo:
            fidelity.setdefault((c.name, size), None)
        return
    label_classes = 2 if reference.spec.is_binary else reference.spec.num_classes
    acc = {c.name: Comparator(label_classes, name=c.name) for c, _ in todo}
    for _, photo in photos:
        reference_outputs = run_outputs(ref.segmenter, [photo])
        for c, runner in todo:
            acc[c.name].add(reference_outputs, run_outputs(runner.segmenter, [photo]))
    for c, _ in todo:
        result = acc[c.name].figures().to_dict()
        result["images"] = len(photos)
        fidelity[(c.name, size)] = {**(fidelity.get((c.name, size)) or {}), **result}


def _ground_truth_miou(runners: list, size: tuple[int, int], photos: Photos, truth: list[np.ndarray],
                       fidelity: dict) -> None:
    from ..metrics import confusion_matrix, miou_from_confusion

    for c, runner in runners:
        if (fidelity.get((c.name, size)) or {}).get("miou_vs_labels") is not None:
            continue
        classes = 2 if c.spec.is_binary else c.spec.num_classes
        cm = np.zeros((classes, classes), dtype=np.int64)
        for (_, photo), label in zip(photos, truth):
            labels = run_labels(runner.segmenter, [photo])[0]
            cm += confusion_matrix(labels, processing.resize_labels(label, labels.shape[:2]), classes)
        fidelity[(c.name, size)] = {**(fidelity.get((c.name, size)) or {}), "miou_vs_labels": miou_from_confusion(cm)}
