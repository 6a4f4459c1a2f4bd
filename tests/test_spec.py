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
