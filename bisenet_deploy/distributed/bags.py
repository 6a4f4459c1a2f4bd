"""ROS bags in a Ray job: message ranges as work items, the mask bag assembled on the driver.

A bag's selected camera topics are numbered in log-time order over all of them (as a plain
run numbers them) and split into ranges of ``chunk`` messages, so one long recording spreads
over the workers. Decode tasks read their range (skipping the messages before it undecoded);
write tasks leave each frame's class ids (and overlay) as PNGs in a hidden folder in OUT; the
driver then writes the output bag in message order with the header and log time of each
camera message, through the same staged writer a plain run uses, so the result is the bag a
plain run writes. A frame that cannot be decoded is a summary row; a bag damaged part way
gives the readable part and a failed row, as in a plain run.

Ray Data moves integers through Arrow, where a column with gaps becomes float64: stamps and
log times (ns since 1970, beyond float64's 53 bits) travel as strings.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError, UserError


def bag_items(source, base: dict[str, Any], out: Path, overwrite: bool, max_frames: int | None,  # noqa: ANN001
              chunk: int, bag, frames_dir: str) -> tuple[list[dict], list[dict], dict | None]:  # noqa: ANN001
    """(work items, rows decided here, the facts the driver assembles the bag from)."""
    from ..jobs.outputs import bag_output
    from ..rosbag.bags import BagReader

    relative = bag_output(source.name)
    if not overwrite and (out / relative).exists():
        return [], [{"source": source.label, "frame": "*", "output": relative, "status": "exists"}], None
    try:
        with BagReader(source.target) as reader:
            topics = reader.select(bag.topics)
            count = reader.count(topics)
    except UserError as exc:
        return [], [{"source": source.label, "frame": -1, "output": "", "status": "failed", "error": str(exc)}], None
    total = min(count, max_frames) if max_frames else count
    items = [{**base, "kind": "bag", "path": str(source.target), "topics": list(topics), "start": start,
              "stop": min(start + chunk, total), "bag_output": relative, "frames_dir": frames_dir}
             for start in range(0, total, chunk)]
    facts = {"output": relative, "path": str(source.target), "topics": list(topics), "frames_dir": frames_dir,
             "auto": list(bag.topics) == ["auto"]}
    return items, [], facts


def decode_bag(item: dict[str, Any], row) -> list[dict[str, Any]]:  # noqa: ANN001 - stages._row
    """The frames of one message range of a bag, as rows (``todo`` with the image, or
    ``failed`` with the reason)."""
    from ..rosbag.bags import BagReader

    rows: list[dict[str, Any]] = []
    try:
        with BagReader(item["path"]) as reader:
            for number, frame in enumerate(reader.frames(item["topics"], item["start"], item["stop"]), item["start"]):
                facts = {"topic": frame.topic, "stamp": str(frame.stamp), "log_time": str(frame.timestamp),
                         "frame_id": frame.frame_id, "scratch": f"{item['frames_dir']}/{number:06d}"}
                if frame.image is None:
                    rows.append({**row(item, number, item["bag_output"], "failed",
                                       error=f"{frame.topic} message {frame.index}: {frame.error}"), **facts})
                else:
                    rows.append({**row(item, number, item["bag_output"], "todo", frame.image), **facts})
    except InputError as exc:  # damaged part way: the rows read so far, then the reason, once per bag:
        at = getattr(exc, "after", item["start"])  # by the range the damage is in
        if item["start"] <= at < item["stop"] or not hasattr(exc, "after"):
            rows.append(row(item, at, item["bag_output"], "failed", error=str(exc)))
    return rows


def write_bag_frame(out: Path, row: dict[str, str], image: np.ndarray, mask: np.ndarray, renderer) -> None:  # noqa: ANN001
    """One frame's class ids (and picture, for overlay modes) as PNGs for the driver."""
    from ..runtime.rendering import write_image

    write_image(out / (row["scratch"] + ".mask.png"), mask)
    if renderer.mode != "mask":
        write_image(out / (row["scratch"] + ".picture.png"), renderer.picture(image, mask))


def assemble_bags(out: Path, bags: dict[str, dict], summary, scratch: dict[tuple[str, int], dict],  # noqa: ANN001
                  renderer, bag, result) -> None:  # noqa: ANN001
    """Write each bag's output from the frames the write tasks left (``scratch``: where, and
    each frame's log time and frame id), in message order."""
    import cv2

    from ..rosbag.bags import BagReader, staged_bag

    for label, facts in bags.items():
        rows = sorted((row for key, row in summary.rows.items() if key[0] == label and row.get("status") == "ok"),
                      key=lambda r: int(r["frame"]))
        count = 0
        with staged_bag(out / facts["output"], renderer.names(), renderer.palette) as writer:
            if bag.copy_topics:
                with BagReader(facts["path"]) as reader:
                    for connection, timestamp, data in reader.raw_messages(facts["topics"]):
                        writer.write_raw(connection.topic, connection.msgtype, timestamp, data)
            for row in rows:
                frame = scratch[(label, int(row["frame"]))]
                files = out / frame["scratch"]
                mask = cv2.imread(f"{files}.mask.png", cv2.IMREAD_UNCHANGED)
                if mask is None:
                    raise UserError(f"the mask a Ray write task left for {label} frame {row['frame']} is missing "
                                    f"({files}.mask.png)")
                header, log_time = _Header(int(row["stamp"]), frame["frame_id"]), int(frame["log_time"])
                topic = row["topic"] + bag.mask_suffix
                writer.write_image(topic, log_time, header, mask, "mono8")
                if renderer.mode != "mask":
                    picture = cv2.imread(f"{files}.picture.png", cv2.IMREAD_COLOR)
                    writer.write_image(topic + "/" + renderer.mode, log_time, header, picture, "bgr8")
                count += 1
        result.videos.append((out / facts["output"], count))


class _Time:
    def __init__(self, ns: int) -> None:
        self.sec, self.nanosec = divmod(ns, 1_000_000_000)


class _Header:
    """What BagWriter.write_image reads of a camera message's header."""

    def __init__(self, stamp_ns: int, frame_id: str) -> None:
        self.stamp, self.frame_id = _Time(stamp_ns), frame_id
