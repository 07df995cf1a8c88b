"""Mesh export: marching cubes of analytic stub fields, cleanup, file frames, textures, videos."""

from __future__ import annotations

import math

import imageio.v2 as imageio
import numpy as np
import pytest
import torch
import trimesh

from sds3d.export import EmptyMeshError, ExportConfig, ExportError, extract_mesh, write_mesh, write_orbit_video
from sds3d.export.colour import rendered_albedo
from sds3d.export.mesh import auto_threshold, density_grid, surface_albedo, world_to_file
from sds3d.eval import mesh_occupancy
from sds3d.export.texture import rasterize_uv, xatlas_available

torch.set_num_threads(1)


class SphereField:
    """Analytic stub field: spheres of density ``peak`` (soft edge ``width``), albedo from position."""

    def __init__(self, centres=((0.0, 0.0, 0.0),), radii=(0.5,), peak=50.0, width=0.01, bound=1.0):
        self.centres = torch.tensor(centres, dtype=torch.float32)
        self.radii = torch.tensor(radii, dtype=torch.float32)
        self.peak, self.width, self.bound = peak, width, bound

    def density(self, x):
        d = (x[:, None, :] - self.centres[None]).norm(dim=-1) - self.radii  # (N, K)
        return self.peak * torch.sigmoid(-d.min(dim=1).values / self.width)

    def albedo(self, x):
        # A smooth, position-dependent colour so a wrong lookup shows up.
        return (0.5 + 0.4 * x).clamp(0.0, 1.0)

    def __call__(self, x):
        return self.density(x), self.albedo(x)


class EmptyField(SphereField):
    def density(self, x):
        return torch.zeros(len(x))


def radius_stats(mesh, centre=(0.0, 0.0, 0.0)):
    r = np.linalg.norm(mesh.vertices - np.asarray(centre), axis=1)
    return r.min(), r.max()


@pytest.mark.parametrize("surface", ["visibility", "density"])
@pytest.mark.parametrize("peak,width", [(50.0, 0.01), (5.0, 0.01), (2000.0, 0.002), (20.0, 0.03)])
def test_sphere_is_watertight_with_the_right_radius(peak, width, surface):
    if surface == "visibility" and peak < 20:
        pytest.skip("semi-transparent: its visibility surface lies inside (test_visibility_surface_of_a_semi_transparent_sphere)")
    res = 48
    voxel = 2.0 / (res - 1)
    mesh = extract_mesh(SphereField(peak=peak, width=width), ExportConfig(resolution=res, surface=surface))
    assert mesh.is_watertight and mesh.is_winding_consistent
    r_min, r_max = radius_stats(mesh)
    assert 0.5 - voxel < r_min and r_max < 0.5 + voxel
    # Positive volume: faces point outward.
    assert 4.0 / 3.0 * math.pi * (0.5 - voxel) ** 3 < mesh.volume < 4.0 / 3.0 * math.pi * (0.5 + voxel) ** 3


def test_visibility_surface_of_a_semi_transparent_sphere():
    # Density 5: a ray has to travel ln(2) / 5 = 0.139 inside to become half opaque. Along the
    # radial grid directions the surface is that deep; elsewhere the nearest of the 26 directions
    # is at most ~25 degrees off radial, so the surface lies between 0.5 - 0.139 and 0.5 - 0.139 cos 25.
    res = 48
    voxel = 2.0 / (res - 1)
    depth = math.log(2.0) / 5.0
    mesh = extract_mesh(SphereField(peak=5.0, width=0.001), ExportConfig(resolution=res, surface="visibility"))
    assert mesh.is_watertight
    r_min, r_max = radius_stats(mesh)
    assert 0.5 - depth - voxel < r_min and r_max < 0.5 - depth * math.cos(math.radians(25)) + voxel
    assert mesh.metadata["surface"] == "visibility" and mesh.metadata["iso_level"] == pytest.approx(math.log(2.0))


class HollowShellField(SphereField):
    """A dense shell 0.4 < r < 0.5 with an empty inside and a pin-hole at the top (an SDS-like field)."""

    def density(self, x):
        r = x.norm(dim=-1)
        shell = (r > 0.4) & (r < 0.5)
        pinhole = (x[:, :2].norm(dim=-1) < 0.03) & (x[:, 2] > 0)
        return 60.0 * (shell & ~pinhole).float()


def test_visibility_fills_a_pin_holed_shell_that_density_leaves_hollow():
    res = 48
    voxel = 2.0 / (res - 1)
    solid = extract_mesh(HollowShellField(), ExportConfig(resolution=res, surface="visibility"))
    hollow = extract_mesh(HollowShellField(), ExportConfig(resolution=res, surface="density", min_component_fraction=0.0))
    sphere = 4.0 / 3.0 * math.pi * 0.5**3
    # The solid is the ball: one closed surface near r = 0.5, nothing inside.
    assert solid.is_watertight and abs(solid.volume - sphere) < 0.1 * sphere
    assert radius_stats(solid)[0] > 0.5 - 2 * voxel
    # The density iso-surface also has the inner wall (r = 0.4): faces far inside the object.
    assert radius_stats(hollow)[0] < 0.4 + voxel


def test_visibility_keeps_an_open_concavity():
    # A box with a deep cylindrical hole bored from the top along z: a ray along -z sees its floor.
    class BoredBox(SphereField):
        def density(self, x):
            box = (x.abs() < 0.5).all(dim=-1)
            hole = (x[:, :2].norm(dim=-1) < 0.2) & (x[:, 2] > -0.2)
            return 80.0 * (box & ~hole).float()

    res = 48
    mesh = extract_mesh(BoredBox(), ExportConfig(resolution=res, surface="visibility"))
    occ = mesh_occupancy(mesh, 32).reshape(32, 32, 32)  # voxel k has centre (k + 0.5) / 16 - 1
    # In the hole (0.03, 0.03, 0.22), below its floor (0.03, 0.03, -0.34), in the wall (0.34, 0.34, 0.22).
    assert [bool(occ[16, 16, 19]), bool(occ[16, 16, 10]), bool(occ[21, 21, 19])] == [False, True, True]


def test_vertex_colours_are_the_albedo():
    field = SphereField()
    mesh = extract_mesh(field, ExportConfig(resolution=32, albedo="surface"))
    expected = field.albedo(torch.as_tensor(mesh.vertices, dtype=torch.float32)).numpy()
    got = mesh.visual.vertex_colors[:, :3] / 255.0
    assert np.abs(got - expected).max() <= 0.5 / 255.0 + 1e-6
    assert got.std(axis=0).min() > 0.05  # really varies over the surface


def test_rendered_albedo_composites_like_a_render(fringed_sphere):
    # A ray entering at r = 0.55 along -n: the fringe absorbs 1 - exp(-2 * 0.05) = 0.095 of it, the
    # opaque core the rest, so the render shows 0.095 blue + 0.905 red; the point itself is blue.
    rng = np.random.default_rng(0)
    n = rng.normal(size=(64, 3))
    n /= np.linalg.norm(n, axis=1, keepdims=True)
    points = 0.5 * n
    fringe = 1.0 - math.exp(-2.0 * 0.05)
    got = rendered_albedo(fringed_sphere, points, n, span_out=0.05, span_in=0.2, n_samples=64)
    np.testing.assert_allclose(got, np.tile([1.0 - fringe, 0.0, fringe], (64, 1)), atol=0.01)
    at_point = surface_albedo(fringed_sphere, points * 0.999, n, "surface")
    np.testing.assert_allclose(at_point, np.tile([0.0, 0.0, 1.0], (64, 1)))


def test_export_colours_the_mesh_as_rendered_by_default(fringed_sphere):
    field = fringed_sphere
    rendered = extract_mesh(field, ExportConfig(resolution=32, surface="density", threshold=1.0))
    surface = extract_mesh(field, ExportConfig(resolution=32, surface="density", threshold=1.0, albedo="surface"))
    red = lambda m: (m.visual.vertex_colors[:, 0] / 255.0).mean()  # noqa: E731
    assert red(rendered) > 0.85 and red(surface) < 0.15


def test_auto_threshold_of_a_step_density_sits_between_empty_and_full():
    sigma = np.zeros((16, 16, 16))
    sigma[4:12, 4:12, 4:12] = 100.0
    level = auto_threshold(sigma, spacing=0.1)
    assert 0.0 < level < 100.0


def test_floaters_are_removed():
    field = SphereField(centres=((0.0, 0.0, 0.0), (0.75, 0.75, 0.75)), radii=(0.45, 0.08))
    cleaned = extract_mesh(field, ExportConfig(resolution=48, min_component_fraction=0.05))
    kept = extract_mesh(field, ExportConfig(resolution=48, min_component_fraction=0.0))
    assert len(kept.split(only_watertight=False)) == 2
    assert len(cleaned.split(only_watertight=False)) == 1
    assert radius_stats(cleaned)[1] < 0.5


def test_empty_field_raises_empty_mesh_error():
    with pytest.raises(EmptyMeshError, match="surface_opacity"):
        extract_mesh(EmptyField(), ExportConfig(resolution=16))
    with pytest.raises(EmptyMeshError, match="threshold"):
        extract_mesh(EmptyField(), ExportConfig(resolution=16, surface="density"))
    with pytest.raises(ValueError):  # a user error: the CLI maps it to exit code 2
        extract_mesh(SphereField(), ExportConfig(resolution=16, surface="density", threshold=1e6))


def test_bad_config_values_raise():
    with pytest.raises(ExportError, match="up_axis"):
        ExportConfig(up_axis="x")
    with pytest.raises(ExportError, match="formats"):
        ExportConfig(formats=["stl"])
    with pytest.raises(ExportError, match="export.surface="):
        ExportConfig(surface="sdf")
    with pytest.raises(ExportError, match="export.albedo="):
        ExportConfig(albedo="mean")
    # A density number only means something for the density iso-surface; say how to ask for it.
    with pytest.raises(ExportError, match="add export.surface=density"):
        ExportConfig(threshold=5.0)


def test_up_axis_y_maps_world_z_to_y(tmp_path):
    # A sphere above the origin along world +z, so its centre shows the frame.
    field = SphereField(centres=((0.0, 0.0, 0.4),), radii=(0.3,))
    mesh = extract_mesh(field, ExportConfig(resolution=32))
    for up, centre in (("y", (0.0, 0.4, 0.0)), ("z", (0.0, 0.0, 0.4))):
        cfg = ExportConfig(resolution=32, up_axis=up, texture="vertex", formats=["obj", "ply"])
        paths = write_mesh(mesh, field, tmp_path / up / "mesh", cfg)
        for fmt in ("obj", "ply"):
            loaded = trimesh.load(paths[fmt], force="mesh")
            np.testing.assert_allclose(loaded.bounds.mean(axis=0), centre, atol=0.03)
    T = world_to_file("y")
    np.testing.assert_allclose(T[:3, :3] @ [1.0, 0.0, 0.0], [0.0, 0.0, 1.0])  # front (+x) -> +z
    assert np.linalg.det(T[:3, :3]) == pytest.approx(1.0)  # a rotation, not a mirror


def test_rasterize_uv_covers_a_triangle_with_exact_barycentrics():
    uvs = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    rows, cols, face, bary = rasterize_uv(uvs, np.array([[0, 1, 2]]), size=8)
    # Lower-left half of the image (v up): texel centres with u + v <= 1, i.e. col <= row; 36 of 64
    # (the diagonal's centres lie exactly on the edge and count as inside).
    assert len(rows) == 36 and (face == 0).all() and (cols <= rows).all()
    u, v = (cols + 0.5) / 8, 1.0 - (rows + 0.5) / 8
    np.testing.assert_allclose(bary[:, 1], u, atol=1e-9)
    np.testing.assert_allclose(bary[:, 2], v, atol=1e-9)


@pytest.mark.skipif(not xatlas_available(), reason="xatlas not installed (extra sds3d[uv])")
def test_textured_obj_round_trips_through_trimesh(tmp_path):
    field = SphereField()
    mesh = extract_mesh(field, ExportConfig(resolution=20))
    cfg = ExportConfig(resolution=20, texture="uv", texture_size=128, formats=["obj", "glb"])
    paths = write_mesh(mesh, field, tmp_path / "mesh", cfg)
    assert paths["obj"] == tmp_path / "mesh" / "mesh.obj" and paths["meta"].exists()
    assert f"map_Kd {paths['texture'].name}" in paths["mtl"].read_text()
    assert f"mtllib {paths['mtl'].name}" in paths["obj"].read_text()
    loaded = trimesh.load(paths["obj"], force="mesh")
    assert loaded.visual.kind == "texture" and loaded.visual.material.image.size == (128, 128)
    # The texture looked up at each vertex's UV gives back the albedo at that vertex (file frame -> world).
    colours = loaded.visual.to_color().vertex_colors[:, :3] / 255.0
    world_vertices = trimesh.transform_points(loaded.vertices, np.linalg.inv(world_to_file("y")))
    expected = field.albedo(torch.as_tensor(world_vertices, dtype=torch.float32)).numpy()
    assert np.median(np.abs(colours - expected)) < 0.02
    glb = trimesh.load(paths["glb"], force="mesh")
    assert len(glb.faces) == len(loaded.faces)


def test_density_grid_spans_the_bound():
    field = SphereField(bound=2.0)
    sigma, spacing = density_grid(field, 9)
    assert spacing == pytest.approx(0.5)
    assert sigma[4, 4, 4] == pytest.approx(50.0, rel=1e-3) and sigma[0, 0, 0] < 1e-6


def test_orbit_video_is_written_and_readable(tmp_path):
    frames = torch.zeros(6, 3, 33, 31)  # odd sizes: padded to even for yuv420p
    frames[:, 0] = torch.linspace(0, 1, 6)[:, None, None]
    path = write_orbit_video(frames, tmp_path / "orbit.mp4", fps=6)
    assert path.exists() and path.stat().st_size > 0
    read = np.stack(imageio.mimread(path)) if path.suffix == ".gif" else np.stack(list(imageio.get_reader(path).iter_data()))
    assert read.shape[0] == 6 and read.shape[1:3] in ((33, 31), (34, 32))
    assert read[-1, ..., 0].mean() > 200 and read[0, ..., 0].mean() < 40  # red ramps up


def test_orbit_gif(tmp_path):
    frames = torch.rand(4, 3, 16, 16)
    path = write_orbit_video(frames, tmp_path / "orbit.gif", fps=4)
    assert path.suffix == ".gif" and len(imageio.mimread(path)) == 4


class SDFSphereField(SphereField):
    """A VolSDF-like stub with a wide halo: its own zero level (``surface_density``) is at r = 0.5."""

    surface_density = 5.0

    def density(self, x):
        return 10.0 * torch.sigmoid(-(x.norm(dim=-1) - 0.5) / 0.1)  # 5.0 exactly at r = 0.5


def test_auto_export_uses_the_fields_own_surface_level():
    res = 48
    voxel = 2.0 / (res - 1)
    mesh = extract_mesh(SDFSphereField(), ExportConfig(resolution=res, surface="density", surface_opacity=0.1))
    assert mesh.metadata["iso_level"] == pytest.approx(5.0)
    r_min, r_max = radius_stats(mesh)
    assert 0.5 - voxel < r_min and r_max < 0.5 + voxel
    # An explicit number still wins over the field's level.
    assert extract_mesh(SDFSphereField(), ExportConfig(resolution=res, surface="density", threshold=2.0)).metadata["iso_level"] == 2.0
