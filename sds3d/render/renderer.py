"""Volume rendering of a NeRF field from a batch of cameras, for any ``Sampler``.

Per ray: bounds of the scene (``rays``), samples from the sampler (batched or packed,
``samplers``), density/albedo/normals from the field, per-sample shading (``shading``), weights
w_i = T_i (1 - exp(-sigma_i delta_i)) and their sums (``volume``, NeRF Eq. 3), composited over
the background. The same code serves both sample layouts.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..cameras import Cameras, get_rays
from .config import RenderConfig, check_render_config
from .rays import intersect_aabb, intersect_sphere
from .samplers import Sampler, StratifiedSampler
from .shading import light_directions, shade
from .volume import accumulate, render_weights

_FLAT_KEYS = ("rgb", "opacity", "depth", "normal", "albedo")


def _field_samples(field, x: Tensor, need_normals: bool) -> tuple[Tensor, Tensor, Tensor | None]:
    """sigma (N,), albedo (N, 3), normals (N, 3) or None; one fused pass when the field offers it."""
    if not need_normals:
        sigma, albedo = field(x)
        return sigma, albedo, None
    if hasattr(field, "forward_with_normals"):
        return field.forward_with_normals(x)
    sigma, albedo = field(x)
    return sigma, albedo, field.normals(x)


def _scatter(values: dict[str, Tensor | None], idx: Tensor, R: int) -> dict[str, Tensor | None]:
    """Rows of the rays ``idx`` into zeros for all R rays (out of place, differentiable)."""
    return {k: None if v is None else v.new_zeros((R,) + v.shape[1:]).index_put((idx,), v) for k, v in values.items()}


def render_rays(
    field,
    background,
    origins: Tensor,
    dirs: Tensor,
    cfg: RenderConfig,
    shading: str,
    light: Tensor | None,
    need_normals: bool,
    stratified: bool,
    generator: torch.Generator | None,
    sampler: Sampler,
) -> dict[str, Tensor | None]:
    """Render flat rays. origins, dirs, light (unit, towards the light): (R, 3).

    Returns:
        rgb, albedo, normal (R, 3); opacity, depth (R, 1); per sample: weights, sample_normals
        (or None) and ray_indices: (R, S), (R, S, 3), None for batched samples; (N,), (N, 3),
        (N,) for packed ones.
    """
    R = origins.shape[0]
    bound = float(field.bound)
    near, far, hit = (intersect_sphere if cfg.ray_bounds == "sphere" else intersect_aabb)(origins, dirs, bound)
    idx = hit.nonzero().squeeze(-1)
    all_hit = idx.shape[0] == R
    # Only rays that enter the scene are sampled and sent to the field (empty space costs nothing).
    o, d = (origins, dirs) if all_hit else (origins[idx], dirs[idx])
    samples = sampler.sample(o, d, near if all_hit else near[idx], far if all_hit else far[idx], field.density, stratified, generator)
    ray_indices, n_hit = samples.ray_indices, samples.n_rays
    x = samples.points(o, d)
    if cfg.ray_bounds == "aabb":
        x = x.clamp(-bound, bound)  # the slab test can leave samples a rounding error outside
    threshold = cfg.normal_weight_threshold
    sigma, albedo, normals = _field_samples(field, x, need_normals and threshold <= 0)
    shape = samples.t_starts.shape
    sigma, albedo = sigma.reshape(shape), albedo.reshape(shape + (3,))
    weights = render_weights(samples.t_starts, samples.t_ends, sigma, ray_indices, n_hit)
    if need_normals and threshold > 0:
        # Normals cost 3-6 extra field evaluations each, so only samples that are visible
        # (w_i > threshold) get them; the rest contribute < threshold each to any output.
        keep = (weights.detach() > threshold).reshape(-1).nonzero().squeeze(-1)
        normals = x.new_zeros(x.shape).index_put((keep,), field.normals(x[keep]))
    normals = None if normals is None else normals.reshape(shape + (3,))
    if shading != "albedo":
        colours = shade(albedo, normals, samples.per_sample(light if all_hit else light[idx]), shading, cfg.ambient, cfg.diffuse)
    else:
        colours = albedo
    values = {"rgb": colours, "albedo": albedo, "depth": samples.t_samples[..., None], "normal": normals}
    out, opacity = accumulate(weights, values, ray_indices, n_hit)
    out["opacity"] = opacity
    if normals is None:
        out["normal"] = torch.zeros_like(o)
    per_sample = {"weights": weights, "sample_normals": normals}
    if not all_hit:  # back to all rays (misses are empty); packed samples only need their ray's index
        out = _scatter(out, idx, R)
        if samples.packed:
            ray_indices = idx[ray_indices]
        else:
            per_sample = _scatter(per_sample, idx, R)
    bg = background(dirs)
    out["rgb"] = out["rgb"] + (1.0 - out["opacity"]) * bg
    out["albedo"] = out["albedo"] + (1.0 - out["opacity"]) * bg
    return {**out, **per_sample, "ray_indices": ray_indices}


def camera_rays(cameras, cfg: RenderConfig, shading: str, light_dir, resolution, generator, need_normals):
    """Flat rays of B views and their per-ray light direction.

    Returns:
        res, origins (B*res*res, 3), unit dirs (B*res*res, 3), light (B*res*res, 3) or None for
        albedo shading, and whether normals are needed.
    """
    res = cfg.resolution if resolution is None else int(resolution)
    B = len(cameras)
    origins, dirs = get_rays(cameras, res)
    origins, dirs = origins.reshape(-1, 3), dirs.reshape(-1, 3)
    need = shading != "albedo" or (cfg.need_normals if need_normals is None else need_normals)
    light = None
    if shading != "albedo":
        light = light_directions(cfg, cameras, generator) if light_dir is None else light_dir.to(dirs)
        light = torch.nn.functional.normalize(light.reshape(-1, 3), dim=-1).expand(B, 3)
        light = light[:, None, :].expand(B, res * res, 3).reshape(-1, 3)
    return res, origins, dirs, light, need


def render(
    field,
    background,
    cameras: Cameras,
    cfg: RenderConfig,
    shading: str = "albedo",
    light_dir: Tensor | None = None,
    resolution: int | None = None,
    generator: torch.Generator | None = None,
    stratified: bool = True,
    need_normals: bool | None = None,
    sampler: Sampler | None = None,
) -> dict[str, Tensor | None]:
    """Render B views of ``field`` composited over ``background``.

    Args:
        field: has ``bound``, ``forward(x) -> (sigma, albedo)`` and ``normals(x)`` (and optionally
            ``forward_with_normals``), e.g. ``NeRFField``.
        background: maps unit directions (..., 3) to rgb (..., 3).
        cameras: B cameras.
        cfg: render settings.
        shading: albedo | lambertian | textureless (``sample_shading`` draws one per step).
        light_dir: towards the light, world frame, (3,) or (B, 3); default from ``cfg.light``.
        resolution: image side, default ``cfg.resolution``.
        generator: for stratified jitter and random lights.
        stratified: jitter samples in their bins (training); midpoints otherwise.
        need_normals: compute normals for albedo shading too; default ``cfg.need_normals``.
        sampler: rays -> samples; default ``StratifiedSampler(cfg.num_samples)`` (``build_sampler``
            gives the one ``cfg.backend`` picks).

    Returns:
        rgb (B, 3, H, W) in [0, 1] over the background; albedo (B, 3, H, W) over the background;
        opacity (B, 1, H, W); depth (B, 1, H, W) (expected distance, sum w_i t_i, 0 where empty);
        normal (B, 3, H, W) (world, sum w_i n_i, zeros if not computed); ray_dirs (B*H*W, 3);
        per sample: weights, sample_normals (or None), ray_indices: (B*H*W, S), (B*H*W, S, 3),
        None for a batched sampler; (N,), (N, 3), (N,) (indices into the B*H*W rays) for a packed one.
    """
    check_render_config(cfg)
    sampler = StratifiedSampler(cfg.num_samples) if sampler is None else sampler
    res, origins, dirs, light, need = camera_rays(cameras, cfg, shading, light_dir, resolution, generator, need_normals)
    B = len(cameras)
    R = origins.shape[0]
    if torch.is_grad_enabled() or R <= cfg.chunk_size:
        flat = render_rays(field, background, origins, dirs, cfg, shading, light, need, stratified, generator, sampler)
    else:
        starts = range(0, R, cfg.chunk_size)
        parts = [
            render_rays(
                field, background, origins[i : i + cfg.chunk_size], dirs[i : i + cfg.chunk_size], cfg, shading,
                None if light is None else light[i : i + cfg.chunk_size], need, stratified, generator, sampler,
            )
            for i in starts
        ]
        if sampler.packed:  # a chunk's ray indices count from its first ray
            for i, p in zip(starts, parts):
                p["ray_indices"] = p["ray_indices"] + i
        flat = {k: None if parts[0][k] is None else torch.cat([p[k] for p in parts]) for k in parts[0]}

    def image(v: Tensor) -> Tensor:
        return v.reshape(B, res, res, -1).permute(0, 3, 1, 2)

    out = {k: image(flat[k]) for k in _FLAT_KEYS}
    out["rgb"] = out["rgb"].clamp(0.0, 1.0)
    out.update(weights=flat["weights"], sample_normals=flat["sample_normals"], ray_indices=flat["ray_indices"], ray_dirs=dirs)
    return out
