"""ROS bags in bisenet-infer and the ROS 2 node's core (issue 16), with bags written here by
``rosbags``: rosbag2 MCAP, rosbag2 SQLite3 and ROS 1, raw images in every supported encoding
(with row padding) and compressed jpeg/png."""

from __future__ import annotations

import csv
import importlib.util
import threading
from pathlib import Path

import cv2
import numpy as np
import pytest

from bisenet_deploy.cli.infer import main as infer
from bisenet_deploy.runtime import Segmenter

from .conftest import random_frame

if importlib.util.find_spec("rosbags") is None:
    pytest.skip("needs rosbags (pip install 'bisenet-deploy[ros]')", allow_module_level=True)

from rosbags.typesys import Stores, get_typestore  # noqa: E402

from bisenet_deploy.rosbag.bags import BagReader  # noqa: E402
from bisenet_deploy.rosbag.images import EncodingError, image_to_bgr  # noqa: E402
from bisenet_deploy.rosbag.node_core import LatestOnly, SegmentationCore  # noqa: E402

TS2 = get_typestore(Stores.ROS2_HUMBLE)
TS1 = get_typestore(Stores.ROS1_NOETIC)


def raw_image(ts, frame: np.ndarray, encoding: str, stamp: int, pad: int = 0, frame_id: str = "cam"):
    """A sensor_msgs/Image of a BGR frame in ``encoding`` with ``pad`` bytes of row padding."""
    h, w = frame.shape[:2]
    conv = {"bgr8": frame, "rgb8": frame[:, :, ::-1], "mono8": cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY),
            "bgra8": cv2.cvtColor(frame, cv2.COLOR_BGR2BGRA), "rgba8": cv2.cvtColor(frame, cv2.COLOR_BGR2RGBA)}
    if encoding == "mono16":
        pixels = (cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY).astype(np.uint16) << 8).astype(">u2").view(np.uint8)
        pixels = pixels.reshape(h, w * 2)  # big endian, the high byte first
    else:
        pixels = np.ascontiguousarray(conv[encoding]).reshape(h, -1)
    row = pixels.shape[1]
    data = np.zeros((h, row + pad), np.uint8)
    data[:, :row] = pixels
    Image = ts.types["sensor_msgs/msg/Image"]
    return Image(header=_header(ts, stamp, frame_id), height=h, width=w, encoding=encoding, is_bigendian=1 if encoding == "mono16" else 0,
                 step=row + pad, data=data.reshape(-1))


def compressed(ts, frame: np.ndarray, fmt: str, stamp: int):
    ok, data = cv2.imencode(".jpg" if fmt == "jpeg" else ".png", frame)
    Msg = ts.types["sensor_msgs/msg/CompressedImage"]
    return Msg(header=_header(ts, stamp, "cam"), format=fmt, data=data.reshape(-1))


def _header(ts, stamp: int, frame_id: str):
    """std_msgs/Header of the typestore's ROS version (ROS 1 headers also have ``seq``)."""
    Header, Time = ts.types["std_msgs/msg/Header"], ts.types["builtin_interfaces/msg/Time"]
    time = Time(sec=stamp // 10**9, nanosec=stamp % 10**9)
    if "seq" in Header.__dataclass_fields__:
        return Header(seq=0, stamp=time, frame_id=frame_id)
    return Header(stamp=time, frame_id=frame_id)


def write_bag(path: Path, kind: str, topics: dict[str, list], compressed_topics: tuple[str, ...] = ()) -> Path:
    """kind: mcap | sqlite3 | ros1. topics: {topic: [(log time, message)]}."""
    if kind == "ros1":
        from rosbags.rosbag1 import Writer

        ts, serialize = TS1, TS1.serialize_ros1
        writer = Writer(path)
    else:
        from rosbags.rosbag2 import StoragePlugin, Writer

        ts, serialize = TS2, TS2.serialize_cdr
        writer = Writer(path, version=9, storage_plugin=StoragePlugin.MCAP if kind == "mcap" else StoragePlugin.SQLITE3)
    with writer:
        for topic, messages in topics.items():
            msgtype = "sensor_msgs/msg/CompressedImage" if topic in compressed_topics else "sensor_msgs/msg/Image"
            conn = writer.add_connection(topic, msgtype, typestore=ts)
            for timestamp, msg in messages:
                writer.write(conn, timestamp, serialize(msg, msgtype))
    return path


FRAMES = [random_frame(40, 72, seed=i) for i in range(5)]
ENCODINGS = ["bgr8", "rgb8", "mono8", "bgra8", "rgba8", "mono16"]


@pytest.mark.parametrize("encoding", ENCODINGS)
def test_every_encoding_with_row_padding_decodes_to_bgr(encoding):
    frame = FRAMES[0]
    got = image_to_bgr(raw_image(TS2, frame, encoding, 1, pad=5))
    expected = cv2.cvtColor(cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY), cv2.COLOR_GRAY2BGR) \
        if encoding in ("mono8", "mono16") else frame
    np.testing.assert_array_equal(got, expected)
    msg = raw_image(TS2, frame, "bgr8", 1)
    msg.encoding = "yuv422"
    with pytest.raises(EncodingError, match="unsupported image encoding 'yuv422'"):
        image_to_bgr(msg)


@pytest.mark.parametrize("kind", ["mcap", "sqlite3", "ros1"])
def test_bag_in_mask_bag_out_with_headers_stamps_and_exact_masks(export_model5, tmp_path, kind):
    stamps = [1_700_000_000_000_000_000 + i * 33_000_000 for i in range(len(FRAMES))]
    ts = TS1 if kind == "ros1" else TS2
    raw = [(t + 1000, raw_image(ts, f, ENCODINGS[i % len(ENCODINGS)], t, pad=3 * (i % 2)))
           for i, (t, f) in enumerate(zip(stamps, FRAMES))]
    jpeg = [(t + 2000, compressed(ts, f, "png", t)) for t, f in zip(stamps, FRAMES)]
    name = "drive.bag" if kind == "ros1" else "drive"
    bag = write_bag(tmp_path / name, kind, {"/cam/front": raw, "/cam/rear/compressed": jpeg}, ("/cam/rear/compressed",))
    out = tmp_path / "out"
    code = infer([str(export_model5()), str(bag), "-o", str(out), "--backend", "onnxruntime", "--mode", "overlay",
                  "--copy-topics", "-q"])
    assert code == 0
    result = out / "drive_segmentation"
    assert (result / "metadata.yaml").is_file() and list(result.glob("*.mcap"))
    seg = Segmenter(export_model5(), backend="onnxruntime")
    with BagReader(result) as reader:
        counts = {c.topic: c.msgcount for c in reader.reader.connections}
        assert counts == {"/cam/front": 5, "/cam/rear/compressed": 5, "/cam/front/segmentation": 5,
                          "/cam/rear/compressed/segmentation": 5, "/cam/front/segmentation/overlay": 5,
                          "/cam/rear/compressed/segmentation/overlay": 5, "/cam/label_info": 1}
        masks = list(reader.frames(["/cam/front/segmentation"]))
        for frame, (log_time, msg), _src in zip(masks, raw, FRAMES):
            assert frame.timestamp == log_time and frame.stamp == stamps[masks.index(frame)]
            assert frame.frame_id == "cam"
            expected = seg(image_to_bgr(msg))
            np.testing.assert_array_equal(frame.image[:, :, 0], expected)  # mono8 read back as gray BGR
        connection = next(c for c in reader.reader.connections if c.topic == "/cam/front/segmentation")
        first = next(reader.reader.messages(connections=[connection]))
        assert reader.reader.deserialize(first[2], connection.msgtype).encoding == "mono8"
    rows = list(csv.DictReader(open(out / "summary.csv")))
    assert len(rows) == 10 and {r["topic"] for r in rows} == {"/cam/front", "/cam/rear/compressed"}
    assert {int(r["stamp"]) for r in rows} == set(stamps)


def test_bad_bags_are_one_line_and_the_input_is_never_written(export_model5, tmp_path, capsys):
    bag = write_bag(tmp_path / "b", "mcap", {"/camera/image_raw": [(10, raw_image(TS2, FRAMES[0], "bgr8", 10))]})
    before = sorted((p.name, p.stat().st_size) for p in bag.iterdir())
    assert infer([str(export_model5()), str(bag), "-o", str(tmp_path / "o"), "--topic", "/nope", "-q"]) == 1
    err = capsys.readouterr().err
    assert "has no image topic /nope; its image topics: /camera/image_raw (Image)" in err
    assert infer([str(export_model5()), str(bag), "-o", str(bag / "out"), "-q"]) == 2  # never into the input
    assert "inside the input folder" in capsys.readouterr().err
    assert sorted((p.name, p.stat().st_size) for p in bag.iterdir()) == before

    odd = raw_image(TS2, FRAMES[0], "bgr8", 10)
    odd.encoding = "bayer_rggb8"
    weird = write_bag(tmp_path / "w", "mcap", {"/c": [(10, odd), (20, odd)]})
    assert infer([str(export_model5()), str(weird), "-o", str(tmp_path / "o2"), "-q"]) == 1
    lines = [ln for ln in capsys.readouterr().err.splitlines() if "bayer_rggb8" in ln]
    assert len(lines) == 1 and "unsupported image encoding 'bayer_rggb8'" in lines[0]  # said once, counted

    good = write_bag(tmp_path / "g", "mcap", {"/c": [(i * 10, raw_image(TS2, FRAMES[i % 5], "bgr8", i * 10))
                                                     for i in range(1, 40)]})
    mcap = next(good.glob("*.mcap"))
    mcap.write_bytes(mcap.read_bytes()[: mcap.stat().st_size // 2])  # truncated in the middle
    code = infer([str(export_model5()), str(good), "-o", str(tmp_path / "o3"), "-q"])
    err = capsys.readouterr().err
    assert code == 1 and ("cannot read bag" in err or "damaged" in err), err
    assert not [p for p in (tmp_path / "o3").glob(".*bisenet-tmp*")]  # no staging folder left


def test_latest_only_mailbox_drops_stale_frames():
    box = LatestOnly()
    for i in range(5):
        box.put(i)
    assert box.take(timeout=0.1) == 4 and box.dropped == 4 and box.received == 5
    assert box.take(timeout=0.05) is None
    got = []
    t = threading.Thread(target=lambda: got.append(box.take(timeout=5)))
    t.start()
    box.put("late")
    t.join(timeout=5)
    assert got == ["late"]
    box.close()
    assert box.take(timeout=1) is None


def test_node_core_publishes_masks_with_the_camera_header(export_model5):
    seg = Segmenter(export_model5(), backend="onnxruntime")
    core = SegmentationCore(seg, TS2.types["sensor_msgs/msg/Image"], overlay=True)
    msg = raw_image(TS2, FRAMES[1], "rgb8", 123_000_000_456, pad=2, frame_id="front")
    out = dict(core.handle(msg))
    mask, overlay = out[""], out["/overlay"]
    assert mask.header.stamp.sec == 123 and mask.header.stamp.nanosec == 456 and mask.header.frame_id == "front"
    assert mask.encoding == "mono8" and overlay.encoding == "bgr8" and mask.step == mask.width
    np.testing.assert_array_equal(np.asarray(mask.data).reshape(mask.height, mask.width), seg(FRAMES[1]))
    jpeg = compressed(TS2, FRAMES[2], "jpeg", 5)
    assert dict(core.handle(jpeg, "sensor_msgs/msg/CompressedImage"))[""].height == 40
    assert core.stats.processed == 2 and "latency median" in core.stats.line(LatestOnly())


def test_the_ros2_node_runs_where_rclpy_exists(export_model5):
    if importlib.util.find_spec("rclpy") is None:
        pytest.skip("rclpy is not installable from PyPI: the node itself runs only in a ROS 2 environment")
    import subprocess
    import sys

    run = subprocess.run([sys.executable, "-m", "bisenet_deploy.ros2", "--ros-args", "-p", "model:="],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 2 and "parameter 'model' is required" in run.stderr
