"""Optimization-profile shapes are given in the model input's own layout, and said so."""

from __future__ import annotations

import pytest

from bisenet_deploy.errors import UserError
from bisenet_deploy.spec import ModelSpec
from bisenet_deploy.trt.profiles import layout, profile_for

FUSED = ModelSpec(num_classes=5, input_size=(64, 128), input_layout="NHWC_UINT8")  # --fuse-preprocess
FLOAT = ModelSpec(num_classes=5, input_size=(64, 128))


def test_layout_names_follow_the_spec():
    assert layout((-1, -1, -1, 3), FUSED) == "NxHxWxC" and layout((-1, 3, -1, -1), FLOAT) == "NxCxHxW"
    assert layout((-1, -1, -1, 3), None) == "NxHxWxC"  # uint8 frames end in 3 channels


def test_a_float_style_shape_on_a_fused_model_names_the_nhwc_layout():
    with pytest.raises(UserError) as caught:
        profile_for((-1, -1, -1, 3), FUSED, ((1, 3, 32, 64), (1, 3, 64, 128), (2, 3, 128, 256)))
    assert "dimension 3 (C) is fixed at 3" in str(caught.value) and "NxHxWxC = ?x?x?x3" in str(caught.value)
    lo, opt, hi = profile_for((-1, -1, -1, 3), FUSED, ((1, 32, 64, 3), (1, 64, 128, 3), (2, 128, 256, 3)))
    assert opt == (1, 64, 128, 3)
    with pytest.raises(UserError, match=r"has 3 dimensions; the model input has 4: NxCxHxW = \?x3x\?x\?"):
        profile_for((-1, 3, -1, -1), FLOAT, ((1, 3, 32), (1, 3, 64), (1, 3, 128)))


def test_shape_options_help_names_both_layouts(capsys):
    from bisenet_deploy.cli.export import main

    with pytest.raises(SystemExit):
        main(["--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "--min-shape SHAPE" in help_text and "NxHxWxC (uint8 frames) for a --fuse-preprocess export" in help_text
    assert "NxCxHxW" in help_text
