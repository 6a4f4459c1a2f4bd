"""The synthetic shapes scenes: deterministic, labels that match the pixels, a
clean train / held-out split of the background photos."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from bisenet_deploy.datasets import shapes
from bisenet_deploy.errors import InputError
from bisenet_deploy.samples import sample_photo_paths


@pytest.fixture(autouse=True)
def _needs_photos(photos):
    """Every test here draws over the sample photos (skips without them)."""


def test_same_seed_same_scene_and_other_seeds_differ():
    a = shapes.scene(3, "heldout", (96, 128), seed=5)
    b = shapes.scene(3, "heldout", (96, 128), seed=5)
    assert np.array_equal(a.image, b.image) and np.array_equal(a.labels, b.labels)
    assert (a.photo, a.classes) == (b.photo, b.classes)
    other = [shapes.scene(i, "heldout", (96, 128), seed=5) for i in (4, 5)]
    other.append(shapes.scene(3, "heldout", (96, 128), seed=6))
    assert all(not np.array_equal(a.image, o.image) for o in other)

    t1 = shapes.training_scene(11, seed=0, size_hw=(64, 64))
    t2 = shapes.training_scene(11, seed=0, size_hw=(64, 64))
    assert np.array_equal(t1.image, t2.image) and np.array_equal(t1.labels, t2.labels)


def test_frames_and_labels_have_the_documented_form():
    for item in shapes.scenes(12, (80, 112), split="train", seed=2):
        assert item.image.dtype == np.uint8 and item.image.shape == (80, 112, 3)
        assert item.labels.dtype == np.uint8 and item.labels.shape == (80, 112)
        present = set(np.unique(item.labels).tolist())
        # Only classes that were drawn (occluded or off-frame ones may be missing).
        assert present <= {shapes.BACKGROUND, *item.classes}
        assert all(0 < k < shapes.NUM_CLASSES for k in item.classes)


def test_every_class_occurs_in_a_few_scenes():
    seen = set()
    for item in shapes.scenes(12, (128, 128)):
        seen.update(np.unique(item.labels).tolist())
    assert seen == set(range(shapes.NUM_CLASSES))
    assert len(shapes.CLASS_NAMES) == shapes.NUM_CLASSES == 7


def test_labels_cover_exactly_the_drawn_objects():
    """Over a flat grey photo, labelled pixels are the coloured ones and nothing else, and
    each object's pattern shows (two colours inside it)."""
    flat = [("grey", np.full((200, 200, 3), 128, dtype=np.uint8))]
    coloured, contrasts = [], []
    for i in range(12):
        item = shapes.render_scene(np.random.default_rng(i), flat, (96, 96))
        if not item.classes:
            continue
        # Background pixels stay one colour up to noise; object pixels are vivid colours.
        gray = item.image.astype(np.int16)
        spread = np.abs(gray - np.median(gray[item.labels == 0], axis=0)).max(axis=2)
        eroded = cv2.erode((item.labels > 0).astype(np.uint8), np.ones((3, 3), np.uint8)) > 0
        background = cv2.erode((item.labels == 0).astype(np.uint8), np.ones((3, 3), np.uint8)) > 0
        if eroded.any():
            coloured.append(np.mean(spread[eroded] > 40))
        assert np.mean(spread[background] > 40) < 0.02
        for k in set(item.classes):
            inside = eroded & (item.labels == k)
            if inside.sum() > 50:
                contrasts.append(item.image[inside].astype(np.float32).std(axis=0).max())
    # A few objects (mostly their neutral pattern colour) come out close to the jittered
    # grey; on average they stand out.
    assert len(coloured) >= 8 and min(coloured) > 0.6 and np.mean(coloured) > 0.85, coloured
    assert len(contrasts) >= 8 and min(contrasts) > 20, contrasts


def test_held_out_photos_never_reach_training_scenes():
    train = {n for n, _ in shapes.background_photos("train")}
    held = {n for n, _ in shapes.background_photos("heldout")}
    assert train and held and not train & held
    assert train | held == {p.name for p in sample_photo_paths()}
    assert held <= shapes.HELD_OUT_PHOTOS
    # The stereo pair is nearly the same picture: both on one side.
    assert len({"motorcycle_left.png", "motorcycle_right.png"} & train) in (0, 2)
    assert {shapes.training_scene(i, 0, (48, 48)).photo for i in range(40)} <= train
    assert {s.photo for s in shapes.validation_scenes(12, (48, 48))} <= held
    assert {s.photo for s in shapes.scenes(12, (48, 48), split="train")} <= train


def test_write_scene_folder_round_trips(tmp_path):
    items = shapes.scenes(3, (40, 56), split="train", seed=9)
    images, labels = shapes.write_scene_folder(tmp_path / "val", items)
    assert sorted(p.name for p in images.iterdir()) == sorted(p.name for p in labels.iterdir())
    for i, item in enumerate(items):
        assert np.array_equal(cv2.imread(str(images / f"{i:04d}.png"), cv2.IMREAD_COLOR), item.image)
        assert np.array_equal(cv2.imread(str(labels / f"{i:04d}.png"), cv2.IMREAD_UNCHANGED), item.labels)


def test_bad_arguments_are_clear():
    with pytest.raises(ValueError, match="split must be one of"):
        shapes.background_photos("test")
    with pytest.raises(InputError, match="at least 8x8"):
        shapes.scene(0, size_hw=(4, 64))


def test_the_class_is_the_hue():
    """Saturated pixels inside an object have its class hue (the thing the model learns)."""
    flat = [("grey", np.full((200, 200, 3), 128, dtype=np.uint8))]
    checked = 0
    for i in range(12):
        item = shapes.render_scene(np.random.default_rng(100 + i), flat, (128, 128))
        hsv = cv2.cvtColor(item.image, cv2.COLOR_BGR2HSV).astype(np.int16)
        inside_all = cv2.erode((item.labels > 0).astype(np.uint8), np.ones((5, 5), np.uint8)) > 0
        for k in set(item.classes):
            vivid = inside_all & (item.labels == k) & (hsv[..., 1] > 120) & (hsv[..., 2] > 100)
            if vivid.sum() < 30:
                continue
            d = np.abs(hsv[..., 0][vivid] - shapes.CLASS_HUES[k])
            d = np.minimum(d, 180 - d)  # hue is circular
            assert np.median(d) <= shapes.HUE_JITTER + 2, (k, np.median(d))
            checked += 1
    assert checked >= 8


def test_command_line_writes_scene_folders(tmp_path, capsys):
    assert shapes.main([str(tmp_path / "s"), "--count", "2", "--size", "48x64", "--split", "train"]) == 0
    assert "wrote 2 train scenes" in capsys.readouterr().out
    first = cv2.imread(str(tmp_path / "s" / "images" / "0000.png"), cv2.IMREAD_COLOR)
    assert np.array_equal(first, shapes.scene(0, "train", (48, 64)).image)
    with pytest.raises(SystemExit):
        shapes.main([str(tmp_path / "t"), "--size", "big"])
