"""Score Distillation Sampling (DreamFusion, Poole et al. 2022, Eq. 3) with classifier-free
guidance, negative prompts, w(t), annealed t bounds and optional Perp-Neg.

Variable names follow the paper and diffusers: x (the render in the prior's space), t, eps,
x_t, eps_c / eps_u (conditional / unconditional predictions), eps_hat, w, g.

Score Jacobian Chaining (SJC, Wang et al. 2023) is SDS with another w(t), so it is the weighting
``guidance.weighting=sjc`` rather than an estimator of its own. SJC perturbs x in the VE form
x_sigma = x + sigma eps with sigma = sigma_t / alpha_t, scores it with the denoiser
D(x_sigma) = x_sigma - sigma eps_hat (eps_hat taken at x_sigma / sqrt(1 + sigma^2) = alpha_t x +
sigma_t eps = x_t, SDS's input) and ascends its perturb-and-average score (SJC Eq. 10):

    (D(x_sigma) - x) / sigma^2 = (x + sigma eps - sigma eps_hat - x) / sigma^2 = -(eps_hat - eps) / sigma,

so its descent direction is (1 / sigma)(eps_hat - eps) = w(t)(eps_hat - eps) with w(t) =
alpha_t / sigma_t = sqrt(abar_t / (1 - abar_t)) ("sjc"). threestudio's SJC guidance divides
D(x_sigma) - x by sigma once, which is w(t) = 1 ("uniform").
"""
from __future__ import annotations

import torch
from torch import Tensor

from sds3d.cameras import Cameras
from sds3d.priors.condition import Condition
from sds3d.priors.schedule import classifier_free_guidance

from .batching import PriorRequest
from .distillation import ScoreDistillation, randn, rows
from .perp_neg import perp_neg_embeddings, perp_neg_guidance
from .prompts import PromptEmbeddings


class SDSGuidance(ScoreDistillation):
    """The SDS loss of a batch of renders under a frozen text-to-image prior.

    Per step: x = prior.encode_images(rgb) (differentiable); t ~ U{lo..hi} (current annealed
    bounds, per sample); eps ~ N(0, I); x_t = schedule.add_noise(x, eps, t) (q(x_t | x));
    ONE prior call on [x_t, x_t] with [cond, uncond] (Perp-Neg: [x_t] * 4 with
    [positive, uncond, 2 negatives]) under no_grad, its outputs as eps-hat (``predict_eps``);
    eps_hat = eps_u + s (eps_c - eps_u) (``classifier_free_guidance``);
    g = w(t) (eps_hat - eps) (``schedule.weight``), non-finite entries set to 0, optional clip;

        loss_sds = 0.5 * sum_i ||x_i - sg(x_i - g_i)||^2 / B,

    so d loss_sds / d x_i = g_i / B exactly (the mean over the batch of per-view SDS
    gradients g_i, as in threestudio), and backpropagation carries it through encode_images and
    the renderer. scale = 0 is unconditional: eps_hat = eps_u (the conditional half is skipped).
    The negative prompt replaces the unconditional condition (it is the PromptEmbeddings' uncond).
    """

    def _prior_rows(self, x_t: Tensor, t: Tensor, emb: PromptEmbeddings, cameras: Cameras | None) -> PriorRequest:
        """The rows of the step's one prior call: [x_t] (scale 0), [x_t, x_t] with [cond, uncond]
        (CFG), or Perp-Neg's [x_t] * (2 + K) with [positive, uncond, K negatives per sample].

        A camera-conditioned prior sees the view's camera in every branch (conditional,
        unconditional, negatives), as MVDream's guidance does; CFG acts on the text only.
        """
        c, B = self.cfg, x_t.shape[0]
        if c.scale == 0:  # unconditional: eps_hat = eps_u, cond not evaluated
            return PriorRequest(x_t, t, emb.uncond, cameras)
        if c.perp_neg:
            positive, negatives, neg_weights = perp_neg_embeddings(emb, c.perp_neg_f_fs, c.perp_neg_f_sf, c.perp_neg_f_sb, c.perp_neg_f_fsb)
            K = len(negatives) // B
            # Rows: positive, uncond (samples 0..B-1 each), then K negatives per sample (sample-major).
            cams = rows(torch.cat([torch.arange(B).repeat(2), torch.arange(B).repeat_interleave(K)]), cameras)
            return PriorRequest(torch.cat([x_t, x_t, x_t.repeat_interleave(K, dim=0)]), torch.cat([t, t, t.repeat_interleave(K)]),
                                Condition.cat([positive, emb.uncond, negatives]), cams, {"neg_weights": neg_weights, "K": K})
        return PriorRequest(torch.cat([x_t, x_t]), torch.cat([t, t]), Condition.cat([emb.cond, emb.uncond]),
                            rows(torch.arange(B).repeat(2), cameras))

    def _eps_hat(self, request: PriorRequest, out: Tensor, B: int) -> Tensor:
        """eps_hat from the prior's raw output on ``request``'s rows: eps_u, CFG or Perp-Neg."""
        c = self.cfg
        eps = self.prior.schedule.to_eps(out, request.x_t, request.t)  # what ``Prior.predict_eps`` returns
        if c.scale == 0:
            return eps
        if c.perp_neg:
            K = request.context["K"]
            eps_c, eps_u, eps_neg = eps[:B], eps[B : 2 * B], eps[2 * B :].unflatten(0, (B, K))
            return perp_neg_guidance(eps_u, eps_c, eps_neg, request.context["neg_weights"], c.scale)
        eps_c, eps_u = eps.chunk(2)
        return classifier_free_guidance(eps_u, eps_c, c.scale)

    def prepare(
        self,
        rgb: Tensor,
        prompts: PromptEmbeddings,
        step: int,
        cameras: Cameras | None = None,
        generator: torch.Generator | None = None,
    ) -> PriorRequest:
        """The first half of ``forward``: x, t, eps and x_t, and the rows of the step's prior call
        (``guidance.batching``); the arguments are ``forward``'s."""
        B = self.check_batch(rgb, prompts)
        x = self.prior.encode_images(rgb)
        t, lo, hi = self.sample_timesteps(step, B, generator, x)
        eps = randn(x.shape, generator, x)
        with torch.no_grad():
            x_t = self.prior.schedule.add_noise(x.detach(), eps, t)
            request = self._prior_rows(x_t, t, prompts, self.prior_cameras(cameras))
        request.context.update(x=x, t=t, eps=eps, lo=lo, hi=hi, step=step)
        return request

    def finish(self, request: PriorRequest, out: Tensor) -> dict[str, Tensor]:
        """The second half of ``forward``, given the prior's output (``Prior.predict``) on ``request``'s rows."""
        ctx = request.context
        x, t, eps = ctx["x"], ctx["t"], ctx["eps"]
        with torch.no_grad():
            eps_hat = self._eps_hat(request, out, x.shape[0]).float()
            w = self.prior.schedule.weight(t, self.cfg.weighting, like=eps_hat)
            g = w * (eps_hat - eps.float())  # DreamFusion Eq. 3 without the generator Jacobian
        # The step's rows are one prior call, whether alone or shared with the other runs of a batch.
        return self.losses(x, g, ctx["step"], prior_calls=1, t_mean=t.float().mean(), t_lo=torch.tensor(float(ctx["lo"])),
                           t_hi=torch.tensor(float(ctx["hi"])), w_mean=w.mean())

    def forward(
        self,
        rgb: Tensor,
        prompts: PromptEmbeddings,
        step: int,
        cameras: Cameras | None = None,
        generator: torch.Generator | None = None,
    ) -> dict[str, Tensor]:
        """SDS loss of renders ``rgb``.

        Args:
            rgb: renders in [0, 1], differentiable. Shape: (B, 3, H, W).
            prompts: one view's conditions per render (``PromptProcessor(...)``).
            step: training step (for the t schedule).
            cameras: the B cameras of the renders, for camera-conditioned priors (ignored by the others).
            generator: source of t and eps (seeded -> deterministic).

        Returns:
            "loss_sds": scalar with d/dx = g / B (class docstring); detached diagnostics:
            "sds_grad_norm" (mean per-sample ||g||), "t_mean", "t_lo", "t_hi" (integer steps),
            "w_mean", "nonfinite_frac" (fraction of g entries that were NaN/inf, set to 0),
            "prior_calls" (prior evaluations this step: 1).
        """
        request = self.prepare(rgb, prompts, step, cameras, generator)
        with torch.no_grad():
            out = self.prior.predict(request.x_t, request.t, request.cond, request.cameras)
        return self.finish(request, out)
