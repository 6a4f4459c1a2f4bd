"""The three stages of a Ray segmentation job, as functions and a class Ray ships to workers.

* ``decode`` (tasks): one work item (an image, a range of a video's frames or of a bag's
  camera messages, ``bags.py``) -> frame rows;
  frames whose output already exists pass through as ``exists``, unreadable ones as
  ``failed`` with the reason.
* ``SegmentActor`` (an actor pool): holds one Segmenter; segments the ``todo`` rows of a
  batch in one ``predict_batch`` call.
* ``write`` (tasks): writes each mask (or overlay) with the job's Renderer, atomically, and
  returns the summary rows.

Rows are plain dicts: ``source``, ``frame``, ``name``, ``output``, ``status``, ``error``,
``image`` (the decoded frame, empty when not needed), ``mask``, ``latency_ms``, ``worker``.
"""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path
from typing import Any

import numpy as np

_EMPTY = np.zeros((0, 0, 3), np.uint8)
_NO_MASK = np.zeros((0, 0), np.uint8)


def _row(item: dict[str, Any], frame: int, output: str, status: str, image: np.ndarray = _EMPTY,
         error: str = "") -> dict[str, Any]:
    return {"source": item["source"], "frame": frame, "name": item["name"], "output": output, "status": status,
            "error": error, "image": image, "height": int(image.shape[0]), "width": int(image.shape[1]),
            **_NO_BAG}


#: a bag frame's facts (``bags.py``); empty for images and videos, so every row has the same columns
_NO_BAG = {"topic": "", "stamp": "", "log_time": "", "frame_id": "", "scratch": ""}


def decode(item: dict[str, Any]) -> list[dict[str, Any]]:
    """Frames of one work item, decoded in a task (see the module docstring)."""
    from ..jobs.outputs import frame_output, image_output
    from ..runtime.sources import read_image

    out_root, mode, overwrite = Path(item["out"]), item["mode"], item["overwrite"]
    if item["kind"] == "bag":
        from .bags import decode_bag

        return decode_bag(item, _row)
    if item["kind"] == "image":
        relative = image_output(item["name"], mode)
        if not overwrite and (out_root / relative).is_file():
            return [_row(item, 0, relative, "exists")]
        image = read_image(item["path"])
        if image is None:
            return [_row(item, 0, relative, "failed", error="cannot decode the image (corrupt, empty or not an image)")]
        return [_row(item, 0, relative, "todo", image)]
    import cv2

    rows = []
    cap = cv2.VideoCapture(item["path"])
    try:
        if not cap.isOpened():
            return [_row(item, item["start"], "", "failed", error=f"cannot open video '{item['path']}'")]
        if item["start"]:
            cap.set(cv2.CAP_PROP_POS_FRAMES, item["start"])
        for index in range(item["start"], item["stop"]):
            ok, frame = cap.read()
            if not ok:
                rows.append(_row(item, index, "", "failed",
                                 error=f"declares {item['declared']} frames but frame {index} could not be decoded "
                                       "(truncated or corrupt?)"))
                break
            if mode == "mask":
                relative = frame_output(item["name"], index, mode)
                if not overwrite and (out_root / relative).is_file():
                    rows.append(_row(item, index, relative, "exists"))
                    continue
            else:
                relative = f"{item['frames_dir']}/{index:06d}.png"
            rows.append(_row(item, index, relative, "todo", frame))
    finally:
        cap.release()
    return rows


class SegmentActor:
    """One Segmenter per actor, opened from the artifact's bytes (so workers on other nodes
    need no copy of the file) with the backend the driver resolved."""

    def __init__(self, files: dict[str, bytes], model_name: str, backend: str, options: dict[str, Any],
                 output_size: str, keep_images: bool) -> None:
        from ..fileio import temporary_folder
        from ..runtime import Segmenter

        import ray

        self.folder = None
        if isinstance(files, ray.ObjectRef):  # the artifact's bytes, put in the object store once
            files = ray.get(files)
        if "path" in files:  # a local cluster: the file itself
            model_path = Path(files["path"])
        else:
            self.folder = temporary_folder("bisenet-ray-model")
            for name, data in files.items():
                (self.folder / name).write_bytes(data)
            model_path = self.folder / model_name
        self.seg = Segmenter(model_path, backend=backend, backend_options=options, output_size=output_size)
        self.keep_images = keep_images
        self.worker = f"{socket.gethostname()}:{os.getpid()}"

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        status = batch["status"]
        todo = [i for i, s in enumerate(status) if s == "todo"]
        masks = np.empty(len(status), dtype=object)
        masks[:] = [_NO_MASK] * len(status)
        latency = np.zeros(len(status), dtype=np.float64)
        if todo:
            start = time.perf_counter()
            results = self.seg.predict_batch([batch["image"][i] for i in todo])
            per_frame = (time.perf_counter() - start) / len(todo)
            for i, mask in zip(todo, results):
                masks[i] = mask
                latency[i] = per_frame * 1e3
        out = dict(batch)
        out["mask"] = masks
        out["latency_ms"] = latency
        out["worker"] = np.array([self.worker] * len(status), dtype=object)
        if not self.keep_images:
            images = np.empty(len(status), dtype=object)
            images[:] = [_EMPTY] * len(status)
            out["image"] = images
        return out

    def __del__(self) -> None:
        import shutil

        if getattr(self, "folder", None):
            shutil.rmtree(self.folder, ignore_errors=True)


def write(batch: dict[str, np.ndarray], render: dict[str, Any], out: str, columns: list[str], model: str,
          backend: str) -> dict[str, np.ndarray]:
    """Write the masks of a batch and return its summary rows (no arrays)."""
    from ..jobs.outputs import Renderer
    from ..jobs.summary import Summary

    renderer = Renderer(**render)
    summary = Summary(columns, model, backend)
    rows = []
    for i, status in enumerate(batch["status"]):
        source, frame, output = str(batch["source"][i]), int(batch["frame"][i]), str(batch["output"][i])
        bag = {k: str(batch[k][i]) for k in _NO_BAG} if batch["topic"][i] else None  # every row has the keys
        if status == "todo":
            image, mask = batch["image"][i], batch["mask"][i]
            try:
                if bag:
                    from .bags import write_bag_frame

                    write_bag_frame(Path(out), bag, image, mask, renderer)
                else:
                    renderer.write(Path(out) / output, image if image.size else mask, mask)
            except Exception as exc:  # noqa: BLE001 - one frame's failure is a summary row, not the job's end
                rows.append(summary.failure_row(source, frame, f"cannot write {output}: {exc}", output))
                continue
            rows.append(summary.frame_row(source, frame, output, mask, (int(batch["height"][i]),
                                          int(batch["width"][i])), float(batch["latency_ms"][i]) / 1e3,
                                          str(batch["worker"][i])))
        elif status == "failed":
            rows.append(summary.failure_row(source, frame, str(batch["error"][i]), output))
        else:
            rows.append({"source": source, "frame": frame, "output": output, "status": "exists"})
        if bag:  # the driver writes the bag from these (strings: see bags.py)
            rows[-1].update(bag)
    keys = list(dict.fromkeys(k for r in rows for k in r))
    return {k: np.array([r.get(k) for r in rows], dtype=object) for k in keys}
