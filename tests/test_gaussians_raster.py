"""The Gaussian rasteriser (render.splat, render._splat_torch) against hand computations.

Every expected image is computed in the test from the formulas (EWA covariance J W Sigma W^T J^T
+ 0.3 I, alpha = o exp(-1/2 d^T Sigma^-1 d), front-to-back compositing), with rotations from
scipy and cameras from sds3d's own ``get_rays``, not from the code under test.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from sds3d.cameras import Cameras, get_rays, look_at, make_cameras, spherical_to_position
from sds3d.errors import UserError
from sds3d.render import _splat_torch
from sds3d.render.splat import SplatBackendError, cameras_to_gsplat, rasterize_gaussians

CUDA = torch.cuda.is_available()
EPS2D = 0.3


def focal(res: int, fov_deg: float) -> float:
    return 0.5 * res / math.tan(math.radians(0.5 * fov_deg))


def one(means, scales, opacity, color, quats=None, dtype=torch.float64):
    """Tensors of N Gaussians (identity rotation unless given)."""
    means = torch.as_tensor(means, dtype=dtype).reshape(-1, 3)
    N = means.shape[0]
    quats = torch.tensor([[1.0, 0.0, 0.0, 0.0]], dtype=dtype).expand(N, 4) if quats is None else torch.as_tensor(quats, dtype=dtype)
    return (means, quats, torch.as_tensor(scales, dtype=dtype).reshape(N, 3), torch.as_tensor(opacity, dtype=dtype).reshape(N),
            torch.as_tensor(color, dtype=dtype).reshape(N, -1))


def views(az, el, distance=2.5, fov=40.0, res=33, dtype=torch.float64):
    """Cameras built in ``dtype`` (float32 poses are orthonormal only to ~1e-7) and their gsplat matrices."""
    az, el = torch.as_tensor(az, dtype=dtype), torch.as_tensor(el, dtype=dtype)
    dist, fovs = torch.full_like(az, distance), torch.full_like(az, fov)
    cams = Cameras(look_at(spherical_to_position(az, el, dist)), fovs, az, el, dist)
    viewmats, Ks = cameras_to_gsplat(cams, res)
    return cams, viewmats, Ks


def test_head_on_isotropic_peak_and_footprint():
    d, fov, res, s, o = 2.5, 40.0, 33, 0.12, 0.8
    c = [0.2, 0.5, 0.9]
    _, viewmats, Ks = views([0.0], [0.0], d, fov, res)  # camera on +x looking at the origin
    # The axis along the view (world x) is the shortest: it sets the normal, not the footprint.
    out = rasterize_gaussians(*one([0, 0, 0], [s / 2, s, s], o, c), viewmats, Ks, res, res)
    sigma2 = (focal(res, fov) * s / d) ** 2 + EPS2D  # pixels^2: (f s / z)^2 plus the dilation
    centre = res // 2  # odd side: the principal point is this pixel's centre
    rgb, alpha = out["rgb"][0], out["alpha"][0, 0]
    assert torch.allclose(rgb[:, centre, centre], o * torch.tensor(c, dtype=torch.float64), atol=1e-12)
    k = torch.arange(res, dtype=torch.float64) - centre
    r2 = k[:, None] ** 2 + k[None, :] ** 2
    expected_alpha = o * torch.exp(-0.5 * r2 / sigma2)
    expected_alpha = torch.where(expected_alpha >= 1 / 255, expected_alpha, torch.zeros_like(expected_alpha))
    assert torch.allclose(alpha, expected_alpha, atol=1e-12)
    # The half-value radius read off the image (log-ratio of the row profile) is sigma sqrt(2 ln 2).
    row = alpha[centre, centre : centre + 4]
    measured_sigma2 = -(k[centre + 1 : centre + 4] ** 2) / (2 * torch.log(row[1:] / row[0]))
    r_half = torch.sqrt(measured_sigma2 * 2 * math.log(2))
    assert torch.allclose(r_half, torch.full_like(r_half, math.sqrt(sigma2 * 2 * math.log(2))), atol=1e-9)
    assert math.sqrt(sigma2 * 2 * math.log(2)) > 1.5  # a footprint of several pixels, not a dot
    assert out["depth"][0, 0, centre, centre] / alpha[centre, centre] == pytest.approx(d, abs=1e-12)
    assert torch.allclose(out["normal"][0, :, centre, centre], alpha[centre, centre] * torch.tensor([1.0, 0, 0], dtype=torch.float64))


def test_anisotropic_image_covariance_is_ewa():
    res, fov = 32, 40.0
    cams, viewmats, Ks = views([30.0], [15.0], 2.5, fov, res)
    q_xyzw = np.array([0.3, -0.5, 0.2, 0.8]) / np.linalg.norm([0.3, -0.5, 0.2, 0.8])
    mu, scales, o, c = np.array([0.1, -0.15, 0.2]), np.array([0.05, 0.12, 0.02]), 0.7, np.array([0.9, 0.4, 0.1])
    quat_wxyz = np.roll(q_xyzw, 1)
    out = rasterize_gaussians(*one(mu, scales, o, c, quats=quat_wxyz[None]), viewmats, Ks, res, res)
    # Independently: Sigma from scipy's rotation, W the OpenCV world-to-camera rotation, J at the mean.
    R = Rotation.from_quat(q_xyzw).as_matrix()
    Sigma = R @ np.diag(scales**2) @ R.T
    c2w = cams.c2w[0].double().numpy()
    W = np.diag([1.0, -1.0, -1.0]) @ c2w[:3, :3].T
    x, y, z = W @ (mu - c2w[:3, 3])
    f = focal(res, fov)
    J = np.array([[f / z, 0, -f * x / z**2], [0, f / z, -f * y / z**2]])
    Sigma2d = J @ W @ Sigma @ W.T @ J.T + EPS2D * np.eye(2)
    mean2d = np.array([f * x / z + res / 2, f * y / z + res / 2])
    assert np.allclose(out["info"]["means2d"][0, 0].numpy(), mean2d)
    conic = out["info"]["conics"][0, 0].numpy()
    assert np.allclose(np.linalg.inv([[conic[0], conic[1]], [conic[1], conic[2]]]), Sigma2d)
    u, v = np.meshgrid(np.arange(res) + 0.5, np.arange(res) + 0.5)
    dlt = np.stack([u - mean2d[0], v - mean2d[1]], -1)
    alpha = o * np.exp(-0.5 * np.einsum("hwi,ij,hwj->hw", dlt, np.linalg.inv(Sigma2d), dlt))
    alpha = np.where(alpha >= 1 / 255, alpha, 0.0)
    assert np.allclose(out["alpha"][0, 0].numpy(), alpha, atol=1e-12)
    assert np.allclose(out["rgb"][0].numpy(), c[:, None, None] * alpha, atol=1e-12)
    assert (alpha > 0).sum() > 20  # the footprint covers many pixels


def test_world_point_lands_on_the_pixel_get_rays_predicts():
    res, fov = 40, 45.0
    cams, viewmats, Ks = views([200.0], [35.0], 3.0, fov, res)
    origins, dirs = get_rays(cams, res)
    i, j, t = 7, 29, 2.2
    p = origins[0, i, j] + t * dirs[0, i, j]
    out = rasterize_gaussians(*one(p, [0.01] * 3, 0.9, [1.0, 1.0, 1.0]), viewmats, Ks, res, res)
    assert torch.allclose(out["info"]["means2d"][0, 0], torch.tensor([j + 0.5, i + 0.5], dtype=torch.float64), atol=1e-9)
    alpha = out["alpha"][0, 0]
    assert divmod(int(alpha.argmax()), res) == (i, j)
    # Depth is the distance along the pixel's unit ray, like the NeRF renderer's sum w_i t_i.
    assert float(out["depth"][0, 0, i, j] / alpha[i, j]) == pytest.approx(t, abs=1e-9)


def test_two_gaussians_on_a_ray_composite_front_to_back_in_any_input_order():
    res = 33
    _, viewmats, Ks = views([0.0], [0.0], 2.5, 40.0, res)
    near, far = ([0.5, 0, 0], [0.1, 0.2, 0.2], 0.6, [1.0, 0, 0]), ([-0.1, 0, 0], [0.1, 0.2, 0.2], 0.7, [0, 0, 1.0])
    pair = [one(*g) for g in (near, far)]
    ordered = [torch.cat(x) for x in zip(*pair)]
    swapped = [torch.cat(x) for x in zip(*pair[::-1])]
    a = rasterize_gaussians(*ordered, viewmats, Ks, res, res)
    b = rasterize_gaussians(*swapped, viewmats, Ks, res, res)
    for key in ("rgb", "alpha", "depth", "normal"):
        assert torch.equal(a[key], b[key])
    m = res // 2
    a1, a2 = 0.6, 0.7  # on the centre ray both kernels are exp(0) = 1
    expected = a1 * torch.tensor([1.0, 0, 0]) + (1 - a1) * a2 * torch.tensor([0, 0, 1.0])
    assert torch.allclose(a["rgb"][0, :, m, m], expected.double(), atol=1e-12)
    assert float(a["alpha"][0, 0, m, m]) == pytest.approx(1 - (1 - a1) * (1 - a2), abs=1e-12)
    assert float(a["depth"][0, 0, m, m]) == pytest.approx(a1 * 2.0 + (1 - a1) * a2 * 2.6, abs=1e-12)


def test_background_blend():
    res = 16
    _, viewmats, Ks = views([0.0, 140.0], [10.0, -5.0], 2.5, 40.0, res)
    g = torch.Generator().manual_seed(1)
    N = 12
    gs = one((torch.rand(N, 3, generator=g) - 0.5) * 0.8, torch.rand(N, 3, generator=g) * 0.1 + 0.03,
             torch.rand(N, generator=g) * 0.9, torch.rand(N, 3, generator=g), quats=torch.randn(N, 4, generator=g))
    bg = torch.tensor([[0.2, 0.7, 1.0], [1.0, 1.0, 0.0]], dtype=torch.float64)
    plain = rasterize_gaussians(*gs, viewmats, Ks, res, res)
    over = rasterize_gaussians(*gs, viewmats, Ks, res, res, backgrounds=bg)
    assert torch.allclose(over["rgb"], plain["rgb"] + (1 - plain["alpha"]) * bg[:, :, None, None], atol=1e-12)
    assert 0.05 < float(plain["alpha"].mean()) < 0.95  # partly covered, so the blend is exercised
    for key in ("alpha", "depth", "normal"):
        assert torch.equal(over[key], plain[key])


def _tiny_case():
    """3 Gaussians large enough that every pixel of an 8x8 view stays above 1/255 and below the clamp."""
    g = torch.Generator().manual_seed(3)
    means = torch.tensor([[0.1, 0.05, -0.05], [-0.1, -0.05, 0.05], [0.15, 0.05, 0.0]], dtype=torch.float64)
    quats = torch.randn(3, 4, generator=g, dtype=torch.float64)
    scales = torch.tensor([[0.65, 0.55, 0.45], [0.5, 0.7, 0.6], [0.6, 0.5, 0.7]], dtype=torch.float64)
    opacities = torch.tensor([0.5, 0.6, 0.4], dtype=torch.float64)
    colors = torch.rand(3, 3, generator=g, dtype=torch.float64)
    _, viewmats, Ks = views([0.0, 60.0], [5.0, 25.0], 2.5, 40.0, 8)
    return (means, quats, scales, opacities, colors), viewmats, Ks


# One chunk; one Gaussian per chunk, kept for the backward pass; the same, recomputed (checkpointed).
@pytest.mark.parametrize("chunk_elements, checkpoint_elements", [(_splat_torch.CHUNK_ELEMENTS, None), (1, None), (1, 0)])
def test_gradients_by_gradcheck(monkeypatch, chunk_elements, checkpoint_elements):
    monkeypatch.setattr(_splat_torch, "CHUNK_ELEMENTS", chunk_elements)
    if checkpoint_elements is not None:
        monkeypatch.setattr(_splat_torch, "CHECKPOINT_ELEMENTS", checkpoint_elements)
    inputs, viewmats, Ks = _tiny_case()
    bg = torch.tensor([[0.3, 0.3, 0.3], [1.0, 0.5, 0.0]], dtype=torch.float64)
    inputs = [x.clone().requires_grad_() for x in inputs]

    def f(*xs):
        out = rasterize_gaussians(*xs, viewmats, Ks, 8, 8, backgrounds=bg)
        return torch.cat([out[k].reshape(-1) for k in ("rgb", "alpha", "depth", "normal")])

    with torch.no_grad():  # every pixel sees every Gaussian well above 1/255 and below the clamp (a smooth case)
        for i in range(3):
            alpha = rasterize_gaussians(*(x[i : i + 1] for x in inputs), viewmats, Ks, 8, 8)["alpha"]
            assert float(alpha.min()) > 3 * _splat_torch.ALPHA_MIN and float(alpha.max()) < _splat_torch.ALPHA_MAX
    # The chunked cases (kept or recomputed for the backward pass) by the randomly projected check, for time.
    assert torch.autograd.gradcheck(f, inputs, eps=1e-6, atol=1e-6, rtol=1e-5, fast_mode=chunk_elements == 1)


def test_chunk_schedule_leaves_out_ended_lists_and_bounds_memory(monkeypatch):
    cs = _splat_torch.chunk_schedule
    # Lists of 100, 40, 40, 3 Gaussians: a chunk ends where the shortest list still running ends.
    assert cs([100, 40, 40, 3], pixels=64, min_chunk=1) == [(0, 3, 4), (3, 37, 3), (40, 60, 1)]
    # At least min_chunk positions: the 3-long list is padded to 10, the 40-long ones end inside the second chunk.
    assert cs([100, 40, 40, 3], pixels=64, min_chunk=10) == [(0, 10, 4), (10, 30, 3), (40, 60, 1)]
    assert cs([100, 40, 40, 3], pixels=64, min_chunk=50) == [(0, 50, 4), (50, 50, 1)]
    assert cs([5], pixels=64, min_chunk=50) == [(0, 5, 1)]  # never past the longest list
    # Memory: at most CHUNK_ELEMENTS (images x pixels x positions) per chunk.
    monkeypatch.setattr(_splat_torch, "CHUNK_ELEMENTS", 64 * 3 * 10)
    assert cs([100, 40, 40], pixels=64, min_chunk=1) == [(0, 10, 3), (10, 10, 3), (20, 10, 3), (30, 10, 3), (40, 30, 1), (70, 30, 1)]
    assert cs([7, 7], pixels=64, gaussian_chunk=3) == [(0, 3, 2), (3, 3, 2), (6, 3, 2)]  # a fixed size: as given
    assert cs([], pixels=64) == [] and cs([0, 0], pixels=64) == []


@pytest.mark.parametrize("tile_size, chunk_elements", [(8, None), (5, None), (16, None), (8, 3000), (5, 700)])
def test_tiles_match_the_dense_composite_forward_and_gradients(monkeypatch, tile_size, chunk_elements):
    """Per tile, only the Gaussians whose box touches it: the same image and gradients as every
    Gaussian at every pixel (odd image sides: partial tiles; sizes from sub-pixel to a quarter image;
    small chunks: lists of very different lengths end in different chunks)."""
    if chunk_elements is not None:
        monkeypatch.setattr(_splat_torch, "CHUNK_ELEMENTS", chunk_elements)
    g = torch.Generator().manual_seed(3)
    N = 300
    means = ((torch.rand(N, 3, generator=g) - 0.5) * 1.2).double().requires_grad_()
    scales = (torch.rand(N, 3, generator=g) ** 3 * 0.25 + 0.003).double().requires_grad_()
    quats = torch.randn(N, 4, generator=g).double().requires_grad_()
    opacities = (torch.rand(N, generator=g) * 0.95).double().requires_grad_()
    colors = torch.rand(2, N, 4, generator=g).double().requires_grad_()  # per view, as shaded renders are
    _, viewmats, Ks = views([20.0, 230.0], [15.0, -30.0], 2.5, 40.0, 29)
    Ks[:, 0, 2] = 37 / 2  # a 37 x 29 image
    bg = torch.rand(2, 4, generator=g).double()
    inputs = (means, quats, scales, opacities, colors)
    results = []
    for ts in (0, tile_size):
        out, alpha, _ = _splat_torch.rasterization(*inputs, viewmats, Ks, 37, 29, backgrounds=bg, render_mode="RGB+D",
                                                   tile_size=ts)
        ramp = torch.linspace(0.0, 1.0, 37, dtype=torch.float64)
        loss = (out * ramp[:, None]).sum() + (alpha**2).sum()
        results.append((out, alpha, torch.autograd.grad(loss, inputs)))
    (dense, dense_alpha, dense_grads), (tiled, tiled_alpha, tiled_grads) = results
    assert 0.2 < float(dense_alpha.detach().mean()) < 0.9
    assert torch.allclose(tiled, dense, atol=1e-12) and torch.allclose(tiled_alpha, dense_alpha, atol=1e-12)
    for a, b in zip(tiled_grads, dense_grads):
        assert torch.allclose(a, b, atol=1e-10)
    assert float(dense_grads[0].abs().sum()) > 0


def test_tile_lists_hold_exactly_the_gaussians_whose_box_touches_the_tile():
    radii = torch.tensor([[[3, 2], [0, 0], [9, 1]]], dtype=torch.int32)
    means2d = torch.tensor([[[4.0, 4.0], [10.0, 10.0], [12.5, 3.0]]], dtype=torch.float64)
    visible = (radii > 0).all(-1)
    order = torch.tensor([[2, 0]])  # Gaussian 2 in front
    images, cameras, index, u, v = _splat_torch._tile_lists(radii, means2d, visible, order, 20, 12, 8)
    # Tiles of a 20 x 12 image: 3 x 2. Gaussian 0 spans x 1..7, y 2..6: tile 0; Gaussian 2 spans x 3.5..21.5
    # (clipped), y 2..4: tiles 0, 1, 2.
    assert images.tolist() == [0, 1, 2] and cameras.tolist() == [0, 0, 0]
    assert index.tolist() == [[2, 0], [2, 3], [2, 3]]  # depth order, padded with N = 3
    assert u[1].tolist() == [8.5 + k for k in range(8)] and v[2].tolist() == [0.5 + k for k in range(8)]


@pytest.mark.parametrize("tile_size", [0, 8, None])
def test_nothing_visible_renders_the_background(tile_size):
    _, viewmats, Ks = views([0.0], [0.0], 2.5, 40.0, 16)
    behind = one([4.0, 0.0, 0.0], [0.1] * 3, 0.9, [1.0, 0.0, 0.0])  # behind the camera on +x
    out, alpha, meta = _splat_torch.rasterization(*behind, viewmats, Ks, 16, 16, tile_size=tile_size,
                                                  backgrounds=torch.tensor([[0.2, 0.4, 0.6]], dtype=torch.float64))
    assert int(meta["radii"].sum()) == 0 and torch.equal(alpha, torch.zeros_like(alpha))
    assert torch.equal(out, torch.tensor([0.2, 0.4, 0.6], dtype=torch.float64).expand_as(out))


def _stack_on_centre_ray(n: int, opacity: float = 0.95):
    """n identical footprints on the centre ray at increasing depth, colours one-hot by index mod 3."""
    xs = 0.6 - 0.2 * torch.arange(n, dtype=torch.float64)
    means = torch.stack([xs, torch.zeros(n, dtype=torch.float64), torch.zeros(n, dtype=torch.float64)], -1)
    colors = torch.eye(3, dtype=torch.float64)[torch.arange(n) % 3] * (1.0 - 0.1 * (torch.arange(n) // 3))[:, None].double()
    return one(means, [[0.05, 0.1, 0.1]] * n, [opacity] * n, colors)


def _sequential(alphas, colors, stop=True):
    """The per-pixel loop of the 3DGS rasteriser, written out: stop before T would reach 1e-4."""
    T, c = 1.0, torch.zeros(3, dtype=torch.float64)
    for a, col in zip(alphas, colors):
        if stop and T * (1 - a) <= 1e-4:
            break
        c, T = c + a * T * col, T * (1 - a)
    return c, 1 - T


@pytest.mark.parametrize("chunk", [None, 1, 2])
def test_early_termination(chunk):
    res = 9
    m = res // 2
    _, viewmats, Ks = views([0.0], [0.0], 2.5, 40.0, res)
    for n, cut in ((3, False), (5, True)):  # 0.05^3 = 1.25e-4 stays above 1e-4; a fourth would go below
        means, quats, scales, opacities, colors = _stack_on_centre_ray(n)
        feats = torch.cat([colors, torch.zeros(n, 3, dtype=torch.float64)], -1)
        out, alpha, _ = _splat_torch.rasterization(means, quats, scales, opacities, feats, viewmats, Ks, res, res,
                                                   render_mode="RGB+D", gaussian_chunk=chunk)
        got, got_alpha = out[0, m, m, :3], float(alpha[0, m, m, 0])
        want, want_alpha = _sequential([0.95] * n, colors)
        full, full_alpha = _sequential([0.95] * n, colors, stop=False)
        assert torch.allclose(got, want, atol=1e-12) and got_alpha == pytest.approx(want_alpha, abs=1e-12)
        if cut:
            assert want_alpha == pytest.approx(1 - 0.05**3, abs=1e-12)
            assert not torch.allclose(got, full, atol=1e-6)  # the 4th and 5th are left out
        else:
            assert torch.allclose(got, full, atol=1e-12) and got_alpha == pytest.approx(full_alpha, abs=1e-12)


def test_projection_matches_gsplat_reference_implementation():
    from gsplat.cuda._torch_impl import _fully_fused_projection

    g = torch.Generator().manual_seed(5)
    N, res = 40, 24
    means = (torch.rand(N, 3, generator=g, dtype=torch.float64) - 0.5) * 3.0
    quats, scales = torch.randn(N, 4, generator=g, dtype=torch.float64), torch.rand(N, 3, generator=g, dtype=torch.float64) * 0.1 + 0.01
    _, viewmats, Ks = views([10.0, 250.0], [0.0, 40.0], 2.0, 50.0, res)
    covars = _splat_torch.covariance_3d(quats, scales)
    radii, means2d, depths, conics = _splat_torch.project(means, covars, viewmats, Ks, res, res, EPS2D, 0.01, 1e10, 0.0,
                                                          torch.ones(N, dtype=torch.float64))
    ref_radii, ref_means2d, ref_depths, ref_conics, _ = _fully_fused_projection(means, covars, viewmats, Ks, res, res, eps2d=EPS2D)
    seen = (radii > 0).all(-1)
    assert seen.sum() > 20 and (~seen).sum() > 0  # some project off the image (the Jacobian clamp is exercised)
    assert torch.equal(seen, (ref_radii > 0).all(-1))
    assert torch.allclose(means2d[seen], ref_means2d[seen]) and torch.allclose(depths, ref_depths)
    assert torch.allclose(conics[seen], ref_conics[seen])  # opacity 1: gsplat's extent is its 3.33 sigma


def test_flat_gaussian_normal_is_its_short_axis_towards_each_camera():
    res = 17
    m = res // 2
    cams, viewmats, Ks = views([20.0, 200.0], [10.0, -10.0], 2.5, 40.0, res)
    q_xyzw = np.array([0.2, 0.4, -0.1, 0.9]) / np.linalg.norm([0.2, 0.4, -0.1, 0.9])
    out = rasterize_gaussians(*one([0, 0, 0], [0.3, 0.25, 0.01], 0.9, [1, 1, 1], quats=np.roll(q_xyzw, 1)[None]),
                              viewmats, Ks, res, res)
    axis = torch.from_numpy(Rotation.from_quat(q_xyzw).as_matrix()[:, 2])  # the 0.01 axis
    for view in range(2):
        n = out["normal"][view, :, m, m] / out["alpha"][view, 0, m, m]
        sign = 1.0 if float(axis @ cams.position[view].double()) > 0 else -1.0
        assert torch.allclose(n, sign * axis, atol=1e-9)
    assert float(out["normal"][0, :, m, m] @ out["normal"][1, :, m, m]) < 0  # opposite sides see opposite normals


def test_backend_errors_are_user_errors():
    inputs, viewmats, Ks = _tiny_case()
    with pytest.raises(SplatBackendError, match="needs CUDA") as err:  # CPU tensors, on any machine
        rasterize_gaussians(*inputs, viewmats, Ks, 8, 8, backend="gsplat")
    assert isinstance(err.value, UserError) and "\n" not in str(err.value)
    with pytest.raises(SplatBackendError, match="unknown"):
        rasterize_gaussians(*inputs, viewmats, Ks, 8, 8, backend="tiles")


@pytest.mark.cuda
@pytest.mark.skipif(not CUDA, reason="gsplat's kernels need CUDA")
def test_twin_matches_gsplat_forward_and_gradients():
    g = torch.Generator().manual_seed(7)
    N, W, H = 400, 48, 40
    base = [(torch.rand(N, 3, generator=g) - 0.5) * 1.2, torch.randn(N, 4, generator=g),
            torch.rand(N, 3, generator=g) * 0.06 + 0.01, torch.rand(N, generator=g), torch.rand(N, 3, generator=g)]
    cams = make_cameras(torch.tensor([0.0, 120.0]), torch.tensor([15.0, 30.0]), 2.5, 40.0)
    viewmats, Ks = cameras_to_gsplat(cams, H, W)
    viewmats, Ks = viewmats.cuda(), Ks.cuda()
    bg = torch.tensor([[1.0, 1.0, 1.0], [0.0, 0.5, 1.0]], device="cuda")
    results = {}
    for backend in ("gsplat", "torch"):
        xs = [x.cuda().requires_grad_() for x in base]
        out = rasterize_gaussians(*xs, viewmats, Ks, W, H, backgrounds=bg, backend=backend)
        weights = torch.linspace(0.5, 1.5, W, device="cuda")  # an asymmetric loss: gradients in every parameter
        loss = sum((out[k] * weights).sum() for k in ("rgb", "alpha", "depth", "normal"))
        loss.backward()
        results[backend] = ({k: out[k].detach() for k in ("rgb", "alpha", "depth", "normal")}, [x.grad for x in xs],
                            out["info"]["radii"])
    (fa, ga, ra), (fb, gb, rb) = results["gsplat"], results["torch"]
    for k in fa:
        assert torch.allclose(fa[k], fb[k], atol=2e-4), k
    assert torch.equal((ra > 0).all(-1), (rb > 0).all(-1))
    for name, a, b in zip(("means", "quats", "scales", "opacities", "colors"), ga, gb):
        assert torch.allclose(a, b, rtol=1e-3, atol=1e-3 * float(a.abs().max())), name
