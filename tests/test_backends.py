"""Backend selection behind `auto` (rendering: torch | nerfacc; encoding: torch | cuda_ext | tcnn), the
samplers each backend builds, and render() with every one of them. The nerfacc marching kernel is CUDA:
on CPU a test sampler emits the stratified samples in the packed layout, and OccGridSampler runs with
its marching replaced; on a GPU the real packed path is compared with the batched renderer."""

import math

import pytest
import torch

from sds3d.cameras import orbit_cameras
from sds3d.render import (
    NerfaccConfig,
    OccGridSampler,
    RaySamples,
    RenderConfig,
    RenderConfigError,
    Sampler,
    StratifiedSampler,
    build_sampler,
    orientation_loss,
    render,
    select_render_backend,
)
from sds3d.render import samplers as sp

torch.set_num_threads(1)
CUDA = torch.cuda.is_available()


def test_auto_picks_torch_on_cpu_and_explicit_choices():
    assert select_render_backend("auto", "cpu")[0] == "torch"
    assert "cpu" in select_render_backend("auto", "cpu")[1]
    assert select_render_backend("torch", "cpu") == ("torch", "requested")
    with pytest.raises(RenderConfigError, match="needs CUDA"):
        select_render_backend("nerfacc", "cpu")
    with pytest.raises(RenderConfigError, match="unknown"):
        select_render_backend("optix", "cpu")


@pytest.mark.parametrize("available", [True, False])
def test_auto_on_cuda_follows_nerfacc_availability(monkeypatch, available):
    monkeypatch.setattr(sp, "nerfacc_cuda_status", lambda build=False: (available, "because"))
    backend, why = select_render_backend("auto", "cuda")
    assert backend == ("nerfacc" if available else "torch") and "because" in why
    if available:
        assert select_render_backend("nerfacc", "cuda:0")[0] == "nerfacc"
    else:
        with pytest.raises(RenderConfigError, match=r"unavailable \(because\)"):
            select_render_backend("nerfacc", "cuda")


def test_nerfacc_status_reasons(monkeypatch):
    if torch.version.cuda is None:  # this machine: a CPU build of torch
        ok, why = sp.nerfacc_cuda_status()
        assert ok is False and "CPU-only build" in why
    monkeypatch.setattr(torch.version, "cuda", "12.4")
    monkeypatch.setattr(sp.importlib.util, "find_spec", lambda name: None)
    monkeypatch.setattr(sp.shutil, "which", lambda name: None)
    ok, why = sp.nerfacc_cuda_status()
    assert ok is False and "no nvcc" in why
    monkeypatch.setattr(sp.shutil, "which", lambda name: "/usr/local/cuda/bin/nvcc")
    ok, why = sp.nerfacc_cuda_status(build=False)
    assert ok is None and "/usr/local/cuda/bin/nvcc" in why


def test_encoding_auto_never_picks_tcnn_on_cpu(monkeypatch):
    """Coordination with sds3d.fields.encoding: auto on CPU is cuda_ext or torch, even with tinycudann installed."""
    from sds3d import cuda_ext
    from sds3d.fields import encoding

    monkeypatch.setattr(encoding, "_chosen", {})
    monkeypatch.setattr(encoding, "_tcnn_importable", lambda: True)
    monkeypatch.setattr(cuda_ext, "_module", None)
    monkeypatch.setattr(cuda_ext, "_error", "disabled for this test")
    assert encoding.select_backend("auto", "cpu")[0] == "torch"
    monkeypatch.setattr(encoding, "_chosen", {})
    assert encoding.select_backend("auto", "cuda")[0] == "tcnn"


def test_build_sampler_follows_the_backend(monkeypatch):
    cfg = RenderConfig(num_samples=24, nerfacc=NerfaccConfig(grid_resolution=16, samples_per_ray=256))
    sampler = build_sampler(cfg, 1.0, "cpu")
    assert isinstance(sampler, StratifiedSampler) and not sampler.packed and sampler.num_samples == 24
    with pytest.raises(RenderConfigError, match="render.backend=nerfacc .* needs CUDA"):
        build_sampler(RenderConfig(backend="nerfacc"), 1.0, "cpu")
    monkeypatch.setattr(sp, "select_render_backend", lambda requested, device: ("nerfacc", "test"))
    grid = build_sampler(cfg, 1.5, "cpu")
    assert isinstance(grid, OccGridSampler) and grid.packed
    assert grid.render_step_size == pytest.approx(2 * math.sqrt(3) * 1.5 / 256)
    assert grid.estimator.binaries.shape == (1, 16, 16, 16)
    torch.testing.assert_close(grid.estimator.aabbs[0], torch.tensor([-1.5, -1.5, -1.5, 1.5, 1.5, 1.5]))


def test_occ_grid_state_is_checkpointable_on_cpu():
    grid = OccGridSampler(bound=1.0, cfg=NerfaccConfig(grid_resolution=16, samples_per_ray=256))
    state = grid.state_dict()
    assert state["estimator.binaries"].shape == (1, 16, 16, 16) and state["estimator.occs"].numel() == 16**3
    other = OccGridSampler(bound=1.0, cfg=NerfaccConfig(grid_resolution=16))
    state["estimator.binaries"][0, 3, 4, 5] = True
    other.load_state_dict(state)
    assert bool(other.estimator.binaries[0, 3, 4, 5])
    assert StratifiedSampler(8).state_dict() == {}


def test_occ_grid_update_marks_the_dense_cells_every_n_steps():
    """nerfacc's grid update is plain PyTorch: cells where sigma * step size >= occ_threshold are occupied."""
    grid = OccGridSampler(bound=1.0, cfg=NerfaccConfig(grid_resolution=8, update_every=4, warmup_steps=100, samples_per_ray=64))

    def ball(x):  # sigma = 100 inside radius 0.5
        return torch.where(x.norm(dim=-1) < 0.5, 100.0, 0.0)

    grid.update(3, ball)  # not a multiple of update_every: no refresh
    assert not grid.estimator.binaries.any()
    grid.update(4, ball)
    occupied = grid.estimator.binaries[0]
    centres = (torch.stack(torch.meshgrid(*[torch.arange(8)] * 3, indexing="ij"), -1) + 0.5) / 4 - 1
    assert occupied[centres.norm(dim=-1) < 0.25].all() and not occupied[centres.norm(dim=-1) > 0.8].any()


class PackedStratified(Sampler):
    """Today's stratified samples, flattened into the packed layout (ray by ray, in order)."""

    packed = True

    def __init__(self, num_samples):
        super().__init__()
        self.inner = StratifiedSampler(num_samples)

    def sample(self, origins, dirs, near, far, density_fn, stratified, generator=None):
        s = self.inner.sample(origins, dirs, near, far, density_fn, stratified, generator)
        R, S = s.t_starts.shape
        return RaySamples(s.t_starts.reshape(-1), s.t_ends.reshape(-1), torch.arange(R).repeat_interleave(S), n_rays=R,
                          t_samples=s.t_samples.reshape(-1))


def fake_marching(estimator, num_samples, calls):
    """Stands in for OccGridEstimator.sampling on CPU: every cell occupied, no early stop, so the
    marching gives num_samples equal intervals between t_min and t_max, packed (its CUDA output format)."""

    def sampling(rays_o, rays_d, sigma_fn, t_min, t_max, render_step_size, early_stop_eps, alpha_thre, stratified):
        R, S = rays_o.shape[0], num_samples
        delta = ((t_max - t_min) / S)[:, None]
        t_starts = (t_min[:, None] + torch.arange(S)[None] * delta).reshape(-1)
        t_ends = t_starts + delta.repeat_interleave(S, 0).reshape(-1)
        ray_indices = torch.arange(R).repeat_interleave(S)
        with torch.no_grad():  # as in nerfacc
            sigma = sigma_fn(t_starts, t_ends, ray_indices)
        calls.append({"sigma": sigma, "t_starts": t_starts, "t_ends": t_ends,
                      "ray_indices": ray_indices, "rays_o": rays_o, "rays_d": rays_d})
        return ray_indices, t_starts, t_ends

    estimator.sampling = sampling


def _small_field(device):
    from sds3d.fields.background import Background, BackgroundConfig
    from sds3d.fields.encoding import HashGridConfig
    from sds3d.fields.nerf import FieldConfig, NeRFField

    torch.manual_seed(0)
    field = NeRFField(FieldConfig(encoding=HashGridConfig(n_levels=2, log2_hashmap_size=10, base_resolution=4, max_resolution=16, backend="torch"),
                                  hidden_dim=16, density_bias="blob_magic3d"))
    return field.to(device), Background(BackgroundConfig()).to(device)


def _render_with_grads(field, background, cams, cfg, sampler, shading, stratified):
    field.zero_grad(set_to_none=True)
    out = render(field, background, cams, cfg, shading=shading, generator=torch.Generator().manual_seed(3), stratified=stratified,
                 need_normals=True, sampler=sampler)
    loss = out["rgb"].sum() + out["depth"].sum() + orientation_loss(out["weights"], out["sample_normals"], out["ray_dirs"], out["ray_indices"])
    loss.backward()
    return out, {name: p.grad.clone() for name, p in field.named_parameters()}


IMAGES = ("rgb", "albedo", "opacity", "depth", "normal")


@pytest.mark.parametrize("shading", ["albedo", "lambertian"])
def test_packed_samples_render_like_batched_ones(shading):
    """The same stratified samples in the packed layout give the batched images and gradients
    (rays that miss the sphere are skipped in both; normals only at visible samples in both)."""
    field, background = _small_field("cpu")
    cams = orbit_cameras(2, elevation_deg=20.0, distance=2.5, fov_y_deg=40.0)
    cfg = RenderConfig(resolution=12, num_samples=24, light="random")
    ref, ref_grads = _render_with_grads(field, background, cams, cfg, None, shading, stratified=True)
    out, grads = _render_with_grads(field, background, cams, cfg, PackedStratified(24), shading, stratified=True)
    assert ref["ray_indices"] is None and out["ray_indices"].dtype == torch.int64
    hit = ref["weights"].sum(-1) > 0
    assert not hit.all()  # some rays miss the bounds: their packed samples are not there at all
    assert set(out["ray_indices"].tolist()) == set(hit.nonzero().squeeze(-1).tolist())
    for key in IMAGES:
        torch.testing.assert_close(out[key], ref[key], msg=key, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out["weights"], ref["weights"][hit].reshape(-1), rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(out["sample_normals"], ref["sample_normals"][hit].reshape(-1, 3))
    for name in ref_grads:
        torch.testing.assert_close(grads[name], ref_grads[name], msg=name, rtol=1e-4, atol=1e-7)


def test_chunked_packed_render_counts_ray_indices_over_all_rays():
    field, background = _small_field("cpu")
    cams = orbit_cameras(2, elevation_deg=20.0, distance=2.5, fov_y_deg=40.0)
    with torch.no_grad():
        full = render(field, background, cams, RenderConfig(resolution=12, num_samples=16, light="fixed"), shading="lambertian", stratified=False,
                      sampler=PackedStratified(16))
        chunked = render(field, background, cams, RenderConfig(resolution=12, num_samples=16, light="fixed", chunk_size=50), shading="lambertian",
                         stratified=False, sampler=PackedStratified(16))
    for key in IMAGES + ("weights", "ray_indices", "sample_normals"):
        torch.testing.assert_close(chunked[key], full[key], msg=key)


@pytest.mark.parametrize("backend", ["torch", "nerfacc"])
def test_render_accepts_every_sampler_the_backend_picks(monkeypatch, backend):
    """build_sampler for each backend select_render_backend can return, then render() with it, on CPU
    (nerfacc: OccGridSampler with its CUDA marching replaced by the equal bins it gives on a full grid)."""
    field, background = _small_field("cpu")
    cams = orbit_cameras(2, elevation_deg=20.0, distance=2.5, fov_y_deg=40.0)
    cfg = RenderConfig(resolution=12, num_samples=20, light="fixed", backend=backend)
    monkeypatch.setattr(sp, "select_render_backend", lambda requested, device: (requested, "test"))
    sampler = build_sampler(cfg, field.bound, "cpu")
    assert sampler.packed == (backend == "nerfacc")
    calls = []
    if backend == "nerfacc":
        fake_marching(sampler.estimator, cfg.num_samples, calls)
    sampler.update(0, field.density)
    out, grads = _render_with_grads(field, background, cams, cfg, sampler, "lambertian", stratified=False)
    ref, ref_grads = _render_with_grads(field, background, cams, cfg, None, "lambertian", stratified=False)
    for key in IMAGES:
        torch.testing.assert_close(out[key], ref[key], msg=key, rtol=1e-4, atol=1e-5)
    for name in ref_grads:
        torch.testing.assert_close(grads[name], ref_grads[name], msg=name, rtol=1e-3, atol=1e-6)
    if backend == "nerfacc":  # the marching saw the rays inside the sphere and sigma at interval midpoints
        (c,) = calls
        t_mid = (c["t_starts"] + c["t_ends"]) / 2
        x = c["rays_o"][c["ray_indices"]] + c["rays_d"][c["ray_indices"]] * t_mid[:, None]
        assert (x.norm(dim=-1) <= field.bound + 1e-5).all() and c["rays_o"].shape[0] < out["ray_dirs"].shape[0]
        torch.testing.assert_close(c["sigma"], field.density(x))


@pytest.mark.skipif(not CUDA, reason="nerfacc packed ops need a CUDA GPU")
@pytest.mark.parametrize("shading", ["albedo", "lambertian"])
def test_packed_rendering_matches_batched_on_the_same_rays(shading):
    field, background = _small_field("cuda")
    cams = orbit_cameras(2, elevation_deg=20.0, distance=2.0, fov_y_deg=50.0).to("cuda")
    cfg = RenderConfig(resolution=24, num_samples=1024, light="fixed")
    grid = OccGridSampler(field.bound, NerfaccConfig(grid_resolution=32, samples_per_ray=1024, early_stop_eps=0.0)).to("cuda")
    grid.estimator.binaries.fill_(True)  # every cell occupied: the same integral as the batched path
    with torch.no_grad():
        ref = render(field, background, cams, cfg, shading=shading, stratified=False)
        out = render(field, background, cams, cfg, shading=shading, stratified=False, sampler=grid)
    for key in ("rgb", "opacity", "normal"):
        torch.testing.assert_close(out[key], ref[key], atol=2e-2, rtol=0)


@pytest.mark.skipif(not CUDA, reason="nerfacc packed ops need a CUDA GPU")
def test_packed_weights_on_cuda_equal_the_cpu_twin():
    from sds3d.render.volume import _packed_weights_torch, render_weights

    g = torch.Generator().manual_seed(0)
    ray_indices = torch.sort(torch.randint(0, 7, (60,), generator=g)).values
    t_starts = torch.rand(60, generator=g).cumsum(0)
    t_ends = t_starts + torch.rand(60, generator=g) * 0.3
    sigma = torch.rand(60, generator=g) * 3
    cpu = _packed_weights_torch(t_starts, t_ends, sigma, ray_indices, 9)
    cuda = render_weights(t_starts.cuda(), t_ends.cuda(), sigma.cuda(), ray_indices.cuda(), 9)
    torch.testing.assert_close(cuda.cpu(), cpu)


@pytest.mark.skipif(not CUDA, reason="nerfacc packed ops need a CUDA GPU")
def test_occupancy_grid_prunes_empty_space_and_gradients_flow():
    field, background = _small_field("cuda")
    grid = OccGridSampler(field.bound, NerfaccConfig(grid_resolution=32, update_every=1, warmup_steps=10)).to("cuda")
    grid.update(0, field.density)
    occupied = grid.estimator.binaries.float().mean().item()
    assert 0.0 < occupied < 0.9  # the blob (radius ~0.5) is occupied, the corners are not
    cams = orbit_cameras(1, elevation_deg=0.0, distance=2.0, fov_y_deg=50.0).to("cuda")
    out = render(field, background, cams, RenderConfig(resolution=16), shading="lambertian", sampler=grid)
    out["rgb"].mean().backward()
    assert field.encoding.embeddings.grad.abs().sum() > 0
