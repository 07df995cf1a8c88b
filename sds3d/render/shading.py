"""Shading modes of DreamFusion (Sec. 3.1) and the light used for them (stateless functions)."""

from __future__ import annotations

import torch
from torch import Tensor

from ..cameras import Cameras
from .config import SHADINGS, RenderConfig, RenderConfigError


def sample_shading(cfg: RenderConfig, generator: torch.Generator | None = None) -> str:
    """Draw this step's shading mode with probabilities ``cfg.shading_probs``."""
    names = [s for s in SHADINGS if s in cfg.shading_probs]
    probs = torch.tensor([float(cfg.shading_probs[s]) for s in names])
    if probs.sum() <= 0:
        raise RenderConfigError(f"render.shading_probs={dict(cfg.shading_probs)} must have a positive sum")
    return names[int(torch.multinomial(probs, 1, generator=generator))]


def light_directions(cfg: RenderConfig, cameras: Cameras, generator: torch.Generator | None = None) -> Tensor:
    """Unit directions towards the light per view, world frame. Shape: (B, 3).

    fixed: ``cfg.light_direction``; random: normalize(c + light_perturb * eps), eps ~ N(0, I),
    c the camera position (threestudio's DreamFusion light sampling: the light is near the camera).
    """
    pos = cameras.position
    if cfg.light == "fixed":
        l = torch.tensor(tuple(cfg.light_direction), dtype=pos.dtype, device=pos.device)
        return torch.nn.functional.normalize(l, dim=0).expand_as(pos)
    device = generator.device if generator is not None else pos.device
    eps = torch.randn(pos.shape, generator=generator, device=device, dtype=pos.dtype).to(pos.device)
    return torch.nn.functional.normalize(pos + cfg.light_perturb * eps, dim=-1)


def shade(albedo: Tensor, normals: Tensor | None, light_dir: Tensor | None, shading: str, ambient: float, diffuse: float) -> Tensor:
    """Per-sample colour (DreamFusion Sec. 3.1).

    albedo: rgb = albedo; lambertian: albedo * (ambient + diffuse * max(0, n . l));
    textureless: the same with albedo := white.

    Args:
        albedo: (..., 3). normals: unit, (..., 3). light_dir: unit, broadcastable to (..., 3).
    """
    if shading == "albedo":
        return albedo
    if shading not in SHADINGS:
        raise RenderConfigError(f"shading={shading!r} is unknown; use one of {', '.join(SHADINGS)}")
    n_dot_l = (normals * light_dir).sum(-1, keepdim=True).clamp(min=0.0)
    light = ambient + diffuse * n_dot_l
    return light.expand_as(albedo) if shading == "textureless" else albedo * light
