"""Score distillation for velocity (rectified-flow / flow-matching) priors: SDS written in the
velocity the prior predicts (SD3, Flux, the toy flow prior).

Variable names: x (the render in the prior's space), t, sigma (sigma_t of the flow), eps, x_t =
(1 - sigma) x + sigma eps, v_hat (the guided velocity), w, g.

The weighting, derived: the flow schedule's eps-hat from a velocity is eps_hat = x_t + (1 - sigma)
v_hat, and the true noise satisfies eps = x_t + (1 - sigma)(eps - x), so

    eps_hat - eps = (1 - sigma) (v_hat - (eps - x))

exactly. DreamFusion's gradient w(t) (eps_hat - eps) (Poole et al. 2022, Eq. 3) is therefore

    g = w(t) (1 - sigma_t) (v_hat - (eps - x)),

the velocity residual weighted by w(t)(1 - sigma_t), where (1 - sigma_t) = d eps_hat / d v_hat and
w(t) is ``schedule.weight`` (sds: sigma_t^2, DreamFusion's 1 - abar_t = sigma_t^2 of the DDPM
family written in this process's sigma). In x0 terms (x0_hat = x_t - sigma v_hat,
v_hat - (eps - x) = (x - x0_hat) / sigma) this is g = sigma_t (1 - sigma_t)(x - x0_hat) =
alpha_t sigma_t (x - x0_hat), SDS's pull towards the one-step denoised image. It equals
``guidance.method=sds`` on the same flow prior (tested); RFDS (rfds.py) is the same residual
with the reference's random weight instead of w(t)(1 - sigma_t).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from sds3d.cameras import Cameras
from sds3d.priors.base import Prior
from sds3d.priors.schedule import FLOW_PREDICTION

from .base import Guidance
from .config import GuidanceConfig, GuidanceConfigError, check_guidance_config
from .prompts import PromptEmbeddings, PromptError


def randn(shape, generator: torch.Generator | None, like: Tensor) -> Tensor:
    """Standard normal noise from ``generator`` (on its device), in the dtype and on the device of ``like``."""
    device = generator.device if generator is not None else like.device
    return torch.randn(shape, generator=generator, device=device, dtype=torch.float32).to(like.device, like.dtype)


class FlowSDSGuidance(Guidance):
    """SDS for a flow prior: g = w(t) (1 - sigma_t) (v_hat - (eps - x)) (module docstring).

    Per step: x = prior.encode_images(rgb) (differentiable); t ~ U{lo..hi} (the annealed bounds,
    per sample); eps ~ N(0, I); x_t = schedule.add_noise(x, eps, t); ONE prior call under no_grad,
    v_hat = prior.predict_guided(x_t, t, cond, uncond, s) (CFG batched on [x_t, x_t]; a
    guidance-distilled prior: s in its guidance embedding, one row per view); g as above with
    non-finite entries set to 0 and the optional clip (guidance.grad_clip);

        loss_sds = 0.5 * sum_i ||x_i - sg(x_i - g_i)||^2 / B,   d loss_sds / d x_i = g_i / B.

    Raises:
        GuidanceConfigError: the prior is not a flow prior, or Perp-Neg is asked for.
    """

    method = "flow_sds"

    def __init__(self, cfg: GuidanceConfig, prior: Prior):
        super().__init__(prior)
        check_guidance_config(cfg)
        if prior.schedule.prediction_type != FLOW_PREDICTION:
            raise GuidanceConfigError(f"guidance.method={self.method} needs a flow-matching prior (SD3, Flux, toy-flow); this prior "
                                      f"predicts {prior.schedule.prediction_type!r}: use guidance.method=sds")
        if cfg.perp_neg:
            raise GuidanceConfigError(f"guidance.perp_neg is not implemented for guidance.method={self.method}; set guidance.perp_neg=false")
        self.cfg = cfg
        for p in prior.parameters():
            p.requires_grad_(False)

    def sample(self, rgb: Tensor, prompts: PromptEmbeddings, step: int, generator: torch.Generator | None):
        """x (with grad), t, eps and the bounds of one step."""
        B = rgb.shape[0]
        if len(prompts) != B:
            raise PromptError(f"got {len(prompts)} prompt embeddings for {B} renders; build them from the same cameras")
        x = self.prior.encode_images(rgb)
        lo, hi = self.timestep_bounds(step)
        t_device = generator.device if generator is not None else x.device
        t = torch.randint(lo, hi + 1, (B,), generator=generator, device=t_device).to(x.device)
        return x, t, randn(x.shape, generator, x), lo, hi

    def guided_velocity(self, x_t: Tensor, t: Tensor, prompts: PromptEmbeddings, cameras: Cameras | None) -> Tensor:
        """v_hat at (x_t, t): the prior's guided velocity, one batched call, float32."""
        cameras = cameras if self.prior.camera_conditioned else None
        return self.prior.predict_guided(x_t, t, prompts.cond, prompts.uncond, self.cfg.scale, cameras).float()

    def clip(self, g: Tensor) -> Tensor:
        """g clipped per sample (norm) or per element (value) at guidance.grad_clip."""
        c = self.cfg
        if c.grad_clip is None:
            return g
        if c.grad_clip_mode == "value":
            return g.clamp(-c.grad_clip, c.grad_clip)
        norm = g.flatten(1).norm(dim=1).view(-1, *([1] * (g.ndim - 1)))
        return g * (c.grad_clip / norm.clamp_min(1e-12)).clamp(max=1.0)

    def diagnostics(self, t: Tensor, lo: int, hi: int, w: Tensor, calls_before: int) -> dict[str, Tensor]:
        return {
            "t_mean": t.float().mean(),
            "sigma_mean": self.prior.schedule.sigma(t).mean(),
            "t_lo": torch.tensor(float(lo)),
            "t_hi": torch.tensor(float(hi)),
            "w_mean": w.float().mean(),
            "prior_calls": torch.tensor(float(self.prior.calls - calls_before)),
        }

    def forward(self, rgb: Tensor, prompts: PromptEmbeddings, step: int, cameras: Cameras | None = None,
                generator: torch.Generator | None = None) -> dict[str, Tensor]:
        """Flow-SDS loss of renders ``rgb`` (B, 3, H, W) in [0, 1].

        Returns:
            "loss_sds" (d/dx = g / B), and detached "sds_grad_norm" (mean per-sample ||g||),
            "nonfinite_frac", "t_mean", "sigma_mean", "t_lo", "t_hi", "w_mean", "prior_calls" (1).
        """
        schedule, calls = self.prior.schedule, self.prior.calls
        x, t, eps, lo, hi = self.sample(rgb, prompts, step, generator)
        with torch.no_grad():
            x_t = schedule.add_noise(x.detach(), eps, t)
            v_hat = self.guided_velocity(x_t, t, prompts, cameras)
            w = schedule.weight(t, self.cfg.weighting, like=v_hat) * schedule.alpha(t, v_hat)
            g = w * (v_hat - (eps.float() - x.detach().float()))
            nonfinite = (~torch.isfinite(g)).float().mean()
            g = self.clip(torch.nan_to_num(g, nan=0.0, posinf=0.0, neginf=0.0))
        x32 = x.float()
        loss_sds = 0.5 * F.mse_loss(x32, (x32 - g).detach(), reduction="sum") / x.shape[0]
        return {"loss_sds": loss_sds, "sds_grad_norm": g.flatten(1).norm(dim=1).mean(), "nonfinite_frac": nonfinite,
                **self.diagnostics(t, lo, hi, w, calls)}
