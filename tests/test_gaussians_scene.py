"""GaussianScene (scene.gaussians) and its volume (scene.gaussians_field) against hand computations:
compositing over a per-direction background, per-view Lambertian shading with camera-facing
normals, SH colours, the density grid and its optical depth, the albedo, resizing on load, the
splat file in the file frame, and mesh export of a ball of Gaussians."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from sds3d.cameras import Cameras, get_rays, look_at, spherical_to_position
from sds3d.export import ExportConfig, extract_mesh, world_to_file
from sds3d.export.splat_ply import read_splat_ply, transform_splats, write_splat_ply
from sds3d.fields.background import BackgroundConfig
from sds3d.render import RenderConfig
from sds3d.scene import GaussiansConfig
from sds3d.scene.gaussians import GaussianScene

C0 = 0.28209479177387814  # Y_0^0
C1 = 0.4886025119029199  # sqrt(3 / (4 pi)), the degree-1 constant


def views(az, el, distance=2.5, fov=40.0):
    az, el = torch.as_tensor(az, dtype=torch.float64), torch.as_tensor(el, dtype=torch.float64)
    dist, fovs = torch.full_like(az, distance), torch.full_like(az, fov)
    return Cameras(look_at(spherical_to_position(az, el, dist)), fovs, az, el, dist)


def scene_of(means, scales, opacities, colors, quats=None, sh_rest=None, res=33, **render):
    """A float64 GaussianScene holding exactly these Gaussians (loaded into a 1-Gaussian scene)."""
    means = torch.as_tensor(means, dtype=torch.float64).reshape(-1, 3)
    N = len(means)
    quats = torch.tensor([[1.0, 0, 0, 0]]).repeat(N, 1) if quats is None else torch.as_tensor(quats)
    cfg = GaussiansConfig(n_init=1, sh_degree=0 if sh_rest is None else 1, field_resolution=64)
    scene = GaussianScene(cfg, BackgroundConfig(), RenderConfig(resolution=res, **render)).double()
    state = scene.state_dict()
    state.update({"params.means": means, "params.quats": quats.double(),
                  "params.scales": torch.as_tensor(scales, dtype=torch.float64).reshape(N, 3).log(),
                  "params.opacities": torch.logit(torch.as_tensor(opacities, dtype=torch.float64).broadcast_to(N).clone()),
                  "params.sh0": ((torch.as_tensor(colors, dtype=torch.float64).reshape(N, 3) - 0.5) / C0)[:, None]})
    if sh_rest is not None:
        state["params.shN"] = torch.as_tensor(sh_rest, dtype=torch.float64)
    scene.load_state_dict(state)
    return scene


def direction_colour(dirs):
    """A background that differs per ray: (d + 1) / 2."""
    return 0.5 * (dirs + 1.0)


def test_render_composites_a_per_direction_background():
    res, o, c = 33, 0.8, torch.tensor([0.2, 0.5, 0.9], dtype=torch.float64)
    scene = scene_of([0, 0, 0], [0.05, 0.12, 0.12], o, c, res=res)
    cams = views([30.0], [10.0])
    out = scene.render(cams, shading="albedo", background=direction_colour)
    _, dirs = get_rays(cams, res)
    bg = direction_colour(dirs)[0].permute(2, 0, 1)
    alpha = out["opacity"][0]
    expected = (alpha * c[:, None, None] + (1 - alpha) * bg).clamp(0, 1)
    assert torch.allclose(out["rgb"][0], expected, atol=1e-12) and torch.allclose(out["albedo"][0], expected, atol=1e-12)
    assert 0.02 < float((alpha > 0).double().mean()) < 0.5  # covered and uncovered pixels both tested
    assert out["ray_dirs"].shape == (res * res, 3) and out["weights"] is None and out["sample_normals"] is None


def test_lambertian_and_textureless_shade_each_gaussian_per_view_with_its_camera_facing_normal():
    res, o, c, m = 33, 0.7, torch.tensor([0.9, 0.6, 0.3], dtype=torch.float64), 16
    scene = scene_of([0, 0, 0], [0.01, 0.15, 0.15], o, c, res=res)  # flat, shortest axis along world x
    cams = views([0.0, 180.0], [0.0, 0.0])  # on +x and on -x: they see opposite normals
    light = torch.tensor([1.0, 0.0, 1.0], dtype=torch.float64)
    white = lambda d: torch.ones_like(d)  # noqa: E731
    ambient, diffuse = scene.render_cfg.ambient, scene.render_cfg.diffuse
    n_dot_l = torch.tensor([1.0, -1.0], dtype=torch.float64) / math.sqrt(2.0)  # n = +x, then -x; l = (1, 0, 1) / sqrt 2
    lit = ambient + diffuse * n_dot_l.clamp(min=0)
    with torch.no_grad():
        lam = scene.render(cams, shading="lambertian", light_dir=light, background=white)
        tex = scene.render(cams, shading="textureless", light_dir=light, background=white)
    for v in range(2):
        a = float(lam["opacity"][v, 0, m, m])
        assert a == pytest.approx(o, abs=1e-12)  # the centre pixel: the kernel's peak
        assert torch.allclose(lam["rgb"][v, :, m, m], o * c * lit[v] + (1 - o), atol=1e-12)
        assert torch.allclose(lam["albedo"][v, :, m, m], o * c + (1 - o), atol=1e-12)
        assert torch.allclose(tex["rgb"][v, :, m, m], (o * lit[v] + (1 - o)).expand(3), atol=1e-12)
    assert float(lam["rgb"][0, 0, m, m]) > float(lam["rgb"][1, 0, m, m])  # the lit side is brighter


def test_sh_degree_1_colours_follow_the_view_direction():
    mean = torch.tensor([0.1, -0.2, 0.05], dtype=torch.float64)
    sh0, sh1 = torch.tensor([0.3, -0.2, 0.1]), torch.tensor([[0.2, 0.1, -0.3], [-0.1, 0.4, 0.2], [0.3, -0.2, 0.1]])
    scene = scene_of(mean, [0.1] * 3, 0.5, C0 * sh0 + 0.5, sh_rest=sh1[None].double())
    cams = views([0.0, 120.0, 250.0], [10.0, 40.0, -20.0])
    from sds3d.render.splat import cameras_to_gsplat

    viewmats, _ = cameras_to_gsplat(cams, 8)
    got = scene.colours(viewmats)[:, 0]  # (C, 3)
    for v in range(3):
        x, y, z = torch.nn.functional.normalize(mean - cams.position[v], dim=0)
        basis = torch.tensor([-C1 * y, C1 * z, -C1 * x], dtype=torch.float64)  # 3DGS's degree-1 real SH
        expected = (C0 * sh0.double() + basis @ sh1.double() + 0.5).clamp(min=0)
        assert torch.allclose(got[v], expected, atol=1e-12)
    assert not torch.allclose(got[0], got[1])


def _kernel_sum(points, means, scales, quats_xyzw, opacities, dilation):
    """The dilated optical density of the module docstring, from scipy rotations, at points (P, 3)."""
    total = np.zeros(len(points))
    for mu, s, q, o in zip(means, scales, quats_xyzw, opacities):
        s = np.sqrt(np.asarray(s) ** 2 + dilation**2)
        R = Rotation.from_quat(q).as_matrix()
        precision = R @ np.diag(1 / s**2) @ R.T
        d = points - mu
        m = np.einsum("pi,ij,pj->p", d, precision, d)
        total += np.where(m <= 3.33**2, -np.log(1 - o) / (math.sqrt(2 * math.pi) * s.min()) * np.exp(-0.5 * m), 0.0)
    return total


def test_density_grid_is_the_dilated_kernel_sum_and_a_face_on_ray_sees_the_opacity():
    q_xyzw = np.array([[0.3, -0.5, 0.2, 0.8], [0.0, 0.0, 0.0, 1.0]])
    q_xyzw /= np.linalg.norm(q_xyzw, axis=-1, keepdims=True)
    means, scales, opacities = np.array([[0.1, -0.2, 0.15], [-0.4, 0.3, -0.3]]), np.array([[0.04, 0.15, 0.1], [0.1] * 3]), np.array([0.8, 0.5])
    scene = scene_of(means, scales, opacities, [[1, 0, 0], [0, 0, 1]], quats=np.roll(q_xyzw, 1, axis=-1))
    R, h = 64, 2.0 / 64
    idx = torch.randint(0, R + 1, (3000, 3), generator=torch.Generator().manual_seed(0))
    vertices = idx.double() * h - 1.0
    expected = _kernel_sum(vertices.numpy(), means, scales, q_xyzw, opacities, dilation=h / 2)
    assert np.allclose(scene.density(vertices).numpy(), expected, rtol=1e-9, atol=1e-9)
    assert (expected > 0).sum() > 50
    # The ray along the first Gaussian's shortest axis through its mean: opacity 1 - exp(-tau) = o.
    axis = torch.from_numpy(Rotation.from_quat(q_xyzw[0]).as_matrix()[:, 0])
    t = torch.linspace(-0.5, 0.5, 4001, dtype=torch.float64)
    sigma = scene.density(torch.from_numpy(means[0]) + t[:, None] * axis)
    tau = float(torch.trapezoid(sigma, t))
    assert 1 - math.exp(-tau) == pytest.approx(0.8, abs=0.01)
    # Albedo: the density-weighted colour at grid vertices, grey where no Gaussian reaches.
    blue_weight = _kernel_sum(vertices.numpy(), means[1:], scales[1:], q_xyzw[1:], opacities[1:], h / 2)
    albedo = scene.albedo(vertices).numpy()
    seen = expected > 0.02  # where the grey floor (1e-6 of weight) is below 1e-4 of the colour
    assert np.allclose(albedo[seen, 2], blue_weight[seen] / expected[seen], atol=1e-4)
    assert np.allclose(albedo[seen, 1], 0.0, atol=1e-4)
    assert np.allclose(albedo[expected == 0], 0.5)


def test_the_grid_follows_the_parameters():
    scene = scene_of([[0.0, 0.0, 0.0]], [[0.1] * 3], 0.5, [[1, 1, 1]])
    x = torch.zeros(1, 3, dtype=torch.float64)
    before = float(scene.density(x))
    with torch.no_grad():
        scene.params["means"] += 0.2  # in place, as an optimiser step
    assert float(scene.density(x)) < 0.5 * before
    scene.load_state_dict(scene_of([[0.0, 0.0, 0.0]] * 2, [[0.1] * 3] * 2, 0.5, [[1, 1, 1]] * 2).state_dict())
    assert float(scene.density(x)) == pytest.approx(2 * before, rel=1e-9)  # resized: two of them now


def test_load_state_dict_resizes_the_parameters_in_place():
    small, large = (GaussianScene(GaussiansConfig(n_init=n), BackgroundConfig(), RenderConfig()) for n in (10, 25))
    optimizer = torch.optim.Adam(small.param_groups(type("T", (), {"lr_background": 1e-3})()))
    before = {k: id(p) for k, p in small.params.items()}
    small.load_state_dict(large.state_dict())
    assert {k: id(p) for k, p in small.params.items()} == before  # the optimiser's references still hold
    assert [g["params"][0] for g in optimizer.param_groups] == list(small.params.values())
    assert all(torch.equal(small.params[k], large.params[k]) for k in large.params)


def test_splats_in_the_file_frame_keep_covariances_and_sh_colours(tmp_path):
    rng = np.random.default_rng(0)
    q = rng.normal(size=(5, 4))
    scene = scene_of(rng.uniform(-0.5, 0.5, (5, 3)), rng.uniform(0.02, 0.2, (5, 3)), rng.uniform(0.1, 0.9, 5),
                     rng.uniform(0, 1, (5, 3)), quats=q, sh_rest=rng.normal(size=(5, 3, 3)) * 0.3)
    T = world_to_file("y")
    splats = scene.splats()
    moved = read_splat_ply(write_splat_ply(tmp_path / "s.ply", transform_splats(splats, T)))
    R = T[:3, :3]

    def covariance(s, quats_wxyz):
        rot = Rotation.from_quat(np.asarray(quats_wxyz)[:, [1, 2, 3, 0]]).as_matrix()
        return rot @ (np.asarray(s)[:, :, None] ** 2 * np.eye(3)) @ rot.transpose(0, 2, 1)

    assert np.allclose(moved.means, splats.means @ R.T, atol=1e-6)
    assert np.allclose(covariance(moved.scales, moved.quats), R @ covariance(splats.scales, splats.quats) @ R.T, atol=1e-6)
    d = rng.normal(size=(7, 3))
    d /= np.linalg.norm(d, axis=-1, keepdims=True)
    for i in range(5):  # the degree-1 colour (real SH by hand) seen along R d equals the original seen along d
        def sh1(v, coeffs):
            return np.stack([-C1 * v[:, 1], C1 * v[:, 2], -C1 * v[:, 0]], -1) @ coeffs
        assert np.allclose(sh1(d @ R.T, moved.sh_rest[i]), sh1(d, splats.sh_rest[i]), atol=1e-5)


def test_mesh_export_of_a_ball_of_gaussians():
    from sds3d.scene.gaussians_init import initial_gaussians, random_ball

    init = initial_gaussians(random_ball(3000, radius=0.45, generator=torch.Generator().manual_seed(0)).double())
    red = torch.tensor([[0.9, 0.1, 0.1]]).repeat(3000, 1)
    scene = scene_of(init.means, init.scales, torch.full((3000,), 0.6), red)
    mesh = extract_mesh(scene, ExportConfig(resolution=48, surface_opacity=0.1, texture="vertex"))
    r = np.linalg.norm(mesh.vertices, axis=-1)
    assert 0.42 < np.median(r) < 0.55 and r.std() < 0.03  # a sphere at the ball's edge
    rgb = mesh.visual.vertex_colors[:, :3] / 255.0
    assert np.allclose(rgb.mean(0), [0.9, 0.1, 0.1], atol=0.02)
