"""ROS outputs robot stacks consume (issue 22, item 4): one vision_msgs/LabelInfo per output
bag, colour masks and Nav2 confidence images, with bags written here by ``rosbags`` and read
back with the vision_msgs definitions registered from their message text."""

from __future__ import annotations

import importlib.util

import cv2
import numpy as np
import pytest

from bisenet_deploy.cli.infer import main as infer
from bisenet_deploy.runtime import Segmenter
from bisenet_deploy.runtime.confidence import top_probability
from bisenet_deploy.spec import ModelSpec

from .conftest import TINY, random_frame

if importlib.util.find_spec("rosbags") is None:
    pytest.skip("needs rosbags (pip install 'bisenet-deploy[ros]')", allow_module_level=True)

from bisenet_deploy.rosbag import messages  # noqa: E402
from bisenet_deploy.rosbag.images import image_to_bgr  # noqa: E402
from bisenet_deploy.rosbag.topics import label_info_topic, output_topics  # noqa: E402

from .test_rosbag import TS2, raw_image, write_bag  # noqa: E402

NAMES = ("road", "car", "person", "sky", "tree")


@pytest.fixture(scope="module")
def named_model(model5, tmp_path_factory):
    from bisenet_deploy.export.onnx import ExportOptions, export_onnx

    path = tmp_path_factory.mktemp("named") / "named.onnx"
    export_onnx(model5, ModelSpec(num_classes=5, input_size=TINY, class_names=NAMES), path, ExportOptions(size=TINY))
    return path


def two_camera_bag(path):
    """/cam/front (rgb8) and /cam/rear (bgr8), interleaved, distinct stamps and frame ids."""
    frames = {"/cam/front": [random_frame(40, 72, seed=i) for i in range(3)],
              "/cam/rear": [random_frame(48, 64, seed=10 + i) for i in range(4)]}
    topics = {}
    for k, (topic, images) in enumerate(frames.items()):
        stamps = [1_700_000_000_000_000_000 + i * 50_000_000 + k * 7 for i in range(len(images))]
        topics[topic] = [(s + 1000, raw_image(TS2, f, "rgb8" if k == 0 else "bgr8", s, frame_id=topic[5:]))
                         for s, f in zip(stamps, images)]
    return write_bag(path, "mcap", topics), frames, topics


def read_back(bag):
    """{topic: [(log time, message)]} of an output bag, deserialized with the vision_msgs
    and diagnostic_msgs definitions registered from their text (plus the bag's own)."""
    from rosbags.highlevel import AnyReader

    store = messages.typestore()
    out: dict[str, list] = {}
    with AnyReader([bag], default_typestore=store) as reader:
        for connection, timestamp, raw in reader.messages():
            out.setdefault(connection.topic, []).append((timestamp, reader.deserialize(raw, connection.msgtype)))
    return out


def pixels(msg):
    channels = {"mono8": 1, "rgb8": 3, "bgr8": 3}[msg.encoding]
    return np.asarray(msg.data).reshape(msg.height, msg.width, channels).squeeze()


def test_two_camera_bag_gets_masks_colour_confidence_and_one_label_info(named_model, tmp_path):
    bag, frames, sent = two_camera_bag(tmp_path / "drive")
    out = tmp_path / "out"
    assert infer([str(named_model), str(bag), "-o", str(out), "--backend", "onnxruntime", "--color-mask",
                  "--confidence", "-q"]) == 0
    got = read_back(out / "drive_segmentation")
    assert set(got) == {"/cam/label_info", "/cam/front/segmentation", "/cam/rear/segmentation",
                        "/cam/front/segmentation/color", "/cam/rear/segmentation/color",
                        "/cam/front/segmentation/confidence", "/cam/rear/segmentation/confidence"}
    (first, info), = got["/cam/label_info"]  # exactly one, before every other message
    assert first <= min(t for msgs in got.values() for t, _ in msgs)
    assert [(c.class_id, c.class_name) for c in info.class_map] == list(enumerate(NAMES))
    assert info.threshold == 0.0
    seg = Segmenter(named_model, backend="onnxruntime")
    palette = seg_palette(seg)
    for topic, images in frames.items():
        masks = got[f"{topic}/segmentation"]
        assert [t for t, _ in masks] == [t for t, _ in sent[topic]]  # log times
        for (_, mask), (_, cam), colour, conf, image in zip(masks, sent[topic], got[f"{topic}/segmentation/color"],
                                                            got[f"{topic}/segmentation/confidence"], images):
            assert mask.header.stamp == cam.header.stamp and mask.header.frame_id == cam.header.frame_id
            assert (mask.encoding, colour[1].encoding, conf[1].encoding) == ("mono8", "rgb8", "mono8")
            expected = seg(image_to_bgr(cam))
            np.testing.assert_array_equal(pixels(mask), expected)
            np.testing.assert_array_equal(pixels(colour[1]), palette[expected][:, :, ::-1])
            # softmax written independently of runtime/confidence.py, from Segmenter.logits
            logits = seg.logits(image_to_bgr(cam)).astype(np.float64)
            soft = np.exp(logits - logits.max(0)) / np.exp(logits - logits.max(0)).sum(0)
            top = cv2.resize(np.rint(soft.max(0) * 255).astype(np.uint8), image.shape[1::-1],
                             interpolation=cv2.INTER_LINEAR)
            assert np.abs(pixels(conf[1]).astype(int) - top).max() <= 1
            assert conf[1].header.stamp == cam.header.stamp


def seg_palette(seg):
    from bisenet_deploy.runtime.rendering import Renderer

    return Renderer.for_spec(seg.spec).palette


def test_default_bag_run_writes_one_label_info_and_no_extras(export_model5, tmp_path, capsys):
    bag, frames, _ = two_camera_bag(tmp_path / "drive")
    out = tmp_path / "out"
    assert infer([str(export_model5()), str(bag), "-o", str(out), "--backend", "onnxruntime", "-q"]) == 0
    got = read_back(out / "drive_segmentation")
    assert set(got) == {"/cam/label_info", "/cam/front/segmentation", "/cam/rear/segmentation"}
    assert [c.class_name for c in got["/cam/label_info"][0][1].class_map] == [f"class {i}" for i in range(5)]
    # options that do not apply: one line, before anything is written
    for argv, words in (([str(tmp_path / "x.png"), "--confidence"], "apply to bag inputs"),
                        ([str(bag), "--confidence", "--ray"], "--confidence reads the class scores")):
        cv2.imwrite(str(tmp_path / "x.png"), frames["/cam/front"][0])
        code = infer([str(export_model5()), *argv, "-o", str(tmp_path / "o2"), "-q"])
        err = capsys.readouterr().err
        assert code == 2 and words in err and len(err.strip().splitlines()) == 1, err
        assert not (tmp_path / "o2").exists()


def test_output_topics_never_collide_and_label_info_follows_vision_msgs():
    assert label_info_topic(["/camera/image_raw/segmentation"]) == "/camera/image_raw/label_info"
    assert label_info_topic(["/cam/front/segmentation", "/cam/rear/segmentation"]) == "/cam/label_info"
    assert label_info_topic(["/left/segmentation", "/right/segmentation"]) == "/label_info"
    names = output_topics(["/a", "/b"], "/seg/mask", color=True, confidence=True, picture="overlay")
    assert names.cameras["/a"].topics() == ["/a/seg/mask", "/a/seg/mask/color", "/a/seg/mask/confidence",
                                            "/a/seg/mask/overlay"]
    assert names.label_info == "/label_info"
    from bisenet_deploy.errors import InputError

    with pytest.raises(InputError, match="also the copy of camera /a/segmentation"):
        output_topics(["/a", "/a/segmentation"], copied=["/a", "/a/segmentation"])
    with pytest.raises(InputError, match="LabelInfo topic /x/label_info"):
        output_topics(["/x/cam", "/x/label_info"], "/s", copied=["/x/cam", "/x/label_info"])


def test_colliding_topics_fail_that_bag_with_one_line(export_model5, tmp_path, capsys):
    frame = random_frame(40, 72)
    bag = write_bag(tmp_path / "b", "mcap", {"/a": [(5, raw_image(TS2, frame, "bgr8", 5))],
                                               "/a/segmentation": [(6, raw_image(TS2, frame, "bgr8", 6))]})
    code = infer([str(export_model5()), str(bag), "-o", str(tmp_path / "out"), "--copy-topics", "-q"])
    assert code == 1 and "also the copy of camera /a/segmentation" in capsys.readouterr().err
    assert not (tmp_path / "out" / "b_segmentation").exists()


def test_confidence_is_the_winning_probability_for_multiclass_and_binary():
    logits = np.array([[[[2.0]], [[0.0]], [[-1.0]]]], np.float32)  # 1 x 3 x 1 x 1
    expected = np.exp(2.0) / (np.exp(2.0) + 1 + np.exp(-1.0))
    assert top_probability(logits, ModelSpec(num_classes=3))[0, 0, 0] == pytest.approx(expected, rel=1e-6)
    binary = ModelSpec(num_classes=1, binary_threshold=1.0)
    p = top_probability(np.array([[[[0.5, 2.0]]]], np.float32), binary)[0, 0]  # 0.5 -> label 0, 2.0 -> 1
    assert p == pytest.approx([1 - 1 / (1 + np.exp(-0.5)), 1 / (1 + np.exp(-2.0))], rel=1e-6)
    assert messages.label_threshold(binary) == pytest.approx(1 / (1 + np.exp(-1.0)))


def test_node_core_serves_two_topics_through_one_runtime_with_diagnostics(named_model):
    """Two camera topics pushed into one StreamRuntime (as the node's subscriptions do): each
    topic's masks, colour and confidence with its camera's header; LabelInfo; /diagnostics."""
    from bisenet_deploy.rosbag.stream_node import StreamNodeCore, scoring
    from bisenet_deploy.runtime.confidence import open_scoring
    from bisenet_deploy.runtime.streaming import StreamRuntime

    types = messages.typestore().types
    seg = Segmenter(open_scoring(named_model, "onnxruntime"))
    topics = ["/cam/front/image_raw", "/cam/rear/image_raw", "/cam/idle/image_raw"]
    runtime = StreamRuntime(scoring(seg))
    try:
        for topic in topics:
            runtime.add_push(topic)
        core = StreamNodeCore(runtime, seg.spec, topics, types, color=True, confidence=True, node="seg")
        label_topic, info = core.label_info(5)
        assert label_topic == "/cam/label_info" and [c.class_name for c in info.class_map] == list(NAMES)
        sent = {}
        for i in range(3):  # front: one at a time (none dropped); rear: a burst
            msg = raw_image(TS2, random_frame(40, 72, seed=i), "rgb8", 1_000 + i, frame_id="front")
            sent[("/cam/front/image_raw", i)] = msg
            assert core.on_message("/cam/front/image_raw", msg)
            result = runtime.get(timeout=30)
            published = dict(core.outputs(result))
            mask = published["/cam/front/image_raw/segmentation"]
            assert mask.header.stamp == msg.header.stamp and mask.header.frame_id == "front"
            (want,), (want_conf,) = seg.predict_with_confidence([image_to_bgr(msg)])
            np.testing.assert_array_equal(pixels(mask), want)
            np.testing.assert_array_equal(pixels(published["/cam/front/image_raw/segmentation/confidence"]), want_conf)
            assert published["/cam/front/image_raw/segmentation/color"].encoding == "rgb8"
        bad = raw_image(TS2, random_frame(40, 72), "bgr8", 9)
        bad.encoding = "yuv422"
        assert not core.on_message("/cam/rear/image_raw", bad)
        for i in range(6):
            core.on_message("/cam/rear/image_raw", raw_image(TS2, random_frame(48, 64, seed=20 + i), "bgr8", 2_000 + i))
        runtime.end("/cam/rear/image_raw")
        runtime.end("/cam/front/image_raw")
        runtime.end("/cam/idle/image_raw")
        for result in runtime.results(timeout=30):
            assert result.stream_id == "/cam/rear/image_raw"
            core.outputs(result)
        array = core.diagnostics(stamp_ns=7_000_000_123)
        assert array.header.stamp.sec == 7 and array.header.stamp.nanosec == 123
        status = {s.name: s for s in array.status}
        assert set(status) == {f"seg: {t}" for t in topics}
        front = {kv.key: kv.value for kv in status["seg: /cam/front/image_raw"].values}
        rear = {kv.key: kv.value for kv in status["seg: /cam/rear/image_raw"].values}
        assert (front["received"], front["segmented"], front["dropped"], front["failed"]) == ("3", "3", "0", "0")
        assert status["seg: /cam/front/image_raw"].level == 0 and float(front["latency_p50_ms"]) > 0
        stats = runtime.stats()["/cam/rear/image_raw"]
        assert (rear["received"], rear["failed"]) == ("7", "1") and rear["dropped"] == str(stats.dropped)
        assert int(rear["segmented"]) == stats.delivered == 6 - stats.dropped
        assert "yuv422" in rear["last_error"] and status["seg: /cam/rear/image_raw"].level in (1, 2)
        assert status["seg: /cam/idle/image_raw"].level == 3  # STALE: nothing came in
        # the array serializes with diagnostic_msgs' definition (as /diagnostics carries it)
        store = messages.typestore()
        data = store.serialize_cdr(array, messages.DIAGNOSTIC_ARRAY)
        assert store.deserialize_cdr(data, messages.DIAGNOSTIC_ARRAY).status[0].name == array.status[0].name
        assert float(core.diagnostics().status[0].values[0].value) == 0.0  # a new period: no frames since
    finally:
        assert runtime.close() == []
        seg.close()
