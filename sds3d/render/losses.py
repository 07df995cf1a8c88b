"""Regularisers on rendered quantities (plain functions; the trainer owns their weights)."""

from __future__ import annotations

import nerfacc
import torch
from torch import Tensor


def orientation_loss(weights: Tensor, sample_normals: Tensor, ray_dirs: Tensor, ray_indices: Tensor | None = None) -> Tensor:
    """Penalise visible normals facing away from the camera (DreamFusion App. A.4, after Ref-NeRF's R_o).

    L = mean over rays of sum_i sg(w_i) max(0, n_i . d)^2, with d the ray direction (camera to scene).

    Args:
        weights: (R, S) batched or (N,) packed. sample_normals: (R, S, 3) or (N, 3).
        ray_dirs: (R, 3), all rays (rays without packed samples count as 0).
        ray_indices: (N,) the ray of each packed sample; None for batched samples.
    """
    d = ray_dirs[:, None, :] if ray_indices is None else ray_dirs[ray_indices]
    n_dot_d = (sample_normals * d).sum(-1)
    per_sample = weights.detach() * n_dot_d.clamp(min=0.0) ** 2
    return nerfacc.accumulate_along_rays(per_sample, None, ray_indices=ray_indices, n_rays=ray_dirs.shape[0]).mean()


def opacity_loss(opacity: Tensor) -> Tensor:
    """Sparsity: mean accumulated opacity (discourages floaters and fog). Any shape -> scalar."""
    return opacity.mean()


def opacity_entropy_loss(opacity: Tensor, eps: float = 1e-5) -> Tensor:
    """Binary entropy of the opacity, -o log o - (1 - o) log(1 - o), mean (pushes pixels to 0 or 1)."""
    o = opacity.clamp(eps, 1.0 - eps)
    return -(o * torch.log(o) + (1.0 - o) * torch.log1p(-o)).mean()
