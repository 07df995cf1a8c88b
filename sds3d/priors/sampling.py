"""Sampling images from a prior with DDIM and classifier-free guidance (to check a prior, not for SDS)."""

from __future__ import annotations

import torch
from torch import Tensor

from .base import Prior


@torch.no_grad()
def mean_denoised(prior: Prior, x: Tensor, prompts: list[str], cameras: Tensor | None, guidance_scale: float,
                  t_fractions: tuple[float, ...], n: int = 16, seed: int = 0) -> list[Tensor]:
    """What SDS pulls x towards: the mean over n noise draws of the CFG one-step estimate
    x0_hat = (x_t - sqrt(1 - abar) eps_hat) / sqrt(abar), at t = f T for each f in ``t_fractions``.

    Args:
        x: images in the prior's space (``prior.encode_images``). Shape: (B, C, h, w).
        prompts: one text per image; cameras: (B, 2) (elevation, azimuth) degrees, used by
            camera-conditioned priors only.

    Returns:
        One mean x0_hat per fraction, each (B, C, h, w) in the prior's space.
    """
    g = torch.Generator().manual_seed(seed)
    B = x.shape[0]
    cond = prior.encode_prompts(prompts).repeat(n, 1, 1)  # sample-major, like x0 below
    uncond = prior.encode_prompts([""]).expand(B * n, -1, -1)
    cams = cameras.repeat(n, 1) if cameras is not None and prior.camera_conditioned else None
    x0 = x.repeat(n, 1, 1, 1)
    means = []
    for f in t_fractions:
        t = torch.full((B * n,), int(f * prior.num_train_timesteps), dtype=torch.long)
        abar = prior.alphas_cumprod[t].view(-1, 1, 1, 1)
        x_t = abar.sqrt() * x0 + (1 - abar).sqrt() * torch.randn(x0.shape, generator=g)  # DDPM Eq. 4
        eps_c, eps_u = prior.predict_noise(torch.cat([x_t, x_t]), torch.cat([t, t]), torch.cat([cond, uncond]),
                                           None if cams is None else torch.cat([cams, cams])).chunk(2)
        eps_hat = eps_u + guidance_scale * (eps_c - eps_u)
        x0_hat = (x_t - (1 - abar).sqrt() * eps_hat) / abar.sqrt()
        means.append(x0_hat.reshape(n, *x.shape).mean(0))
    return means


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
