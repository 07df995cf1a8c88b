"""The CUDA rendering backend: nerfacc ``OccGridEstimator`` packed sampling + packed volume rendering.

On a GPU, rays are marched through an occupancy grid (empty cells skipped, samples after the
transmittance drops below ``early_stop_eps`` dropped), so each ray carries a different number of
samples, stored *packed*: flat (N,) arrays with ``ray_indices``. The grid is refreshed from the
field's density every ``update_every`` steps (Instant-NGP / nerfacc). nerfacc's packed ops are
CUDA kernels, so this module only runs on CUDA; CPU runs use the batched ``renderer.render``.

Wiring (the renderer's and the trainer's owners): ``select_render_backend(cfg.backend, device)``
gives the backend; when it is ``nerfacc`` the trainer keeps one ``PackedRenderer`` (its grid is
state: checkpoint ``state_dict()``), calls ``update(step, field)`` once per step and renders
with ``render_packed`` (same outputs as ``render``; packed ``weights`` / ``sample_normals`` /
``ray_indices`` instead of (R, S) ones: use ``orientation_loss_packed``).
"""

from __future__ import annotations

import importlib.util
import math
import shutil
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ..cameras import Cameras
from .config import RenderConfig, RenderConfigError, check_render_config
from .rays import intersect_aabb, intersect_sphere
from .renderer import camera_rays
from .shading import shade


@dataclass
class NerfaccConfig:
    """Occupancy-grid marching (nerfacc / threestudio defaults for DreamFusion-sized scenes).

    grid_resolution, grid_levels: cells per axis of the occupancy grid over [-bound, bound]^3.
    update_every: refresh the grid every N steps (EMA of sigma * step size, ``ema_decay``; all
        cells during the first ``warmup_steps``, then a random subset). occ_threshold: a cell is
        occupied while its EMA >= this. samples_per_ray: render_step_size = 2 sqrt(3) bound / N.
    early_stop_eps: stop marching once transmittance < eps. alpha_threshold: skip samples with
        alpha below it.
    """

    grid_resolution: int = 64
    grid_levels: int = 1
    update_every: int = 16
    occ_threshold: float = 0.01
    ema_decay: float = 0.95
    warmup_steps: int = 256
    samples_per_ray: int = 512
    early_stop_eps: float = 1e-4
    alpha_threshold: float = 0.0


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
    torch (batched). torch: always. nerfacc: CUDA + ops, else a RenderConfigError.
    """
    device = torch.device(device)
    if requested == "torch":
        return "torch", "requested"
    if requested not in ("auto", "nerfacc"):
        raise RenderConfigError(f"render.backend={requested!r} is unknown; use one of auto, torch, nerfacc")
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


class PackedRenderer(nn.Module):
    """Owns the occupancy grid (state) and renders flat rays with packed samples (CUDA)."""

    def __init__(self, bound: float, cfg: NerfaccConfig | None = None):
        super().__init__()
        import nerfacc

        self.cfg = cfg = cfg if cfg is not None else NerfaccConfig()
        self.bound = float(bound)
        b = self.bound
        self.estimator = nerfacc.OccGridEstimator(roi_aabb=[-b, -b, -b, b, b, b], resolution=cfg.grid_resolution, levels=cfg.grid_levels)
        self.render_step_size = 2.0 * math.sqrt(3.0) * b / cfg.samples_per_ray

    @torch.no_grad()
    def update(self, step: int, field) -> None:
        """Refresh the occupancy grid from ``field.density`` every ``update_every`` steps."""
        c = self.cfg

        def occ_eval_fn(x: Tensor) -> Tensor:  # opacity of one step at x: sigma * step size
            return field.density(x) * self.render_step_size

        self.estimator.update_every_n_steps(step=step, occ_eval_fn=occ_eval_fn, occ_thre=c.occ_threshold,
                                            ema_decay=c.ema_decay, warmup_steps=c.warmup_steps, n=c.update_every)

    def render_rays(self, field, background, origins: Tensor, dirs: Tensor, cfg: RenderConfig, shading: str,
                    light: Tensor | None, need_normals: bool, stratified: bool) -> dict[str, Tensor | None]:
        """Render flat rays (R, 3) like ``renderer.render_rays``, with packed samples.

        Returns:
            rgb, albedo, normal (R, 3); opacity, depth (R, 1); weights (N,), sample_normals (N, 3)
            or None, ray_indices (N,) of the N packed samples.
        """
        import nerfacc

        R = origins.shape[0]
        near, far, hit = (intersect_sphere if cfg.ray_bounds == "sphere" else intersect_aabb)(origins, dirs, self.bound)
        far = torch.where(hit, far, near)  # misses get an empty interval

        def sigma_fn(t_starts: Tensor, t_ends: Tensor, ray_indices: Tensor) -> Tensor:
            x = origins[ray_indices] + dirs[ray_indices] * ((t_starts + t_ends) * 0.5)[:, None]
            return field.density(x)

        c = self.cfg
        # Marching + early stop run without grad (nerfacc evaluates sigma_fn under no_grad here).
        ray_indices, t_starts, t_ends = self.estimator.sampling(
            origins, dirs, sigma_fn=sigma_fn, t_min=near, t_max=far, render_step_size=self.render_step_size,
            early_stop_eps=c.early_stop_eps, alpha_thre=c.alpha_threshold, stratified=stratified,
        )
        t_mid = (t_starts + t_ends) * 0.5
        x = origins[ray_indices] + dirs[ray_indices] * t_mid[:, None]
        if need_normals:
            sigma, albedo, normals = field.forward_with_normals(x)
        else:
            (sigma, albedo), normals = field(x), None
        weights, _, _ = nerfacc.render_weight_from_density(t_starts, t_ends, sigma, ray_indices=ray_indices, n_rays=R)
        colours = albedo if shading == "albedo" else shade(albedo, normals, light[ray_indices], shading, cfg.ambient, cfg.diffuse)

        def acc(values: Tensor | None) -> Tensor:
            return nerfacc.accumulate_along_rays(weights, values, ray_indices=ray_indices, n_rays=R)

        opacity = acc(None)
        bg = background(dirs)
        return {
            "rgb": acc(colours) + (1.0 - opacity) * bg,
            "albedo": acc(albedo) + (1.0 - opacity) * bg,
            "opacity": opacity,
            "depth": acc(t_mid[:, None]),
            "normal": acc(normals) if normals is not None else torch.zeros_like(origins),
            "weights": weights,
            "sample_normals": normals,
            "ray_indices": ray_indices,
        }


def render_packed(packed: PackedRenderer, field, background, cameras: Cameras, cfg: RenderConfig, shading: str = "albedo",
                  light_dir: Tensor | None = None, resolution: int | None = None, generator: torch.Generator | None = None,
                  stratified: bool = True, need_normals: bool | None = None) -> dict[str, Tensor | None]:
    """``renderer.render`` on the packed backend: same images (B, C, H, W); packed per-sample outputs.

    Stratified jitter inside nerfacc draws from torch's global RNG (``generator`` only drives the light).
    """
    check_render_config(cfg)
    res, origins, dirs, light, need = camera_rays(cameras, cfg, shading, light_dir, resolution, generator, need_normals)
    B = len(cameras)
    flat = packed.render_rays(field, background, origins, dirs, cfg, shading, light, need, stratified)
    out = {k: flat[k].reshape(B, res, res, -1).permute(0, 3, 1, 2) for k in ("rgb", "opacity", "depth", "normal", "albedo")}
    out["rgb"] = out["rgb"].clamp(0.0, 1.0)
    out.update(weights=flat["weights"], sample_normals=flat["sample_normals"], ray_indices=flat["ray_indices"], ray_dirs=dirs)
    return out


def orientation_loss_packed(weights: Tensor, sample_normals: Tensor, ray_dirs: Tensor, ray_indices: Tensor) -> Tensor:
    """``losses.orientation_loss`` for packed samples: sum_i sg(w_i) max(0, n_i . d_ray(i))^2, mean over rays.

    Args:
        weights: (N,). sample_normals: (N, 3). ray_dirs: (R, 3) (all rays). ray_indices: (N,).
    """
    n_dot_d = (sample_normals * ray_dirs[ray_indices]).sum(-1)
    return (weights.detach() * n_dot_d.clamp(min=0.0) ** 2).sum() / ray_dirs.shape[0]
