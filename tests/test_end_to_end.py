"""The main job with the shipped toy prior, measured (slow: ~30 s on 2 cores)."""

import json
from pathlib import Path

import pytest

from sds3d.cli import main

TOY = str(Path(__file__).resolve().parents[1] / "configs" / "toy.yaml")


@pytest.mark.slow
def test_toy_run_reaches_the_prompted_shape_and_colour(tmp_path):
    assert main(["run", TOY, "prompt=a red sphere", f"out_dir={tmp_path}", "trainer.progress=false"]) == 0
    (run,) = tmp_path.glob("a-red-sphere-toy-*")
    summary = json.loads((run / "summary.json").read_text())
    ev = summary["eval"]
    assert ev["mesh_iou"] >= 0.9
    assert ev["colour_error"] <= 0.2
    assert ev["recognition"] >= 7 / 8
    assert summary["skipped_steps"] == 0
    for f in ("config.yaml", "metrics.jsonl", "ckpt/last.pt", "mesh/mesh.obj", "mesh/mesh.mtl", "orbit.mp4", ".complete"):
        assert (run / f).exists(), f
    assert any((run / "renders").glob("*.png"))
