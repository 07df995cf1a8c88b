"""scene.kind=gaussians through the pipeline and the command line: densification inside the trainer,
exact resume after it, the end-to-end run to mesh, orbit and metrics, and the bad inputs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import trimesh

from sds3d.checkpoint import TrainingInterrupted, load_checkpoint
from sds3d.cli import main
from sds3d.config import ConfigError, load_config, to_yaml
from sds3d.pipeline import run
from sds3d.runs import prepare_run_dir

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
TOY_GS = str(CONFIGS / "toy-gaussians.yaml")


def _tiny(tmp_path, prior) -> list[str]:
    """Settings for a few seconds' run: 300 Gaussians at 16x16, densification every 2 steps."""
    return [f"out_dir={tmp_path}", f"prior.name_or_path={prior}", "trainer.max_steps=6", "trainer.val_every=0",
            "trainer.ckpt_every=2", "trainer.progress=false", "trainer.threads=1", "render.resolution=16",
            "scene.gaussians.n_init=300", "scene.gaussians.max_gaussians=420", "scene.gaussians.densify.refine_every=2",
            "scene.gaussians.densify.grow_grad2d=1e-9", "scene.gaussians.densify.reset_every=4"]


def _logged(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_resume_after_densification_continues_bit_for_bit(tmp_path, tiny_pixel_prior):
    def config(name):
        return load_config(TOY_GS, ["prompt=a red cube", f"name={name}", "trainer.log_every=1", *_tiny(tmp_path, tiny_pixel_prior)])

    straight = config("straight")
    full = run(straight, prepare_run_dir(straight), finish_run=False)
    counts = [r["gaussians"] for r in _logged(tmp_path / "straight")]
    # Refinement at steps 2 and 4 (logged after steps 3 and 5) grows to the budget.
    assert counts[:2] == [300, 300] and 300 < counts[2] <= counts[4] == 420

    split = config("split")
    run_dir = prepare_run_dir(split)
    with pytest.raises(TrainingInterrupted):
        run(split, run_dir, finish_run=False, stop_after=3)
    ck = load_checkpoint(run_dir / "ckpt" / "last.pt")
    assert ck["step"] == 3 and ck["scene"]["params.means"].shape[0] == counts[2]  # stopped after a densification
    assert ck["scene"]["_extra_state"]["count"].shape == (counts[2],)
    resumed = run(split, run_dir, finish_run=False, resume=True)

    a = load_checkpoint(tmp_path / "straight" / "ckpt" / "last.pt")
    b = load_checkpoint(run_dir / "ckpt" / "last.pt")
    assert a["scene"].keys() == b["scene"].keys()
    for k in a["scene"]:
        if k == "_extra_state":
            assert all(torch.equal(a["scene"][k][s], b["scene"][k][s]) for s in ("grad2d", "count"))
        else:
            assert torch.equal(a["scene"][k], b["scene"][k]), k
    for sa, sb in zip(a["optimizer"]["state"].values(), b["optimizer"]["state"].values()):
        assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert [{**r, "elapsed_s": 0} for r in _logged(run_dir)] == [{**r, "elapsed_s": 0} for r in _logged(tmp_path / "straight")]
    assert resumed["final_loss_sds"] == full["final_loss_sds"]


def test_positions_follow_their_own_exponential_decay(tmp_path, tiny_pixel_prior, monkeypatch):
    from sds3d import trainer

    cfg = load_config(TOY_GS, ["prompt=a red cube", "trainer.log_every=1", "trainer.lr_schedule=cosine",
                               "scene.gaussians.lr_means=0.01", "scene.gaussians.lr_means_end=0.0002",
                               "scene.gaussians.lr_means_steps=4", *_tiny(tmp_path, tiny_pixel_prior)])
    run_dir = prepare_run_dir(cfg)
    states = []
    train = trainer.train
    monkeypatch.setattr(trainer, "train", lambda *args, **kwargs: states.append(train(*args, **kwargs)) or states[-1])
    run(cfg, run_dir, finish_run=False)
    # Record k was logged after the step made with step k - 1's rate: 0.01 * 0.02^((k - 1) / 4), then 2e-4.
    expected = [0.01 * 0.02 ** (min(r["step"] - 1, 4) / 4) for r in _logged(run_dir)]
    assert [r["lr"] for r in _logged(run_dir)] == pytest.approx(expected, rel=1e-12)
    groups = {g["name"]: g for g in states[0].optimizer.param_groups}
    assert set(groups) == {"means", "scales", "quats", "opacities", "sh0"}
    assert all(len(g["params"]) == 1 for g in groups.values())
    # The other groups follow the trainer's cosine decay to 10 % (last step: 5 of 6).
    import math

    cosine = 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 5 / 6))
    assert groups["opacities"]["lr"] == pytest.approx(0.05 * cosine) and groups["sh0"]["lr"] == pytest.approx(0.01 * cosine)


@pytest.mark.slow
def test_run_reaches_mesh_orbit_metrics_and_splat_ply(tmp_path, tiny_pixel_prior, capsys):
    args = ["run", TOY_GS, "prompt=a red sphere", "name=a-red-sphere", *_tiny(tmp_path, tiny_pixel_prior), "trainer.max_steps=4",
            "orbit.frames=2", "orbit.resolution=16", "export.resolution=24", "scene.gaussians.field_resolution=32",
            "eval.iou_resolution=24", "export.formats=[obj,splat_ply]", "export.texture_size=16"]
    assert main(args) == 0
    run_dir = tmp_path / "a-red-sphere"
    summary = json.loads((run_dir / "summary.json").read_text())
    for f in ("config.yaml", "metrics.jsonl", "ckpt/last.pt", "mesh/mesh.obj", "mesh/splats.ply"):
        assert (run_dir / f).exists(), f
    assert Path(summary["orbit"]).exists()
    ev = summary["eval"]
    assert 0.0 <= ev["mesh_iou"] <= 1.0 and ev["colour_error"] >= 0.0 and ev["recognition"] is not None
    assert summary["mesh_faces"] > 0
    from sds3d.export.splat_ply import read_splat_ply

    ck = load_checkpoint(run_dir / "ckpt" / "last.pt")
    assert len(read_splat_ply(run_dir / "mesh" / "splats.ply").means) == ck["scene"]["params.means"].shape[0]
    # The run folder's config reloads as a Gaussian run (no NeRF keys in it), and eval repeats on it.
    assert "field:" not in (run_dir / "config.yaml").read_text()
    capsys.readouterr()
    assert main(["eval", str(run_dir)]) == 0
    assert json.loads(capsys.readouterr().out)["mesh_iou"] == pytest.approx(ev["mesh_iou"])


def test_toy_gaussians_builds_on_toy_and_nerf_keys_set_explicitly_are_refused(tmp_path):
    cfg = load_config(TOY_GS, ["prompt=a red cube"])
    assert cfg.scene.kind == "gaussians" and cfg.field.hidden_dim == 32  # toy.yaml's field, inherited: not an error
    user = tmp_path / "mine.yaml"
    user.write_text(f"defaults: [{TOY_GS}]\nfield:\n  hidden_dim: 16\n")
    with pytest.raises(ConfigError, match="field.hidden_dim is a setting of scene.kind=nerf"):
        load_config(user, ["prompt=a red cube"])
    # A resolved Gaussian config loads again (its NeRF keys are not written), a NeRF one too.
    for base in (TOY_GS, str(CONFIGS / "toy.yaml")):
        (tmp_path / "config.yaml").write_text(to_yaml(load_config(base, ["prompt=a red cube"])))
        assert load_config(tmp_path / "config.yaml").scene.kind == load_config(base, ["prompt=a red cube"]).scene.kind


def _point_cloud(path: Path, points) -> str:
    trimesh.PointCloud(np.asarray(points, dtype=np.float64)).export(path)
    return str(path)


@pytest.mark.parametrize("case, message", [
    ("missing", "no such file"),
    ("garbage", "could not be read"),
    ("empty", "has no points"),
    ("nan", "non-finite coordinates"),
    ("budget", "scene.gaussians.max_gaussians=100 is below the initial count 1000"),
    ("budget_file", "scene.gaussians.max_gaussians=10 is below the initial count 50"),
    ("nerf_key", "field.encoding.n_levels is a setting of scene.kind=nerf"),
    ("nerf_render_key", "render.num_samples is a setting of scene.kind=nerf"),
    ("gaussian_key_on_nerf", "scene.gaussians.n_init is a setting of scene.kind=gaussians"),
    ("orientation", "trainer.lambda_orient=10.0: the orientation loss does not apply"),
    ("splat_ply_on_nerf", "splat_ply, the 3D Gaussian .ply; it needs scene.kind=gaussians"),
])
def test_bad_inputs_exit_2_one_line_nothing_written(tmp_path, capsys, case, message):
    files = tmp_path / "files"
    files.mkdir()
    out = tmp_path / "runs"
    config, extra = TOY_GS, []
    if case == "missing":
        extra = [f"scene.init_from={files / 'nope.ply'}"]
    elif case == "garbage":
        (files / "bad.ply").write_bytes(b"ply\nformat nonsense\n\x00\x01")
        extra = [f"scene.init_from={files / 'bad.ply'}"]
    elif case == "empty":
        (files / "empty.ply").write_text("ply\nformat ascii 1.0\nelement vertex 0\nproperty float x\n"
                                         "property float y\nproperty float z\nend_header\n")
        extra = [f"scene.init_from={files / 'empty.ply'}"]
    elif case == "nan":
        extra = [f"scene.init_from={_point_cloud(files / 'nan.ply', [[0, 0, 0], [np.nan, 0, 1], [0.1, 0.2, 0.3]])}"]
    elif case == "budget":
        extra = ["scene.gaussians.max_gaussians=100"]
    elif case == "budget_file":
        pts = np.random.default_rng(0).uniform(-0.4, 0.4, (50, 3))
        extra = [f"scene.init_from={_point_cloud(files / 'cloud.ply', pts)}", "scene.gaussians.max_gaussians=10"]
    elif case == "nerf_key":
        extra = ["field.encoding.n_levels=8"]
    elif case == "nerf_render_key":
        extra = ["render.num_samples=16"]
    elif case == "gaussian_key_on_nerf":
        config, extra = str(CONFIGS / "toy.yaml"), ["scene.gaussians.n_init=500"]
    elif case == "orientation":
        extra = ["trainer.lambda_orient=10"]
    elif case == "splat_ply_on_nerf":
        config, extra = str(CONFIGS / "toy.yaml"), ["export.formats=[obj,splat_ply]"]
    code = main(["run", config, "prompt=a red cube", f"out_dir={out}", "trainer.max_steps=1", *extra])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert err[0].startswith("sds3d: error:") and message in err[0], err[0]
    assert not out.exists()  # nothing written


def test_init_from_a_mesh_sds3d_wrote(tmp_path, tiny_pixel_prior):
    """A y-up mesh (as export writes) starts the Gaussians on its surface, in the world frame."""
    from sds3d.export.mesh import world_to_file
    from sds3d.scene import build_scene

    sphere = trimesh.creation.icosphere(subdivisions=2, radius=0.4)
    sphere.apply_translation([0.0, 0.0, 0.2])  # world +z up
    sphere.apply_transform(world_to_file("y"))
    sphere.export(tmp_path / "mesh.obj")
    cfg = load_config(TOY_GS, ["prompt=a red cube", f"scene.init_from={tmp_path / 'mesh.obj'}",
                               "scene.gaussians.init_up_axis=y", "scene.gaussians.n_init=400"])
    assert Path(cfg.scene.init_from).is_absolute()
    means = build_scene(cfg).params["means"].detach()
    assert means.shape == (400, 3)
    assert torch.allclose((means - torch.tensor([0.0, 0.0, 0.2])).norm(dim=-1), torch.full((400,), 0.4), atol=0.02)
