"""A v2 run end to end with a tiny v2 prior (slow: trains the prior 2 steps, then a short SDS run)."""

import json
from pathlib import Path

import pytest

from sds3d.cli import main

V2 = str(Path(__file__).resolve().parents[1] / "configs" / "toy-v2.yaml")


@pytest.mark.slow
def test_a_v2_run_ends_with_the_janus_metrics_in_its_summary(tmp_path):
    from sds3d.toyworld.train_prior import main as train_prior

    prior = tmp_path / "tiny-v2"
    train_prior(["--world", "v2", "--steps", "2", "--images-per-pair", "1", "--batch-size", "4", "--threads", "1",
                 "--ckpt-every", "0", "--out", str(prior), "--work-dir", str(tmp_path / "work")])
    assert main(["run", V2, "prompt=a red owl", f"prior.name_or_path={prior}", f"out_dir={tmp_path}", "name=owl",
                 "trainer.max_steps=20", "trainer.threads=1", "trainer.progress=false", "trainer.val_every=0",
                 "orbit.frames=4", "orbit.resolution=32"]) == 0
    run = tmp_path / "owl"
    summary = json.loads((run / "summary.json").read_text())
    assert "prompt_check" not in summary  # no out-of-vocabulary notice: a v2 prompt is a v2 prior's
    ev = summary["eval"]
    assert ev["world"] == "v2" and ev["kind"] == "faced" and ev["prompt"] == "a red owl"
    assert ev["janus"] in (0, 1, None) and 0 <= ev["n_faces"] <= 4 and len(ev["F"]) == 24
    for key in ("front_az", "front_ok", "face_present", "flooded", "iou", "colour_err", "body_colour_err", "albedo_err"):
        assert key in ev, key
    assert 0.0 <= ev["iou"] <= 1.0 and (run / "mesh" / "mesh.obj").is_file()
    assert main(["eval", str(run)]) == 0  # `sds3d eval` measures the same from the run folder
    assert json.loads((run / "summary.json").read_text())["eval"] == ev
