"""Pure-PyTorch twins of the custom kernels in ``cuda_ext/`` (the reference implementations).

Every kernel of ``sds3d.cuda_ext`` has a function here with the same name and a leading
underscore; tests compare outputs and gradients of the two (gsplat's convention).
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


def _gather_dense_level(x: Tensor, table: Tensor, res: int) -> Tensor:
    """Reference for one dense level by explicit corner gathering (used by tests). (N, 3) -> (N, F)."""
    corners = _CORNERS.to(x.device)
    pos = x.clamp(0.0, 1.0) * res
    cell = pos.detach().floor().clamp(max=res - 1)
    frac = pos - cell
    c = cell.long()[:, None, :] + corners[None]
    index = c[..., 0] + (res + 1) * (c[..., 1] + (res + 1) * c[..., 2])
    bits = corners[None].to(x.dtype)
    weights = (bits * frac[:, None, :] + (1 - bits) * (1 - frac[:, None, :])).prod(dim=-1)
    return (weights[..., None] * table[index]).sum(dim=1)


def _hash_grid_encode(x: Tensor, embeddings: Tensor, offsets: Tensor, resolutions: Tensor) -> Tensor:
    """Multi-resolution hash encoding (Instant-NGP, Mueller et al. 2022, Sec. 3).

    Level l has ``resolutions[l]`` cells per axis and the table rows
    ``embeddings[offsets[l]:offsets[l+1]]``. Vertices are indexed densely while they fit
    (``level_is_dense``), else by the spatial hash ``xor_i(c_i * pi_i) mod T`` (T a power of two).
    Features at the 8 voxel corners are interpolated trilinearly.

    Args:
        x: positions, clamped to [0, 1]. Shape: (N, 3).
        embeddings: feature tables of all levels. Shape: (offsets[-1], F).
        offsets: first table row of each level, plus the total. Shape: (L + 1,) int64.
        resolutions: cells per axis of each level. Shape: (L,) int64.

    Returns:
        Concatenated features of all levels, level-major. Shape: (N, L * F).
    """
    x = x.clamp(0.0, 1.0)
    corners = _CORNERS.to(x.device)
    outputs = []
    for level in range(resolutions.shape[0]):
        res = int(resolutions[level])
        start, size = int(offsets[level]), int(offsets[level + 1] - offsets[level])
        if level_is_dense(res, size):
            # Dense level: the same trilinear interpolation of vertex features, done by
            # grid_sample's fused CPU/CUDA kernel (~8x faster than gathering 8 corners here).
            # Row c0 + (R+1) (c1 + (R+1) c2) of the table is voxel [c2, c1, c0] of the volume.
            volume = embeddings[start : start + (res + 1) ** 3].T.reshape(1, -1, res + 1, res + 1, res + 1)
            grid = (x * 2.0 - 1.0).reshape(1, 1, 1, -1, 3)
            sampled = torch.nn.functional.grid_sample(volume, grid, mode="bilinear", align_corners=True)
            outputs.append(sampled.reshape(volume.shape[1], -1).T)
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
