"""Renderer: analytic densities give known opacities/colours; compositing in both sample layouts;
regularisers; chunking; configs."""

import math

import pytest
import torch
from torch import nn

from sds3d.cameras import make_cameras, orbit_cameras
from sds3d.fields.background import Background
from sds3d.fields.encoding import HashGridConfig
from sds3d.fields.nerf import FieldConfig, NeRFField
from sds3d.render import (
    NerfaccConfig,
    RenderConfig,
    RenderConfigError,
    StratifiedSampler,
    composite,
    light_directions,
    opacity_entropy_loss,
    opacity_loss,
    orientation_loss,
    render,
    sample_shading,
)
from sds3d.render.rays import intersect_aabb, intersect_sphere
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


def _hand_composite(t_starts, t_ends, sigma, values, rays):
    """NeRF Eq. 3 sample by sample: w_i = T_i alpha_i with T_{i+1} = T_i (1 - alpha_i) (product form).

    rays: per ray, the indices of its samples in order. Returns weights, sum w v, sum w per ray.
    """
    weights = [None] * sigma.shape[0]
    acc, opacity = [], []
    for samples in rays:
        T, a, o = torch.ones((), dtype=sigma.dtype), torch.zeros(values.shape[-1], dtype=sigma.dtype), torch.zeros(1, dtype=sigma.dtype)
        for i in samples:
            alpha = 1 - torch.exp(-sigma[i] * (t_ends[i] - t_starts[i]))
            weights[i] = T * alpha
            a, o, T = a + weights[i] * values[i], o + weights[i], T * (1 - alpha)
        acc.append(a)
        opacity.append(o)
    return torch.stack(weights), torch.stack(acc), torch.stack(opacity)


def _uneven_samples():
    """4 rays x 6 bins of random widths; rays keep 6, 3, 0 and 1 of them (as early stop would)."""
    g = torch.Generator().manual_seed(0)
    R, S = 4, 6
    edges = torch.cumsum(torch.rand(R, S + 1, generator=g, dtype=torch.float64) * 0.4 + 0.05, dim=-1)
    sigma = torch.rand(R, S, generator=g, dtype=torch.float64) * 4
    rgb = torch.rand(R, S, 3, generator=g, dtype=torch.float64)
    counts = torch.tensor([6, 3, 0, 1])
    keep = torch.arange(S)[None] < counts[:, None]
    return edges[:, :-1], edges[:, 1:], sigma, rgb, keep


def _grads(loss_inputs, fn):
    sigma, rgb = (x.clone().requires_grad_(True) for x in loss_inputs)
    weights, acc, opacity = fn(sigma, rgb)
    g = torch.Generator().manual_seed(1)
    c_acc, c_op = torch.randn(acc.shape, generator=g, dtype=acc.dtype), torch.randn(opacity.shape, generator=g, dtype=acc.dtype)
    ((acc * c_acc).sum() + (opacity * c_op).sum()).backward()
    return weights.detach(), acc.detach(), opacity.detach(), sigma.grad, rgb.grad


def test_composite_batched_and_packed_match_a_hand_computation():
    t0, t1, sigma, rgb, keep = _uneven_samples()
    R = keep.shape[0]
    # Batched: the dropped samples become empty intervals (t_end = t_start), which weigh nothing.
    t1_batched = torch.where(keep, t1, t0)

    def batched(sig, val):
        w, acc, o = composite(t0, t1_batched, sig, {"rgb": val, "normal": None})
        assert acc["normal"] is None
        return w, acc["rgb"], o

    ray_indices = torch.arange(R)[:, None].expand_as(keep)[keep]

    def packed(sig, val):
        w, acc, o = composite(t0[keep], t1[keep], sig, {"rgb": val}, ray_indices=ray_indices, n_rays=R)
        return w, acc["rgb"], o

    counts = keep.sum(-1).tolist()
    starts = [sum(counts[:r]) for r in range(R)]
    rays = [list(range(start, start + n)) for start, n in zip(starts, counts)]  # packed sample indices per ray

    def hand(sig, val):
        return _hand_composite(t0[keep], t1[keep], sig, val, rays)

    wb, ab, ob, gsb, gvb = _grads((sigma, rgb), batched)
    wp, ap, op, gsp, gvp = _grads((sigma[keep], rgb[keep]), packed)
    wh, ah, oh, gsh, gvh = _grads((sigma[keep], rgb[keep]), hand)
    for name, b, p, h in (("weights", wb[keep], wp, wh), ("rgb", ab, ap, ah), ("opacity", ob, op, oh),
                          ("d/dsigma", gsb[keep], gsp, gsh), ("d/drgb", gvb[keep], gvp, gvh)):
        torch.testing.assert_close(p, h, msg=f"packed {name}")
        torch.testing.assert_close(b, h, msg=f"batched {name}")
    assert (wb[~keep] == 0).all() and (gsb[~keep] == 0).all() and (gvb[~keep] == 0).all()
    assert ap[2].abs().sum() == 0 and op[2] == 0  # the ray without samples
    assert op.shape == (R, 1) and ap.shape == (R, 3)


def test_packed_twin_gives_the_batched_floats_on_full_rays():
    """Every ray keeps its S samples: the CPU twin's weights are the batched ones, bit for bit."""
    t0, t1, sigma, rgb, _ = _uneven_samples()
    t0, t1, sigma = t0.float(), t1.float(), sigma.float()
    R, S = sigma.shape
    wb, _, _ = composite(t0, t1, sigma, {})
    wp, _, op = composite(t0.reshape(-1), t1.reshape(-1), sigma.reshape(-1), {}, ray_indices=torch.arange(R).repeat_interleave(S), n_rays=R)
    assert torch.equal(wp, wb.reshape(-1))
    empty, _, o = composite(t0[:0, 0], t1[:0, 0], sigma[:0, 0], {}, ray_indices=torch.zeros(0, dtype=torch.long), n_rays=3)
    assert empty.shape == (0,) and torch.equal(o, torch.zeros(3, 1))


def test_orientation_loss_in_both_layouts_matches_a_hand_computation():
    g = torch.Generator().manual_seed(0)
    R, S = 5, 7
    weights = torch.rand(R, S, generator=g, dtype=torch.float64)
    normals = torch.nn.functional.normalize(torch.randn(R, S, 3, generator=g, dtype=torch.float64), dim=-1)
    dirs = torch.nn.functional.normalize(torch.randn(R, 3, generator=g, dtype=torch.float64), dim=-1)
    keep = torch.rand(R, S, generator=g) > 0.4
    keep[4] = False  # a ray without samples still counts in the mean
    ray_indices = torch.arange(R)[:, None].expand(R, S)[keep]

    def hand(n):
        total = 0.0
        for r in range(R):
            for i in range(S):
                if keep[r, i]:
                    total = total + weights[r, i] * torch.clamp(n[r, i] @ dirs[r], min=0.0) ** 2
        return total / R

    n_hand, n_batched, n_packed = (normals.clone().requires_grad_(True) for _ in range(3))
    w_batched = torch.where(keep, weights, 0.0).requires_grad_(True)
    w_packed = weights[keep].clone().requires_grad_(True)
    expected = hand(n_hand)
    batched = orientation_loss(w_batched, n_batched, dirs)
    packed = orientation_loss(w_packed, n_packed[keep], dirs, ray_indices)
    torch.testing.assert_close(batched, expected)
    torch.testing.assert_close(packed, expected)
    (expected + batched + packed).backward()
    torch.testing.assert_close(n_batched.grad, n_hand.grad)
    torch.testing.assert_close(n_packed.grad, n_hand.grad)
    assert w_batched.grad is None and w_packed.grad is None  # sg(w): the weights get no gradient


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
    rays = torch.zeros(2, 3)
    jittered = StratifiedSampler(4).sample(rays, rays, near, far, None, stratified=True, generator=torch.Generator().manual_seed(0))
    s, e, t = jittered.t_starts, jittered.t_ends, jittered.t_samples
    assert jittered.ray_indices is None and jittered.n_rays == 2 and s.shape == (2, 4)
    assert ((t >= s) & (t <= e)).all() and not torch.allclose(t, (s + e) / 2)
    torch.testing.assert_close(s[0], torch.tensor([1.0, 1.5, 2.0, 2.5]))
    torch.testing.assert_close(e[1, -1], torch.tensor(2.5))
    # One uniform draw per sample from the generator, in (ray, sample) order.
    u = torch.rand((2, 4), generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(t, s + u * (e - s))
    mid = StratifiedSampler(4).sample(rays, rays, near, far, None, stratified=False).t_samples
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
    "kw", [dict(backend="optix"), dict(light="sun"), dict(shading_probs={"phong": 1.0}), dict(num_samples=0), dict(ray_bounds="cube"),
           dict(nerfacc=NerfaccConfig(grid_resolution=0)), dict(nerfacc=NerfaccConfig(ema_decay=1.5)),
           dict(nerfacc=NerfaccConfig(early_stop_eps=1.0)), dict(nerfacc=NerfaccConfig(warmup_steps=-1))]
)
def test_invalid_render_config_raises_value_error(kw):
    with pytest.raises(RenderConfigError, match="render\\."):
        render(SphereField(), Background(), front_camera(), cfg(resolution=4, **kw))
    assert issubclass(RenderConfigError, ValueError)
