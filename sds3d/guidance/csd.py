"""Classifier Score Distillation (CSD, Yu et al., ICLR 2024).

CSD keeps only the classifier term of the CFG score (the implicit classifier's gradient
grad log p(y | x_t) ~ -(eps_c - eps_u) / sigma_t), optionally with an annealed negative-prompt
term as in the authors' threestudio configs (cond 1, negative -a, null a - 1):

    g = w(t) [(eps_c - eps_u) + a (eps_u - eps_neg)],   a annealed csd_negative_scale -> _end,

with eps_c = eps(x_t; y), eps_u = eps(x_t; uncond) (the PromptProcessor's unconditional branch,
``guidance.negative_prompt``, "" by default) and eps_neg = eps(x_t; ``guidance.csd_negative_prompt``).
The guidance scale only scales g (it is a gradient step size here, not a CFG weight), so it is
not applied: use the learning rate or trainer.lambda_sds. With no negative prompt (or a = 0)
it is one prior call on [x_t] * 2, else on [x_t] * 3.
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


class CSDGuidance(ScoreDistillation):
    """CSD's g (module docstring) as loss_sds."""

    def __init__(self, cfg: GuidanceConfig, prior: Prior):
        super().__init__(cfg, prior)
        self.negative = self.text_condition(cfg.csd_negative_prompt) if cfg.csd_negative_prompt else None

    def forward(self, rgb: Tensor, prompts: PromptEmbeddings, step: int, cameras: Cameras | None = None,
                generator: torch.Generator | None = None) -> dict[str, Tensor]:
        """CSD loss of renders ``rgb`` (shapes and entries as ``SDSGuidance.forward``, plus
        "csd_negative_scale"; prior_calls 1)."""
        B = self.check_batch(rgb, prompts)
        c, schedule, calls = self.cfg, self.prior.schedule, self.prior.calls
        x = self.prior.encode_images(rgb)
        t, lo, hi = self.sample_timesteps(step, B, generator, x)
        eps = randn(x.shape, generator, x)
        a = self.annealed(c.csd_negative_scale, c.csd_negative_scale_end, step) if self.negative is not None else 0.0
        with torch.no_grad():
            x_t = schedule.add_noise(x.detach(), eps, t)
            parts = [prompts.cond, prompts.uncond] + ([self.negative.expand(B)] if a else [])
            n = len(parts)
            out = self.prior.predict_eps(x_t.repeat(n, 1, 1, 1), t.repeat(n), Condition.cat(parts),
                                         rows(torch.arange(B).repeat(n), self.prior_cameras(cameras))).float().chunk(n)
            eps_c, eps_u = out[0], out[1]
            direction = eps_c - eps_u
            if a:
                direction = direction + a * (eps_u - out[2])
            w = schedule.weight(t, c.weighting, like=direction)
            g = w * direction
        return self.losses(x, g, step, calls, t_mean=t.float().mean(), t_lo=torch.tensor(float(lo)),
                           t_hi=torch.tensor(float(hi)), w_mean=w.mean(), csd_negative_scale=torch.tensor(float(a)))
