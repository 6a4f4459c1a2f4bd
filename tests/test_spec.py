import pytest

from bisenet_deploy.spec import ModelSpec, SpecError


def test_json_round_trip_preserves_every_field():
    spec = ModelSpec(
        arch="bisenet_v1",
        backbone="resnet101",
        variant="seed",
        num_classes=3,
        class_names=("bg", "person", "car"),
        input_size=(480, 640),
        dynamic_axes=("batch", "height"),
        color_order="BGR",
        mean=(0.5, 0.4, 0.3),
        std=(0.2, 0.25, 0.3),
        scale=1.0,
        input_layout="NHWC_UINT8",
        frame_color_order="RGB",
        output_kind="labels",
        binary_threshold=0.25,
        size_divisor=32,
        checkpoint_sha256="ab" * 32,
        extra={"detected": ["x"], "n": 3},
    )
    again = ModelSpec.from_json(spec.to_json())
    assert again == spec
    assert again.extra == spec.extra
    assert again.to_dict() == spec.to_dict()


def test_lists_from_json_compare_equal_to_tuples():
    spec = ModelSpec.from_dict({"input_size": [64, 128], "class_names": ["a", "b"], "num_classes": 2})
    assert spec.input_size == (64, 128) and spec.class_names == ("a", "b")
    assert spec.height == 64 and spec.width == 128


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"num_classes": 0}, "num_classes"),
        ({"num_classes": 2, "class_names": ("a",)}, "class names"),
        ({"input_size": (0, 5)}, "input_size"),
        ({"dynamic_axes": ("depth",)}, "dynamic axes"),
        ({"color_order": "GRB"}, "color_order"),
        ({"std": (1.0, 0.0, 1.0)}, "std"),
        ({"input_layout": "NCWH"}, "input_layout"),
        ({"output_kind": "probs"}, "output_kind"),
        ({"size_divisor": 0}, "size_divisor"),
    ],
)
def test_invalid_specs_are_rejected(changes, message):
    with pytest.raises(SpecError, match=message):
        ModelSpec(**changes)


def test_unknown_fields_from_newer_writers_are_kept_in_extra():
    spec = ModelSpec.from_dict({"num_classes": 2, "future_field": 1})
    assert spec.num_classes == 2
    assert spec.extra["unknown_spec_fields"] == ["future_field"]


def test_malformed_json_is_a_spec_error():
    with pytest.raises(SpecError):
        ModelSpec.from_json("{not json")
    with pytest.raises(SpecError):
        ModelSpec.from_json("[1, 2]")


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"mean": (float("nan"), 0.5, 0.5)}, "mean must be a finite"),
        ({"std": (float("inf"), 1.0, 1.0)}, "std must be a finite"),
        ({"std": (1e-300, 1.0, 1.0)}, "std .* too small"),
        ({"scale": 0.0}, "scale must be > 0"),
        ({"scale": -1 / 255}, "scale must be > 0"),
        ({"scale": float("inf")}, "scale must be a finite"),
        ({"binary_threshold": float("nan")}, "binary_threshold must be a finite"),
        ({"mean": ("0.5", 0.5, 0.5)}, "mean must be a number"),
        ({"num_classes": "4"}, "num_classes must be an integer"),
        ({"num_classes": True}, "num_classes must be an integer"),
        ({"num_classes": 4.5}, "num_classes must be an integer"),
        ({"output_stride": 8.0}, "output_stride must be an integer"),
        ({"input_size": (64.5, 128)}, "input_size must be an integer"),
        ({"num_classes": 4, "class_names": [1, 2, 3, 4]}, "class_names must be strings"),
        ({"class_names": "abc"}, "class_names must be a list"),
    ],
)
def test_values_of_the_wrong_type_or_not_finite_are_one_spec_error(changes, message):
    """A user's --spec with NaN, Infinity, a non-positive scale or a string count is refused
    naming the field (it used to write garbage masks or leak a TypeError)."""
    with pytest.raises(SpecError, match=message):
        ModelSpec(**changes)


def test_json_nan_and_infinity_are_refused():
    with pytest.raises(SpecError, match="std must be a finite"):
        ModelSpec.from_json('{"num_classes": 4, "std": [NaN, 1, 1]}')
    with pytest.raises(SpecError, match="mean must be a finite"):
        ModelSpec.from_json('{"num_classes": 4, "mean": [Infinity, 1, 1]}')


def test_numpy_scalars_still_make_a_spec():
    np = pytest.importorskip("numpy")
    spec = ModelSpec(num_classes=np.int64(3), mean=np.float32([0.5, 0.5, 0.5]).tolist(),
                     input_size=(np.int64(64), 128), scale=np.float64(1 / 255))
    assert spec.num_classes == 3 and type(spec.num_classes) is int
    assert ModelSpec.from_json(spec.to_json()) == spec
