"""Variational Score Distillation (VSD, ProlificDreamer, Wang et al., NeurIPS 2023) and its
entropic variant ESD (Wang et al., "Taming Mode Collapse in Score Distillation for Text-to-3D
Generation", CVPR 2024).

VSD treats the 3D scene as a distribution and estimates the score of the renders' distribution
with a LoRA eps_phi of the prior's own denoiser, conditioned on the camera c:

    g = w(t) (eps_hat_pretrained(x_t, t, y) - eps_phi(x_t, t, y, c)),
    eps_hat_pretrained = eps_u + scale (eps_c - eps_u)   (the frozen prior, adapter off),

and trains phi every step on the renders, sg(x), with the diffusion loss at t' ~ U{0..T-1}:

    loss_lora = || out_phi(alpha_t' sg(x) + sigma_t' eps', t', y, c~) - target(sg(x), eps', t') ||^2 (mean),

c~ = c, or the null camera (zeros) with probability ``lora_camera_dropout`` (10%). ESD adds the
entropy of the renders' distribution through a CFG over the camera (``lora_camera_scale`` = lambda):

    eps_phi = eps_phi(x_t, t, y, null) + lambda (eps_phi(x_t, t, y, c) - eps_phi(x_t, t, y, null)),

lambda = 1 is VSD, lambda < 1 is ESD (the paper's 0.5). As in ProlificDreamer (and threestudio's
guidance), the camera is the flattened camera-to-world matrix c2w (16 numbers), embedded by a
``TimestepEmbedding`` and added to the denoiser's timestep embedding; the LoRA (``peft``, rank
``lora_rank``) adapts the attention projections (to_q, to_k, to_v, to_out.0), which
UNet2DConditionModel and the toy prior's ToyUNet both have. Here phi starts as the pretrained
prior exactly (LoRA B and the camera embedding's output layer zero-initialised); the LoRA is
conditioned on the same (view-dependent) prompt as the pretrained branch (threestudio uses the
view-independent one there).

The LoRA lives inside the shared prior's denoiser: its adapter is disabled except inside this
estimator's own prior call, so every other use of the prior (and the pretrained branch) is the
frozen model. Its parameters and the camera embedding are this module's parameters (so in
``state_dict``, the checkpoint, and ``param_groups`` with their own learning rate, not decayed);
the frozen weights never are. Prior calls per step: 2 (the pretrained CFG call; one LoRA call on
the estimate's rows and the training rows together, with grad, the estimate's outputs detached).
"""

from __future__ import annotations

import warnings
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sds3d.cameras import Cameras
from sds3d.priors.base import Prior
from sds3d.priors.condition import Condition
from sds3d.priors.schedule import classifier_free_guidance

from .config import GuidanceConfig, GuidanceConfigError
from .distillation import ScoreDistillation, randint, randn, rows
from .prompts import PromptEmbeddings, PromptError

#: Module-name endings of the denoiser's linear layers the LoRA adapts (attention projections).
LORA_TARGETS = ("to_q", "to_k", "to_v", "to_out.0")
ADAPTER = "sds3d_vsd"
CAMERA_FEATURES = 16  # c2w, flattened


def lora_targets(denoiser: nn.Module | None) -> list[str]:
    """Names of the denoiser's linear modules (nn.Linear, or one a LoRA already wraps) ending with one of ``LORA_TARGETS``."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    if denoiser is None:
        return []
    return [name for name, m in denoiser.named_modules()
            if isinstance(m, (nn.Linear, BaseTunerLayer)) and any(name == k or name.endswith("." + k) for k in LORA_TARGETS)]


class VSDGuidance(ScoreDistillation):
    """VSD / ESD (module docstring): loss_sds with g, and loss_lora training phi."""

    def __init__(self, cfg: GuidanceConfig, prior: Prior):
        super().__init__(cfg, prior)
        from peft import LoraConfig, inject_adapter_in_model
        from peft.tuners.tuners_utils import BaseTunerLayer

        denoiser = prior.denoiser
        if not lora_targets(denoiser):
            raise GuidanceConfigError(
                f"guidance.method=vsd trains a LoRA of the prior's denoiser, but {type(denoiser).__name__} has no linear "
                f"attention projections ({', '.join(LORA_TARGETS)}); use a UNet2DConditionModel or ToyUNet prior, or guidance.method=sds")
        time_embedding = getattr(denoiser, "time_embedding", None)
        if not isinstance(getattr(time_embedding, "linear_2", None), nn.Linear):
            raise GuidanceConfigError(f"guidance.method=vsd adds a camera embedding to the denoiser's time_embedding, "
                                      f"which {type(denoiser).__name__} lacks; use guidance.method=sds with this prior")
        from diffusers.models.embeddings import TimestepEmbedding

        # A fixed seed: the LoRA's random init draws neither from nor into the run's RNG streams.
        with warnings.catch_warnings(), torch.random.fork_rng(devices=[]):
            warnings.simplefilter("ignore")  # a VSD built before on this prior: its adapter is replaced (peft warns)
            for layer in [m for m in denoiser.modules() if isinstance(m, BaseTunerLayer)]:
                if ADAPTER in layer.lora_A:
                    layer.delete_adapter(ADAPTER)
            torch.manual_seed(0)
            lora = LoraConfig(r=cfg.lora_rank, lora_alpha=cfg.lora_rank, target_modules=list(LORA_TARGETS))
            inject_adapter_in_model(lora, denoiser, adapter_name=ADAPTER)
            self.camera_embedding = TimestepEmbedding(CAMERA_FEATURES, time_embedding.linear_2.out_features)
        nn.init.zeros_(self.camera_embedding.linear_2.weight)
        nn.init.zeros_(self.camera_embedding.linear_2.bias)
        self.camera_embedding.to(prior.device)
        self._layers = [m for m in denoiser.modules() if isinstance(m, BaseTunerLayer)]
        # The LoRA's weights, registered here too (the same Parameter objects), in float32 for Adam.
        self.lora = nn.ParameterDict()
        for name, p in denoiser.named_parameters():
            if f".{ADAPTER}." in f".{name}.":
                p.data = p.data.float()
                self.lora[name.replace(".", "__")] = p
        self._camera: Tensor | None = None  # the camera features of the rows of the LoRA call in progress
        hook = getattr(denoiser, "_sds3d_vsd_camera_hook", None)
        if hook is not None:
            hook.remove()
        denoiser._sds3d_vsd_camera_hook = time_embedding.register_forward_hook(self._add_camera_embedding)
        self._set_adapter(False)

    def _add_camera_embedding(self, module: nn.Module, inputs, temb: Tensor) -> Tensor | None:
        if self._camera is None:  # the frozen path: the time embedding as trained
            return None
        return temb + self.camera_embedding(self._camera.to(self.camera_embedding.linear_1.weight.dtype)).to(temb.dtype)

    def _set_adapter(self, enabled: bool) -> None:
        for layer in self._layers:
            layer.enable_adapters(enabled)
        # peft marks disabled adapters as not requiring grad; the LoRA call's graph still needs it at backward.
        for p in self.lora.values():
            p.requires_grad_(True)

    @contextmanager
    def phi(self, camera_features: Tensor):
        """The denoiser as eps_phi for one call: adapter on, the rows' camera features added."""
        self._set_adapter(True)
        self._camera = camera_features
        try:
            yield
        finally:
            self._camera = None
            self._set_adapter(False)

    def param_groups(self) -> list[dict]:
        """The LoRA and the camera embedding at ``lora_lr``, not decayed by the trainer's lr schedule."""
        return [{"params": list(self.lora.values()) + list(self.camera_embedding.parameters()), "lr": self.cfg.lora_lr,
                 "name": "vsd_lora", "scheduled": False}]

    def forward(self, rgb: Tensor, prompts: PromptEmbeddings, step: int, cameras: Cameras | None = None,
                generator: torch.Generator | None = None) -> dict[str, Tensor]:
        """VSD/ESD losses of renders ``rgb`` seen from ``cameras`` (required).

        Returns:
            "loss_sds" (d/dx = g / B), "loss_lora" (phi's diffusion loss; the trainer adds it), the
            SDS diagnostics and "prior_calls" (2).
        """
        B = self.check_batch(rgb, prompts)
        if cameras is None or len(cameras) != B:
            raise PromptError("guidance.method=vsd needs the cameras of the renders (one per render)")
        c, schedule, calls = self.cfg, self.prior.schedule, self.prior.calls
        x = self.prior.encode_images(rgb)
        t, lo, hi = self.sample_timesteps(step, B, generator, x)
        eps = randn(x.shape, generator, x)
        T = self.prior.num_train_timesteps
        t_lora = randint(0, T - 1, B, generator, x)
        eps_lora = randn(x.shape, generator, x)
        device = generator.device if generator is not None else x.device
        dropped = torch.rand(B, generator=generator, device=device).to(x.device) < c.lora_camera_dropout
        c2w = cameras.c2w.to(x.device, torch.float32).flatten(1)  # (B, 16)
        null = torch.zeros_like(c2w)
        pcams = self.prior_cameras(cameras)
        x_sg = x.detach()
        with torch.no_grad():
            x_t = schedule.add_noise(x_sg, eps, t)
            eps_pretrained = self.guided_eps(x_t, t, prompts.cond, prompts.uncond, c.scale, pcams).float()
            x_t_lora = schedule.add_noise(x_sg, eps_lora, t_lora)
        # One LoRA call: estimate rows [x_t with c (, x_t with the null camera for ESD)], then training rows.
        esd = c.lora_camera_scale != 1.0
        n_est = 2 if esd else 1
        feats = torch.cat([c2w] + ([null] if esd else []) + [torch.where(dropped[:, None], null, c2w)])
        index = torch.arange(B).repeat(n_est + 1)
        with self.phi(feats):
            out = self.prior.predict(torch.cat([x_t] * n_est + [x_t_lora]), torch.cat([t] * n_est + [t_lora]),
                                     Condition.cat([prompts.cond] * (n_est + 1)), rows(index, pcams))
        est = out[: n_est * B].detach()
        eps_phi_c = schedule.to_eps(est[:B], x_t, t).float()
        eps_phi = classifier_free_guidance(schedule.to_eps(est[B:], x_t, t).float(), eps_phi_c, c.lora_camera_scale) if esd else eps_phi_c
        loss_lora = F.mse_loss(out[n_est * B :].float(), schedule.target(x_sg, eps_lora, t_lora).float())
        with torch.no_grad():
            w = schedule.weight(t, c.weighting, like=eps_pretrained)
            g = w * (eps_pretrained - eps_phi)
        losses = self.losses(x, g, step, calls, t_mean=t.float().mean(), t_lo=torch.tensor(float(lo)),
                             t_hi=torch.tensor(float(hi)), w_mean=w.mean())
        return {"loss_sds": losses.pop("loss_sds"), "loss_lora": loss_lora, **losses}
