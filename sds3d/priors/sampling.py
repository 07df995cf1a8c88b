"""Sampling images from a prior with DDIM and classifier-free guidance (to check a prior, not for SDS)."""

from __future__ import annotations

import torch
from torch import Tensor

from .base import Prior


@torch.no_grad()
def sample_images(prior: Prior, prompts: list[str], guidance_scale: float = 3.0, num_inference_steps: int = 50,
                  generator: torch.Generator | None = None, negative_prompt: str = "",
                  cameras: Tensor | None = None) -> Tensor:
    """DDIM (Song et al. 2021, eta = 0) with CFG eps_hat = eps_u + s (eps_c - eps_u) (Ho & Salimans 2022).

    ``cameras`` ((elevation, azimuth) degrees, (len(prompts), 2)) conditions a camera-conditioned prior.

    Returns:
        Images in [0, 1]. Shape: (len(prompts), 3, R, R), R = prior.resolution.
    """
    from diffusers import DDIMScheduler

    scheduler = DDIMScheduler.from_config(prior.scheduler_config)
    scheduler.set_timesteps(num_inference_steps)
    B = len(prompts)
    cond = prior.encode_prompts(prompts)
    uncond = prior.encode_prompts([negative_prompt]).expand_as(cond)
    embeddings = torch.cat([cond, uncond])
    channels = prior.unet.config.in_channels
    side = prior.resolution // getattr(prior, "vae_scale_factor", 1) if prior.latent else prior.resolution
    x = torch.randn((B, channels, side, side), generator=generator).to(prior.device)
    for t in scheduler.timesteps:
        tt = torch.full((2 * B,), int(t), device=prior.device, dtype=torch.long)
        cams = None if cameras is None else torch.cat([cameras, cameras])
        eps_c, eps_u = prior.predict_noise(torch.cat([x, x]), tt, embeddings, cams).chunk(2)
        eps_hat = eps_u + guidance_scale * (eps_c - eps_u)
        x = scheduler.step(eps_hat, t, x).prev_sample
    return prior.decode(x)
