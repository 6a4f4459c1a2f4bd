"""Each family end to end: checkpoint in its code base's layout -> load -> verified ONNX.

Checkpoints are written as those code bases write them (``torch.save`` of the bare model's
state_dict, with their aliases and training-only heads), from our definitions with seeded
weights and BatchNorm statistics. The export must match the PyTorch output within the
default tolerance at two input sizes.
"""

import pytest
import torch

from bisenet_deploy.cli.export import main as export_main
from bisenet_deploy.export.onnx import ExportOptions
from bisenet_deploy.export.pipeline import export_loaded
from bisenet_deploy.export.verify import Tolerance
from bisenet_deploy.model.checkpoint import load_checkpoint

from .family_checkpoints import upstream_state_dict

SIZES = [(64, 128), (96, 160)]
FAMILIES = [
    ("ooooverflow", {"num_classes": 12}),
    ("coincheung_v1", {"num_classes": 19}),
    ("coincheung_v2", {"num_classes": 19}),
    ("face_parsing", {"num_classes": 19}),
]


@pytest.fixture(scope="module", params=FAMILIES, ids=lambda c: c[0])
def saved(request, tmp_path_factory):
    """(family, our network, the checkpoint loaded back from disk)."""
    family, params = request.param
    model, sd = upstream_state_dict(family, params, seed=FAMILIES.index(request.param))
    path = tmp_path_factory.mktemp(family) / "their.pth"
    torch.save(sd, path)
    return family, model, load_checkpoint(path)


def test_loads_to_the_same_network(saved):
    family, model, loaded = saved
    assert loaded.spec.arch == family and not loaded.model.training
    x = torch.randn(1, 3, 64, 96, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = model(x)
        assert expected.shape == (1, loaded.spec.num_classes, 64, 96)
        assert expected.abs().max() > 0.5, "weights too tame for the tolerance to mean anything"
        torch.testing.assert_close(loaded.model(x), expected, rtol=0, atol=0)


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_export_matches_pytorch(saved, size, tmp_path):
    _, _, loaded = saved
    outcome = export_loaded(loaded, tmp_path / "their.onnx", ExportOptions(size=size), tolerance=Tolerance())
    report = outcome.report
    assert report.passed, report.failures
    assert report.label_agreement >= 99.9
    assert all(c["max_abs_diff"] <= c["allowed_abs_diff"] for c in report.cases)
    assert outcome.spec.input_size == size and outcome.spec.arch == loaded.spec.arch


def test_face_parsing_exports_with_dynamic_size(tmp_path):
    """Global pooling is a mean, not an avg_pool2d kernel frozen at the export size."""
    model, sd = upstream_state_dict("face_parsing", {"num_classes": 19}, seed=3)
    torch.save(sd, tmp_path / "face.pth")
    outcome = export_loaded(
        load_checkpoint(tmp_path / "face.pth"),
        tmp_path / "face.onnx",
        ExportOptions(size=(64, 64), dynamic=("height", "width")),
    )
    sizes = {tuple(c["size"]) for c in outcome.report.cases}
    assert outcome.report.passed and len(sizes) == 2, (sizes, outcome.report.failures)


def test_cli_refuses_sizes_the_architecture_cannot_take(tmp_path, capsys):
    _, sd = upstream_state_dict("coincheung_v2", {"num_classes": 3}, seed=4)
    torch.save(sd, tmp_path / "v2.pth")
    assert export_main([str(tmp_path / "v2.pth"), "--size", "100x200", "-q"]) == 2
    err = capsys.readouterr().err
    assert "multiples of 32" in err and not (tmp_path / "v2.onnx").exists()
