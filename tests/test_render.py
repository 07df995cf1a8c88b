"""Renderer: analytic densities give known opacities/colours; regularisers; chunking; configs."""

import math

import pytest
import torch
from torch import nn

from sds3d.cameras import make_cameras, orbit_cameras
from sds3d.fields.background import Background
from sds3d.fields.encoding import HashGridConfig
from sds3d.fields.nerf import FieldConfig, NeRFField
from sds3d.render import (
    RenderConfig,
    RenderConfigError,
    light_directions,
    opacity_entropy_loss,
    opacity_loss,
    orientation_loss,
    render,
    sample_shading,
)
from sds3d.render.rays import intersect_aabb, intersect_sphere, stratified_samples
from sds3d.toyworld import render as toy_render

torch.set_num_threads(1)

RED = (0.9, 0.1, 0.1)


class SphereField(nn.Module):
    """Constant density ``sigma`` inside a sphere of ``radius``, constant albedo, radial normals."""

    def __init__(self, radius=0.5, sigma=2.0, albedo=RED, bound=1.0):
        super().__init__()
        self.radius, self.bound = radius, bound
        self.sigma = nn.Parameter(torch.tensor(float(sigma)))
        self.rgb = torch.tensor(albedo)

    def density(self, x):
        return torch.where(x.norm(dim=-1) < self.radius, self.sigma, torch.zeros_like(self.sigma))

    def forward(self, x):
        return self.density(x), self.rgb.expand(x.shape[0], 3)

    def normals(self, x):
        return nn.functional.normalize(x, dim=-1)


def front_camera(n=1):
    return make_cameras(torch.zeros(n), torch.zeros(n), 2.5, 40.0)


def cfg(**kw):
    base = dict(resolution=33, num_samples=40, light="fixed", ambient=0.35, diffuse=0.65)
    base.update(kw)
    return RenderConfig(**base)


def test_constant_density_sphere_opacity_depth_and_colour():
    field = SphereField(sigma=2.0)
    out = render(field, Background(), front_camera(), cfg(), stratified=False)
    c = 16  # odd resolution: the centre pixel's ray passes through the origin
    # Chord 2r = 1 through constant sigma = 2: opacity 1 - exp(-2) (bins align with the sphere here).
    expected = 1 - math.exp(-2.0)
    assert out["opacity"][0, 0, c, c].item() == pytest.approx(expected, abs=1e-4)
    torch.testing.assert_close(out["rgb"][0, :, c, c], torch.tensor(RED) * expected + (1 - expected), atol=1e-4, rtol=0)
    # Expected depth: integral of t sigma e^{-sigma (t - 2)} over [2, 3] (entry at 2.5 - 0.5).
    s = 2.0
    t = torch.linspace(2.0, 3.0, 100001)
    depth = torch.trapezoid(t * s * torch.exp(-s * (t - 2.0)), t).item()
    assert out["depth"][0, 0, c, c].item() == pytest.approx(depth, abs=5e-3)
    for corner in [(0, 0), (0, 32), (32, 0), (32, 32)]:
        assert out["opacity"][0, 0, corner[0], corner[1]].item() < 1e-6
        torch.testing.assert_close(out["rgb"][0, :, corner[0], corner[1]], torch.ones(3))  # white background


def test_output_shapes_and_weights_sum_at_most_one():
    out = render(SphereField(sigma=50.0), Background(), orbit_cameras(2), cfg(resolution=16), shading="lambertian")
    assert out["rgb"].shape == (2, 3, 16, 16) and out["albedo"].shape == (2, 3, 16, 16)
    assert out["opacity"].shape == (2, 1, 16, 16) and out["depth"].shape == (2, 1, 16, 16)
    assert out["normal"].shape == (2, 3, 16, 16)
    assert out["weights"].shape == (512, 40) and out["sample_normals"].shape == (512, 40, 3)
    assert out["ray_dirs"].shape == (512, 3)
    sums = out["weights"].sum(-1)
    assert (sums <= 1 + 1e-6).all() and sums.max() > 0.99
    assert (out["rgb"] >= 0).all() and (out["rgb"] <= 1).all()


def test_albedo_shading_skips_normals_unless_asked():
    out = render(SphereField(), Background(), front_camera(), cfg(resolution=8))
    assert out["sample_normals"] is None and torch.equal(out["normal"], torch.zeros(1, 3, 8, 8))
    out = render(SphereField(), Background(), front_camera(), cfg(resolution=8), need_normals=True)
    assert out["sample_normals"] is not None and out["normal"].abs().sum() > 0


def test_lambertian_surface_matches_the_toy_world_renderer():
    # A near-opaque sphere of radius 0.5 shaded with the toy world's light: same image as the
    # independent sphere-tracing renderer, except for partially covered boundary pixels.
    cams = orbit_cameras(2, elevation_deg=25.0)
    light = torch.tensor([0.5, -0.7, 1.0])
    out = render(SphereField(sigma=400.0), Background(), cams, cfg(resolution=32, num_samples=128, light_direction=tuple(light.tolist())),
                 shading="lambertian", stratified=False)
    ref, mask = toy_render.render("sphere", torch.tensor(RED), cams, resolution=32, supersampling=1)
    inner = (torch.nn.functional.max_pool2d(1 - mask, 3, 1, 1) == 0).expand_as(ref)  # 1-pixel margin
    err = (out["rgb"] - ref).abs()
    assert err[inner].mean() < 0.01 and err[inner].max() < 0.06
    outer = (torch.nn.functional.max_pool2d(mask, 3, 1, 1) == 0).expand_as(ref)
    assert err[outer].max() < 1e-6


def test_textureless_ignores_albedo_and_light_facing_surface_is_brightest():
    cam = front_camera()
    towards_camera = cam.position[0] / cam.position[0].norm()
    out = render(SphereField(sigma=400.0), Background(), cam, cfg(num_samples=128), shading="textureless",
                 light_dir=towards_camera, stratified=False)
    c = 16
    # n . l = 1 at the sphere's front point: white * (0.35 + 0.65) = 1; greys elsewhere.
    torch.testing.assert_close(out["rgb"][0, :, c, c], torch.ones(3), atol=2e-3, rtol=0)
    px = out["rgb"][0, :, c, c + 5]
    assert torch.allclose(px[0], px[1]) and torch.allclose(px[1], px[2]) and px[0] < 0.99


def test_gradients_reach_nerf_parameters():
    torch.manual_seed(0)
    enc = HashGridConfig(n_levels=2, n_features_per_level=2, base_resolution=4, max_resolution=8, log2_hashmap_size=12, backend="torch")
    field = NeRFField(FieldConfig(encoding=enc, hidden_dim=8))
    bg = Background()
    out = render(field, bg, front_camera(), cfg(resolution=8, num_samples=16, light="random"), shading="lambertian",
                 generator=torch.Generator().manual_seed(0))
    (out["rgb"].mean() + orientation_loss(out["weights"], out["sample_normals"], out["ray_dirs"])).backward()
    for name, p in field.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_orientation_loss_penalises_normals_facing_away():
    g = torch.Generator().manual_seed(0)
    dirs = torch.nn.functional.normalize(torch.randn(10, 3, generator=g), dim=-1)
    weights = torch.rand(10, 5, generator=g) / 5
    facing = -dirs[:, None, :].expand(10, 5, 3)
    assert orientation_loss(weights, facing, dirs).item() == 0.0
    away = dirs[:, None, :].expand(10, 5, 3)
    torch.testing.assert_close(orientation_loss(weights, away, dirs), weights.sum(-1).mean())
    # Gradient goes to the normals only, not the weights (stop-gradient).
    w = weights.clone().requires_grad_(True)
    n = away.clone().requires_grad_(True)
    orientation_loss(w, n, dirs).backward()
    assert w.grad is None or w.grad.abs().sum() == 0
    assert n.grad.abs().sum() > 0


def test_opacity_losses():
    o = torch.tensor([0.0, 0.5, 1.0, 0.5])
    assert opacity_loss(o).item() == pytest.approx(0.5)
    assert opacity_entropy_loss(torch.tensor([0.0, 1.0])).item() < 1e-3
    assert opacity_entropy_loss(torch.tensor([0.5])).item() == pytest.approx(math.log(2), rel=1e-5)


def test_chunked_no_grad_render_equals_unchunked():
    torch.manual_seed(0)
    enc = HashGridConfig(n_levels=2, n_features_per_level=2, base_resolution=4, max_resolution=8, log2_hashmap_size=12, backend="torch")
    field = NeRFField(FieldConfig(encoding=enc, hidden_dim=8))
    cams = orbit_cameras(2)
    with torch.no_grad():
        full = render(field, Background(), cams, cfg(resolution=12, chunk_size=10**6), shading="lambertian", stratified=False)
        chunked = render(field, Background(), cams, cfg(resolution=12, chunk_size=50), shading="lambertian", stratified=False)
    for key in ("rgb", "opacity", "depth", "normal", "albedo", "weights", "sample_normals", "ray_dirs"):
        torch.testing.assert_close(chunked[key], full[key], msg=key)


def test_ray_bounds():
    o = torch.tensor([[0.0, 0.0, 3.0], [0.0, 2.0, 3.0], [0.0, 0.0, 0.0]])
    d = torch.tensor([[0.0, 0.0, -1.0], [0.0, 0.0, -1.0], [1.0, 0.0, 0.0]])
    near, far, hit = intersect_sphere(o, d, 1.0)
    assert hit.tolist() == [True, False, True]
    torch.testing.assert_close(near[[0, 2]], torch.tensor([2.0, 0.0]))
    torch.testing.assert_close(far[[0, 2]], torch.tensor([4.0, 1.0]))
    near, far, hit = intersect_aabb(o, d, 1.0)
    assert hit.tolist() == [True, False, True]
    torch.testing.assert_close(near[[0, 2]], torch.tensor([2.0, 0.0]))
    torch.testing.assert_close(far[[0, 2]], torch.tensor([4.0, 1.0]))
    # A diagonal ray through the box corner region: the box chord is longer than the sphere's.
    diag = torch.nn.functional.normalize(torch.tensor([[-1.0, -1.0, -1.0]]), dim=-1)
    _, far_box, _ = intersect_aabb(torch.tensor([[3.0, 3.0, 3.0]]), diag, 1.0)
    assert far_box.item() == pytest.approx(4 * math.sqrt(3))


def test_stratified_samples_stay_in_their_bins():
    near, far = torch.tensor([1.0, 2.0]), torch.tensor([3.0, 2.5])
    s, e, t = stratified_samples(near, far, 4, stratified=True, generator=torch.Generator().manual_seed(0))
    assert ((t >= s) & (t <= e)).all()
    torch.testing.assert_close(s[0], torch.tensor([1.0, 1.5, 2.0, 2.5]))
    torch.testing.assert_close(e[1, -1], torch.tensor(2.5))
    _, _, mid = stratified_samples(near, far, 4, stratified=False)
    torch.testing.assert_close(mid[0], torch.tensor([1.25, 1.75, 2.25, 2.75]))


def test_sample_shading_follows_probabilities():
    g = torch.Generator().manual_seed(0)
    only = RenderConfig(shading_probs={"albedo": 0.0, "lambertian": 1.0, "textureless": 0.0})
    assert {sample_shading(only, g) for _ in range(20)} == {"lambertian"}
    mixed = RenderConfig(shading_probs={"albedo": 0.25, "lambertian": 0.75})
    draws = [sample_shading(mixed, g) for _ in range(2000)]
    assert draws.count("albedo") / 2000 == pytest.approx(0.25, abs=0.04)
    assert "textureless" not in draws


def test_random_light_is_near_the_camera_and_fixed_light_is_normalised():
    cams = orbit_cameras(64, elevation_deg=30.0)
    l = light_directions(RenderConfig(light="random"), cams, torch.Generator().manual_seed(0))
    cam_dir = cams.position / cams.position.norm(dim=-1, keepdim=True)
    assert (l * cam_dir).sum(-1).mean() > 0.7
    torch.testing.assert_close(l.norm(dim=-1), torch.ones(64))
    fixed = light_directions(RenderConfig(light="fixed", light_direction=(0.0, 0.0, 2.0)), cams)
    torch.testing.assert_close(fixed, torch.tensor([0.0, 0.0, 1.0]).expand(64, 3))


@pytest.mark.parametrize(
    "kw", [dict(backend="nerfacc"), dict(light="sun"), dict(shading_probs={"phong": 1.0}), dict(num_samples=0), dict(ray_bounds="cube")]
)
def test_invalid_render_config_raises_value_error(kw):
    with pytest.raises(RenderConfigError, match="render\\."):
        render(SphereField(), Background(), front_camera(), cfg(resolution=4, **kw))
    assert issubclass(RenderConfigError, ValueError)
