"""Sampling images from a prior with its schedule's deterministic sampler (DDIM; Euler for flow
priors) and classifier-free guidance (to check a prior, not for SDS)."""

from __future__ import annotations

import torch
from torch import Tensor

from sds3d.cameras import Cameras

from .base import Prior


@torch.no_grad()
def mean_denoised(prior: Prior, x: Tensor, prompts: list[str], cameras: Cameras | None, guidance_scale: float,
                  t_fractions: tuple[float, ...], n: int = 16, seed: int = 0) -> list[Tensor]:
    """What SDS pulls x towards: the mean over n noise draws of the CFG one-step estimate x0-hat
    (``schedule.to_x0`` of the guided output) of x_t ~ q(x_t | x), at t = f T for each f in ``t_fractions``.

    Args:
        x: images in the prior's space (``prior.encode_images``). Shape: (B, C, h, w).
        prompts: one text per image; cameras: one per image (B cameras), used by camera-conditioned
            priors only.

    Returns:
        One mean x0-hat per fraction, each (B, C, h, w) in the prior's space.
    """
    g = torch.Generator().manual_seed(seed)
    B, schedule = x.shape[0], prior.schedule
    cond = prior.encode_prompts(prompts).repeat(n)  # sample-major, like x0 below
    uncond = prior.encode_prompts([""]).expand(B * n)
    cams = cameras[torch.arange(B).repeat(n)] if cameras is not None and prior.camera_conditioned else None
    x0 = x.repeat(n, 1, 1, 1)
    means = []
    for f in t_fractions:
        t = torch.full((B * n,), int(f * prior.num_train_timesteps), dtype=torch.long)
        x_t = schedule.add_noise(x0, torch.randn(x0.shape, generator=g), t)
        x0_hat = schedule.to_x0(prior.predict_guided(x_t, t, cond, uncond, guidance_scale, cams), x_t, t)
        means.append(x0_hat.reshape(n, *x.shape).mean(0))
    return means


@torch.no_grad()
def sample_images(prior: Prior, prompts: list[str], guidance_scale: float = 3.0, num_inference_steps: int = 50,
                  generator: torch.Generator | None = None, negative_prompt: str = "",
                  cameras: Cameras | None = None) -> Tensor:
    """The schedule's sampler (``schedule.step``: DDIM, Song et al. 2021, eta = 0; Euler for a flow
    schedule, on FlowMatchEulerDiscreteScheduler's sigmas) with classifier-free guidance (a
    guidance-distilled prior: ``guidance_scale`` in its guidance embedding; ``Prior.predict_guided``).

    ``cameras`` (one per prompt) condition a camera-conditioned prior.

    Returns:
        Images in [0, 1]. Shape: (len(prompts), 3, R, R), R = prior.resolution.
    """
    schedule = prior.schedule
    B = len(prompts)
    cond = prior.encode_prompts(prompts)
    uncond = prior.encode_prompts([negative_prompt]).expand(B)
    x = torch.randn((B, *prior.latent_shape), generator=generator).to(prior.device)
    for t, t_prev in zip(*schedule.ddim_timesteps(num_inference_steps)):
        tt, tt_prev = t.repeat(B).to(prior.device), t_prev.repeat(B).to(prior.device)
        x = schedule.step(x, tt, tt_prev, prior.predict_guided(x, tt, cond, uncond, guidance_scale, cameras))
    return prior.decode(x)
