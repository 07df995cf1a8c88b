"""GridStratifiedSampler (render.backend=grid): nerfacc's occupancy grid and early stop in PyTorch.

Where the grid is full and the thresholds are 0 it renders (images and gradients) like the
stratified sampler; it drops exactly the bins in empty cells and those behind low transmittance
(checked against a direct computation over the stratified bins); its grid is refreshed every N
steps and checkpointed; a run with it resumes bit for bit.
"""

import math

import pytest
import torch

from sds3d.cameras import orbit_cameras
from sds3d.checkpoint import TrainingInterrupted, load_checkpoint
from sds3d.render import GridStratifiedSampler, NerfaccConfig, RenderConfig, StratifiedSampler, build_sampler, render
from sds3d.render.rays import intersect_sphere
from sds3d.render.samplers import occupied, select_render_backend

torch.set_num_threads(1)
IMAGES = ("rgb", "albedo", "opacity", "depth", "normal")


def _small_field():
    from sds3d.fields.background import Background, BackgroundConfig
    from sds3d.fields.encoding import HashGridConfig
    from sds3d.fields.nerf import FieldConfig, NeRFField

    torch.manual_seed(0)
    field = NeRFField(FieldConfig(encoding=HashGridConfig(n_levels=2, log2_hashmap_size=10, base_resolution=4, max_resolution=16,
                                                          backend="torch"), hidden_dim=16, density_bias="blob_magic3d"))
    return field, Background(BackgroundConfig())


def _rays(n_views=2, res=12):
    from sds3d.cameras import get_rays

    o, d = get_rays(orbit_cameras(n_views, elevation_deg=20.0, distance=2.5, fov_y_deg=40.0), res)
    o, d = o.reshape(-1, 3), d.reshape(-1, 3)
    near, far, hit = intersect_sphere(o, d, 1.0)
    return o[hit], d[hit], near[hit], far[hit]


def test_grid_backend_is_selectable_anywhere():
    assert select_render_backend("grid", "cpu") == ("grid", "requested")
    sampler = build_sampler(RenderConfig(backend="grid", num_samples=24, nerfacc=NerfaccConfig(grid_resolution=16)), 1.5, "cpu")
    assert isinstance(sampler, GridStratifiedSampler) and sampler.packed and sampler.bins.num_samples == 24
    assert sampler.estimator.binaries.shape == (1, 16, 16, 16) and sampler.step_size == pytest.approx(3.0 / 24)


@pytest.mark.parametrize("levels", [1, 2])
def test_occupied_looks_points_up_in_the_finest_level_that_holds_them(levels):
    sampler = GridStratifiedSampler(1.0, 8, NerfaccConfig(grid_resolution=4, grid_levels=levels))
    est = sampler.estimator
    g = torch.Generator().manual_seed(0)
    est.binaries.copy_(torch.rand(est.binaries.shape, generator=g) > 0.5)
    x = (torch.rand(500, 3, generator=g) * 2 - 1) * 2 ** (levels - 1) * 0.999
    expected = []
    for p in x.tolist():  # independent: the first level whose box holds p, then the cell by floor division
        for lvl in range(levels):
            half = 2.0**lvl  # level-0 box is [-1, 1]^3, level l is 2^l times larger
            if max(abs(c) for c in p) <= half:
                cell = [min(int(math.floor((c + half) / (2 * half) * 4)), 3) for c in p]
                expected.append(bool(est.binaries[lvl, cell[0], cell[1], cell[2]]))
                break
    assert occupied(est, x).tolist() == expected


def _grid(full: bool, early_stop_eps=0.0, num_samples=24, **kw):
    sampler = GridStratifiedSampler(1.0, num_samples, NerfaccConfig(grid_resolution=16, early_stop_eps=early_stop_eps, **kw))
    if full:
        sampler.estimator.binaries.fill_(True)
    return sampler


def _render_with_grads(field, background, sampler, stratified=True):
    from sds3d.render import orientation_loss

    field.zero_grad(set_to_none=True)
    cams = orbit_cameras(2, elevation_deg=20.0, distance=2.5, fov_y_deg=40.0)
    cfg = RenderConfig(resolution=12, num_samples=24, light="random")
    out = render(field, background, cams, cfg, shading="lambertian", generator=torch.Generator().manual_seed(3), stratified=stratified,
                 need_normals=True, sampler=sampler)
    loss = out["rgb"].sum() + out["depth"].sum() + orientation_loss(out["weights"], out["sample_normals"], out["ray_dirs"], out["ray_indices"])
    loss.backward()
    return out, {name: p.grad.clone() for name, p in field.named_parameters()}


@pytest.mark.parametrize("stratified", [True, False])
def test_a_full_grid_without_early_stop_renders_like_the_stratified_sampler(stratified):
    field, background = _small_field()
    ref, ref_grads = _render_with_grads(field, background, StratifiedSampler(24), stratified)
    out, grads = _render_with_grads(field, background, _grid(full=True), stratified)
    assert out["ray_indices"] is not None and out["weights"].numel() == int((ref["weights"].sum(-1) > 0).sum()) * 24
    for key in IMAGES:
        torch.testing.assert_close(out[key], ref[key], msg=key, rtol=1e-5, atol=1e-6)
    for name in ref_grads:
        torch.testing.assert_close(grads[name], ref_grads[name], msg=name, rtol=1e-4, atol=1e-7)


def test_bins_in_empty_cells_are_dropped_and_only_those():
    field, _ = _small_field()
    sampler = _grid(full=False)
    centres = (torch.stack(torch.meshgrid(*[torch.arange(16)] * 3, indexing="ij"), -1) + 0.5) / 8 - 1
    sampler.estimator.binaries[0] = centres[..., 0] > 0.2  # only the slab x > 0.2 is occupied
    o, d, near, far = _rays()
    kept = sampler.sample(o, d, near, far, field.density, True, torch.Generator().manual_seed(1))
    bins = StratifiedSampler(24).sample(o, d, near, far, field.density, True, torch.Generator().manual_seed(1))
    x = o[:, None] + bins.t_samples[..., None] * d[:, None]
    cell_x = ((x[..., 0] + 1) * 8).floor().clamp(0, 15)
    expected = (cell_x + 0.5) / 8 - 1 > 0.2  # (R, S): the bin's sample lies in an occupied cell
    rays, slots = expected.nonzero(as_tuple=True)
    assert 0 < len(rays) < expected.numel()
    assert torch.equal(kept.ray_indices, rays)
    for name in ("t_starts", "t_ends", "t_samples"):
        assert torch.equal(getattr(kept, name), getattr(bins, name)[rays, slots]), name


def test_early_stop_drops_the_bins_behind_low_transmittance():
    class Slab:  # opaque (sigma 50) for x > 0, empty elsewhere
        def density(self, x):
            return torch.where(x[:, 0] > 0.0, 50.0, 0.0)

    eps = 1e-3
    o, d, near, far = _rays()
    sampler = _grid(full=True, early_stop_eps=eps)
    kept = sampler.sample(o, d, near, far, Slab().density, False)
    bins = StratifiedSampler(24).sample(o, d, near, far, None, False)
    sigma = Slab().density((o[:, None] + bins.t_samples[..., None] * d[:, None]).reshape(-1, 3)).reshape(bins.t_starts.shape)
    tau = (sigma * (bins.t_ends - bins.t_starts)).cumsum(-1)
    transmittance_before = torch.exp(-(tau - sigma * (bins.t_ends - bins.t_starts)))  # T_i = exp(-sum_{j<i} sigma_j delta_j)
    rays, slots = (transmittance_before >= eps).nonzero(as_tuple=True)
    assert len(rays) < bins.t_starts.numel()  # rays through the slab stop early
    assert torch.equal(kept.ray_indices, rays) and torch.equal(kept.t_starts, bins.t_starts[rays, slots])


class Ball:
    """Stub field: sigma 30 inside radius 0.6 (opaque within a few bins), albedo varying with position."""

    bound = 1.0

    def __call__(self, x):
        return self.density(x), (x * 0.5 + 0.5).clamp(0, 1)

    def density(self, x):
        return torch.where(x.norm(dim=-1) < 0.6, 30.0, 0.0)

    def normals(self, x):
        return torch.nn.functional.normalize(x, dim=-1)


def test_early_stop_changes_a_render_by_less_than_the_threshold():
    from sds3d.fields.background import Background, BackgroundConfig

    eps = 1e-3
    cams = orbit_cameras(2, elevation_deg=20.0, distance=2.5, fov_y_deg=40.0)
    cfg = RenderConfig(resolution=12, num_samples=48, light="fixed")
    with torch.no_grad():
        full, stopped = (render(Ball(), Background(BackgroundConfig()), cams, cfg, shading="lambertian", stratified=False,
                                sampler=_grid(full=True, early_stop_eps=e, num_samples=48)) for e in (0.0, eps))
    assert stopped["weights"].numel() < 0.8 * full["weights"].numel()
    for key in ("rgb", "albedo", "opacity"):
        assert (stopped[key] - full[key]).abs().max() <= eps, key


def test_grid_refresh_every_n_steps_and_state_in_the_scene_checkpoint():
    def ball(x):  # sigma = 100 inside radius 0.5
        return torch.where(x.norm(dim=-1) < 0.5, 100.0, 0.0)

    sampler = GridStratifiedSampler(1.0, 32, NerfaccConfig(grid_resolution=8, update_every=4, warmup_steps=100))
    sampler.update(3, ball)
    assert not sampler.estimator.binaries.any()
    sampler.update(4, ball)
    grid = sampler.estimator.binaries[0]
    centres = (torch.stack(torch.meshgrid(*[torch.arange(8)] * 3, indexing="ij"), -1) + 0.5) / 4 - 1
    assert grid[centres.norm(dim=-1) < 0.25].all() and not grid[centres.norm(dim=-1) > 0.8].any()
    other = GridStratifiedSampler(1.0, 32, NerfaccConfig(grid_resolution=8))
    other.load_state_dict(sampler.state_dict())
    assert torch.equal(other.estimator.binaries, grid[None]) and torch.equal(other.estimator.occs, sampler.estimator.occs)


def test_a_run_with_the_grid_sampler_resumes_bit_for_bit(tmp_path, tiny_pixel_prior):
    from pathlib import Path

    from sds3d.config import load_config
    from sds3d.pipeline import run
    from sds3d.runs import prepare_run_dir

    toy = Path(__file__).resolve().parents[1] / "configs" / "toy.yaml"

    def cfg(name):
        return load_config(toy, ["prompt=a red cube", f"prior.name_or_path={tiny_pixel_prior}", f"out_dir={tmp_path}", f"name={name}",
                                 "trainer.max_steps=6", "trainer.val_every=0", "trainer.ckpt_every=2", "trainer.progress=false",
                                 "render.num_samples=16", "render.resolution=16", "trainer.threads=1", "render.backend=grid",
                                 "render.nerfacc.grid_resolution=16", "render.nerfacc.update_every=2", "render.nerfacc.warmup_steps=3"])

    straight = cfg("straight")
    run(straight, prepare_run_dir(straight), finish_run=False)
    split = cfg("split")
    run_dir = prepare_run_dir(split)
    with pytest.raises(TrainingInterrupted):
        run(split, run_dir, finish_run=False, stop_after=3)
    run(split, run_dir, resume=True, finish_run=False)
    a = load_checkpoint(tmp_path / "straight" / "ckpt" / "last.pt")["scene"]
    b = load_checkpoint(run_dir / "ckpt" / "last.pt")["scene"]
    assert "sampler.estimator.binaries" in a and a["sampler.estimator.binaries"].any()
    for k in a:
        assert torch.equal(a[k], b[k]), k

