"""Ray samplers: rays -> samples along them, batched [rays, samples] or packed (flat, with ray indices).

``StratifiedSampler`` (stateless, any device) puts one sample in each of S equal bins (NeRF Eq. 2).
``OccGridSampler`` marches an occupancy grid with nerfacc's ``OccGridEstimator`` (Instant-NGP):
empty cells are skipped and samples behind an opaque surface dropped, so each ray carries a
different number of samples, stored packed. Its grid is state (refreshed by ``update``,
checkpointed with ``state_dict``); its marching is a CUDA kernel. ``GridStratifiedSampler`` does the
same skipping in PyTorch on any device: the stratified bins, minus those in empty cells of the same
nerfacc grid and those behind low transmittance. ``build_sampler`` picks one from ``render.backend``.
"""

from __future__ import annotations

import importlib.util
import math
import shutil
from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor, nn

from .config import NerfaccConfig, RenderConfig, RenderConfigError

DensityFn = Callable[[Tensor], Tensor]  # points (N, 3) -> sigma (N,)


@dataclass
class RaySamples:
    """Samples along n_rays rays: intervals [t_starts, t_ends] and where the field is evaluated.

    Batched layout (``ray_indices is None``): (n_rays, S) tensors. Packed layout: flat (N,)
    tensors, ``ray_indices`` (N,) int64 the ray of each sample, sorted, samples of a ray in
    order along it. ``t_samples``: the evaluation distance inside each interval (stratified
    jitter; midpoints by default).
    """

    t_starts: Tensor
    t_ends: Tensor
    ray_indices: Tensor | None = None
    n_rays: int | None = None
    t_samples: Tensor | None = None

    def __post_init__(self):
        if self.ray_indices is None:
            self.n_rays = self.t_starts.shape[0]
        elif self.n_rays is None:
            raise ValueError("packed RaySamples need n_rays (rays without samples are not in ray_indices)")
        if self.t_samples is None:
            self.t_samples = (self.t_starts + self.t_ends) * 0.5

    @property
    def packed(self) -> bool:
        return self.ray_indices is not None

    def per_sample(self, ray_values: Tensor) -> Tensor:
        """Per-ray values (n_rays, C) broadcast to the samples: (n_rays, 1, C) batched, (N, C) packed."""
        return ray_values[:, None, :] if self.ray_indices is None else ray_values[self.ray_indices]

    def points(self, origins: Tensor, dirs: Tensor) -> Tensor:
        """Sample positions o + t d, (N_total, 3) in sample order (row-major for the batched layout)."""
        return (self.per_sample(origins) + self.t_samples[..., None] * self.per_sample(dirs)).reshape(-1, 3)


class Sampler(nn.Module):
    """Turns rays into ``RaySamples``. ``packed``: which layout ``sample`` returns."""

    packed: bool = False

    def update(self, step: int, density_fn: DensityFn) -> None:
        """Refresh the sampler's state from the field before the step's render (stateless: nothing)."""

    def sample(self, origins: Tensor, dirs: Tensor, near: Tensor, far: Tensor, density_fn: DensityFn,
               stratified: bool, generator: torch.Generator | None = None) -> RaySamples:
        """Samples on rays (R, 3) (unit dirs) inside [near, far] (R,) each; ``stratified``: training jitter."""
        raise NotImplementedError


class StratifiedSampler(Sampler):
    """Equal bins between near and far with one sample per bin (NeRF Eq. 2), batched layout.

    Training jitters the sample uniformly inside its bin (one draw per sample from ``generator``);
    otherwise it sits at the bin's midpoint. The quadrature interval of a sample is its bin.
    """

    packed = False

    def __init__(self, num_samples: int):
        super().__init__()
        self.num_samples = int(num_samples)

    def sample(self, origins, dirs, near, far, density_fn, stratified, generator=None) -> RaySamples:
        R, S = near.shape[0], self.num_samples
        steps = torch.arange(S, dtype=near.dtype, device=near.device)
        delta = ((far - near) / S)[:, None]
        t_starts = near[:, None] + steps[None] * delta
        if stratified:
            device = generator.device if generator is not None else near.device
            u = torch.rand((R, S), generator=generator, device=device, dtype=near.dtype).to(near.device)
        else:
            u = torch.full((R, S), 0.5, dtype=near.dtype, device=near.device)
        return RaySamples(t_starts, t_starts + delta, t_samples=t_starts + u * delta)


class OccGridSampler(Sampler):
    """nerfacc ``OccGridEstimator`` marching, packed layout (CUDA; the grid is state).

    Samples are render_step_size = 2 sqrt(3) bound / ``samples_per_ray`` apart inside occupied
    cells, at their intervals' midpoints; marching stops once the transmittance falls below
    ``early_stop_eps``. Stratified jitter (one offset per ray) draws from torch's global RNG
    inside nerfacc, not from ``generator``.
    """

    packed = True

    def __init__(self, bound: float, cfg: NerfaccConfig | None = None):
        super().__init__()
        import nerfacc

        self.cfg = cfg = cfg if cfg is not None else NerfaccConfig()
        b = float(bound)
        self.estimator = nerfacc.OccGridEstimator(roi_aabb=[-b, -b, -b, b, b, b], resolution=cfg.grid_resolution, levels=cfg.grid_levels)
        self.render_step_size = 2.0 * math.sqrt(3.0) * b / cfg.samples_per_ray

    @torch.no_grad()
    def update(self, step: int, density_fn: DensityFn) -> None:
        """Refresh the occupancy grid from the density every ``update_every`` steps (nerfacc's EMA)."""
        c = self.cfg

        def occ_eval_fn(x: Tensor) -> Tensor:  # opacity of one step at x: sigma * step size
            return density_fn(x) * self.render_step_size

        self.estimator.update_every_n_steps(step=step, occ_eval_fn=occ_eval_fn, occ_thre=c.occ_threshold,
                                            ema_decay=c.ema_decay, warmup_steps=c.warmup_steps, n=c.update_every)

    def sample(self, origins, dirs, near, far, density_fn, stratified, generator=None) -> RaySamples:
        def sigma_fn(t_starts: Tensor, t_ends: Tensor, ray_indices: Tensor) -> Tensor:
            x = origins[ray_indices] + dirs[ray_indices] * ((t_starts + t_ends) * 0.5)[:, None]
            return density_fn(x)

        c = self.cfg
        # Marching and the early stop run without grad (nerfacc's sampling is no_grad).
        ray_indices, t_starts, t_ends = self.estimator.sampling(
            origins, dirs, sigma_fn=sigma_fn, t_min=near, t_max=far, render_step_size=self.render_step_size,
            early_stop_eps=c.early_stop_eps, alpha_thre=c.alpha_threshold, stratified=stratified,
        )
        return RaySamples(t_starts, t_ends, ray_indices.long(), n_rays=origins.shape[0])


def occupied(estimator, x: Tensor) -> Tensor:
    """Whether each point lies in an occupied cell of a nerfacc ``OccGridEstimator``. (N, 3) -> (N,) bool.

    Level l of the grid covers its ``aabbs[l]`` (the level-0 box enlarged 2^l times about its
    centre, nerfacc's layout); a point is looked up in the finest level that contains it, as
    nerfacc's ``traverse_grids`` does. A point outside the coarsest box (the renderer samples
    inside the scene box, so only by a rounding error) takes the nearest cell.
    """
    lo, hi = estimator.aabbs[0, :3], estimator.aabbs[0, 3:]
    res = estimator.resolution.to(x)
    offset = 0
    if estimator.levels > 1:  # level l holds the points within 2^l half-widths of the centre
        centre, half = (lo + hi) * 0.5, (hi - lo) * 0.5
        level = torch.log2(((x - centre) / half).abs().amax(-1).clamp_min(1.0)).ceil_().clamp_(max=estimator.levels - 1)
        x = (x - centre) * torch.exp2(-level)[:, None] + centre  # into the level-0 box
        offset = level.long() * estimator.cells_per_lvl
    k = res / (hi - lo)
    cell = torch.addcmul(-lo * k, x, k).floor_()  # (x - lo) res / (hi - lo)
    for axis, n in enumerate(estimator.resolution.tolist()):  # per column: a broadcast minimum is ~10x slower
        cell[:, axis].clamp_(0, n - 1)
    strides = torch.stack([res[1] * res[2], res[2], torch.ones_like(res[2])])
    return torch.take(estimator.binaries, (cell @ strides).long() + offset)


class GridStratifiedSampler(Sampler):
    """The stratified bins minus the invisible ones, packed: nerfacc's empty-space skipping and early
    stop in PyTorch (any device; nerfacc's own marching is a CUDA kernel).

    Per ray, ``StratifiedSampler``'s S bins (the same generator draws); a bin is dropped when its
    sample lies in an empty cell of nerfacc's ``OccGridEstimator`` (Instant-NGP's occupancy grid,
    refreshed by ``update`` as ``OccGridSampler`` refreshes it, state in ``state_dict``), or when the
    transmittance in front of it, from a no-grad density pass over the kept bins, is below
    ``early_stop_eps``, or its alpha below ``alpha_threshold`` (nerfacc's ``sampling`` criteria).
    With every cell occupied and both thresholds 0 the samples are the stratified ones, packed.
    The occupancy of a cell is sigma times the longest bin, 2 bound / S.
    """

    packed = True

    def __init__(self, bound: float, num_samples: int, cfg: NerfaccConfig | None = None):
        super().__init__()
        import nerfacc

        self.cfg = cfg = cfg if cfg is not None else NerfaccConfig()
        b = float(bound)
        self.bins = StratifiedSampler(num_samples)
        self.estimator = nerfacc.OccGridEstimator(roi_aabb=[-b, -b, -b, b, b, b], resolution=cfg.grid_resolution, levels=cfg.grid_levels)
        self.step_size = 2.0 * b / int(num_samples)

    @torch.no_grad()
    def update(self, step: int, density_fn: DensityFn) -> None:
        """Refresh the occupancy grid from the density every ``update_every`` steps (nerfacc's EMA)."""
        c = self.cfg

        def occ_eval_fn(x: Tensor) -> Tensor:  # opacity of one bin at x: sigma * bin length
            return density_fn(x) * self.step_size

        self.estimator.update_every_n_steps(step=step, occ_eval_fn=occ_eval_fn, occ_thre=c.occ_threshold,
                                            ema_decay=c.ema_decay, warmup_steps=c.warmup_steps, n=c.update_every)

    def sample(self, origins, dirs, near, far, density_fn, stratified, generator=None) -> RaySamples:
        import nerfacc

        bins = self.bins.sample(origins, dirs, near, far, density_fn, stratified, generator)
        R, S = bins.t_starts.shape
        c = self.cfg
        with torch.no_grad():
            x = bins.points(origins, dirs)
            kept = occupied(self.estimator, x).nonzero().squeeze(-1)  # flat bin indices, row-major: by ray, in order
            if c.early_stop_eps > 0 or c.alpha_threshold > 0:
                sigma = x.new_zeros(R * S).index_put_((kept,), density_fn(x[kept]).to(x.dtype))
                alpha_thre = min(c.alpha_threshold, self.estimator.occs.mean().item())  # as nerfacc's sampling
                visible = nerfacc.render_visibility_from_density(bins.t_starts, bins.t_ends, sigma.view(R, S),
                                                                 early_stop_eps=c.early_stop_eps, alpha_thre=alpha_thre)
                kept = kept[visible.view(-1)[kept]]

        def take(v: Tensor) -> Tensor:
            return v.reshape(-1)[kept]

        return RaySamples(take(bins.t_starts), take(bins.t_ends), kept // S, n_rays=R, t_samples=take(bins.t_samples))


def nerfacc_cuda_status(build: bool = False) -> tuple[bool | None, str]:
    """Whether nerfacc's CUDA ops can run here, and why (for ``sds3d doctor`` and ``auto``).

    Args:
        build: import nerfacc's backend (JIT-compiles it on first use if nvcc is there; minutes).

    Returns:
        (True | False | None, reason); None means "not built yet, would JIT-build on first use".
    """
    if torch.version.cuda is None:
        return False, f"torch {torch.__version__} is a CPU-only build (nerfacc's ops are CUDA kernels)"
    if importlib.util.find_spec("nerfacc.csrc") is not None:
        return True, "prebuilt (nerfacc.csrc from a CUDA wheel)"
    nvcc = shutil.which("nvcc")
    if nvcc is None:
        return False, "no prebuilt nerfacc wheel and no nvcc on PATH for its JIT build (install a CUDA toolkit)"
    if not build:
        return None, f"JIT build with {nvcc} on first use (a few minutes; cached under ~/.cache/torch_extensions)"
    try:
        from nerfacc.cuda import _backend
    except Exception as e:  # noqa: BLE001 -- any compiler error means "not available"
        return False, f"JIT build failed: {str(e).strip().splitlines()[-1][:200] if str(e).strip() else type(e).__name__}"
    return (_backend._C is not None), ("JIT-built" if _backend._C is not None else "JIT build produced no module")


def select_render_backend(requested: str, device: torch.device | str) -> tuple[str, str]:
    """The rendering backend for ``render.backend=requested`` on ``device``, and why.

    auto: nerfacc on a CUDA device when its ops are available (building them if needed), else
    torch (batched). torch, grid: always. nerfacc: CUDA + ops, else a RenderConfigError.
    """
    device = torch.device(device)
    if requested in ("torch", "grid"):
        return requested, "requested"
    if requested not in ("auto", "nerfacc"):
        raise RenderConfigError(f"render.backend={requested!r} is unknown; use one of auto, torch, grid, nerfacc")
    if device.type != "cuda":
        if requested == "nerfacc":
            raise RenderConfigError("render.backend=nerfacc (packed samples, OccGridEstimator) needs CUDA; use auto or torch on CPU")
        return "torch", f"auto: device is {device.type} (nerfacc's packed ops are CUDA-only)"
    ok, why = nerfacc_cuda_status(build=True)
    if ok:
        return "nerfacc", f"{requested}: CUDA device and nerfacc ops {why}"
    if requested == "nerfacc":
        raise RenderConfigError(f"render.backend=nerfacc but nerfacc's CUDA ops are unavailable ({why}); use render.backend=auto")
    return "torch", f"auto: nerfacc's CUDA ops unavailable ({why})"


def build_sampler(cfg: RenderConfig, bound: float, device: torch.device | str) -> Sampler:
    """The sampler ``render.backend`` picks on ``device`` (``select_render_backend``), on that device."""
    backend, _ = select_render_backend(cfg.backend, device)
    if backend == "nerfacc":
        return OccGridSampler(bound, cfg.nerfacc).to(device)
    if backend == "grid":
        return GridStratifiedSampler(bound, cfg.num_samples, cfg.nerfacc).to(device)
    return StratifiedSampler(cfg.num_samples).to(device)
