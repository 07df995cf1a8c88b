"""Consistency Distillation Sampling (CDS, Consistent3D, Wu et al., CVPR 2024).

CDS samples two adjacent points of the probability-flow ODE from the render and lets the less
noisy one guide the noisier one. With one fixed noise eps* for the whole run (drawn at the first
step, shared by all views), the less noisy time t - Delta drawn from the t schedule (as the
authors' code draws its t_next, clamped to >= 0.1 T there) and Delta ~ U{cds_delta_t}, t clamped
to T - 1:

    x_t = alpha_t x + sigma_t eps*                           (``schedule.add_noise``),
    x_{t-Delta} = DDIM-step(x_t, t -> t - Delta, eps_hat(x_t, t))   (one Euler step of the ODE),
    g = w(t) (eps_hat(x_t, t) - eps_hat(x_{t-Delta}, t - Delta)),

eps_hat = eps_u + scale (eps_c - eps_u) at both points. SDS is the same with eps_hat(x_{t-Delta})
replaced by the noise eps: CDS compares the prior with itself one ODE step later instead of with
a random draw. This is the authors' implementation (threestudio stable_diffusion_guidance.py,
loss_type "consistency" with recon_std_rescale 0, where its first term vanishes); their configs
use weighting "uniform", CFG 100 -> 50 in threestudio's convention (ours 101 -> 51), a clip of
g by value annealed 2 -> 8 and Delta ~ U[100, 300). Prior calls per step: 2 (one CFG call at
each point).
"""

from __future__ import annotations

import torch
from torch import Tensor

from sds3d.cameras import Cameras
from sds3d.priors.base import Prior

from .config import GuidanceConfig
from .ddim_inversion import check_ddim_schedule
from .distillation import ScoreDistillation, randint, randn
from .prompts import PromptEmbeddings


class CDSGuidance(ScoreDistillation):
    """CDS's g (module docstring) as loss_sds. eps* is a buffer: in the checkpoint, so resume is exact."""

    def __init__(self, cfg: GuidanceConfig, prior: Prior):
        super().__init__(cfg, prior)
        check_ddim_schedule(prior, "cds")
        self.register_buffer("eps_star", torch.zeros(prior.latent_shape))
        self.register_buffer("eps_star_drawn", torch.tensor(False))

    def forward(self, rgb: Tensor, prompts: PromptEmbeddings, step: int, cameras: Cameras | None = None,
                generator: torch.Generator | None = None) -> dict[str, Tensor]:
        """CDS loss of renders ``rgb`` (entries as ``SDSGuidance.forward``, t_lo / t_hi bounding t - Delta, plus
        "delta_t"; prior_calls 2)."""
        B = self.check_batch(rgb, prompts)
        c, schedule, calls = self.cfg, self.prior.schedule, self.prior.calls
        x = self.prior.encode_images(rgb)
        t_prev, lo, hi = self.sample_timesteps(step, B, generator, x)
        delta = randint(int(c.cds_delta_t[0]), int(c.cds_delta_t[1]), B, generator, x)
        t = (t_prev + delta).clamp_max(self.prior.num_train_timesteps - 1)
        if not bool(self.eps_star_drawn):
            self.eps_star.copy_(randn(self.eps_star.shape, generator, self.eps_star))
            self.eps_star_drawn.fill_(True)
        cams = self.prior_cameras(cameras)
        with torch.no_grad():
            eps_star = self.eps_star.to(x.device, x.dtype).expand_as(x)
            x_t = schedule.add_noise(x.detach(), eps_star, t)
            eps_hat_t = self.guided_eps(x_t, t, prompts.cond, prompts.uncond, c.scale, cams)
            x_prev = schedule.ddim_step(x_t, t, t_prev, eps_hat_t)
            eps_hat_prev = self.guided_eps(x_prev, t_prev, prompts.cond, prompts.uncond, c.scale, cams)
            w = schedule.weight(t, c.weighting, like=eps_hat_t)
            g = w * (eps_hat_t.float() - eps_hat_prev.float())
        return self.losses(x, g, step, calls, t_mean=t.float().mean(), t_lo=torch.tensor(float(lo)), t_hi=torch.tensor(float(hi)),
                           w_mean=w.mean(), delta_t=delta.float().mean())
