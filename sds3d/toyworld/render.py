"""Vectorised renderer of the toy world: sphere tracing of the exact SDFs, Lambertian shading.

Produces what the prior is trained on and what evaluation compares against: 32x32 images in
[0, 1] (rendered at 2x and box-filtered, toyworld.json ``image.supersampling``) and coverage masks.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..cameras import Cameras, get_rays
from . import world
from .shapes import bounding_radius, sdf

_HIT_EPS = 1e-4


def trace(shape: str, origins: Tensor, dirs: Tensor, steps: int = 64) -> tuple[Tensor, Tensor]:
    """Sphere-trace rays against one shape.

    Args:
        origins, dirs: rays (unit directions). Shape: (N, 3).

    Returns:
        hit mask (N,) and hit points (N, 3).
    """
    # Start at the shape's bounding sphere (analytic ray-sphere intersection): fewer steps.
    r = bounding_radius(shape) + 1e-2
    b = (origins * dirs).sum(-1)
    c = (origins * origins).sum(-1) - r * r
    disc = b * b - c
    may_hit = disc > 0
    t = (-b - disc.clamp(min=0).sqrt()).clamp(min=0.0)
    t_far = -b + disc.clamp(min=0).sqrt()
    idx = may_hit.nonzero().squeeze(-1)
    o, d, tt, tf = origins[idx], dirs[idx], t[idx], t_far[idx]
    for _ in range(steps):
        dist = sdf(shape, o + tt[:, None] * d)
        tt = tt + dist.clamp(min=0.0)
    p = o + tt[:, None] * d
    hit_sub = (sdf(shape, p).abs() < 1e-3) & (tt < tf)
    hit = torch.zeros_like(may_hit)
    hit[idx] = hit_sub
    points = torch.zeros_like(origins)
    points[idx] = p
    return hit, points


def sdf_normals(shape: str, p: Tensor, eps: float = 1e-4) -> Tensor:
    """Unit surface normals by central differences of the SDF. (N, 3) -> (N, 3)."""
    offsets = torch.eye(3, dtype=p.dtype, device=p.device) * eps
    grad = torch.stack(
        [sdf(shape, p + offsets[i]) - sdf(shape, p - offsets[i]) for i in range(3)], dim=-1
    )
    return torch.nn.functional.normalize(grad, dim=-1)


def shade(albedo: Tensor, normals: Tensor) -> Tensor:
    """toyworld.json shading: rgb = albedo * (0.35 + 0.65 * max(0, n . l)). (..., 3) -> (..., 3)."""
    n_dot_l = (normals * world.light_direction().to(normals)).sum(-1, keepdim=True).clamp(min=0.0)
    return albedo * (world.AMBIENT + world.DIFFUSE * n_dot_l)


def render(shape: str, albedo: Tensor, cameras: Cameras, resolution: int | None = None, supersampling: int | None = None) -> tuple[Tensor, Tensor]:
    """Render one shape from a batch of cameras.

    Args:
        shape: a toy shape name.
        albedo: linear RGB, (3,) for all views or (B, 3) per view.
        cameras: B cameras.

    Returns:
        images (B, 3, H, W) in [0, 1] on the white background, masks (B, 1, H, W) coverage in [0, 1].
    """
    res = world.RESOLUTION if resolution is None else resolution
    ss = world.SUPERSAMPLING if supersampling is None else supersampling
    B = len(cameras)
    origins, dirs = get_rays(cameras, res * ss)
    H = res * ss
    hit, points = trace(shape, origins.reshape(-1, 3), dirs.reshape(-1, 3))
    albedo = albedo.to(torch.float32).reshape(-1, 3).expand(B, 3)
    albedo_px = albedo[:, None, :].expand(B, H * H, 3).reshape(-1, 3)
    rgb = world.background().expand(B * H * H, 3).clone()
    if hit.any():
        rgb[hit] = shade(albedo_px[hit], sdf_normals(shape, points[hit]))
    rgb = rgb.reshape(B, H, H, 3).permute(0, 3, 1, 2)
    mask = hit.reshape(B, 1, H, H).float()
    # Box filter of the supersampled image (toyworld.json image.supersampling).
    return torch.nn.functional.avg_pool2d(rgb, ss), torch.nn.functional.avg_pool2d(mask, ss)
