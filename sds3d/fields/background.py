"""Backgrounds behind the NeRF: a solid colour, or a small MLP of the view direction (DreamFusion Sec. 3.1)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ..errors import UserError

BACKGROUND_KINDS = ("solid", "mlp")


class BackgroundConfigError(UserError):
    """A background setting is invalid (the message names the key and the allowed values)."""


@dataclass
class BackgroundConfig:
    """solid: the constant ``color``; mlp: sigmoid(MLP(frequency encoding of the direction)),
    initialised near ``color`` (threestudio's ``neural-environment-map-background``)."""

    kind: str = "solid"
    color: tuple[float, float, float] = (1.0, 1.0, 1.0)
    n_frequencies: int = 4
    hidden_dim: int = 16


def check_background_config(cfg: BackgroundConfig) -> None:
    """Raise BackgroundConfigError naming the first invalid setting of ``cfg``."""
    if cfg.kind not in BACKGROUND_KINDS:
        raise BackgroundConfigError(f"background.kind={cfg.kind!r} is unknown; use one of {', '.join(BACKGROUND_KINDS)}")
    if len(tuple(cfg.color)) != 3 or not all(0.0 <= c <= 1.0 for c in cfg.color):
        raise BackgroundConfigError(f"background.color={tuple(cfg.color)} must be three numbers in [0, 1], e.g. [1, 1, 1]")
    if cfg.n_frequencies < 0 or cfg.hidden_dim < 1:
        raise BackgroundConfigError("background.n_frequencies must be >= 0 and background.hidden_dim >= 1")


def frequency_encoding(x: Tensor, n_frequencies: int) -> Tensor:
    """NeRF positional encoding [x, sin(2^k pi x), cos(2^k pi x)]_k (Mildenhall et al. 2020, Eq. 4).

    Shape: (..., D) -> (..., D * (1 + 2 n_frequencies)).
    """
    freqs = (2.0 ** torch.arange(n_frequencies, dtype=x.dtype, device=x.device)) * math.pi
    angles = (x[..., None, :] * freqs[:, None]).flatten(-2)
    return torch.cat([x, torch.sin(angles), torch.cos(angles)], dim=-1)


class Background(nn.Module):
    """Maps unit ray directions (..., 3) to background rgb (..., 3) in [0, 1]."""

    def __init__(self, cfg: BackgroundConfig | None = None):
        super().__init__()
        cfg = BackgroundConfig() if cfg is None else cfg
        check_background_config(cfg)
        self.cfg = cfg
        self.register_buffer("color", torch.tensor(tuple(cfg.color), dtype=torch.float32))
        self.mlp = None
        if cfg.kind == "mlp":
            width = 3 * (1 + 2 * cfg.n_frequencies)
            self.mlp = nn.Sequential(nn.Linear(width, cfg.hidden_dim), nn.ReLU(inplace=True), nn.Linear(cfg.hidden_dim, 3))
            # Start at the configured colour: zero last weights, bias = logit(color).
            nn.init.zeros_(self.mlp[-1].weight)
            with torch.no_grad():
                self.mlp[-1].bias.copy_(torch.logit(self.color.clamp(1e-3, 1 - 1e-3)))

    def forward(self, dirs: Tensor) -> Tensor:
        if self.mlp is None:
            return self.color.to(dirs).expand(dirs.shape)
        flat = dirs.reshape(-1, 3)
        rgb = torch.sigmoid(self.mlp(frequency_encoding(flat, self.cfg.n_frequencies)))
        return rgb.reshape(dirs.shape)
