"""Calibration / validation data: folders, videos, .npy arrays, subsets, hashes, errors."""

import cv2
import numpy as np
import pytest

from bisenet_deploy.calibration.data import (
    CalibrationDataError,
    calibration_batches,
    calibration_frames,
    open_frame_source,
    read_frames,
    validation_set,
)
from bisenet_deploy.runtime import processing
from bisenet_deploy.spec import ModelSpec

SIZE = (32, 48)


def _solid(level: int, shape=(40, 60)) -> np.ndarray:
    return np.full(shape + (3,), level, dtype=np.uint8)


@pytest.fixture()
def image_tree(tmp_path):
    """12 images of distinct grey levels in nested folders, four formats, plus junk."""
    root = tmp_path / "calib"
    for i in range(12):
        sub = root / f"part{i % 3}" / ("deep" if i % 2 else "")
        sub.mkdir(parents=True, exist_ok=True)
        ext = (".jpg", ".png", ".bmp", ".webp")[i % 4]
        assert cv2.imwrite(str(sub / f"img{i:02d}{ext}"), _solid(10 * i + 5))
    (root / "notes.txt").write_text("not an image")
    return root


def _levels(frames):
    return sorted(int(round(f.mean())) // 10 for f in frames.frames)


def test_folder_is_searched_recursively_and_subset_is_seeded(image_tree):
    source = open_frame_source(image_tree)
    everything = calibration_frames(source, 100, SIZE, seed=0, progress=False)
    assert _levels(everything) == list(range(12))
    assert all(f.shape == SIZE + (3,) and f.dtype == np.uint8 for f in everything.frames)

    a = calibration_frames(source, 5, SIZE, seed=1, progress=False)
    b = calibration_frames(source, 5, SIZE, seed=1, progress=False)
    c = calibration_frames(source, 5, SIZE, seed=2, progress=False)
    assert len(a) == 5 and _levels(a) == _levels(b) and a.digest == b.digest
    assert _levels(a) != _levels(c) and a.digest != c.digest


def test_held_out_frames_never_overlap_calibration(image_tree):
    source = open_frame_source(image_tree)
    calib = calibration_frames(source, 8, SIZE, seed=0, progress=False)
    held = read_frames(source, 8, SIZE, seed=1, exclude=calib.used_items, progress=False)
    assert len(held) == 4
    assert set(_levels(calib)).isdisjoint(_levels(held))


def test_unreadable_files_are_skipped_counted_and_replaced(image_tree):
    for i in range(3):
        (image_tree / f"broken{i}.png").write_bytes(b"\x89PNG but not really")
    source = open_frame_source(image_tree)
    frames = calibration_frames(source, 15, SIZE, seed=0, progress=False)
    assert len(frames) == 12 and frames.skipped == 3
    assert frames.provenance()["skipped"] == 3
    some = calibration_frames(source, 4, SIZE, seed=3, progress=False)
    assert len(some) == 4  # broken items drawn are replaced by further ones


def test_data_hash_follows_pixels_not_names(tmp_path):
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
    cv2.imwrite(str(tmp_path / "a" / "x.png"), _solid(100))
    cv2.imwrite(str(tmp_path / "b" / "renamed.png"), _solid(100))
    digest = {n: calibration_frames(open_frame_source(tmp_path / n), 1, SIZE, progress=False).digest for n in "ab"}
    assert digest["a"] == digest["b"]
    cv2.imwrite(str(tmp_path / "b" / "renamed.png"), _solid(101))
    assert calibration_frames(open_frame_source(tmp_path / "b"), 1, SIZE, progress=False).digest != digest["a"]


def test_video_frames_are_sampled_evenly(tmp_path):
    path = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, (60, 40))
    assert writer.isOpened()
    for i in range(20):
        writer.write(_solid(12 * i))
    writer.release()
    frames = calibration_frames(open_frame_source(path), 4, SIZE, progress=False)
    levels = [int(round(f.mean() / 12)) for f in frames.frames]
    assert levels == [2, 7, 12, 17]  # centres of four equal segments of 20 frames
    assert frames.names == ["frame 2", "frame 7", "frame 12", "frame 17"]


def test_npy_arrays_of_frames(tmp_path):
    path = tmp_path / "frames.npy"
    np.save(path, np.stack([_solid(10 * i) for i in range(6)]))
    frames = calibration_frames(open_frame_source(path), 3, SIZE, seed=0, progress=False)
    assert len(frames) == 3 and len(set(_levels(frames))) == 3
    gray = tmp_path / "gray.npy"
    np.save(gray, np.zeros((2, 40, 60), np.uint8))
    assert calibration_frames(open_frame_source(gray), 2, SIZE, progress=False).frames[0].shape == SIZE + (3,)


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda p: np.save(p, np.zeros((2, 8, 8, 3), np.float32)), "expected uint8 frames"),
        (lambda p: np.save(p, np.zeros((2, 8, 8, 5), np.uint8)), "expected frames"),
        (lambda p: p.write_bytes(b"not numpy"), "cannot read"),
    ],
    ids=["float", "five-channels", "garbage"],
)
def test_bad_arrays(tmp_path, make, message):
    path = tmp_path / "bad.npy"
    make(path)
    with pytest.raises(CalibrationDataError, match=message):
        open_frame_source(path)


def test_bad_sources_raise_clear_errors(tmp_path):
    with pytest.raises(CalibrationDataError, match="does not exist"):
        open_frame_source(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CalibrationDataError, match="no images"):
        open_frame_source(tmp_path / "empty")
    (tmp_path / "junk").mkdir()
    for i in range(2):
        (tmp_path / "junk" / f"{i}.jpg").write_bytes(b"definitely not a jpeg")
    with pytest.raises(CalibrationDataError, match="none of the 2 items"):
        calibration_frames(open_frame_source(tmp_path / "junk"), 5, SIZE, progress=False)
    (tmp_path / "model.txt").write_text("x")
    with pytest.raises(CalibrationDataError, match="not a folder of images"):
        open_frame_source(tmp_path / "model.txt")


@pytest.mark.parametrize("layout", ["NCHW", "NHWC_UINT8"])
def test_batches_are_the_runtime_preprocessing(layout):
    spec = ModelSpec(num_classes=3, input_size=SIZE, input_layout=layout)
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, SIZE + (3,), dtype=np.uint8) for _ in range(5)]
    batches = list(calibration_batches(frames, spec, batch=2))
    assert [real for _, real in batches] == [2, 2, 1]
    np.testing.assert_array_equal(batches[0][0], processing.preprocess(frames[:2], spec))
    last, _ = batches[-1]
    assert last.shape[0] == 2  # a fixed batch is filled up; only the first row is real
    np.testing.assert_array_equal(last[:1], processing.preprocess(frames[4:], spec))


def test_validation_images_pair_with_label_maps(tmp_path):
    images, labels = tmp_path / "img", tmp_path / "lbl"
    for root in (images / "a", labels / "a"):
        root.mkdir(parents=True)
    for i in range(3):
        cv2.imwrite(str(images / "a" / f"{i}.jpg"), _solid(50 * i))
        label = np.zeros((40, 60), np.uint8)
        label[:, 30:] = i
        cv2.imwrite(str(labels / "a" / f"{i}.png"), label)
    val = validation_set(images, labels, count=10, size_hw=SIZE, progress=False)
    assert len(val.frames) == 3 and len(val.labels) == 3
    assert val.labels[2].shape == SIZE and set(np.unique(val.labels[2])) == {0, 2}
    (labels / "a" / "1.png").unlink()
    with pytest.raises(CalibrationDataError, match="no label map"):
        validation_set(images, labels, count=10, size_hw=SIZE, progress=False)
