"""Ray bounds and batched stratified samples along rays (stateless functions)."""

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


def stratified_samples(
    near: Tensor, far: Tensor, num_samples: int, stratified: bool, generator: torch.Generator | None = None
) -> tuple[Tensor, Tensor, Tensor]:
    """Equal bins between near and far with one sample per bin (NeRF Eq. 2).

    Training jitters the sample uniformly inside its bin; otherwise it sits at the bin's midpoint.
    The quadrature interval of a sample is its bin.

    Args:
        near, far: Shape: (R,).

    Returns:
        t_starts, t_ends (bin edges) and t_samples (sample positions). Shape: (R, S) each.
    """
    R = near.shape[0]
    steps = torch.arange(num_samples, dtype=near.dtype, device=near.device)
    delta = ((far - near) / num_samples)[:, None]
    t_starts = near[:, None] + steps[None] * delta
    if stratified:
        device = generator.device if generator is not None else near.device
        u = torch.rand((R, num_samples), generator=generator, device=device, dtype=near.dtype).to(near.device)
    else:
        u = torch.full((R, num_samples), 0.5, dtype=near.dtype, device=near.device)
    return t_starts, t_starts + delta, t_starts + u * delta
