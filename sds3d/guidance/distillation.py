"""What the score-distillation estimators share: t sampling, batched (guided) predictions, the
gradient clip and the surrogate loss whose gradient is the estimator's g.

Every estimator turns renders into x (``prior.encode_images``) and computes a direction g per
sample under no_grad; the loss

    loss_sds = 0.5 * sum_i ||x_i - sg(x_i - g_i)||^2 / B

has d loss_sds / d x_i = g_i / B exactly (threestudio's reparametrisation of SpecifyGradient),
and backpropagation carries g through encode_images and the renderer. The forward process, CFG,
x0-hat and DDIM steps are the prior's schedule's and ``classifier_free_guidance``; this module
only batches the rows of a prior call and bookkeeps.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from sds3d.cameras import Cameras
from sds3d.priors.base import Prior
from sds3d.priors.condition import Condition
from sds3d.priors.schedule import classifier_free_guidance

from .base import Guidance
from .config import GuidanceConfig, check_guidance_config
from .prompts import PromptEmbeddings, PromptError
from .schedules import dreamtime_timesteps, linear_anneal, timestep_bounds


def randn(shape, generator: torch.Generator | None, like: Tensor) -> Tensor:
    """Standard normal noise from ``generator`` (on its device), in the dtype and on the device of ``like``."""
    device = generator.device if generator is not None else like.device
    return torch.randn(shape, generator=generator, device=device, dtype=torch.float32).to(like.device, like.dtype)


def randint(lo: int, hi: int, n: int, generator: torch.Generator | None, like: Tensor) -> Tensor:
    """n integers in [lo, hi] (inclusive) from ``generator``, on the device of ``like``."""
    device = generator.device if generator is not None else like.device
    return torch.randint(lo, hi + 1, (n,), generator=generator, device=device).to(like.device)


def rows(index: Tensor, cameras: Cameras | None) -> Cameras | None:
    """The cameras of a batched call's rows (``index`` into the B cameras), None for no cameras."""
    return None if cameras is None else cameras[index]


class ScoreDistillation(Guidance):
    """Base of the estimators: the config is checked, the prior frozen, and shared steps provided.

    Subclasses write ``forward``; they draw t with ``sample_timesteps``, predictions with
    ``guided_eps`` / ``prior.predict_eps`` (one batched call each), and return
    ``self.losses(x, g, step, ...)``.
    """

    def __init__(self, cfg: GuidanceConfig, prior: Prior):
        super().__init__(prior)
        check_guidance_config(cfg)
        self.cfg = cfg
        for p in prior.parameters():
            p.requires_grad_(False)
        self._dreamtime: Tensor | None = None  # t per step of the dreamtime schedule, built on first use

    # -- timesteps -------------------------------------------------------------------------------

    def timestep_bounds(self, step: int) -> tuple[int, int]:
        """Integer (lo, hi), inclusive, of t at training ``step`` (GuidanceConfig.t_schedule; dreamtime: lo = hi)."""
        if self.cfg.t_schedule == "dreamtime":
            table = self.dreamtime_table()
            t = int(table[min(max(step - self.anneal_steps()[0], 0), len(table) - 1)])
            return t, t
        return super().timestep_bounds(step)

    def dreamtime_table(self) -> Tensor:
        """DreamTime's t for each step of [anneal_start, anneal_end) (``schedules.dreamtime_timesteps``)."""
        if self._dreamtime is None:
            c, T = self.cfg, self.prior.num_train_timesteps
            start, end = self.anneal_steps()
            t_lo, t_hi = timestep_bounds(0, T, c.t_min, c.t_max)
            self._dreamtime = dreamtime_timesteps(self.prior.schedule, max(1, end - start), c.dreamtime_m1,
                                                  c.dreamtime_m2, c.dreamtime_s1, c.dreamtime_s2, t_lo, t_hi)
        return self._dreamtime

    def sample_timesteps(self, step: int, n: int, generator: torch.Generator | None, like: Tensor) -> tuple[Tensor, int, int]:
        """t ~ U{lo..hi} per sample at ``step``, and the bounds (lo, hi)."""
        lo, hi = self.timestep_bounds(step)
        return randint(lo, hi, n, generator, like), lo, hi

    def annealed(self, start: float, end: float | None, step: int) -> float:
        """A setting moved linearly from ``start`` to ``end`` over [anneal_start, anneal_end] (None: constant)."""
        if end is None:
            return start
        return linear_anneal(start, end, step, *self.anneal_steps())

    # -- predictions -----------------------------------------------------------------------------

    def prior_cameras(self, cameras: Cameras | None) -> Cameras | None:
        """The cameras the prior reads: the renders' for a camera-conditioned prior, else None."""
        return cameras if self.prior.camera_conditioned else None

    def guided_eps(self, x_t: Tensor, t: Tensor, cond: Condition, uncond: Condition, scale: float,
                   cameras: Cameras | None = None) -> Tensor:
        """eps_u + s (eps_c - eps_u) from ONE prior call on [x_t, x_t] with [cond, uncond] (no grad
        by the caller); s = 0 evaluates the unconditional half only. Shapes (B, C, h, w); B cameras or None.

        A camera-conditioned prior sees the view's camera in both branches, as MVDream's guidance
        does; CFG acts on the text only.
        """
        B = x_t.shape[0]
        if scale == 0:
            return self.prior.predict_eps(x_t, t, uncond, cameras)
        eps_c, eps_u = self.prior.predict_eps(
            torch.cat([x_t, x_t]), torch.cat([t, t]), Condition.cat([cond, uncond]), rows(torch.arange(B).repeat(2), cameras)
        ).chunk(2)
        return classifier_free_guidance(eps_u, eps_c, scale)

    def guided_output(self, x_t: Tensor, t: Tensor, cond: Condition, uncond: Condition, scale: float,
                      cameras: Cameras | None = None) -> Tensor:
        """``guided_eps``'s CFG on the raw model outputs (``prior.predict``, the schedule's prediction
        type), for ``schedule.to_x0``; CFG is linear, so both give the same x0-hat."""
        B = x_t.shape[0]
        if scale == 0:
            return self.prior.predict(x_t, t, uncond, cameras)
        out_c, out_u = self.prior.predict(
            torch.cat([x_t, x_t]), torch.cat([t, t]), Condition.cat([cond, uncond]), rows(torch.arange(B).repeat(2), cameras)
        ).chunk(2)
        return classifier_free_guidance(out_u, out_c, scale)

    def text_condition(self, text: str) -> Condition:
        """One prompt's condition, encoded by the prior (estimators' own prompts, once at construction)."""
        with torch.no_grad():
            return self.prior.encode_prompts([text])

    # -- the loss --------------------------------------------------------------------------------

    def clip(self, g: Tensor, step: int) -> Tensor:
        """g clipped per sample (norm) or per element (value) at the step's bound (GuidanceConfig.grad_clip)."""
        c = self.cfg
        if c.grad_clip is None:
            return g
        bound = self.annealed(c.grad_clip, c.grad_clip_end, step)
        if c.grad_clip_mode == "value":
            return g.clamp(-bound, bound)
        norm = g.flatten(1).norm(dim=1).view(-1, *([1] * (g.ndim - 1)))
        return g * (bound / norm.clamp_min(1e-12)).clamp(max=1.0)

    def losses(self, x: Tensor, g: Tensor, step: int, calls_before: int | None = None, prior_calls: int | None = None,
               **diagnostics: Tensor) -> dict[str, Tensor]:
        """loss_sds of direction g (module docstring) and the diagnostics every estimator logs.

        Non-finite entries of g are set to 0 (their fraction is "nonfinite_frac") before the clip.

        Returns:
            "loss_sds", "sds_grad_norm" (mean per-sample ||g||), "nonfinite_frac", "prior_calls"
            (prior evaluations since ``calls_before``, or ``prior_calls`` when the caller counts them:
            a batched call shared by several runs is one call of each), and ``diagnostics`` (detached, 0-dim).
        """
        B = x.shape[0]
        with torch.no_grad():
            nonfinite = (~torch.isfinite(g)).float().mean()
            g = self.clip(torch.nan_to_num(g, nan=0.0, posinf=0.0, neginf=0.0), step)
        x32 = x.float()
        target = (x32 - g).detach()
        loss_sds = 0.5 * F.mse_loss(x32, target, reduction="sum") / B
        return {
            "loss_sds": loss_sds,
            "sds_grad_norm": g.flatten(1).norm(dim=1).mean(),
            **{k: v.detach() for k, v in diagnostics.items()},
            "nonfinite_frac": nonfinite,
            "prior_calls": torch.tensor(float(self.prior.calls - calls_before if prior_calls is None else prior_calls)),
        }

    @staticmethod
    def check_batch(rgb: Tensor, prompts: PromptEmbeddings) -> int:
        B = rgb.shape[0]
        if len(prompts) != B:
            raise PromptError(f"got {len(prompts)} prompt embeddings for {B} renders; build them from the same cameras")
        return B
