"""Sampling images from a prior with DDIM and classifier-free guidance (to check a prior, not for SDS)."""

from __future__ import annotations

import torch
from torch import Tensor

from sds3d.cameras import Cameras

from .base import Prior
from .condition import Condition
from .schedule import classifier_free_guidance


def _twice(cameras: Cameras | None) -> Cameras | None:
    """The cameras of a [cond, uncond] batch: the same camera in both halves."""
    return None if cameras is None else cameras[torch.arange(len(cameras)).repeat(2)]


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
    both = Condition.cat([cond, uncond])
    cams = _twice(cameras[torch.arange(B).repeat(n)]) if cameras is not None and prior.camera_conditioned else None
    x0 = x.repeat(n, 1, 1, 1)
    means = []
    for f in t_fractions:
        t = torch.full((B * n,), int(f * prior.num_train_timesteps), dtype=torch.long)
        x_t = schedule.add_noise(x0, torch.randn(x0.shape, generator=g), t)
        out_c, out_u = prior.predict(torch.cat([x_t, x_t]), torch.cat([t, t]), both, cams).chunk(2)
        x0_hat = schedule.to_x0(classifier_free_guidance(out_u, out_c, guidance_scale), x_t, t)
        means.append(x0_hat.reshape(n, *x.shape).mean(0))
    return means


@torch.no_grad()
def sample_images(prior: Prior, prompts: list[str], guidance_scale: float = 3.0, num_inference_steps: int = 50,
                  generator: torch.Generator | None = None, negative_prompt: str = "",
                  cameras: Cameras | None = None) -> Tensor:
    """DDIM (Song et al. 2021, eta = 0; ``schedule.ddim_step``) with classifier-free guidance.

    ``cameras`` (one per prompt) condition a camera-conditioned prior.

    Returns:
        Images in [0, 1]. Shape: (len(prompts), 3, R, R), R = prior.resolution.
    """
    schedule = prior.schedule
    B = len(prompts)
    cond = prior.encode_prompts(prompts)
    both = Condition.cat([cond, prior.encode_prompts([negative_prompt]).expand(B)])
    cams = _twice(cameras)
    x = torch.randn((B, *prior.latent_shape), generator=generator).to(prior.device)
    for t, t_prev in zip(*schedule.ddim_timesteps(num_inference_steps)):
        tt = torch.full((B,), int(t), device=prior.device, dtype=torch.long)
        out_c, out_u = prior.predict(torch.cat([x, x]), torch.cat([tt, tt]), both, cams).chunk(2)
        eps_hat = schedule.to_eps(classifier_free_guidance(out_u, out_c, guidance_scale), x, tt)
        x = schedule.ddim_step(x, tt, torch.full_like(tt, int(t_prev)), eps_hat)
    return prior.decode(x)
