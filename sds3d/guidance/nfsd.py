"""Noise-Free Score Distillation (NFSD, Katzir, Patashnik, Cohen-Or and Lischinski, ICLR 2024).

NFSD splits the CFG score into a condition direction delta_C and a domain direction delta_D and
drops the noise that SDS subtracts:

    delta_C = eps_c - eps_u,
    delta_D = eps_u                    for t <  t_threshold (200 of 1000),
              eps_u - eps_neg          for t >= t_threshold,
    g = w(t) (delta_D + s delta_C),

with eps_c = eps(x_t; y), eps_u = eps(x_t; null) (the PromptProcessor's unconditional branch,
``guidance.negative_prompt``, "" by default), eps_neg = eps(x_t; y_neg) for the paper's negative
prompt (``guidance.nfsd_negative_prompt``). For small t, eps_u is the denoising direction (the
image is in-domain, the noise term is small); above, eps_u - eps_neg points from "unrealistic,
blurry, ..." images towards real ones. One prior call on [x_t] * 3 with [cond, uncond, neg].
"""

from __future__ import annotations

import torch
from torch import Tensor

from sds3d.cameras import Cameras
from sds3d.priors.base import Prior
from sds3d.priors.condition import Condition

from .config import GuidanceConfig
from .distillation import ScoreDistillation, randn, rows
from .prompts import PromptEmbeddings


class NFSDGuidance(ScoreDistillation):
    """NFSD's g (module docstring) as loss_sds; eps_neg's prompt is encoded once here."""

    def __init__(self, cfg: GuidanceConfig, prior: Prior):
        super().__init__(cfg, prior)
        self.negative = self.text_condition(cfg.nfsd_negative_prompt)  # y_neg, one row

    def forward(self, rgb: Tensor, prompts: PromptEmbeddings, step: int, cameras: Cameras | None = None,
                generator: torch.Generator | None = None) -> dict[str, Tensor]:
        """NFSD loss of renders ``rgb`` (shapes and entries as ``SDSGuidance.forward``; prior_calls 1)."""
        B = self.check_batch(rgb, prompts)
        c, schedule, calls = self.cfg, self.prior.schedule, self.prior.calls
        x = self.prior.encode_images(rgb)
        t, lo, hi = self.sample_timesteps(step, B, generator, x)
        eps = randn(x.shape, generator, x)
        with torch.no_grad():
            x_t = schedule.add_noise(x.detach(), eps, t)
            conds = Condition.cat([prompts.cond, prompts.uncond, self.negative.expand(B)])
            eps_c, eps_u, eps_neg = self.prior.predict_eps(
                x_t.repeat(3, 1, 1, 1), t.repeat(3), conds, rows(torch.arange(B).repeat(3), self.prior_cameras(cameras))
            ).float().chunk(3)
            delta_C = eps_c - eps_u
            small_t = (t < round(c.nfsd_t_threshold * self.prior.num_train_timesteps)).view(-1, 1, 1, 1)
            delta_D = torch.where(small_t, eps_u, eps_u - eps_neg)
            w = schedule.weight(t, c.weighting, like=delta_C)
            g = w * (delta_D + c.scale * delta_C)
        return self.losses(x, g, step, calls, t_mean=t.float().mean(), t_lo=torch.tensor(float(lo)),
                           t_hi=torch.tensor(float(hi)), w_mean=w.mean())
