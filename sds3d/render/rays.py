"""Where rays enter and leave the scene bounds (stateless functions)."""

from __future__ import annotations

import torch
from torch import Tensor


def intersect_sphere(origins: Tensor, dirs: Tensor, radius: float) -> tuple[Tensor, Tensor, Tensor]:
    """Entry/exit distances of rays through the sphere of ``radius`` at the origin.

    Args:
        origins, dirs: rays with unit directions. Shape: (R, 3).

    Returns:
        near (R,), far (R,) (near clamped to >= 0) and hit mask (R,) (far > near).
    """
    b = (origins * dirs).sum(-1)
    c = (origins * origins).sum(-1) - radius * radius
    root = (b * b - c).clamp(min=0.0).sqrt()
    near, far = (-b - root).clamp(min=0.0), -b + root
    return near, far, (b * b - c > 0) & (far > near)


def intersect_aabb(origins: Tensor, dirs: Tensor, bound: float) -> tuple[Tensor, Tensor, Tensor]:
    """Entry/exit distances of rays through the box [-bound, bound]^3 (slab test).

    Returns:
        near (R,), far (R,) (near clamped to >= 0) and hit mask (R,).
    """
    inv = 1.0 / torch.where(dirs.abs() < 1e-12, torch.full_like(dirs, 1e-12), dirs)
    t0, t1 = (-bound - origins) * inv, (bound - origins) * inv
    near = torch.minimum(t0, t1).amax(-1).clamp(min=0.0)
    far = torch.maximum(t0, t1).amin(-1)
    return near, far, far > near
