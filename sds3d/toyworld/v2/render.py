"""Vectorised renderer of toy world v2: sphere tracing of an object's SDF, v1 shading, decal albedo.

Same conventions as v1 (``toyworld.render``): the cameras of ``sds3d.cameras``, 32x32 images
rendered at 2x and box-filtered, Lambertian shading under the fixed light, white background;
the albedo of each hit comes from ``ToyObject.albedo`` (parts, then decals), per sub-pixel.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ...cameras import Cameras, get_rays
from .. import world
from ..render import shade
from .objects import ToyObject

_CONVERGED = 1e-4  # a ray stops marching once the SDF at its point is below this
_HIT = 1e-3  # and counts as a hit if |SDF| < _HIT there before leaving its bounding sphere (v1's test)


def trace(obj: ToyObject, origins: Tensor, dirs: Tensor, steps: int = 64) -> tuple[Tensor, Tensor]:
    """Sphere-trace rays (unit directions) against an object. (N, 3), (N, 3) -> hit (N,), points (N, 3).

    Rays start where they enter the object's bounding sphere; converged or escaped rays are
    dropped from the batch as they finish, so later steps only march the few grazing rays.
    """
    r = obj.bounding_radius() + 1e-2
    b = (origins * dirs).sum(-1)
    disc = b * b - ((origins * origins).sum(-1) - r * r)
    idx = (disc > 0).nonzero().squeeze(-1)
    root = disc[idx].sqrt()
    o, d = origins[idx], dirs[idx]
    t, t_far = (-b[idx] - root).clamp(min=0.0), -b[idx] + root
    active = torch.arange(len(idx))
    for _ in range(steps):
        if len(active) == 0:
            break
        dist = obj.sdf(o[active] + t[active, None] * d[active])
        t[active] += dist.clamp(min=0.0)
        active = active[(dist > _CONVERGED) & (t[active] < t_far[active])]
    p = o + t[:, None] * d
    hit = torch.zeros(len(origins), dtype=torch.bool)
    hit[idx] = (obj.sdf(p).abs() < _HIT) & (t < t_far)
    points = torch.zeros_like(origins)
    points[idx] = p
    return hit, points


def sdf_normals(obj: ToyObject, p: Tensor, eps: float = 1e-4) -> Tensor:
    """Unit surface normals by central differences of the SDF (as v1). (N, 3) -> (N, 3)."""
    offsets = torch.eye(3, dtype=p.dtype) * eps
    grad = torch.stack([obj.sdf(p + offsets[i]) - obj.sdf(p - offsets[i]) for i in range(3)], dim=-1)
    return torch.nn.functional.normalize(grad, dim=-1)


def _render(obj: ToyObject, cameras: Cameras, resolution: int | None, supersampling: int | None, slots: bool):
    res = world.RESOLUTION if resolution is None else resolution
    ss = world.SUPERSAMPLING if supersampling is None else supersampling
    B, H = len(cameras), res * ss
    origins, dirs = get_rays(cameras, H)
    hit, points = trace(obj, origins.reshape(-1, 3), dirs.reshape(-1, 3))
    p = points[hit]
    rgb = world.background().expand(B * H * H, 3).clone()
    rgb[hit] = shade(obj.albedo(p), sdf_normals(obj, p))
    pool = lambda x: torch.nn.functional.avg_pool2d(x, ss)  # noqa: E731  (box filter, image.supersampling)
    out = [pool(rgb.reshape(B, H, H, 3).permute(0, 3, 1, 2)), pool(hit.reshape(B, 1, H, H).float())]
    if slots:
        one_hot = torch.zeros(B * H * H, len(obj.colours))
        slot = obj.slot_index(p)
        one_hot[hit.nonzero().squeeze(-1)[slot >= 0], slot[slot >= 0]] = 1.0
        out.append(pool(one_hot.reshape(B, H, H, -1).permute(0, 3, 1, 2)))
    return tuple(out)


def render(obj: ToyObject, cameras: Cameras, resolution: int | None = None, supersampling: int | None = None) -> tuple[Tensor, Tensor]:
    """Render an object from a batch of cameras.

    Returns:
        images (B, 3, H, W) in [0, 1] on the white background, coverage masks (B, 1, H, W) in [0, 1].
    """
    return _render(obj, cameras, resolution, supersampling, slots=False)


def render_slots(obj: ToyObject, cameras: Cameras, resolution: int | None = None, supersampling: int | None = None):
    """``render`` plus, per prompt colour, the pixel coverage of the surface showing it (not under a
    decal, not a fixed-colour part). Returns images, masks and slots (B, len(obj.colours), H, W)."""
    return _render(obj, cameras, resolution, supersampling, slots=True)
