"""Gaussians in and out of files: the initial sets (scene.gaussians_init) and the 3DGS .ply (export.splat_ply)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import trimesh

from sds3d.errors import UserError
from sds3d.export.splat_ply import SH_C0, SplatPlyError, Splats, read_splat_ply, splat_properties, write_splat_ply
from sds3d.scene.gaussians_init import (GaussianInitError, initial_gaussians, load_points, nearest_neighbour_scales,
                                        random_ball)


# --- initial Gaussians -------------------------------------------------------------------------


def test_random_ball_is_uniform_in_the_ball():
    p = random_ball(40000, radius=0.5, generator=torch.Generator().manual_seed(0))
    r = p.norm(dim=-1)
    assert p.shape == (40000, 3) and float(r.max()) <= 0.5
    # Uniform in volume: P(r < 0.5 s) = s^3.
    for s in (0.5, 0.8):
        assert float((r < 0.5 * s).float().mean()) == pytest.approx(s**3, abs=0.01)
    assert torch.allclose(p.mean(0), torch.zeros(3), atol=0.01)


def test_nearest_neighbour_scales_match_brute_force():
    p = torch.rand(300, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    d2 = torch.cdist(p, p) ** 2
    d2.fill_diagonal_(math.inf)
    expected = d2.topk(3, largest=False).values.mean(-1).clamp(min=1e-7).sqrt()
    assert torch.allclose(nearest_neighbour_scales(p), expected)
    twins = torch.zeros(4, 3)  # coincident points: the 1e-7 floor of the squared distance
    assert torch.allclose(nearest_neighbour_scales(twins), torch.full((4,), math.sqrt(1e-7)))


def test_initial_gaussians_are_dreamgaussian_blobs():
    p = random_ball(500, generator=torch.Generator().manual_seed(2))
    g = initial_gaussians(p)
    assert len(g) == 500 and torch.equal(g.means, p)
    assert torch.equal(g.colors, torch.full((500, 3), 0.5)) and torch.equal(g.opacities, torch.full((500,), 0.1))
    assert torch.equal(g.quats, torch.tensor([[1.0, 0, 0, 0]]).expand(500, 4))
    assert torch.equal(g.scales, nearest_neighbour_scales(p)[:, None].expand(500, 3))
    colours = torch.rand(500, 3)
    assert torch.equal(initial_gaussians(p, colours).colors, colours)


def test_point_cloud_file_gives_its_points_and_colours(tmp_path):
    pts = np.random.default_rng(0).uniform(-0.5, 0.5, (50, 3))
    rgba = np.random.default_rng(1).integers(0, 256, (50, 4)).astype(np.uint8)
    trimesh.PointCloud(pts, colors=rgba).export(tmp_path / "c.ply")
    trimesh.PointCloud(pts).export(tmp_path / "plain.ply")
    points, colours = load_points(tmp_path / "c.ply", num_points=10)
    assert np.allclose(points.numpy(), pts, atol=1e-6)  # all points, num_points is for meshes
    assert np.allclose(colours.numpy(), rgba[:, :3] / 255.0, atol=1e-6)
    points, colours = load_points(tmp_path / "plain.ply", num_points=10)
    assert len(points) == 50 and colours is None


def test_mesh_file_gives_surface_samples_with_interpolated_vertex_colours(tmp_path):
    tri = trimesh.Trimesh([[0, 0, 0], [1, 0, 0], [0, 1, 0]], [[0, 1, 2]], process=False)
    tri.visual.vertex_colors = [[255, 0, 0, 255], [0, 255, 0, 255], [0, 0, 255, 255]]
    tri.export(tmp_path / "tri.ply")
    points, colours = load_points(tmp_path / "tri.ply", num_points=200)
    x, y, z = points.double().unbind(-1)
    assert len(points) == 200 and torch.all(z == 0) and torch.all(x + y <= 1 + 1e-6) and torch.all((x >= 0) & (y >= 0))
    # Barycentric interpolation: at (x, y) the weights of the three vertices are (1 - x - y, x, y).
    assert torch.allclose(colours.double(), torch.stack([1 - x - y, x, y], -1), atol=1e-5)
    trimesh.creation.box(extents=(1.0, 1.0, 1.0)).export(tmp_path / "box.obj")
    points, colours = load_points(tmp_path / "box.obj", num_points=300)
    assert colours is None and len(points) == 300
    assert torch.allclose(points.abs().max(-1).values, torch.full((300,), 0.5), atol=1e-6)  # on the faces


def test_to_world_transform(tmp_path):
    trimesh.PointCloud([[1.0, 2.0, 3.0]]).export(tmp_path / "p.ply")
    y_up_to_z_up = np.eye(4)
    y_up_to_z_up[:3, :3] = [[0, 0, 1], [1, 0, 0], [0, 1, 0]]  # file (y, z, x) <- world (x, y, z)
    points, _ = load_points(tmp_path / "p.ply", 1, to_world=y_up_to_z_up)
    assert np.allclose(points.numpy(), [[3.0, 1.0, 2.0]])


def test_bad_init_files_are_one_line_user_errors(tmp_path):
    (tmp_path / "garbage.ply").write_text("not a ply at all")
    (tmp_path / "empty.ply").write_text("ply\nformat ascii 1.0\nelement vertex 0\nproperty float x\n"
                                       "property float y\nproperty float z\nend_header\n")
    trimesh.PointCloud([[0.0, 0.0, 0.0], [np.nan, 1.0, 1.0]]).export(tmp_path / "nan.ply")
    cases = {"missing.ply": "no such file", "garbage.ply": "could not be read", "empty.ply": "no points",
             "nan.ply": "non-finite"}
    for name, message in cases.items():
        with pytest.raises(GaussianInitError, match=message) as err:
            load_points(tmp_path / name, 10)
        assert isinstance(err.value, UserError) and "\n" not in str(err.value) and name in str(err.value)


# --- the 3DGS .ply -----------------------------------------------------------------------------


def _splats(n: int, sh_degree: int = 0, seed: int = 0) -> Splats:
    rng = np.random.default_rng(seed)
    q = rng.normal(size=(n, 4))
    k = (sh_degree + 1) ** 2
    return Splats(means=rng.uniform(-1, 1, (n, 3)), rgb=rng.uniform(0, 1, (n, 3)), opacities=rng.uniform(0.01, 0.99, n),
                  scales=rng.uniform(0.001, 0.2, (n, 3)), quats=q / np.linalg.norm(q, axis=-1, keepdims=True),
                  sh_rest=rng.normal(size=(n, k - 1, 3)) if sh_degree else None)


@pytest.mark.parametrize("sh_degree", [0, 1, 3])
def test_round_trip(tmp_path, sh_degree):
    s = _splats(37, sh_degree)
    back = read_splat_ply(write_splat_ply(tmp_path / "s.ply", s))
    for name in ("means", "rgb", "opacities", "scales", "quats"):
        assert np.allclose(getattr(back, name), getattr(s, name), rtol=1e-5, atol=1e-6), name
    assert (back.sh_rest is None) == (sh_degree == 0)
    if sh_degree:
        assert np.allclose(back.sh_rest, s.sh_rest, rtol=1e-5, atol=1e-6)


def test_header_and_values_are_the_3dgs_reference_layout(tmp_path):
    s = _splats(5, sh_degree=1)
    path = write_splat_ply(tmp_path / "s.ply", s)
    raw = path.read_bytes()
    header, body = raw.split(b"end_header\n", 1)
    # 3DGS's construct_list_of_attributes for SH degree 1: 3 DC + 9 rest coefficients.
    names = (["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2"] + [f"f_rest_{i}" for i in range(9)]
             + ["opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"])
    assert header.decode().splitlines() == (["ply", "format binary_little_endian 1.0", "element vertex 5"]
                                            + [f"property float {n}" for n in names])
    assert splat_properties(1) == names and len(splat_properties(3)) == 9 + 45 + 8
    values = np.frombuffer(body, dtype="<f4").reshape(5, len(names))
    col = {n: values[:, i] for i, n in enumerate(names)}
    assert np.allclose(col["f_dc_1"], (s.rgb[:, 1] - 0.5) / SH_C0, atol=1e-5)
    assert np.allclose(col["opacity"], np.log(s.opacities / (1 - s.opacities)), atol=1e-5)
    assert np.allclose(col["scale_2"], np.log(s.scales[:, 2]), atol=1e-5)
    assert np.allclose(np.stack([col[f"rot_{i}"] for i in range(4)], -1), s.quats, atol=1e-6)
    # f_rest is channel-major (3DGS: features_rest.transpose(1, 2).flatten()): red's 3 bands first.
    assert np.allclose(np.stack([col[f"f_rest_{i}"] for i in range(3)], -1), s.sh_rest[:, :, 0], atol=1e-6)
    assert np.allclose(col["f_rest_3"], s.sh_rest[:, 0, 1], atol=1e-6)
    assert np.all(values[:, 3:6] == 0)
    # An independent PLY reader (trimesh) sees a point cloud at the means.
    cloud = trimesh.load(path)
    assert np.allclose(cloud.vertices, s.means, atol=1e-6)


def test_bad_splat_files_are_one_line_user_errors(tmp_path):
    (tmp_path / "ascii.ply").write_text("ply\nformat ascii 1.0\nelement vertex 0\nproperty float x\nend_header\n")
    (tmp_path / "text.ply").write_text("hello")
    trimesh.PointCloud(np.zeros((3, 3))).export(tmp_path / "cloud.ply")
    short = write_splat_ply(tmp_path / "short.ply", _splats(4)).read_bytes()
    (tmp_path / "short.ply").write_bytes(short[:-10])
    cases = {"none.ply": "no such file", "ascii.ply": "binary_little_endian", "text.ply": "not a PLY",
             "cloud.ply": "missing vertex properties", "short.ply": "4 vertices announced"}
    for name, message in cases.items():
        with pytest.raises(SplatPlyError, match=message) as err:
            read_splat_ply(tmp_path / name)
        assert isinstance(err.value, UserError) and "\n" not in str(err.value)
