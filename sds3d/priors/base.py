"""The prior interface: everything guidance code may ask of a text-to-image diffusion model.

Guidance talks to this class only, never to a concrete model (DESIGN.md "Prior interface").
Conventions: ``x`` is the prior's own space (pixels in [-1, 1] for a pixel prior, VAE latents
for a latent prior), NCHW; ``t`` are integer timesteps in [0, num_train_timesteps); the
diffusion process and the meaning of a model output are the prior's ``schedule`` (a flow schedule
also takes the fractional t of its Euler sampler).
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch
from torch import Tensor, nn

from sds3d.cameras import Cameras

from ..errors import UserError
from .condition import Condition
from .schedule import Schedule, classifier_free_guidance


class PriorError(UserError):
    """A prior could not be loaded or used, for a reason the user can fix (message says how)."""


class Prior(nn.Module, ABC):
    """A frozen text-conditioned diffusion model.

    Attributes:
        schedule: the noise schedule it was trained with (forward process, prediction type).
        resolution: image side length the denoiser works at, in pixels (renders are resized to it).
        latent: True when ``encode_images`` maps to a VAE latent space.
        calls: ``predict`` calls so far (each one batched denoiser evaluation).
        rows: samples evaluated so far (the sum of the calls' batch sizes).
    """

    schedule: Schedule
    resolution: int
    latent: bool

    def __init__(self):
        super().__init__()
        self.calls = 0
        self.rows = 0

    @property
    def num_train_timesteps(self) -> int:
        """T of the schedule."""
        return self.schedule.num_train_timesteps

    @abstractmethod
    def encode_prompts(self, prompts: list[str]) -> Condition:
        """Text conditions, one row per prompt ("" gives the unconditional one), no gradient."""

    def predict(self, x_t: Tensor, t: Tensor, cond: Condition, cameras: Cameras | None = None) -> Tensor:
        """The denoiser's output for a batch, in ``schedule.prediction_type`` (one call, counted).

        Args:
            x_t: noisy inputs. Shape: (B, C, h, w).
            t: timesteps. Shape: (B,) int64.
            cond: one text condition per sample (B rows).
            cameras: the camera of each sample (B cameras) for camera-conditioned priors
                (``camera_conditioned``); others ignore it. None: no camera (the null camera).

        Returns:
            Shape: (B, C, h, w), dtype of ``x_t``.
        """
        B = x_t.shape[0]
        if len(cond) != B or t.shape[0] != B or (cameras is not None and len(cameras) != B):
            raise ValueError(f"predict: x_t has {B} rows but t {t.shape[0]}, cond {len(cond)}"
                             + ("" if cameras is None else f", cameras {len(cameras)}"))
        self.calls += 1
        self.rows += B
        return self._predict(x_t, t, cond, cameras)

    def predict_eps(self, x_t: Tensor, t: Tensor, cond: Condition, cameras: Cameras | None = None) -> Tensor:
        """eps-hat(x_t; y, t): ``predict`` converted by the schedule (one counted call)."""
        return self.schedule.to_eps(self.predict(x_t, t, cond, cameras), x_t, t)

    def predict_guided(self, x_t: Tensor, t: Tensor, cond: Condition, uncond: Condition | None, scale: float,
                       cameras: Cameras | None = None) -> Tensor:
        """The guided output, in ``schedule.prediction_type``, from one counted call.

        A CFG prior: ``predict`` on [x_t, x_t] with [cond, uncond] (each camera in both halves),
        combined by ``classifier_free_guidance`` with ``scale``. A guidance-distilled prior
        (``guidance_distilled``, e.g. Flux-dev): ``predict`` on x_t with cond and ``scale`` as the
        value of its guidance embedding; ``uncond`` is not evaluated. ``uncond=None`` asks for the
        conditional output (scale 1; a CFG prior then evaluates only cond).

        Shapes: x_t (B, C, h, w); t (B,); cond and uncond B rows; B cameras or None.
        """
        if self.guidance_distilled:
            guidance = torch.full((len(cond),), float(scale), device=x_t.device)
            return self.predict(x_t, t, cond.with_extras(guidance=guidance), cameras)
        if uncond is None:
            if scale != 1:
                raise ValueError(f"predict_guided without an unconditional condition is the conditional output (scale 1), not scale {scale}")
            return self.predict(x_t, t, cond, cameras)
        B = x_t.shape[0]
        twice = None if cameras is None else cameras[torch.arange(B).repeat(2)]
        out_c, out_u = self.predict(torch.cat([x_t, x_t]), torch.cat([t, t]), Condition.cat([cond, uncond]), twice).chunk(2)
        return classifier_free_guidance(out_u, out_c, scale)

    @property
    def guidance_distilled(self) -> bool:
        """Whether the denoiser takes the guidance scale as an input (no unconditional branch)."""
        return False

    @abstractmethod
    def _predict(self, x_t: Tensor, t: Tensor, cond: Condition, cameras: Cameras | None) -> Tensor:
        """The model evaluation behind ``predict`` (arguments checked and counted there)."""

    @abstractmethod
    def encode_images(self, rgb: Tensor) -> Tensor:
        """Bring renders into the prior's space, differentiably.

        Args:
            rgb: images in [0, 1]. Shape: (B, 3, H, W).

        Returns:
            x. Shape: (B, C, h, w).
        """

    @abstractmethod
    def decode(self, x: Tensor) -> Tensor:
        """Inverse of ``encode_images`` (for previews): x -> rgb in [0, 1], (B, 3, H, W)."""

    @property
    @abstractmethod
    def latent_shape(self) -> tuple[int, int, int]:
        """(C, h, w) of one x in the prior's space (what a sampler starts from)."""

    @property
    def camera_conditioned(self) -> bool:
        """Whether ``predict`` uses ``cameras`` (MVDream-style camera conditioning)."""
        return False

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device
