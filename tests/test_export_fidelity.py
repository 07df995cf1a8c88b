"""The mesh fidelity check: the exported file ray-cast through the scene's pixels, compared with its renders."""

from __future__ import annotations

import math

import imageio.v3 as iio
import numpy as np
import pytest
import torch
import trimesh
from torch import nn

from sds3d.cameras import make_cameras, orbit_cameras
from sds3d.export import ExportConfig, extract_mesh, write_mesh
from sds3d.export.fidelity import cast_mesh, compare, load_exported_mesh, mesh_fidelity, psnr
from sds3d.render import RenderConfig, render
from sds3d.scene import Scene
from test_export import SphereField

torch.set_num_threads(1)


class SphereScene(Scene):
    """A Scene around the analytic sphere field (sharp edge), rendered by sds3d's volume renderer."""

    def __init__(self, field: SphereField):
        super().__init__()
        self.sphere, self.bound = field, field.bound
        self.anchor = nn.Parameter(torch.zeros(1))  # a device for the check to read
        self.cfg = RenderConfig(num_samples=128, chunk_size=1 << 16)

    def forward(self, x):
        return self.sphere(x)

    def normals(self, x):
        return nn.functional.normalize(x - self.sphere.centres[0], dim=-1)

    def param_groups(self, trainer_cfg):
        return []

    def render(self, cameras, shading="albedo", resolution=None, stratified=False, background=None, **kw):
        return render(self, background, cameras, self.cfg, shading=shading, resolution=resolution, stratified=stratified)

    def density(self, x):
        return self.sphere.density(x)

    def albedo(self, x):
        return self.sphere.albedo(x)


def disc_pixels(radius: float, distance: float, fov_deg: float, resolution: int) -> float:
    """Area in pixels of a centred sphere's silhouette: a disc of tan(asin(r / D)) in image-plane units."""
    focal = 0.5 * resolution / math.tan(math.radians(fov_deg) / 2)
    return math.pi * (focal * math.tan(math.asin(radius / distance))) ** 2


def test_cast_mesh_sees_a_sphere_as_its_silhouette_disc():
    mesh = trimesh.creation.icosphere(subdivisions=5, radius=0.5)
    mesh.visual = trimesh.visual.ColorVisuals(mesh, vertex_colors=np.tile([51, 102, 204, 255], (len(mesh.vertices), 1)))
    cams = make_cameras(torch.tensor([0.0, 120.0]), torch.tensor([10.0, -30.0]), 2.5, 40.0)
    views = cast_mesh(mesh, cams, 96)
    expected = disc_pixels(0.5, 2.5, 40.0, 96)
    for k in range(2):
        assert views["mask"][k].sum() == pytest.approx(expected, rel=0.02)
    inside = views["mask"][:, 0]
    np.testing.assert_allclose(views["rgb"].transpose(0, 2, 3, 1)[inside], np.tile([0.2, 0.4, 0.8], (inside.sum(), 1)), atol=1e-6)
    assert (views["rgb"].transpose(0, 2, 3, 1)[~inside] == 1.0).all()  # white elsewhere
    # The normal at the image centre faces the camera.
    centre = views["normal"][0, :, 48, 48]
    eye = cams.position[0].numpy()
    assert np.dot(centre, eye / np.linalg.norm(eye)) > 0.99


def test_compare_computes_iou_and_psnr_as_defined():
    rng = np.random.default_rng(0)
    a = {"mask": rng.random((2, 1, 8, 8)) > 0.5, "rgb": rng.random((2, 3, 8, 8))}
    b = {"mask": rng.random((2, 1, 8, 8)) > 0.5, "rgb": rng.random((2, 3, 8, 8))}
    got = compare(a, b)
    sa, sb = a["mask"].ravel(), b["mask"].ravel()
    assert got["mask_iou"] == pytest.approx(np.sum(sa & sb) / np.sum(sa | sb))
    assert got["psnr"] == pytest.approx(-10 * math.log10(np.mean((a["rgb"] - b["rgb"]) ** 2)))
    both = np.repeat((a["mask"] & b["mask"]), 3, axis=1)
    assert got["psnr_inside"] == pytest.approx(-10 * math.log10(np.mean((a["rgb"][both] - b["rgb"][both]) ** 2)))
    assert psnr(a["rgb"], a["rgb"]) == math.inf


@pytest.mark.parametrize("texture", ["vertex", "uv"])
def test_an_exported_sphere_matches_its_scene(tmp_path, texture):
    field = SphereField(peak=200.0, width=0.005)
    scene = SphereScene(field)
    cfg = ExportConfig(resolution=40, texture=texture, texture_size=128, formats=["obj", "glb"])
    paths = write_mesh(extract_mesh(field, cfg), field, tmp_path / "mesh", cfg)
    cams = orbit_cameras(2, elevation_deg=20.0, distance=2.5, fov_y_deg=40.0)
    for fmt in ("obj", "glb"):
        mesh, linear = load_exported_mesh({fmt: paths[fmt], "meta": paths["meta"]})
        result = mesh_fidelity(scene, mesh, cams, 48, tmp_path / f"fidelity-{fmt}.png", linear)
        assert result["mask_iou"] > 0.97 and result["psnr_inside"] > 30.0, (fmt, result)
        assert (result["views"], result["resolution"]) == (2, 48)
        image = iio.imread(result["image"])
        assert image.shape == (5 * 48, 2 * 48, 3) and image.std() > 10


def test_an_inflated_mesh_loses_iou_like_its_silhouette(tmp_path):
    field = SphereField(peak=200.0, width=0.005)
    cfg = ExportConfig(resolution=48, texture="vertex")
    mesh = extract_mesh(field, cfg)
    mesh.apply_scale(1.2)
    paths = write_mesh(mesh, field, tmp_path, cfg)
    loaded, _ = load_exported_mesh(paths)
    cams = orbit_cameras(1, elevation_deg=0.0, distance=2.5, fov_y_deg=40.0)
    result = mesh_fidelity(SphereScene(field), loaded, cams, 64)
    expected = disc_pixels(0.5, 2.5, 40.0, 64) / disc_pixels(0.6, 2.5, 40.0, 64)
    assert result["mask_iou"] == pytest.approx(expected, abs=0.02)
