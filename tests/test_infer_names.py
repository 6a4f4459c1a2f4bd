"""bisenet-infer names what the user typed: ROS topic names checked (no space, not empty), and a
folder of another run's results refused with the real option names (--color-mask)."""

from __future__ import annotations

import json

import pytest

from bisenet_deploy.cli.infer import main as infer
from bisenet_deploy.errors import UserError
from bisenet_deploy.jobs.summary import MANIFEST, claim


@pytest.mark.parametrize("suffix", ["/a b", "", "/a//b"])
def test_a_mask_topic_that_is_no_ros_name_is_refused(tmp_path, capsys, suffix):
    (tmp_path / "x.bag").write_bytes(b"")
    code = infer([str(tmp_path / "m.onnx"), str(tmp_path / "x.bag"), "-o", str(tmp_path / "out"),
                  "--mask-topic", suffix, "-q"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "--mask-topic must look like /segmentation" in err[0], err
    assert not (tmp_path / "out").exists()


def test_the_refusal_of_another_runs_folder_names_the_real_options(tmp_path):
    modes = {"mask": {"color": False, "mask_suffix": "/segmentation"}}
    manifest = {"model_sha256": "a", "given_spec": None, "network_size": False, "modes": modes}
    (tmp_path / MANIFEST).write_text(json.dumps(manifest))
    (tmp_path / "x.mcap").write_bytes(b"")
    mine = {**manifest, "modes": {"mask": {"color": True, "mask_suffix": "/labels"}}}
    with pytest.raises(UserError) as err:
        claim(tmp_path, mine, "mask", overwrite=False)
    assert "no --color-mask" in str(err.value) and "--mask-topic /segmentation" in str(err.value)
    assert "--color " not in str(err.value)
