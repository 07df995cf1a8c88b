"""Pure-PyTorch twins of the custom kernels in ``cuda_ext/`` (the reference implementations).

Every kernel of ``sds3d.cuda_ext`` has a function here with the same name and a leading
underscore; tests compare outputs and gradients of the two (gsplat's convention).

Gradient convention of the hash encoding (the kernel's, ``locate`` in hash_grid.h): the encoding is
a trilinear polynomial per cell, the cells [k/R, (k+1)/R) half-open and the last one closed, and
the x-gradient at a point is the derivative of the polynomial of its cell. So on a cell face it is
the slope of the cell above, at x = 0 of the first cell, at x = 1 of the last cell; outside the
closed cube [0, 1] the clamp makes it 0. Nothing here relies on torch's gradient of ``clamp`` at
its bounds, which changed between releases (2.13 passes it, 2.14 gives 0).
"""

from __future__ import annotations

import torch
from torch import Tensor

# Instant-NGP spatial hash primes (Mueller et al. 2022, Eq. 4); the first is 1 for coherence.
HASH_PRIMES = (1, 2654435761, 805459861)

# The 8 corners of a voxel, bit k of the corner index selects +1 along axis k. Shape: (8, 3).
_CORNERS = torch.tensor([[(c >> k) & 1 for k in range(3)] for c in range(8)], dtype=torch.long)


def level_is_dense(resolution: int, table_size: int) -> bool:
    """A level is indexed densely while its (resolution + 1)^3 vertices fit in its table."""
    return (resolution + 1) ** 3 <= table_size


def _clamp_to_unit_cube(x: Tensor) -> Tensor:
    """x clamped to [0, 1], passing the gradient on the closed cube and 0 outside (the kernel's ``inside``).

    ``torch.where`` routes the gradient to the branch it selects, so the rule at x = 0 and x = 1
    is this line's, not torch's clamp's; values are exactly ``x.clamp(0, 1)``'s.
    """
    return torch.where((x >= 0.0) & (x <= 1.0), x, x.clamp(0.0, 1.0))


def _gather_dense_level(x: Tensor, table: Tensor, res: int) -> Tensor:
    """Reference for one dense level by explicit corner gathering (used by tests). (N, 3) -> (N, F)."""
    corners = _CORNERS.to(x.device)
    pos = _clamp_to_unit_cube(x) * res
    cell = pos.detach().floor().clamp(max=res - 1)
    frac = pos - cell
    c = cell.long()[:, None, :] + corners[None]
    index = c[..., 0] + (res + 1) * (c[..., 1] + (res + 1) * c[..., 2])
    bits = corners[None].to(x.dtype)
    weights = (bits * frac[:, None, :] + (1 - bits) * (1 - frac[:, None, :])).prod(dim=-1)
    return (weights[..., None] * table[index]).sum(dim=1)


def _sample_dense_level(x: Tensor, table: Tensor, res: int, top_rows: Tensor | None) -> Tensor:
    """One dense level by grid_sample's fused trilinear kernel (~8x faster than gathering 8 corners).

    Row c0 + (R+1) (c1 + (R+1) c2) of the table is voxel [c2, c1, c0] of the volume. At x_k = 1
    grid_sample puts the point in a cell beyond the grid, whose upper vertex is its zero padding,
    so its x-gradient there is -R v(R) instead of the last cell's slope R (v(R) - v(R-1)): the rows
    ``top_rows`` (points with a coordinate exactly 1) take their gradient from the corner gathering
    while keeping grid_sample's values. (N, 3) in [0, 1] -> (N, F).
    """
    volume = table[: (res + 1) ** 3].T.reshape(1, -1, res + 1, res + 1, res + 1)
    grid = (x * 2.0 - 1.0).reshape(1, 1, 1, -1, 3)
    sampled = torch.nn.functional.grid_sample(volume, grid, mode="bilinear", align_corners=True)
    sampled = sampled.reshape(volume.shape[1], -1).T
    if top_rows is None:
        return sampled
    gathered = _gather_dense_level(x[top_rows], table, res)
    return sampled.index_put((top_rows,), sampled[top_rows].detach() + (gathered - gathered.detach()))


def _hash_grid_encode(x: Tensor, embeddings: Tensor, offsets: Tensor, resolutions: Tensor) -> Tensor:
    """Multi-resolution hash encoding (Instant-NGP, Mueller et al. 2022, Sec. 3).

    Level l has ``resolutions[l]`` cells per axis and the table rows
    ``embeddings[offsets[l]:offsets[l+1]]``. Vertices are indexed densely while they fit
    (``level_is_dense``), else by the spatial hash ``xor_i(c_i * pi_i) mod T`` (T a power of two).
    Features at the 8 voxel corners are interpolated trilinearly. Gradients: see the module docstring.

    Args:
        x: positions, clamped to [0, 1]. Shape: (N, 3).
        embeddings: feature tables of all levels. Shape: (offsets[-1], F).
        offsets: first table row of each level, plus the total. Shape: (L + 1,) int64.
        resolutions: cells per axis of each level. Shape: (L,) int64.

    Returns:
        Concatenated features of all levels, level-major. Shape: (N, L * F).
    """
    top_rows = None
    if x.requires_grad and torch.is_grad_enabled():  # only the x-gradient of those rows needs mending
        top_rows = (x == 1.0).any(dim=-1).nonzero().squeeze(1)
        top_rows = top_rows if top_rows.numel() else None
    x = _clamp_to_unit_cube(x)
    corners = _CORNERS.to(x.device)
    outputs = []
    for level in range(resolutions.shape[0]):
        res = int(resolutions[level])
        start, size = int(offsets[level]), int(offsets[level + 1] - offsets[level])
        if level_is_dense(res, size):
            outputs.append(_sample_dense_level(x, embeddings[start : start + size], res, top_rows))
            continue
        pos = x * res
        # Points at x = 1 fall into the last cell with fraction 1, not outside the grid.
        cell = pos.detach().floor().clamp(max=res - 1)
        frac = pos - cell  # (N, 3), differentiable w.r.t. x
        c = cell.long()[:, None, :] + corners[None]  # (N, 8, 3)
        index = (c[..., 0] * HASH_PRIMES[0]) ^ (c[..., 1] * HASH_PRIMES[1]) ^ (c[..., 2] * HASH_PRIMES[2])
        index = index & (size - 1)
        # Trilinear weights: prod_k (frac_k if bit_k else 1 - frac_k). Shape: (N, 8).
        bits = corners[None].to(x.dtype)
        weights = (bits * frac[:, None, :] + (1 - bits) * (1 - frac[:, None, :])).prod(dim=-1)
        features = embeddings[start + index]  # (N, 8, F)
        outputs.append((weights[..., None] * features).sum(dim=1))
    return torch.cat(outputs, dim=-1)
