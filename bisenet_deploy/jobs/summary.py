"""The job summary: one row per frame, ``OUT/summary.csv`` (and ``summary.parquet`` where
pyarrow is installed), written by local and Ray runs alike so the two compare directly.

Columns: ``source`` (the input file, or ``camera N``), ``frame`` (index in a video; 0 for an
image), ``output`` (relative to OUT), ``height``/``width`` (of the frame), ``model``,
``backend``, ``latency_ms`` (the Segmenter call for this frame; in Ray runs the frame's share
of its batch), ``status`` (``ok``; ``exists``: output kept from an earlier run; ``failed``),
``error``, ``worker`` (the process that segmented it), ``topic`` and ``stamp`` (bags: the
camera topic and the message's header stamp in ns; ``frame`` counts the bag's messages in
log order), ``input_stamp`` (``size:mtime_ns`` of the input when it was read: a changed input
is redone), then ``frac_<class>``: the fraction of the mask's pixels of each class. Sources
are resolved paths, so a rerun from another working directory finds its rows.

``OUT/.bisenet-infer.json`` (the manifest) and ``flock(2)`` on OUT: see ``job``.
"""

from __future__ import annotations

import csv
import fcntl
import io
import json
import os
import re
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import UserError
from ..fileio import sha256_file, write_text_atomic

SUMMARY_CSV = "summary.csv"
SUMMARY_PARQUET = "summary.parquet"
MANIFEST = ".bisenet-infer.json"
MANIFEST = ".bisenet-infer.json"
BASE_FIELDS = ("source", "frame", "output", "height", "width", "model", "backend", "latency_ms", "status", "error",
               "worker", "topic", "stamp", "input_stamp")
INT_FIELDS = ("frame", "height", "width", "stamp", "log_time")


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
    """Rows of a job keyed by (source, frame); ints as ints whichever executor made them."""

    def __init__(self, columns: list[str], model: str, backend: str) -> None:
        self.columns = columns
        self.model = model
        self.backend = backend
        self.rows: dict[tuple[str, int], dict[str, Any]] = {}

    @property
    def fields(self) -> list[str]:
        return list(BASE_FIELDS) + self.columns

    def frame_row(self, row: dict[str, Any], mask: np.ndarray, latency_ms: float, worker: str) -> dict[str, Any]:
        """A decoded row (``frames.decode``) once its mask is written."""
        return {**{k: row[k] for k in ("source", "frame", "output", "height", "width", "topic", "stamp", "log_time",
                                       "frame_id", "input_stamp")}, "model": self.model, "backend": self.backend,
                "latency_ms": round(latency_ms, 3), "status": "ok", "error": "", "worker": worker,
                **class_fractions(mask, self.columns)}

    def failure_row(self, source: str, frame: int, error: str, **facts: Any) -> dict[str, Any]:
        return {"source": source, "frame": frame, "output": "", "model": self.model, "backend": self.backend,
                "status": "failed", "error": error, **{k: v for k, v in facts.items() if k in ("topic", "stamp")}}

    def add(self, row: dict[str, Any]) -> tuple[str, int]:
        for key, value in row.items():  # Ray's rows: NumPy scalars, NaN for gaps, ints as floats
            if isinstance(value, np.generic):
                value = value.item()
            if isinstance(value, float) and value != value:
                value = None
            if key in INT_FIELDS and value not in ("", None):
                value = int(value) if not isinstance(value, str) else int(value.split(".")[0])
            row[key] = value
        key = (str(row["source"]), row["frame"])
        self.rows[key] = row
        return key

    def failed(self) -> list[dict[str, Any]]:
        return [r for r in self.sorted_rows() if r.get("status") == "failed"]

    def sorted_rows(self) -> list[dict[str, Any]]:
        return [self.rows[k] for k in sorted(self.rows)]

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

    if name in INT_FIELDS:
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
            return "" if name in ("error", "output", "worker", "topic", "input_stamp") else None
        if name in INT_FIELDS:
            return int(v)  # stamps: ns, exact
        if name == "latency_ms" or name.startswith("frac_"):
            return float(v)
        return str(v)

    table = pa.table({f: pa.array([value(r, f) for r in rows], type=_column_type(f)) for f in fields})
    with atomic_output(path) as tmp:
        pq.write_table(table, str(tmp))
    return path


def read_previous(out: Path) -> dict[tuple[str, int], dict[str, Any]]:
    """Every row of an earlier run's ``summary.csv``, failures too (empty when there is none)."""
    try:
        with open(out / SUMMARY_CSV, newline="") as f:
            return {(r["source"], int(r["frame"])): r for r in csv.DictReader(f)}
    except (OSError, ValueError, KeyError, csv.Error):
        return {}


def lock_folder(out: Path) -> int:
    """flock(2) on the folder itself, held until the process ends or ``finish`` (where a file
    system has no flock, e.g. some network mounts, the run goes on without it)."""
    fd = os.open(out, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise UserError(f"'{out}' is being written by another bisenet-infer run; wait for it to end or choose "
                        "another -o") from None
    except OSError:
        pass
    return fd


def manifest_for(spec,  # noqa: ANN001 - a JobSpec
                 mode: str, num_classes: int, bags: bool) -> dict[str, Any]:
    local = isinstance(spec.model, Path)
    options: dict[str, Any] = {}
    if mode != "mask":
        options = {"legend": spec.legend, **({"alpha": 0.5 if spec.alpha is None else spec.alpha} if mode == "overlay" else
                                             {"background_sha256": sha256_file(spec.background)})}
    if bags:  # what a bag's output holds (defaults where no bag option was given)
        bag = spec.bag
        options.update(topics=list(bag.topics) if bag else ["auto"], mask_suffix=bag.mask_suffix if bag else
                       "/segmentation", copy_topics=bool(bag and bag.copy_topics), color=bool(bag and bag.color),
                       confidence=bool(bag and bag.confidence))
    return {"model": spec.model.name if local else str(spec.model),
            "model_sha256": sha256_file(spec.model) if local else str(spec.model),
            "network_size": spec.network_size, "num_classes": num_classes, "modes": {mode: options},
            # a --spec is part of the model: another one is another model's results
            "given_spec": json.loads(json.dumps(spec.given_spec, sort_keys=True)) if spec.given_spec else None}


#: manifest keys whose option has another name than the key
_OPTIONS = {"color": "--color-mask", "mask_suffix": "--mask-topic", "topics": "--topic"}


def _option(key: str, value: Any) -> str:
    """How the earlier run's option is named on the command line (``--color-mask``, not
    ``--color True``)."""
    name = _OPTIONS.get(key, f"--{key.replace('_', '-')}")
    if isinstance(value, bool):
        return name if value else f"no {name}"
    return f"{name} {','.join(map(str, value)) if isinstance(value, list) else value}"


def claim(out: Path, manifest: dict[str, Any], mode: str, overwrite: bool) -> bool:
    """Refuse a folder holding another model's or options' results (unless ``overwrite``);
    record ours. Returns whether earlier results are replaced."""
    try:
        earlier = json.loads((out / MANIFEST).read_text())
    except (OSError, ValueError):
        earlier = None
    differ: list[str] = []
    if isinstance(earlier, dict) and any(p.name != MANIFEST for p in out.iterdir()):  # else: killed before any output
        differ = [k for k in ("model_sha256", "given_spec", "network_size") if earlier.get(k) != manifest[k]]
        mine, theirs = manifest["modes"][mode], (earlier.get("modes") or {}).get(mode) or {}
        differ += [_option(k, theirs[k]) for k in mine if k in theirs and theirs[k] != mine[k]]
        if differ and not overwrite:
            given = earlier.get("given_spec")
            what = {"model_sha256": f"model {earlier.get('model')}",
                    "given_spec": f"--spec '{json.dumps(given, sort_keys=True)}'" if given else "no --spec",
                    "network_size": "--network-size" if earlier.get("network_size") else "frame-size masks"}
            raise UserError(f"'{out}' holds results of another run ({', '.join(what.get(k, k) for k in differ)}); "
                            "add --overwrite to replace them, or choose another -o")
        if not differ:
            manifest = {**manifest, "modes": {**(earlier.get("modes") or {}), **manifest["modes"]}}
    write_text_atomic(out / MANIFEST, json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    return bool(differ)
