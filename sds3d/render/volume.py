"""Volume compositing for batched [rays, samples] and packed (``ray_indices``) samples (NeRF Eq. 3).

w_i = T_i (1 - exp(-sigma_i delta_i)), T_i = exp(-sum_{j<i} sigma_j delta_j), delta_i = t_end_i - t_start_i;
a ray's value is sum_i w_i v_i. Both layouts use nerfacc's functions, as nerfacc itself does,
except packed weights off CUDA (``_packed_weights_torch``).
"""

from __future__ import annotations

import nerfacc
import torch
from torch import Tensor


def _packed_weights_torch(t_starts: Tensor, t_ends: Tensor, sigma: Tensor, ray_indices: Tensor, n_rays: int) -> Tensor:
    """nerfacc's packed ``render_weight_from_density`` in plain PyTorch (any device).

    nerfacc's packed exclusive scan (and the ``pack_info`` it needs) exists only as a CUDA kernel,
    so off CUDA the samples are scattered into a zero-padded (n_rays, max samples per ray) grid,
    given the batched formula (exclusive cumsum of sigma delta along each row, w = T alpha) and
    gathered back. Samples must be sorted by ray and in order along each ray (nerfacc's packed
    layout). A ray's samples go through the same float operations as in the batched layout.
    """
    counts = torch.bincount(ray_indices, minlength=n_rays)
    starts = counts.cumsum(0) - counts
    position = torch.arange(ray_indices.shape[0], device=ray_indices.device) - starts[ray_indices]
    width = int(counts.max()) if ray_indices.numel() else 0
    grid = ray_indices, position

    def padded(v: Tensor) -> Tensor:
        return v.new_zeros((n_rays, width)).index_put(grid, v)

    weights, _, _ = nerfacc.render_weight_from_density(padded(t_starts), padded(t_ends), padded(sigma))
    return weights[grid]


def render_weights(t_starts: Tensor, t_ends: Tensor, sigma: Tensor, ray_indices: Tensor | None = None,
                   n_rays: int | None = None) -> Tensor:
    """NeRF weights w_i of the samples, the shape of ``sigma``: (R, S) batched, (N,) packed."""
    if ray_indices is None or sigma.is_cuda:
        weights, _, _ = nerfacc.render_weight_from_density(t_starts, t_ends, sigma, ray_indices=ray_indices, n_rays=n_rays)
        return weights
    return _packed_weights_torch(t_starts, t_ends, sigma, ray_indices, n_rays)


def accumulate(weights: Tensor, values: dict[str, Tensor | None], ray_indices: Tensor | None = None,
               n_rays: int | None = None) -> tuple[dict[str, Tensor | None], Tensor]:
    """sum_i w_i v_i per ray, (n_rays, C), of each per-sample value (..., C) (None stays None), and
    the opacity sum_i w_i (n_rays, 1).

    nerfacc's ``accumulate_along_rays``: a sum over the samples, or an index_add for packed ones
    (on any device).
    """
    def acc(v: Tensor | None) -> Tensor:
        return nerfacc.accumulate_along_rays(weights, v, ray_indices=ray_indices, n_rays=n_rays)

    return {k: None if v is None else acc(v) for k, v in values.items()}, acc(None)


def composite(t_starts: Tensor, t_ends: Tensor, sigma: Tensor, values: dict[str, Tensor | None],
              ray_indices: Tensor | None = None, n_rays: int | None = None) -> tuple[Tensor, dict[str, Tensor | None], Tensor]:
    """Weights, accumulated values and opacity (n_rays, 1) of samples in either layout.

    Args:
        t_starts, t_ends, sigma: (R, S) batched or (N,) packed.
        values: per-sample values, (R, S, C) or (N, C) (None: not computed, stays None).
        ray_indices: (N,) int64, sorted, for packed samples; None for batched ones.
        n_rays: number of rays of packed samples (rays without samples get zeros).
    """
    weights = render_weights(t_starts, t_ends, sigma, ray_indices, n_rays)
    accumulated, opacity = accumulate(weights, values, ray_indices, n_rays)
    return weights, accumulated, opacity
