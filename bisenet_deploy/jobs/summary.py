"""The job summary: one row per frame, ``OUT/summary.csv`` (and ``summary.parquet`` where
pyarrow is installed), written by local and Ray runs alike so the two compare directly.

Columns: ``source`` (the input file, or ``camera N``), ``frame`` (index in a video; 0 for an
image), ``output`` (relative to OUT), ``height``/``width`` (of the frame), ``model``,
``backend``, ``latency_ms`` (the Segmenter call for this frame; in Ray runs the frame's share
of its batch), ``status`` (``ok``; ``exists``: output kept from an earlier run; ``failed``),
``error``, ``worker`` (the process that segmented it), ``topic`` and ``stamp`` (bags: the
camera topic and the message's header stamp in ns; ``frame`` counts the bag's messages in
log order), then ``frac_<class>``: the fraction of the mask's pixels of each class.

Next to it, ``OUT/.bisenet-infer.json`` records the model, mode and output size the folder
was written with, so a rerun that would mix results of another model is refused.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import UserError
from ..fileio import sha256_file, write_text_atomic

SUMMARY_CSV = "summary.csv"
SUMMARY_PARQUET = "summary.parquet"
MANIFEST = ".bisenet-infer.json"
BASE_FIELDS = ("source", "frame", "output", "height", "width", "model", "backend", "latency_ms", "status", "error",
               "worker", "topic", "stamp")


def class_columns(num_classes: int, class_names: tuple[str, ...] = ()) -> list[str]:
    """``frac_<name>`` where names are unique and tidy, else ``frac_<id>``."""
    labels = max(2, num_classes)
    names = list(class_names) if len(class_names) == labels else []
    tidy = [re.sub(r"[^0-9A-Za-z]+", "_", n).strip("_").lower() for n in names]
    if names and len(set(tidy)) == len(tidy) and all(tidy):
        return [f"frac_{t}" for t in tidy]
    return [f"frac_{i}" for i in range(labels)]


def class_fractions(mask: np.ndarray, columns: list[str]) -> dict[str, float]:
    counts = np.bincount(mask.reshape(-1), minlength=len(columns))[: len(columns)]
    total = max(1, mask.size)
    return {col: round(float(c) / total, 6) for col, c in zip(columns, counts)}


class Summary:
    """Rows of a job, keyed by (source, frame) so a resumed run keeps earlier rows."""

    def __init__(self, columns: list[str], model: str, backend: str) -> None:
        self.columns = columns
        self.model = model
        self.backend = backend
        self.rows: dict[tuple[str, int], dict[str, Any]] = {}

    @property
    def fields(self) -> list[str]:
        return list(BASE_FIELDS) + self.columns

    def frame_row(self, source: str, frame: int, output: str, mask: np.ndarray, size_hw: tuple[int, int],
                  latency_s: float, worker: str = "") -> dict[str, Any]:
        return {"source": source, "frame": frame, "output": output, "height": size_hw[0], "width": size_hw[1],
                "model": self.model, "backend": self.backend, "latency_ms": round(latency_s * 1e3, 3),
                "status": "ok", "error": "", "worker": worker, **class_fractions(mask, self.columns)}

    def failure_row(self, source: str, frame: int | None, error: str, output: str = "") -> dict[str, Any]:
        return {"source": source, "frame": -1 if frame is None else frame, "output": output, "model": self.model,
                "backend": self.backend, "status": "failed", "error": error}

    def add(self, row: dict[str, Any]) -> None:
        self.rows[(str(row["source"]), int(row["frame"]))] = row

    def keep_existing(self, source: str, frame: int, output: str, previous: dict[tuple[str, int], dict]) -> None:
        """A frame whose output is already there: its earlier row, marked ``exists``."""
        row = dict(previous.get((source, frame)) or {"source": source, "frame": frame, "output": output,
                                                     "model": self.model})
        row["status"] = "exists"
        self.add(row)

    def keep_source(self, source: str, output: str, previous: dict[tuple[str, int], dict]) -> int:
        """A source whose one output (a video, a bag) is already there: every earlier row of
        it (frame 0 when there are none), marked ``exists``; returns how many."""
        kept = [k[1] for k in previous if k[0] == source] or [0]
        for index in kept:
            self.keep_existing(source, index, output, previous)
        return len(kept)

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for row in self.rows.values():
            out[row.get("status", "")] = out.get(row.get("status", ""), 0) + 1
        return out

    def sorted_rows(self) -> list[dict[str, Any]]:
        return [self.rows[k] for k in sorted(self.rows, key=lambda k: (k[0], k[1]))]

    def to_csv(self) -> str:
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=self.fields, extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        for row in self.sorted_rows():
            writer.writerow({k: ("" if row.get(k) is None else row.get(k, "")) for k in self.fields})
        return buffer.getvalue()

    def write(self, out: Path) -> list[Path]:
        """``summary.csv`` always; ``summary.parquet`` too where pyarrow is installed."""
        written = [write_text_atomic(out / SUMMARY_CSV, self.to_csv())]
        parquet = write_parquet(out / SUMMARY_PARQUET, self.fields, self.sorted_rows())
        if parquet is not None:
            written.append(parquet)
        return written


def _column_type(name: str):  # noqa: ANN202 - a pyarrow type
    import pyarrow as pa

    if name in ("frame", "height", "width", "stamp"):
        return pa.int64()
    if name == "latency_ms" or name.startswith("frac_"):
        return pa.float64()
    return pa.string()


def write_parquet(path: Path, fields: list[str], rows: list[dict[str, Any]]) -> Path | None:
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        return None
    from ..fileio import atomic_output

    def value(row: dict[str, Any], name: str) -> Any:
        v = row.get(name)
        if v in ("", None) or (isinstance(v, float) and v != v):
            return "" if name in ("error", "output", "worker", "topic") else None
        if name in ("frame", "height", "width", "stamp"):
            return int(v) if not isinstance(v, str) else int(v.split(".")[0])  # stamps: ns, exact
        if name == "latency_ms" or name.startswith("frac_"):
            return float(v)
        return str(v)

    table = pa.table({f: pa.array([value(r, f) for r in rows], type=_column_type(f)) for f in fields})
    with atomic_output(path) as tmp:
        pq.write_table(table, str(tmp))
    return path


def read_previous(out: Path) -> dict[tuple[str, int], dict[str, Any]]:
    """Rows of an earlier run's ``summary.csv`` (empty when there is none or it is unreadable)."""
    path = out / SUMMARY_CSV
    if not path.is_file():
        return {}
    try:
        with open(path, newline="") as f:
            return {(r["source"], int(r["frame"])): r for r in csv.DictReader(f) if r.get("status") != "failed"}
    except (OSError, ValueError, KeyError, csv.Error):
        return {}


def manifest_for(model: Path | str, mode: str, network_size: bool, num_classes: int) -> dict[str, Any]:
    """What the outputs were made with (a served model, given by URL, is named by it)."""
    local = isinstance(model, Path) and model.is_file()
    return {"model": model.name if local else str(model), "model_sha256": sha256_file(model) if local else str(model),
            "mode": mode, "network_size": network_size, "num_classes": num_classes}


def check_manifest(out: Path, manifest: dict[str, Any], overwrite: bool) -> None:
    """Refuse to add results to a folder written with another model, mode or output size
    (unless ``overwrite``): skipped frames would keep the other run's results."""
    path = out / MANIFEST
    if overwrite or not path.is_file():
        return
    try:
        earlier = json.loads(path.read_text())
    except (OSError, ValueError):
        return
    keys = ("model_sha256", "network_size")  # modes write different files: they may share a folder
    differ = [k for k in keys if earlier.get(k) != manifest.get(k)]
    if differ:
        what = {"model_sha256": f"model {earlier.get('model')}", "mode": f"--mode {earlier.get('mode')}",
                "network_size": "--network-size" if earlier.get("network_size") else "frame-size masks"}
        raise UserError(
            f"'{out}' holds results of another run ({', '.join(what[k] for k in differ)}); "
            "add --overwrite to replace them, or choose another -o"
        )


def write_manifest(out: Path, manifest: dict[str, Any]) -> None:
    write_text_atomic(out / MANIFEST, json.dumps(manifest, indent=1, sort_keys=True) + "\n")


def merge_rows(summary: Summary, rows: Iterable[dict[str, Any]]) -> None:
    for row in rows:
        summary.add(row)
