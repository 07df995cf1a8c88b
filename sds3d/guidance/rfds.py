"""Rectified Flow Distillation Sampling: RFDS and RFDS-Rev (Yang et al., "Text-to-Image Rectified
Flow as Plug-and-Play Priors", ICLR 2025), as the reference implementation computes them
(github.com/yangxiaofeng/rectified_flow_prior, threestudio/models/guidance/RFDS_sd3.py and
RFDS_Rev_sd3.py).

RFDS: t ~ U{lo..hi}, eps ~ N(0, I), x_t = (1 - sigma) x + sigma eps, v_hat the CFG velocity (one
batched call), a random weight w = sigmoid(u), u ~ N(0, 1) per sample, and

    loss = mean(w) * mean_elements((eps - x - sg(v_hat))^2) / B,

whose gradient w.r.t. x is 2 mean(w) (v_hat - (eps - x)) / (B * numel(x)): the flow-SDS residual
(flow_sds.py) with the reference's weight and normalisation (its loss is
``weights * F.mse_loss(noise - latents, target, reduction="mean") / batch_size``, averaged; with
its batch size 1, mean(w) is the sample's own w).

RFDS-Rev first inverts the noise: one conditional call v = v_c(x_t, t) (no CFG), then
eps' = x_t + (1 - sigma) v, the noise end of the straight flow through (x_t, v)
(``schedule.invert_step`` to t = T - 1; the reference writes it eps + (1 - sigma)(v + x - eps)),
x_t' = (1 - sigma) x + sigma eps', and RFDS's residual at x_t' without the random weight:

    loss = mean_elements((eps' - x - sg(v_hat(x_t')))^2) / B.

Two prior calls per step (the inversion's B rows, then the CFG batch). guidance.weighting is not
used (the reference has its own weights); neither is a gradient clip (the reference computes none).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from sds3d.cameras import Cameras
from sds3d.priors.base import Prior

from .config import GuidanceConfig, GuidanceConfigError
from .flow_sds import FlowSDSGuidance, randn
from .prompts import PromptEmbeddings


class RFDSGuidance(FlowSDSGuidance):
    """RFDS (module docstring): the CFG velocity residual at x_t with a random sigmoid(N(0, 1)) weight."""

    method = "rfds"

    def __init__(self, cfg: GuidanceConfig, prior: Prior):
        super().__init__(cfg, prior)
        if cfg.grad_clip is not None:
            raise GuidanceConfigError(f"guidance.grad_clip is not used by guidance.method={self.method} (the reference clips "
                                      f"nothing); set guidance.grad_clip=null")

    def noise(self, x: Tensor, t: Tensor, eps: Tensor, prompts: PromptEmbeddings, cameras: Cameras | None) -> Tensor:
        """The noise the residual is taken against: eps itself (RFDS-Rev inverts it first)."""
        return eps

    def weights(self, n: int, generator: torch.Generator | None, like: Tensor) -> Tensor:
        """w = sigmoid(u), u ~ N(0, 1) per sample (the reference's ``weighting``)."""
        return torch.sigmoid(randn((n,), generator, like))

    def forward(self, rgb: Tensor, prompts: PromptEmbeddings, step: int, cameras: Cameras | None = None,
                generator: torch.Generator | None = None) -> dict[str, Tensor]:
        """The RFDS loss of renders ``rgb`` (B, 3, H, W) in [0, 1].

        Returns:
            "loss_sds" (the module docstring's loss), detached "sds_grad_norm" (mean per-sample
            ||v_hat - (eps - x)||), "nonfinite_frac" (of v_hat, set to 0), "t_mean", "sigma_mean",
            "t_lo", "t_hi", "w_mean", "prior_calls" (1; RFDS-Rev 2).
        """
        schedule, calls = self.prior.schedule, self.prior.calls
        x, t, eps, lo, hi = self.sample(rgb, prompts, step, generator)
        B = x.shape[0]
        with torch.no_grad():
            x0 = x.detach()
            eps = self.noise(x0, t, eps, prompts, cameras).float()
            v_hat = self.guided_velocity(schedule.add_noise(x0, eps.to(x0.dtype), t), t, prompts, cameras)
            nonfinite = (~torch.isfinite(v_hat)).float().mean()
            v_hat = torch.nan_to_num(v_hat)
            w = self.weights(B, generator, v_hat)
        x32 = x.float()
        loss = w.mean() * F.mse_loss(eps - x32, v_hat, reduction="mean") / B
        residual = v_hat - (eps - x32.detach())
        return {"loss_sds": loss, "sds_grad_norm": residual.flatten(1).norm(dim=1).mean(), "nonfinite_frac": nonfinite,
                **self.diagnostics(t, lo, hi, w, calls)}


class RFDSRevGuidance(RFDSGuidance):
    """RFDS-Rev (module docstring): the noise inverted through the conditional velocity first, no random weight."""

    method = "rfds_rev"

    def noise(self, x: Tensor, t: Tensor, eps: Tensor, prompts: PromptEmbeddings, cameras: Cameras | None) -> Tensor:
        """eps' = x_t + (1 - sigma_t) v_c(x_t, t): one conditional prior call (B rows)."""
        schedule = self.prior.schedule
        x_t = schedule.add_noise(x, eps, t)
        cameras = cameras if self.prior.camera_conditioned else None
        v = self.prior.predict_guided(x_t, t, prompts.cond, None, 1.0, cameras)
        return schedule.invert_step(x_t, t, torch.full_like(t, schedule.num_train_timesteps - 1), v)

    def weights(self, n: int, generator: torch.Generator | None, like: Tensor) -> Tensor:
        return torch.ones(n, device=like.device, dtype=like.dtype)
