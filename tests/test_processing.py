import numpy as np
import pytest

from bisenet_deploy.errors import InputError
from bisenet_deploy.runtime import processing
from bisenet_deploy.spec import ModelSpec

from .conftest import random_frame


def test_argmax_matches_numpy_including_ties():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(2, 19, 33, 47)).astype(np.float32)
    logits[:, 4] = logits[:, 9]  # ties between later channels
    logits[:, 7] = logits[:, 0]  # ties with channel 0
    logits[0, :, 0, 0] = 1.0  # all equal: first index wins
    labels = processing.argmax_channels(logits)
    assert labels.dtype == np.uint8
    np.testing.assert_array_equal(labels, np.argmax(logits, axis=1))


def test_argmax_beyond_256_classes_uses_uint16():
    logits = np.random.default_rng(1).normal(size=(1, 300, 8, 8)).astype(np.float32)
    labels = processing.argmax_channels(logits)
    assert labels.dtype == np.uint16
    np.testing.assert_array_equal(labels, np.argmax(logits, axis=1))


def test_binary_threshold_and_in_graph_labels():
    spec = ModelSpec(num_classes=1, binary_threshold=0.5)
    logits = np.array([[[[0.2, 0.6], [0.5, -3.0]]]], dtype=np.float32)
    np.testing.assert_array_equal(processing.labels_from_output(logits, spec)[0], [[0, 1], [0, 0]])
    labels_spec = ModelSpec(num_classes=3, output_kind="labels")
    out = processing.labels_from_output(np.array([[[2, 0], [1, 1]]], dtype=np.int32), labels_spec)
    assert out.dtype == np.uint8 and out.tolist() == [[[2, 0], [1, 1]]]


def test_preprocess_matches_the_documented_formula():
    spec = ModelSpec(input_size=(16, 24), mean=(0.4, 0.5, 0.6), std=(0.2, 0.3, 0.4), color_order="RGB")
    frame = random_frame(16, 24)
    batch = processing.preprocess([frame], spec)
    rgb = frame[:, :, ::-1].astype(np.float64) / 255.0
    expected = ((rgb - np.array(spec.mean)) / np.array(spec.std)).transpose(2, 0, 1)
    assert batch.dtype == np.float32 and batch.shape == (1, 3, 16, 24)
    np.testing.assert_allclose(batch[0], expected, atol=1e-5)
    bgr_spec = spec.replace(color_order="BGR")
    bgr = processing.preprocess([frame], bgr_spec)[0]
    expected_bgr = ((frame / 255.0 - np.array(spec.mean)) / np.array(spec.std)).transpose(2, 0, 1)
    np.testing.assert_allclose(bgr, expected_bgr, atol=1e-5)


def test_preprocess_resizes_and_fused_layout_skips_host_normalization():
    spec = ModelSpec(input_size=(32, 48), input_layout="NHWC_UINT8")
    frames = [random_frame(60, 80, 1), random_frame(20, 30, 2)]
    batch = processing.preprocess(frames, spec)
    assert batch.dtype == np.uint8 and batch.shape == (2, 32, 48, 3)
    np.testing.assert_array_equal(batch[0], processing.resize_bilinear(frames[0], (32, 48)))
    rgb = processing.preprocess(frames, spec.replace(frame_color_order="RGB"))
    np.testing.assert_array_equal(rgb[..., ::-1], batch)


@pytest.mark.parametrize(
    "frame, message",
    [
        (None, "None"),
        (np.zeros((0, 5, 3), np.uint8), "empty"),
        (np.zeros((4, 4, 3), np.float32), "dtype float32"),
        (np.zeros((2, 4, 4, 3), np.uint8), "shape"),
        (np.zeros((4, 4, 2), np.uint8), "2 channels"),
        ([[1, 2], [3, 4]], "numpy array"),
    ],
)
def test_bad_frames_get_clear_errors(frame, message):
    with pytest.raises(InputError, match=message):
        processing.as_bgr_frame(frame)


def test_gray_and_bgra_frames_are_converted():
    gray = np.arange(12, dtype=np.uint8).reshape(3, 4)
    out = processing.as_bgr_frame(gray)
    assert out.shape == (3, 4, 3) and (out[..., 0] == gray).all() and (out[..., 2] == gray).all()
    assert processing.as_bgr_frame(gray[..., None]).shape == (3, 4, 3)
    bgra = np.dstack([random_frame(3, 4), np.full((3, 4), 7, np.uint8)])
    np.testing.assert_array_equal(processing.as_bgr_frame(bgra), bgra[..., :3])


def test_label_resize_is_nearest_neighbour():
    labels = np.array([[0, 5], [9, 2]], dtype=np.uint8)
    up = processing.resize_labels(labels, (4, 6))
    assert set(np.unique(up)) == {0, 2, 5, 9}
    assert up[0, 0] == 0 and up[-1, -1] == 2


def test_overlay_and_background_replacement():
    frame = random_frame(20, 30)
    mask = np.zeros((10, 15), np.uint8)
    mask[:, :7] = 1
    blended = processing.overlay(frame, mask, alpha=0.0)
    np.testing.assert_array_equal(blended, frame)
    bg = np.full((5, 5, 3), 200, np.uint8)
    out = processing.replace_background(frame, mask, bg)
    full_mask = processing.resize_labels(mask, (20, 30))
    np.testing.assert_array_equal(out[full_mask == 1], frame[full_mask == 1])
    assert (out[full_mask == 0] == 200).all()
    colour = processing.replace_background(frame, mask, (0, 255, 0))
    assert (colour[full_mask == 0] == [0, 255, 0]).all()


def test_palette_uses_colour_class_names():
    names = ("background", "red", "yellow", "green", "cyan", "blue", "magenta")
    palette = processing.palette_for(7, names)
    # BGR, like the frames: red is (0, 0, 255), cyan (255, 255, 0).
    assert palette[0].tolist() == [0, 0, 0] and palette[1].tolist() == [0, 0, 255] and palette[4].tolist() == [255, 255, 0]
    assert len({tuple(c) for c in palette.tolist()}) == 7
    # Other names (or a count mismatch) keep the generic palettes.
    assert np.array_equal(processing.palette_for(7, ("background", "car", *names[2:])), processing.palette_for(7))
    assert np.array_equal(processing.palette_for(19, names), processing.palette_for(19))
