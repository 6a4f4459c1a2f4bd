"""Reading camera topics from bags and writing mask topics to a new one (``rosbags``, no ROS).

Inputs: a rosbag2 folder (MCAP or SQLite3, the folder with ``metadata.yaml``), a single
``.mcap`` or ``.db3`` file of one, or a ROS 1 ``.bag``. Output: a rosbag2 MCAP bag (a folder)
with, per camera message, a ``mono8`` class-id image on ``<topic>/segmentation`` carrying
the camera message's header and log time; optionally an ``rgb8`` colour mask, a ``mono8``
confidence image, a ``bgr8`` overlay topic and copies of the camera topics (``topics``
names them); first of all, one ``vision_msgs/LabelInfo`` with the class names. Class names and their BGR colours go into the bag's ``custom_data``
(``bisenet_deploy.classes``) and a ``<bag>.classes.json`` next to it, so a viewer can colour
the ids.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError
from .images import COMPRESSED_TYPES, IMAGE_TYPES, array_to_image, message_to_bgr

BAG_SUFFIXES = (".bag", ".mcap", ".db3")
CLASSES_KEY = "bisenet_deploy.classes"


def is_bag(path: Path) -> bool:
    """A rosbag2 folder, a rosbag2 storage file or a ROS 1 bag."""
    if path.is_dir():
        return (path / "metadata.yaml").is_file()
    return path.suffix.lower() in BAG_SUFFIXES


def _rosbags():  # noqa: ANN202
    try:
        from rosbags.highlevel import AnyReader
        from rosbags.typesys import Stores, get_typestore
    except ImportError:
        raise InputError("reading bags needs rosbags: pip install 'bisenet-deploy[ros]'") from None
    return AnyReader, Stores, get_typestore


def _reader_paths(path: Path) -> list[Path]:
    """AnyReader takes rosbag2 folders; a lone .mcap/.db3 file is opened through its folder
    when that holds metadata.yaml."""
    if path.is_file() and path.suffix.lower() in (".mcap", ".db3"):
        if (path.parent / "metadata.yaml").is_file():
            return [path.parent]
        return [path]
    return [path]


@dataclass
class Frame:
    topic: str
    index: int  # message index within its topic
    timestamp: int  # log time (ns)
    stamp: int  # header stamp (ns)
    frame_id: str
    header: Any
    image: np.ndarray | None
    error: str = ""


class BagReader:
    """The image topics of one bag and their frames, in log-time order."""

    def __init__(self, path: str | Path) -> None:
        AnyReader, Stores, get_typestore = _rosbags()
        self.path = Path(path)
        self.typestore = get_typestore(Stores.ROS2_HUMBLE)
        try:
            self.reader = AnyReader(_reader_paths(self.path), default_typestore=self.typestore)
            self.reader.open()
        except Exception as exc:  # noqa: BLE001 - rosbags raises its own types for damaged files
            raise InputError(f"cannot read bag '{self.path}': {_first_line(exc)}") from None
        self.image_topics = {c.topic: c.msgtype for c in self.reader.connections
                             if c.msgtype in IMAGE_TYPES + COMPRESSED_TYPES}

    def select(self, topics: Sequence[str]) -> list[str]:
        """``topics`` as given (each must be an image topic here) or every image topic for ``auto``."""
        if not self.image_topics:
            raise InputError(f"bag '{self.path}' has no sensor_msgs/Image or CompressedImage topic")
        if not topics or list(topics) == ["auto"]:
            return sorted(self.image_topics)
        missing = [t for t in topics if t not in self.image_topics]
        if missing:
            raise InputError(f"bag '{self.path}' has no image topic {', '.join(missing)}; its image topics: "
                             + ", ".join(f"{t} ({self.image_topics[t].split('/')[-1]})"
                                         for t in sorted(self.image_topics)))
        return list(topics)

    def count(self, topics: Sequence[str]) -> int:
        return sum(c.msgcount for c in self.reader.connections if c.topic in topics)

    def frames(self, topics: Sequence[str], start: int = 0, stop: int | None = None) -> Iterator[Frame]:
        """Decoded frames of ``topics`` (the ``start``-th to the one before ``stop`` in log-time
        order over all of them; those before ``start`` are skipped undecoded); a message that
        cannot be decoded is a Frame with ``error`` (the job records it and goes on); a
        damaged bag ends the iteration with InputError after the readable part."""
        connections = [c for c in self.reader.connections if c.topic in topics]
        counts: dict[str, int] = {}
        try:
            for number, (connection, timestamp, raw) in enumerate(self.reader.messages(connections=connections)):
                if stop is not None and number >= stop:
                    break
                index = counts.get(connection.topic, 0)
                counts[connection.topic] = index + 1
                if number < start:
                    continue
                try:
                    msg = self.reader.deserialize(raw, connection.msgtype)
                except Exception as exc:  # noqa: BLE001
                    yield Frame(connection.topic, index, timestamp, 0, "", None, None,
                                f"cannot deserialize message {index}: {_first_line(exc)}")
                    continue
                header = msg.header
                stamp = int(header.stamp.sec) * 1_000_000_000 + int(header.stamp.nanosec)
                try:
                    image = message_to_bgr(msg, connection.msgtype)
                    error = ""
                except InputError as exc:
                    image, error = None, str(exc)
                yield Frame(connection.topic, index, timestamp, stamp, str(header.frame_id), header, image, error)
        except InputError:
            raise
        except Exception as exc:  # noqa: BLE001 - a truncated or corrupt file, part way through
            damaged = InputError(f"bag '{self.path}' is damaged after {sum(counts.values())} messages: "
                                 f"{_first_line(exc)}")
            damaged.after = sum(counts.values())  # messages of ``topics`` read before it
            raise damaged from None

    def raw_messages(self, topics: Sequence[str]) -> Iterator[tuple[Any, int, bytes]]:
        """(connection, log time, CDR bytes) of ``topics``, converted from ROS 1 where needed."""
        connections = [c for c in self.reader.connections if c.topic in topics]
        for connection, timestamp, raw in self.reader.messages(connections=connections):
            if getattr(self.reader, "is2", True):
                yield connection, timestamp, raw
            else:
                yield connection, timestamp, self.typestore.ros1_to_cdr(raw, connection.msgtype)

    def close(self) -> None:
        self.reader.close()

    def __enter__(self) -> BagReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@contextmanager
def staged_bag(final: Path, class_names: Sequence[str], palette: np.ndarray) -> Iterator[BagWriter]:
    """A BagWriter for the bag ``final``, written in a hidden folder next to it under its final
    name (the storage file is named after the bag folder) and moved into place, replacing
    an older one, only when the block completes; on an error or Ctrl-C nothing is left."""
    import shutil

    from ..fileio import make_folders, remove_stale_temporaries, temporary_name

    make_folders(final.parent)
    remove_stale_temporaries(final.parent)
    staging = temporary_name(final, suffix="")
    staging.mkdir()
    tmp = staging / final.name
    writer = None
    done = False
    try:
        writer = BagWriter(tmp, class_names, palette)
        yield writer
        writer.close()
        if final.exists():
            shutil.rmtree(final)
        tmp.rename(final)
        staging.rmdir()
        done = True
    finally:
        if not done:
            if writer is not None:
                try:
                    writer.writer.close()
                except Exception:  # noqa: BLE001 - already closed or broken: the folder goes anyway
                    pass
            shutil.rmtree(staging, ignore_errors=True)


class BagWriter:
    """A new rosbag2 MCAP bag (``path`` must not exist yet: rosbags refuses to overwrite)."""

    def __init__(self, path: Path, class_names: Sequence[str], palette: np.ndarray) -> None:
        from rosbags.rosbag2 import StoragePlugin, Writer

        from .messages import typestore

        self.typestore = typestore()  # vision_msgs (LabelInfo) registered from its message text
        self.image_type = self.typestore.types["sensor_msgs/msg/Image"]
        self.writer = Writer(path, version=9, storage_plugin=StoragePlugin.MCAP)
        classes = [{"id": i, "name": n, "bgr": [int(c) for c in palette[i]]} for i, n in enumerate(class_names)]
        self.writer.set_custom_data(CLASSES_KEY, json.dumps(classes))
        self.writer.open()
        self.connections: dict[tuple[str, str], Any] = {}
        self.counts: dict[str, int] = {}

    def _connection(self, topic: str, msgtype: str) -> Any:
        key = (topic, msgtype)
        if key not in self.connections:
            self.connections[key] = self.writer.add_connection(topic, msgtype, typestore=self.typestore)
        return self.connections[key]

    def write_image(self, topic: str, timestamp: int, header: Any, array: np.ndarray, encoding: str) -> None:
        # the camera's header as a ROS 2 std_msgs/Header (a ROS 1 header also has seq, dropped)
        Header = self.typestore.types["std_msgs/msg/Header"]
        Time = self.typestore.types["builtin_interfaces/msg/Time"]
        head = Header(stamp=Time(sec=int(header.stamp.sec), nanosec=int(header.stamp.nanosec)),
                      frame_id=str(header.frame_id))
        msg = array_to_image(self.image_type, head, array, encoding)
        data = self.typestore.serialize_cdr(msg, "sensor_msgs/msg/Image")
        self.writer.write(self._connection(topic, "sensor_msgs/msg/Image"), timestamp, data)
        self.counts[topic] = self.counts.get(topic, 0) + 1

    def header(self, stamp_ns: int, frame_id: str = "") -> Any:
        Header = self.typestore.types["std_msgs/msg/Header"]
        Time = self.typestore.types["builtin_interfaces/msg/Time"]
        sec, nanosec = divmod(int(stamp_ns), 1_000_000_000)
        return Header(stamp=Time(sec=sec, nanosec=nanosec), frame_id=frame_id)

    def write_label_info(self, topic: str, timestamp: int, header: Any, class_names: Sequence[str],
                         threshold: float) -> None:
        """The bag's one ``vision_msgs/LabelInfo``: what each mask value means."""
        from .messages import LABEL_INFO, VISION_CLASS, label_info

        types = self.typestore.types
        msg = label_info(types[LABEL_INFO], types[VISION_CLASS], header, class_names, threshold)
        self.write_raw(topic, LABEL_INFO, timestamp, self.typestore.serialize_cdr(msg, LABEL_INFO))

    def write_raw(self, topic: str, msgtype: str, timestamp: int, data: bytes) -> None:
        self.writer.write(self._connection(topic, msgtype), timestamp, data)
        self.counts[topic] = self.counts.get(topic, 0) + 1

    def close(self) -> None:
        self.writer.close()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
