"""Start from or texture a user's mesh: scene.init_from (the density starts as the mesh) and
scene.freeze_geometry (the mesh's shape is kept, only its colours are distilled, the export keeps its triangles)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import trimesh

from node_tools import validate_gltf
from sds3d.config import ConfigError, load_config
from sds3d.eval import grid_centres, mesh_occupancy
from sds3d.export.mesh import world_to_file
from sds3d.fields.nerf import FieldConfig, NeRFField, density_blob, mesh_density_bias, mesh_sdf_at, volsdf_density
from sds3d.pipeline import run
from sds3d.runs import load_scene, prepare_run_dir
from sds3d.scene import SceneConfigError
from sds3d.scene.mesh_init import load_init_mesh, mesh_sdf_grid

torch.set_num_threads(1)
TOY = Path(__file__).resolve().parents[1] / "configs" / "toy.yaml"
BOX_EXTENTS = (0.7, 0.5, 0.36)  # world x, y, z
BOX_CENTRE = (0.05, -0.1, 0.08)


def box_file(folder: Path, up_axis: str = "y") -> Path:
    """An off-centre box saved as an .obj in the frame of ``up_axis`` (as a DCC tool or sds3d writes it)."""
    box = trimesh.creation.box(extents=BOX_EXTENTS)
    box.apply_translation(BOX_CENTRE)
    box.apply_transform(world_to_file(up_axis))
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "box.obj"
    box.export(path)
    return path


def box_sdf(p: np.ndarray) -> np.ndarray:
    """The exact signed distance of the box (Quilez's formula)."""
    q = np.abs(p - np.asarray(BOX_CENTRE)) - np.asarray(BOX_EXTENTS) / 2
    return np.linalg.norm(np.maximum(q, 0.0), axis=-1) + np.minimum(q.max(axis=-1), 0.0)


def test_the_mesh_is_read_in_the_files_frame(tmp_path):
    mesh = load_init_mesh(box_file(tmp_path), up_axis="y")
    np.testing.assert_allclose(mesh.bounds.mean(axis=0), BOX_CENTRE, atol=1e-6)
    np.testing.assert_allclose(mesh.extents, BOX_EXTENTS, atol=1e-6)
    fitted = load_init_mesh(box_file(tmp_path / "z", "z"), up_axis="z", scale=0.5)
    np.testing.assert_allclose(fitted.bounds.mean(axis=0), 0.0, atol=1e-6)
    assert np.abs(fitted.vertices).max() == pytest.approx(0.5)
    with pytest.raises(SceneConfigError, match=r"outside the scene box .*scene.init_scale=0.21 to fit it"):
        load_init_mesh(box_file(tmp_path), up_axis="y", bound=0.3)


def test_sdf_grid_is_the_boxs_signed_distance(tmp_path):
    mesh = load_init_mesh(box_file(tmp_path))
    grid = mesh_sdf_grid(mesh, 1.0, 24)
    c = np.linspace(-1, 1, 24)
    exact = box_sdf(np.stack(np.meshgrid(c, c, c, indexing="ij"), axis=-1))
    assert np.array_equal(grid < 0, exact < 0)  # inside exactly where the box is
    np.testing.assert_allclose(grid, exact, atol=0.01)  # the distance, to within the surface samples' spacing


def test_sdf_interpolation_is_trilinear_and_differentiable():
    # A linear function is reproduced exactly by trilinear interpolation, with its constant gradient.
    c = torch.linspace(-2.0, 2.0, 9)
    X, Y, Z = torch.meshgrid(c, c, c, indexing="ij")
    grid = 0.3 * X - 0.5 * Y + 0.7 * Z + 0.1
    x = (torch.rand(50, 3, generator=torch.Generator().manual_seed(0)) * 3.6 - 1.8).requires_grad_(True)
    d = mesh_sdf_at(grid, x, 2.0)
    torch.testing.assert_close(d, 0.3 * x[:, 0] - 0.5 * x[:, 1] + 0.7 * x[:, 2] + 0.1, atol=1e-5, rtol=0)
    (g,) = torch.autograd.grad(d.sum(), x)
    torch.testing.assert_close(g, torch.tensor([0.3, -0.5, 0.7]).expand(50, 3), atol=1e-4, rtol=0)


def test_the_mesh_bias_is_a_step_at_the_surface():
    d = torch.tensor([-1.0, -0.1, -0.02, 0.0, 0.02, 0.1, 1.0])
    got = mesh_density_bias(d, "softplus", 10.0, 0.02)
    np.testing.assert_allclose(got.numpy(), 10.0 * np.tanh(-d.numpy() / 0.02), rtol=1e-6)
    assert got[0] == pytest.approx(10.0) and got[3] == 0.0 and got[-1] == pytest.approx(-10.0)
    x = torch.randn(64, 3, generator=torch.Generator().manual_seed(1))
    # A VolSDF field starts from -d, as sphere_sdf starts from a sphere's.
    torch.testing.assert_close(mesh_density_bias(x.norm(dim=-1) - 0.5, "volsdf", 10.0, 0.02), density_blob(x, "sphere_sdf", 0, 0, 0.5))


def test_a_frozen_field_has_the_meshs_volsdf_density():
    cfg = FieldConfig(hidden_dim=8, density_blob_std=0.7)
    cfg.encoding.backend = "torch"
    field = NeRFField(cfg)
    c = torch.linspace(-1, 1, 17)
    X, Y, Z = torch.meshgrid(c, c, c, indexing="ij")
    sdf = torch.sqrt(X**2 + Y**2 + Z**2) - 0.5
    x = torch.rand(40, 3, generator=torch.Generator().manual_seed(2)) - 0.5
    field.set_mesh_sdf(sdf, frozen_beta=0.05)
    expected = volsdf_density(-mesh_sdf_at(sdf, x, 1.0), 0.05)
    torch.testing.assert_close(field.density(x), expected)
    assert field.surface_density == pytest.approx(0.5 / 0.05)
    field.set_mesh_sdf(sdf)  # the bias replaces the blob; the MLP still adds its part
    raw = field.mlp(field.encoding((x + 1.0) * 0.5))[:, 0] + 10.0 * torch.tanh(-mesh_sdf_at(sdf, x, 1.0) / cfg.sdf_beta)
    torch.testing.assert_close(field.density(x), torch.nn.functional.softplus(raw))


def _cfg(tmp_path, prior, *extra):
    return load_config(TOY, ["prompt=a red cube", f"prior.name_or_path={prior}", f"out_dir={tmp_path}", "trainer.progress=false",
                             "render.resolution=16", "render.num_samples=16", "trainer.val_every=0", "orbit.frames=2",
                             "orbit.resolution=24", "export.resolution=48", "trainer.threads=1", "eval.enabled=false",
                             "scene.init_resolution=48", *extra])


def box_iou(mesh_world: trimesh.Trimesh, resolution: int = 64) -> float:
    c = grid_centres(resolution)
    gt = box_sdf(np.stack(np.meshgrid(c, c, c, indexing="ij"), axis=-1)) < 0
    occ = mesh_occupancy(mesh_world, resolution)
    return float((gt & occ).sum() / (gt | occ).sum())


def test_init_from_a_mesh_starts_the_density_as_the_mesh(tmp_path, tiny_pixel_prior):
    from sds3d.cameras import orbit_cameras
    from sds3d.eval import load_mesh_world
    from sds3d.export.fidelity import cast_mesh, render_scene
    from sds3d.scene import build_scene

    path = box_file(tmp_path / "in")
    cfg = _cfg(tmp_path, tiny_pixel_prior, f"scene.init_from={path}", "trainer.max_steps=0", "name=init", "export.texture=vertex")
    blob = _cfg(tmp_path, tiny_pixel_prior, "trainer.max_steps=0", "name=blob")
    # Step 0 renders the mesh: the scene's silhouettes are the file's (to ~1 pixel: its density is 10 inside).
    cams = orbit_cameras(2, elevation_deg=20.0, distance=2.5, fov_y_deg=40.0)
    given = load_init_mesh(path)
    given.visual = trimesh.visual.ColorVisuals(given, vertex_colors=np.full((len(given.vertices), 4), 255))
    target = cast_mesh(given, cams, 48)["mask"]
    for c, lo, hi in ((cfg, 0.75, 1.0), (blob, 0.0, 0.4)):  # measured: 0.82 and 0.21
        with torch.no_grad():
            mask = render_scene(build_scene(c), cams, 48)["mask"]
        assert lo < (mask & target).sum() / (mask | target).sum() < hi
    # ... and the export of the untrained scene is the box (the blob's is a ball: IoU 0.2).
    run(cfg, prepare_run_dir(cfg))
    assert box_iou(load_mesh_world(tmp_path / "init")) > 0.8


def test_texture_only_keeps_the_meshs_triangles_and_distils_its_colours(tmp_path, tiny_pixel_prior):
    path = box_file(tmp_path / "in")
    given = load_init_mesh(path)
    cfg = _cfg(tmp_path, tiny_pixel_prior, f"scene.init_from={path}", "scene.freeze_geometry=true", "trainer.max_steps=3",
               "export.texture_size=64", "orbit.resolution=64")
    run_dir = prepare_run_dir(cfg)
    points = torch.rand(200, 3, generator=torch.Generator().manual_seed(3)) - 0.5
    from sds3d.scene import build_scene

    before = build_scene(cfg)
    summary = run(cfg, run_dir)
    after = load_scene(cfg, run_dir)
    with torch.no_grad():
        torch.testing.assert_close(after.density(points), before.density(points), rtol=0, atol=0)  # geometry frozen
        assert (after.albedo(points) - before.albedo(points)).abs().max() > 1e-4  # colours trained
    exported = trimesh.load(run_dir / "mesh" / "mesh.obj", force="mesh", merge_tex=True)
    world = trimesh.transform_points(exported.vertices, np.linalg.inv(world_to_file("y")))
    assert len(exported.faces) == len(given.faces)
    np.testing.assert_allclose(np.sort(world, axis=0), np.sort(given.vertices, axis=0), atol=1e-6)
    meta = json.loads((run_dir / "mesh" / "mesh.json").read_text())
    assert meta["surface"] == "scene.init_from" and meta["texture"] == "uv"
    assert summary["fidelity"]["mask_iou"] > 0.9  # the renders show the box the file holds (measured 0.94)
    for report in validate_gltf([run_dir / "mesh" / "mesh.glb"]):
        assert (report["errors"], report["warnings"]) == (0, 0), report


def test_mesh_settings_are_checked(tmp_path):
    with pytest.raises(ConfigError, match="scene.freeze_geometry=true keeps a given mesh's shape"):
        load_config(TOY, ["prompt=a red cube", "scene.freeze_geometry=true"])
    with pytest.raises(ConfigError, match="no such file"):
        load_config(TOY, ["prompt=a red cube", f"scene.init_from={tmp_path / 'missing.obj'}"])
    (tmp_path / "bad.obj").write_text("not a mesh\n")
    with pytest.raises(SceneConfigError, match="no triangles|could not be read"):
        load_init_mesh(tmp_path / "bad.obj")
