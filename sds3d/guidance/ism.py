"""Interval Score Matching (ISM, LucidDreamer, Liang et al., CVPR 2024).

ISM replaces SDS's random noise target by the prior's own prediction one interval earlier on a
deterministic (DDIM-inversion) trajectory of x0 = x:

    x_s = DDIM-invert(x0 -> s) with eps_u,   at most xs_inv_steps steps of xs_delta_t,
    x_t = DDIM-invert-step(x_s, s -> t, eps_u(x_s, s)),   s = t - delta_t,
    g = w(t) (eps_hat(x_t, t) - eps_u(x_s, s)),

eps_hat = eps_u + scale (eps_c - eps_u) (``classifier_free_guidance``), the inversion predictions
eps_null + inversion_scale (eps_c - eps_null) with the empty prompt (LucidDreamer's inverse_text
"", not the negative prompt; inversion_scale 0: the unconditional prediction, LucidDreamer's
denoise_guidance_scale <= 1), w(t) the configured weighting (LucidDreamer: "ism",
sqrt((1 - abar_t) / abar_t)). As in the reference code, the inversion starts at
start = max(s - xs_delta_t * xs_inv_steps, 0) from x noised to it (``schedule.add_noise``),
delta_t anneals from delta_t_start to delta_t over [anneal_start, anneal_end] (100 -> 50 over the
warm-up), and t's bounds anneal with t_schedule (t_max 0.98 -> 0.5 over the warm-up).
Prior calls per step: the inversion steps to s (<= xs_inv_steps), one at (x_s, s), one CFG call
at (x_t, t).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from sds3d.cameras import Cameras
from sds3d.priors.base import Prior

from .config import GuidanceConfig
from .ddim_inversion import check_ddim_schedule, ddim_invert, pad_paths
from .distillation import ScoreDistillation, randn
from .prompts import PromptEmbeddings


def ism_paths(t: Tensor, s: Tensor, xs_delta_t: int, xs_inv_steps: int) -> list[list[int]]:
    """Per sample [start, start + xs_delta_t, ..., s, t], start = max(s - xs_delta_t * xs_inv_steps, 0)
    (steps of xs_delta_t, the last one cut at s, as LucidDreamer's add_noise_with_cfg)."""
    paths = []
    for t_b, s_b in zip(t.tolist(), s.tolist()):
        start = max(s_b - xs_delta_t * xs_inv_steps, 0)
        path = [start] + [min(start + k * xs_delta_t, s_b) for k in range(1, math.ceil((s_b - start) / xs_delta_t) + 1)]
        paths.append(path + [t_b])
    return paths


class ISMGuidance(ScoreDistillation):
    """ISM's g (module docstring) as loss_sds."""

    def __init__(self, cfg: GuidanceConfig, prior: Prior):
        super().__init__(cfg, prior)
        check_ddim_schedule(prior, "ism")
        self.null = self.text_condition("")  # the inversion's unconditional text

    def forward(self, rgb: Tensor, prompts: PromptEmbeddings, step: int, cameras: Cameras | None = None,
                generator: torch.Generator | None = None) -> dict[str, Tensor]:
        """ISM loss of renders ``rgb`` (entries as ``SDSGuidance.forward`` plus "delta_t", "s_mean";
        prior_calls 2 + the inversion steps)."""
        B = self.check_batch(rgb, prompts)
        c, schedule, calls = self.cfg, self.prior.schedule, self.prior.calls
        x = self.prior.encode_images(rgb)
        t, lo, hi = self.sample_timesteps(step, B, generator, x)
        eps = randn(x.shape, generator, x)
        delta_t = round(self.annealed(c.delta_t_start if c.delta_t_start is not None else c.delta_t, c.delta_t, step))
        s = (t - delta_t).clamp_min(0)
        cams = self.prior_cameras(cameras)
        with torch.no_grad():
            path = pad_paths(ism_paths(t, s, c.xs_delta_t, c.xs_inv_steps), device=x.device)
            x_start = schedule.add_noise(x.detach(), eps, path[0])

            def eps_inv(x_k: Tensor, t_k: Tensor) -> Tensor:
                return self.guided_eps(x_k, t_k, prompts.cond, self.null.expand(B), c.inversion_scale, cams)

            x_t, eps_s = ddim_invert(schedule, eps_inv, x_start, path)  # eps_s: the prediction at (x_s, s)
            eps_hat = self.guided_eps(x_t, t, prompts.cond, prompts.uncond, c.scale, cams).float()
            w = schedule.weight(t, c.weighting, like=eps_hat)
            g = w * (eps_hat - eps_s.float())
        return self.losses(x, g, step, calls, t_mean=t.float().mean(), t_lo=torch.tensor(float(lo)), t_hi=torch.tensor(float(hi)),
                           w_mean=w.mean(), delta_t=torch.tensor(float(delta_t)), s_mean=s.float().mean())
