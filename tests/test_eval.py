"""Toy-world evaluation: mesh occupancy, IoU with yaw search, colour error, recognition, run folders."""

from __future__ import annotations


import numpy as np
import pytest
import torch
import trimesh
from skimage.measure import marching_cubes

from sds3d.cameras import orbit_cameras
from sds3d.eval import EvalError, colour_error, evaluate_run, load_mesh_world, mesh_iou, mesh_iou_yaw, mesh_occupancy, recognition
from sds3d.export import ExportConfig, extract_mesh, write_mesh
from sds3d.toyworld import world
from sds3d.toyworld.render import render as toy_render
from sds3d.toyworld.shapes import occupancy_grid, sdf

torch.set_num_threads(1)


def ground_truth_mesh(shape: str, resolution: int = 80) -> trimesh.Trimesh:
    """Marching cubes of the shape's SDF (independent of the code under test)."""
    c = np.linspace(-1.0, 1.0, resolution)
    grid = torch.from_numpy(np.stack(np.meshgrid(c, c, c, indexing="ij"), axis=-1)).float()
    verts, faces, _, _ = marching_cubes(sdf(shape, grid).numpy(), 0.0, spacing=(c[1] - c[0],) * 3)
    return trimesh.Trimesh(verts - 1.0, faces)


class ToyField:
    """Stub field: the toy shape's SDF as a sharp density, one constant albedo."""

    bound = 1.0

    def __init__(self, shape: str, rgb):
        self.shape, self.rgb = shape, torch.tensor(rgb, dtype=torch.float32)

    def density(self, x):
        return 100.0 * torch.sigmoid(-sdf(self.shape, x) / 0.01)

    def albedo(self, x):
        return self.rgb.expand(len(x), 3)


def test_mesh_occupancy_matches_the_analytic_occupancy():
    occ = mesh_occupancy(ground_truth_mesh("torus"), resolution=48)
    gt = occupancy_grid("torus", 48).numpy()
    assert (occ & gt).sum() / (occ | gt).sum() > 0.97
    assert occ.shape == (48, 48, 48) and not occ[0, 0, 0]


def test_mesh_occupancy_survives_a_missing_face():
    mesh = ground_truth_mesh("sphere", 40)
    holed = trimesh.Trimesh(mesh.vertices, mesh.faces[1:])  # not watertight any more
    occ = mesh_occupancy(holed, resolution=32)
    gt = occupancy_grid("sphere", 32).numpy()
    assert (occ & gt).sum() / (occ | gt).sum() > 0.97


@pytest.mark.parametrize("shape", world.SHAPES)
def test_iou_of_the_ground_truth_mesh_is_about_one(shape):
    assert mesh_iou(ground_truth_mesh(shape), shape, resolution=48, yaw_step_deg=15.0) > 0.97


@pytest.mark.parametrize("shape,wrong", [("sphere", "cone"), ("cube", "torus"), ("torus", "sphere"), ("cone", "cube")])
def test_iou_with_a_wrong_shape_is_much_lower(shape, wrong):
    assert mesh_iou(ground_truth_mesh(shape), wrong, resolution=48, yaw_step_deg=15.0) < 0.65


def test_yaw_search_finds_a_rotated_torus():
    mesh = ground_truth_mesh("torus")
    mesh.apply_transform(trimesh.transformations.rotation_matrix(np.radians(40.0), [0, 0, 1]))
    iou, yaw = mesh_iou_yaw(mesh, "torus", resolution=48, yaw_step_deg=10.0)
    assert iou > 0.97 and yaw == pytest.approx(40.0)
    unrotated = mesh_iou(mesh, "torus", resolution=48, yaw_step_deg=360.0)  # only yaw 0
    assert unrotated < 0.7


def test_colour_error_of_field_and_mesh():
    red = world.colour_rgb("red").tolist()
    field = ToyField("sphere", red)
    mesh = extract_mesh(field, ExportConfig(resolution=24))
    assert colour_error(field, mesh, "red") == pytest.approx(0.0, abs=1e-6)
    expected = float((world.colour_rgb("red") - world.colour_rgb("blue")).norm())
    assert colour_error(field, mesh, "blue") == pytest.approx(expected, rel=1e-5)
    # Without a field the mesh's vertex colours are used (rounded to 8 bits).
    assert colour_error(None, mesh, "blue") == pytest.approx(expected, abs=0.01)
    with pytest.raises(EvalError):
        colour_error(field, mesh, "purple")


def test_recognition_with_the_real_judge():
    cams = orbit_cameras(8, elevation_deg=20.0)
    images, _ = toy_render("cube", world.colour_rgb("green"), cams)
    frac, labels = recognition(images, ("green", "cube"))
    assert frac >= 0.75 and len(labels) == 8
    frac_wrong, _ = recognition(images, ("red", "cube"))
    assert frac_wrong == 0.0


def _run_cfg(prompt, *overrides):
    from sds3d.config import load_config

    return load_config(None, [f"prompt={prompt}", "eval.iou_resolution=40", "eval.yaw_step_deg=30", *overrides])


def test_evaluate_run_measures_what_it_is_given(tmp_path, monkeypatch):
    import sds3d.eval as eval_module

    colour, shape = "yellow", "cone"
    field = ToyField(shape, world.colour_rgb(colour).tolist())
    write_mesh(extract_mesh(field, ExportConfig(resolution=40)), field, tmp_path / "mesh",
               ExportConfig(resolution=40, texture="vertex", up_axis="y"))
    seen = []

    def fake_judge(images):
        seen.append(images.shape)
        return [(colour, shape)] * 6 + [("red", shape)] * 2

    monkeypatch.setattr(eval_module, "judge", fake_judge)
    views = lambda f: torch.ones(8, 3, 32, 32)  # noqa: E731
    cfg = _run_cfg(f"a {colour} {shape}")
    mesh = load_mesh_world(tmp_path, "y")
    metrics = evaluate_run(cfg, mesh, field, render_views=views)
    assert metrics["mesh_iou"] > 0.9  # the mesh was read back into the world frame
    assert metrics["colour_error"] < 1e-5 and metrics["colour_source"] == "field"
    assert metrics["recognition"] == pytest.approx(0.75) and seen == [(8, 3, 32, 32)]
    assert metrics["iou_resolution"] == 40
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mesh"]  # it wrote nothing

    # No scene: mesh colours, recognition skipped with a reason.
    metrics = evaluate_run(cfg, mesh)
    assert metrics["recognition"] is None and "recognition" in metrics["skipped"]
    assert metrics["colour_error"] < 0.01 and metrics["colour_source"] == "mesh"


def test_evaluate_run_rejects_non_toy_prompts(tmp_path):
    with pytest.raises(EvalError, match="toy-world prompt"):
        evaluate_run(_run_cfg("a photo of a hamburger"), trimesh.creation.box())


def test_mesh_frame_falls_back_to_the_config_up_axis(tmp_path):
    field = ToyField("torus", world.colour_rgb("blue").tolist())
    paths = write_mesh(extract_mesh(field, ExportConfig(resolution=64)), field, tmp_path / "mesh",
                       ExportConfig(resolution=64, texture="vertex", up_axis="z"))
    paths["meta"].unlink()  # an older export without mesh.json: the run's export.up_axis says the frame
    cfg = _run_cfg("a blue torus", "eval.iou_resolution=48")
    metrics = evaluate_run(cfg, load_mesh_world(tmp_path, "z"))
    assert metrics["mesh_iou"] > 0.9 and metrics["yaw_deg"] == 0.0
    assert evaluate_run(cfg, load_mesh_world(tmp_path, "y"))["mesh_iou"] < 0.6  # wrong frame


@pytest.mark.parametrize("mode", ["rendered", "surface"])
def test_evaluate_run_reads_colours_as_the_run_exported_them(tmp_path, monkeypatch, fringed_sphere, mode):
    import sds3d.eval as eval_module

    field = fringed_sphere
    cfg = ExportConfig(resolution=32, surface="density", threshold=1.0, albedo=mode, texture="vertex")
    write_mesh(extract_mesh(field, cfg), field, tmp_path / "mesh", cfg)
    monkeypatch.setattr(eval_module, "judge", lambda images: [("red", "sphere")] * len(images))
    run_cfg = _run_cfg("a red sphere", f"export.albedo={mode}", "eval.iou_resolution=32", "eval.yaw_step_deg=90")
    metrics = evaluate_run(run_cfg, load_mesh_world(tmp_path), field, render_views=lambda f: torch.ones(8, 3, 32, 32))
    # As rendered the sphere is red (error ~0.1 from the fringe's share); its fringe itself is blue.
    assert (metrics["colour_error"] < 0.2) == (mode == "rendered")
