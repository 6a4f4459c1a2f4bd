"""Which family, which variant, and why: detection on ``meta`` state_dicts (no weights)."""

import pytest
import torch

from bisenet_deploy.errors import CheckpointError
from bisenet_deploy.model.checkpoint import match_family
from bisenet_deploy.model.datasets import CAMVID_12_CLASSES, CITYSCAPES_CLASSES, FACE_PARSING_CLASSES
from bisenet_deploy.model.families import families, get_family

from .family_checkpoints import LAYOUTS, upstream_state_dict

CASES = [
    ("bisenet_v1", {"num_classes": 7, "backbone": "resnet18", "variant": "paper"}),
    ("ooooverflow", {"num_classes": 12, "backbone": "resnet18", "conv_bias": False, "ffm_conv2": True}),
    ("ooooverflow", {"num_classes": 32, "backbone": "resnet101", "conv_bias": False, "ffm_conv2": True}),
    ("ooooverflow", {"num_classes": 12, "backbone": "resnet18", "conv_bias": True, "ffm_conv2": True}),
    ("ooooverflow", {"num_classes": 12, "backbone": "resnet101", "conv_bias": True, "ffm_conv2": False}),
    ("coincheung_v1", {"num_classes": 19, "head": "bilinear", "fusion": "conv_bn"}),
    ("coincheung_v1", {"num_classes": 19, "head": "pixelshuffle", "fusion": "mlp"}),
    ("coincheung_v1", {"num_classes": 150, "head": "bilinear", "fusion": "mlp"}),
    ("coincheung_v1", {"num_classes": 2, "head": "legacy", "fusion": "mlp"}),
    ("coincheung_v2", {"num_classes": 19, "head": "bilinear"}),
    ("coincheung_v2", {"num_classes": 171, "head": "pixelshuffle"}),
    ("coincheung_v2", {"num_classes": 5, "head": "legacy"}),
    ("face_parsing", {"num_classes": 19}),
]


def _ids(case):
    family, params = case
    return family + "-" + "-".join(str(v) for v in params.values())


@pytest.mark.parametrize("case", CASES, ids=[_ids(c) for c in CASES])
def test_each_layout_is_detected_with_its_variant(case):
    family, params = case
    _, sd = upstream_state_dict(family, params, device="meta")
    fit = match_family(sd)  # raises when no family or several fit exactly
    assert fit.family.name == family
    assert fit.params == params
    assert str(params["num_classes"]) in " ".join(fit.reasons)


def test_reasons_say_what_was_detected_and_what_was_ignored():
    _, sd = upstream_state_dict("ooooverflow", {"num_classes": 12, "backbone": "resnet101"}, device="meta")
    reasons = " | ".join(match_family(sd).reasons)
    for fact in ("saptial_path", "12 output channels", "resnet101", "context_path.features",
                 "duplicates dropped", "fc", "supervision1, supervision2", "attention_refinement_module1.bn"):
        assert fact in reasons, fact

    _, sd = upstream_state_dict("coincheung_v1", {"num_classes": 19, "head": "pixelshuffle", "fusion": "mlp"}, "meta")
    reasons = " | ".join(match_family(sd).reasons)
    assert "1216 = 19 x 64" in reasons and "MLP" in reasons and "Cityscapes" in reasons
    assert "conv_out16, conv_out32" in reasons and "training only" in reasons

    _, sd = upstream_state_dict("coincheung_v2", {"num_classes": 19}, "meta")
    assert "aux2, aux3, aux4, aux5_4" in " ".join(match_family(sd).reasons)

    _, sd = upstream_state_dict("face_parsing", {"num_classes": 19}, "meta")
    assert "without a spatial path" in " ".join(match_family(sd).reasons)


def test_checkpoints_without_the_training_extras_still_fit():
    """A state_dict saved from an eval-mode model (no aux heads) is the same network."""
    with torch.device("meta"):
        for name, params in (("coincheung_v1", {"num_classes": 19}), ("coincheung_v2", {"num_classes": 19})):
            sd = dict(get_family(name).build(**params).state_dict())
            assert match_family(sd).family.name == name


def test_ooooverflow_backbone_stored_only_under_features_is_renamed():
    model, sd = upstream_state_dict("ooooverflow", {"num_classes": 12}, device="meta")
    aliases = ("context_path.conv1.", "context_path.bn1.", "context_path.layer")
    only_features = {k: v for k, v in sd.items() if not k.startswith(aliases)}
    fit = match_family(only_features)
    assert set(fit.state_dict) == set(model.state_dict())
    assert "kept under the alias names" in " ".join(fit.reasons)


@pytest.mark.parametrize(
    "num_classes, mean, names, size, divisor",
    [
        (19, (0.3257, 0.3690, 0.3223), CITYSCAPES_CLASSES, (1024, 2048), 32),
        (150, (0.49343230, 0.46819794, 0.43106043), (), (512, 512), 32),
        (7, (0.4, 0.4, 0.4), (), (512, 512), 32),
    ],
)
def test_coincheung_spec_follows_its_data_loaders(num_classes, mean, names, size, divisor):
    for family in ("coincheung_v1", "coincheung_v2"):
        spec = get_family(family).spec_fields({"num_classes": num_classes, "head": "bilinear", "fusion": "conv_bn"})
        assert spec["mean"] == mean and spec["color_order"] == "RGB"
        assert spec["class_names"] == names and spec["input_size"] == size
        assert spec["size_divisor"] == divisor
    legacy = get_family("coincheung_v2").spec_fields({"num_classes": 19, "head": "legacy"})
    assert legacy["size_divisor"] == 1


def test_ooooverflow_and_face_parsing_specs():
    spec = get_family("ooooverflow").spec_fields({"num_classes": 12, "backbone": "resnet18", "conv_bias": False, "ffm_conv2": True})
    assert spec["class_names"] == CAMVID_12_CLASSES and spec["class_names"][-1] == "Void"
    assert spec["mean"] == (0.485, 0.456, 0.406) and spec["size_divisor"] == 8
    old = get_family("ooooverflow").spec_fields({"num_classes": 12, "backbone": "resnet18", "conv_bias": True, "ffm_conv2": True})
    assert old["size_divisor"] == 32 and old["variant"] == "conv-bias"
    face = get_family("face_parsing").spec_fields({"num_classes": 19})
    assert face["class_names"] == FACE_PARSING_CLASSES and face["class_names"][17] == "hair"
    assert face["input_size"] == (512, 512) and face["size_divisor"] == 1


# --- near misses: one line that names the family and what does not fit ----------------------


def _error(sd, arch=None) -> str:
    with pytest.raises(CheckpointError) as info:
        match_family(sd, arch)
    text = str(info.value)
    assert "\n" not in text
    return text


def test_missing_head_names_the_family_and_the_key():
    _, sd = upstream_state_dict("coincheung_v2", {"num_classes": 19}, "meta")
    sd = {k: v for k, v in sd.items() if not k.startswith("head.")}
    text = _error(sd)
    assert text.index("coincheung_v2") < text.index("|")  # ranked closest
    assert "main segmentation head is missing" in text and "head.* (7 keys)" in text


def test_renamed_module_shows_missing_and_unexpected_groups():
    _, sd = upstream_state_dict("coincheung_v1", {"num_classes": 19}, "meta")
    sd = {k.replace("ffm.", "fusion."): v for k, v in sd.items()}
    text = _error(sd)
    assert "closest: coincheung_v1" in text
    assert "missing ffm.* " in text and "unexpected fusion.* (12 keys)" in text


def test_partly_missing_module_and_wrong_shape():
    _, sd = upstream_state_dict("face_parsing", {"num_classes": 19}, "meta")
    sd = {k: v for k, v in sd.items() if not k.startswith("cp.arm16.")}
    sd["ffm.conv1.weight"] = torch.empty(64, 256, 3, 3, device="meta")
    text = _error(sd)
    assert "closest: face_parsing (9" in text and "missing cp.arm16.* (10 keys)" in text
    assert "wrong shape ffm.conv1.weight (64, 256, 3, 3) vs (64, 256, 1, 1)" in text


def test_arch_override_reports_why_another_family_does_not_fit():
    _, sd = upstream_state_dict("coincheung_v1", {"num_classes": 19, "head": "legacy", "fusion": "mlp"}, "meta")
    assert match_family(sd, "coincheung_v1").family.name == "coincheung_v1"
    text = _error(sd, "face_parsing")
    assert text.startswith("checkpoint does not fit --arch face_parsing") and "unexpected sp.* (24 keys)" in text


def test_unsupported_ooooverflow_backbone_is_refused_clearly():
    with torch.device("meta"):
        resnet34 = get_family("bisenet_v1").build(num_classes=12, backbone="resnet34").context_path
    _, sd = upstream_state_dict("ooooverflow", {"num_classes": 12}, "meta")
    sd = {k: v for k, v in sd.items() if not k.startswith("context_path.")}
    sd.update({f"context_path.{k}": v for k, v in resnet34.state_dict().items() if not k.startswith("conv_block")})
    text = _error(sd, "ooooverflow")
    assert "context path is resnet34; ooooverflow/BiSeNet builds only resnet18 or resnet101" in text


def test_every_family_has_an_example_layout_that_fits_itself():
    for name, family in families().items():
        with torch.device("meta"):
            sd = LAYOUTS[name](family.build(**family.example))
        assert match_family(sd).family.name == name


def test_cli_help_lists_every_family():
    from bisenet_deploy.cli.export import build_parser

    text = build_parser().format_help()
    for name in families():
        assert name in text, name


def test_key_groups_tell_a_whole_module_from_part_of_one():
    _, sd = upstream_state_dict("face_parsing", {"num_classes": 19}, "meta")
    text = _error(sd, "coincheung_v1")
    assert "missing sp.* (19 keys), ffm.{conv,bn}.* (5 keys)" in text
    assert "unexpected ffm.{conv1,conv2}.* (2 keys)" in text


@pytest.mark.parametrize("head, classes", [("pixelshuffle", 19), ("bilinear", 19), ("bilinear", 64)])
def test_coincheung_v1_head_without_auxiliary_heads(head, classes):
    """Inference code of 2020-21 built the net with output_aux=False: no aux heads saved."""
    params = {"num_classes": classes, "head": head, "fusion": "mlp"}
    with torch.device("meta"):
        sd = dict(get_family("coincheung_v1").build(**params).state_dict())
    assert match_family(sd).params == params
