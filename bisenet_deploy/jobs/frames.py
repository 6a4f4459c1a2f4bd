"""The steps every executor shares: work items, decoding them into frames, writing a frame's
result, and assembling the one-output sources (overlay videos, bags) from their frames.

Where each result goes, per source name (``plan``) and mode:

| input | ``mask`` (class ids, lossless) | ``overlay`` / ``background`` |
|---|---|---|
| image ``x`` | ``x.png`` (palette PNG: pixel value = class id) | ``x.overlay.png`` |
| video / camera ``clip`` | ``clip/000000.png``, one palette PNG per frame | ``clip.overlay.mp4`` |
| bag ``drive`` | ``drive_segmentation/``: rosbag2 MCAP, ``mono8`` ids on ``<topic>/segmentation`` | + ``bgr8`` on ``.../overlay`` |

A bag's output also starts with one ``vision_msgs/LabelInfo`` and, where asked, holds colour
masks and confidence images (``rosbag.topics`` names every topic).

Masks are never written as lossy video. Frames of a one-output source wait as PNGs in a hidden
folder of OUT (``frames_dir``) until the executor's run ends; then the video or bag is written
in frame order, so a local and a Ray run give the same file. Bag stamps and log times (ns,
beyond float64) travel as strings: Ray Data moves integer columns with gaps as float64.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError, UserError

EMPTY = np.zeros((0, 0, 3), np.uint8)


def image_output(name: str, mode: str) -> str:
    return f"{name}.png" if mode == "mask" else f"{name}.{mode}.png"


def frame_output(name: str, index: int) -> str:
    return f"{name}/{index:06d}.png"


def video_output(name: str, mode: str) -> str:
    return f"{name}.{mode}.mp4"


def bag_output(name: str) -> str:
    return f"{name}_segmentation"


@dataclass
class Item:
    """One unit of work: an image, or a range [start, stop) of a video's frames or of a bag's
    camera messages (stop -1: to the end). ``keep``: frames whose outputs are kept."""

    source: str  # the summary's name of the input (its resolved path, or ``camera N``)
    kind: str  # image | video | camera | bag
    path: str
    name: str
    output: str  # the image, the video or the bag; a mask video's frames: the folder
    start: int = 0
    stop: int = 1
    declared: int = 0
    keep: list[int] = field(default_factory=list)
    frames_dir: str = ""
    topics: list[str] = field(default_factory=list)
    stamp: str = ""  # the input's size:mtime_ns (``summary``)

    @classmethod
    def of(cls, row: dict[str, Any]) -> Item:
        """An Item back from a Ray row (arrays as lists, numpy scalars as Python's)."""
        plain = {k: v.tolist() if hasattr(v, "tolist") else v for k, v in row.items()}
        return cls(**plain)


def _row(item: Item, frame: int, status: str, image: np.ndarray = EMPTY, error: str = "", **bag: str) -> dict:
    if status == "failed":
        output = ""
    elif item.kind == "image" or (item.kind in ("video", "camera") and not item.frames_dir):
        output = item.output if item.kind == "image" else frame_output(item.name, frame)
    else:
        output = item.output
    facts = {"topic": "", "stamp": "", "log_time": "", "frame_id": "", **bag}
    return {"source": item.source, "frame": frame, "output": output, "status": status, "error": error,
            "image": image, "height": int(image.shape[0]), "width": int(image.shape[1]),
            "file": f"{item.frames_dir}/{frame:06d}" if item.frames_dir else output, "input_stamp": item.stamp,
            **facts}


def todo_row(item: Item, frame: int, image: np.ndarray) -> dict[str, Any]:
    """The row of a frame read elsewhere (the live executor's streams), ready to segment."""
    return _row(item, frame, "todo", image)


def decode(item: Item) -> Iterator[dict[str, Any]]:
    """The frames of one item as rows: ``todo`` (with the image), ``exists`` (output kept) or
    ``failed`` (with the reason). Every OSError of reading is the input's failure, not the run's."""
    import cv2

    try:
        yield from _decode(item)
    except (OSError, InputError, cv2.error) as exc:
        at = getattr(exc, "after", 0 if item.kind == "image" else -1)
        if not hasattr(exc, "after") or item.start <= at < (item.stop if item.stop >= 0 else at + 1):
            why = f"cannot read '{item.path}': {exc.strerror or exc}" if isinstance(exc, OSError) else str(exc)
            yield _row(item, at, "failed", error=why)


def _decode(item: Item) -> Iterator[dict[str, Any]]:
    import cv2

    if item.kind == "image":
        if not stat.S_ISREG(os.stat(item.path).st_mode):  # a FIFO would block the run for good
            raise OSError(f"'{item.path}' is not a regular file")
        data = np.fromfile(item.path, dtype=np.uint8)  # OSErrors: unreadable, gone, a folder now
        image = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
        if image is None:
            yield _row(item, 0, "failed", error="cannot decode the image (corrupt, empty or not an image)")
        else:
            yield _row(item, 0, "todo", image)
        return
    if item.kind == "bag":
        from ..rosbag.bags import BagReader

        with BagReader(item.path) as reader:
            for number, f in enumerate(reader.frames(item.topics, item.start, item.stop), item.start):
                facts = {"topic": f.topic, "stamp": str(f.stamp), "log_time": str(f.timestamp), "frame_id": f.frame_id}
                if f.image is None:
                    yield _row(item, number, "failed", error=f"{f.topic} message {f.index}: {f.error}", **facts)
                else:
                    yield _row(item, number, "todo", f.image, **facts)
        return
    from ..runtime.sources import open_video, truncation

    cap = open_video(int(item.path) if item.kind == "camera" else item.path)
    try:
        if item.start:
            cap.set(cv2.CAP_PROP_POS_FRAMES, item.start)
        index, keep = item.start, set(item.keep)
        while item.stop < 0 or index < item.stop:
            ok, frame = cap.read()
            if not ok:
                break
            yield _row(item, index, "exists") if index in keep else _row(item, index, "todo", frame)
            index += 1
    finally:
        cap.release()
    if index == 0:
        yield _row(item, -1, "failed", error=f"no frames could be read from {item.kind} {item.source}")
    elif 0 <= item.stop and index < item.stop:  # the executor keeps the first of these per source
        yield _row(item, index, "failed", error=truncation(item.declared, index))


def write(out: Path, renderer, row: dict[str, Any], mask: np.ndarray,  # noqa: ANN001 - a Renderer
          confidence: np.ndarray | None = None) -> None:
    """A frame's result: its PNG, or for a one-output source the PNGs the video or bag is made
    from (a bag frame's confidence image too, where asked)."""
    from ..runtime.rendering import write_image

    image, target = row["image"], out / row["file"]
    if row["topic"]:
        write_image(f"{target}.mask.png", mask)
        if confidence is not None:
            write_image(f"{target}.confidence.png", confidence)
        if renderer.mode != "mask":
            write_image(f"{target}.picture.png", renderer.picture(image, mask))
    elif row["file"] != row["output"]:
        write_image(f"{target}.png", renderer.picture(image, mask))
    else:
        renderer.write(target, image if image.size else mask, mask)


def written(out: Path, renderer, summary, row: dict, mask: np.ndarray, latency_ms: float,  # noqa: ANN001
            worker: str, confidence: np.ndarray | None = None) -> dict:
    """The write step of both executors: the frame's result on disk, then its summary row; a
    write that fails (disk full, a folder in the way) is the input's failed row."""
    try:
        write(out, renderer, row, mask, confidence)
    except (OSError, UserError) as exc:
        return {**row, "status": "failed", "error": f"cannot write {row['output'] or row['file']}: {exc}"}
    return summary.frame_row(row, mask, latency_ms, worker)


def assemble_video(out: Path, frames_dir: str, output: str, fps: float) -> int:
    """An overlay/background video from the frames left in ``frames_dir``, in frame order."""
    from ..runtime.rendering import VideoSink
    from ..runtime.sources import read_image

    sink = None
    try:
        for path in sorted((out / frames_dir).glob("*.png")):
            image = read_image(path)
            sink = sink or VideoSink(out / output, fps, image.shape[:2])
            sink.write(image)
    except BaseException:
        if sink is not None:
            sink.abort()
        raise
    if sink is not None:
        sink.close()
    return sink.frames if sink else 0


def assemble_bag(out: Path, item: Item, rows: list[dict[str, Any]], renderer, bag,  # noqa: ANN001
                 threshold: float = 0.0) -> int:
    """The mask bag of one input from its ``ok`` rows' frames, in message order, with each camera
    message's header and log time (and the camera topics copied where asked), after one
    ``vision_msgs/LabelInfo`` (``threshold``: its confidence threshold) at the bag's start."""
    from contextlib import nullcontext

    import cv2

    from ..rosbag.bags import BagReader, staged_bag
    from ..rosbag.topics import output_topics

    rows = sorted(rows, key=lambda r: r["frame"])
    picture = "" if renderer.mode == "mask" else renderer.mode
    topics = output_topics(item.topics, bag.mask_suffix, bag.color, bag.confidence, picture,
                           item.topics if bag.copy_topics else ())
    with staged_bag(out / item.output, renderer.names(), renderer.palette) as writer:
        start = min(int(r["log_time"]) for r in rows)
        with BagReader(item.path) if bag.copy_topics else nullcontext() as reader:
            if reader is not None:
                start = min(start, int(reader.reader.start_time))
            writer.write_label_info(topics.label_info, start, writer.header(int(rows[0]["stamp"])), renderer.names(),
                                    threshold)
            for connection, timestamp, data in reader.raw_messages(item.topics) if reader is not None else ():
                writer.write_raw(connection.topic, connection.msgtype, timestamp, data)
        for row in rows:
            files = out / f"{item.frames_dir}/{row['frame']:06d}"
            mask = cv2.imread(f"{files}.mask.png", cv2.IMREAD_UNCHANGED)
            if mask is None:
                raise UserError(f"the mask of {item.source} frame {row['frame']} is missing ({files}.mask.png)")
            header, log_time = _Header(int(row["stamp"]), row["frame_id"]), int(row["log_time"])
            names = topics.cameras[row["topic"]]
            writer.write_image(names.mask, log_time, header, mask, "mono8")
            if names.color:  # the palette is BGR like the frames
                writer.write_image(names.color, log_time, header, renderer.palette[mask][:, :, ::-1], "rgb8")
            if names.confidence:
                confidence = cv2.imread(f"{files}.confidence.png", cv2.IMREAD_UNCHANGED)
                if confidence is None:
                    raise UserError(f"the confidence of {item.source} frame {row['frame']} is missing")
                writer.write_image(names.confidence, log_time, header, confidence, "mono8")
            if names.picture:
                picture = cv2.imread(f"{files}.picture.png", cv2.IMREAD_COLOR)
                writer.write_image(names.picture, log_time, header, picture, "bgr8")
    return len(rows)


class _Time:
    def __init__(self, ns: int) -> None:
        self.sec, self.nanosec = divmod(ns, 1_000_000_000)


class _Header:
    """What BagWriter.write_image reads of a camera message's header."""

    def __init__(self, stamp_ns: int, frame_id: str) -> None:
        self.stamp, self.frame_id = _Time(stamp_ns), frame_id
