"""Score Distillation via Inversion (SDI, "Score Distillation via Reparametrized DDIM",
Lukoianov et al., NeurIPS 2024).

SDS's noise is a random draw; SDI takes the noise that DDIM inversion of the render gives, so
x_t lies on (near) the deterministic sampling trajectory through x, and pulls x to that
trajectory's one-step estimate:

    x_t = DDIM-invert(x -> t) with eps_inv = eps_u + inversion_scale (eps_c - eps_u),
          over the DDIM grid of inversion_steps steps below t, then one step to t, each step
          plus inversion_eta * DDIM's posterior std of noise,
    x0_hat = schedule.to_x0(eps_u + scale (eps_c - eps_u) at (x_t, t)),
    loss = 0.5 ||x - sg(x0_hat)||^2,   g = x - x0_hat = (sigma_t / alpha_t)(eps_hat - kappa),

kappa = (x_t - alpha_t x) / sigma_t being the inverted noise (so SDI is SDS with eps := kappa and
w(t) = sigma_t / alpha_t; ``guidance.weighting`` does not apply). Settings as in the authors'
threestudio config (sdi.yaml): inversion_steps 10, inversion_eta 0.3, their CFG scales 7.5 and
-7.5 for inversion in threestudio's convention eps_c + s (eps_c - eps_u), i.e. ours 8.5 and
-6.5. Unlike threestudio's guidance, the last inversion step lands on t itself (threestudio
inverts to t + delta, delta ~ U[0, T / n), and evaluates the prior at t on that latent).
Prior calls per step: one per inversion step (the clean end to the first grid point, the grid
points below t, the last one to t: <= inversion_steps + 1) and one at (x_t, t).
"""

from __future__ import annotations

import torch
from torch import Tensor

from sds3d.cameras import Cameras
from sds3d.priors.base import Prior

from .config import GuidanceConfig
from .ddim_inversion import check_ddim_schedule, ddim_invert, pad_paths
from .distillation import ScoreDistillation
from .prompts import PromptEmbeddings


def sdi_paths(t: Tensor, grid: list[int], t_clean: int) -> list[list[int]]:
    """Per sample [t_clean, the grid points below t ..., t] (the DDIM grid ascending, t_clean < 0 the clean end)."""
    return [[t_clean] + [g for g in grid if g < t_b] + [t_b] for t_b in t.tolist()]


class SDIGuidance(ScoreDistillation):
    """SDI's loss (module docstring) as loss_sds."""

    def __init__(self, cfg: GuidanceConfig, prior: Prior):
        super().__init__(cfg, prior)
        check_ddim_schedule(prior, "sdi")
        t_grid, t_prev = prior.schedule.ddim_timesteps(cfg.inversion_steps)
        self.grid = sorted(int(v) for v in t_grid)  # ascending DDIM timesteps
        self.t_clean = int(t_prev.min())  # before the first grid point: the clean end (negative t)

    def forward(self, rgb: Tensor, prompts: PromptEmbeddings, step: int, cameras: Cameras | None = None,
                generator: torch.Generator | None = None) -> dict[str, Tensor]:
        """SDI loss of renders ``rgb`` (entries as ``SDSGuidance.forward`` but w_mean; prior_calls
        1 + the inversion steps)."""
        B = self.check_batch(rgb, prompts)
        c, schedule, calls = self.cfg, self.prior.schedule, self.prior.calls
        x = self.prior.encode_images(rgb)
        t, lo, hi = self.sample_timesteps(step, B, generator, x)
        cams = self.prior_cameras(cameras)
        with torch.no_grad():
            path = pad_paths(sdi_paths(t, self.grid, self.t_clean), device=x.device)

            def eps_inv(x_k: Tensor, t_k: Tensor) -> Tensor:
                return self.guided_eps(x_k, t_k, prompts.cond, prompts.uncond, c.inversion_scale, cams)

            x_t, _ = ddim_invert(schedule, eps_inv, x.detach(), path, eta=c.inversion_eta, generator=generator)
            x0_hat = schedule.to_x0(self.guided_output(x_t, t, prompts.cond, prompts.uncond, c.scale, cams), x_t, t)
            g = x.detach().float() - x0_hat.float()
        return self.losses(x, g, step, calls, t_mean=t.float().mean(), t_lo=torch.tensor(float(lo)), t_hi=torch.tensor(float(hi)))
