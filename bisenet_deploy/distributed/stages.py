"""The three stages of a Ray job, as functions and a class Ray ships to workers: ``decode``
(tasks) and ``write`` (tasks) are the jobs' own steps (``jobs.frames``); ``SegmentActor``
holds one Segmenter per actor and segments the ``todo`` rows of a batch in one call."""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path
from typing import Any

import numpy as np

from ..jobs.frames import EMPTY, Item, decode, written

_NO_MASK = np.zeros((0, 0), np.uint8)


def _objects(values: list) -> np.ndarray:
    array = np.empty(len(values), dtype=object)
    array[:] = values
    return array


def decode_stage(row: dict[str, Any]) -> list[dict[str, Any]]:
    return list(decode(Item.of(row)))


class SegmentActor:
    """One Segmenter per actor, opened from the artifact's bytes (so workers on other nodes
    need no copy of the file) with the backend the driver resolved."""

    def __init__(self, files: dict[str, bytes], model_name: str, backend: str, options: dict[str, Any],
                 network_size: bool, keep_images: bool, spec: dict[str, Any] | None = None) -> None:
        import ray

        from ..fileio import temporary_folder
        from ..runtime import Segmenter
        from ..spec import ModelSpec

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
        self.seg = Segmenter(model_path, backend=backend, backend_options=options,
                             output_size="network" if network_size else "frame",
                             spec=None if spec is None else ModelSpec.from_dict(spec))
        self.keep_images = keep_images
        self.worker = f"{socket.gethostname()}:{os.getpid()}"

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        status = batch["status"]
        todo = [i for i, s in enumerate(status) if s == "todo"]
        masks = [_NO_MASK] * len(status)
        latency = np.zeros(len(status), dtype=np.float64)
        if todo:
            start = time.perf_counter()
            results = self.seg.predict_batch([batch["image"][i] for i in todo])
            per_frame = (time.perf_counter() - start) / len(todo)
            for i, mask in zip(todo, results):
                masks[i], latency[i] = mask, per_frame * 1e3
        out = {**batch, "mask": _objects(masks), "latency_ms": latency,
               "worker": _objects([self.worker] * len(status))}
        if not self.keep_images:
            out["image"] = _objects([EMPTY] * len(status))
        return out

    def __del__(self) -> None:
        import shutil

        if getattr(self, "folder", None):
            shutil.rmtree(self.folder, ignore_errors=True)


def write_stage(batch: dict[str, np.ndarray], out: str, renderer, columns: list[str], model: str,  # noqa: ANN001
                backend: str) -> dict[str, np.ndarray]:
    """Write the masks of a batch and return its summary rows (no arrays)."""
    from ..jobs.summary import Summary

    summary = Summary(columns, model, backend)
    rows = []
    for i, status in enumerate(batch["status"]):
        row = {k: v[i] for k, v in batch.items() if k not in ("mask", "image")}
        if status == "todo":
            row = written(Path(out), renderer, summary, {**row, "image": batch["image"][i]}, batch["mask"][i],
                          float(batch["latency_ms"][i]), str(batch["worker"][i]))
            row.pop("image", None)
        rows.append(row)
    keys = list(dict.fromkeys(k for r in rows for k in r))
    return {k: _objects([r.get(k) for r in rows]) for k in keys}
