"""The prior interface: everything guidance code may ask of a text-to-image diffusion model.

Guidance talks to this class only, never to a concrete model (DESIGN.md "Prior interface").
Conventions: ``x`` is the prior's own space (pixels in [-1, 1] for a pixel prior, VAE latents
for a latent prior), NCHW; ``t`` are integer timesteps in [0, num_train_timesteps).
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch
from torch import Tensor, nn


class PriorError(ValueError):
    """A prior could not be loaded or used, for a reason the user can fix (message says how)."""


class Prior(nn.Module, ABC):
    """A frozen text-conditioned epsilon-prediction diffusion model."""

    #: Image side length the denoiser works at, in pixels (renders are resized to it).
    resolution: int
    #: True when ``encode_images`` maps to a VAE latent space.
    latent: bool
    #: Number of diffusion training timesteps T.
    num_train_timesteps: int

    @property
    @abstractmethod
    def alphas_cumprod(self) -> Tensor:
        """alpha-bar_t of the forward process (DDPM Eq. 4). Shape: (T,), float32."""

    @abstractmethod
    def encode_prompts(self, prompts: list[str]) -> Tensor:
        """Text embeddings, one row per prompt ("" gives the unconditional embedding).

        Returns:
            Shape: (len(prompts), S, D) (S tokens of width D), no gradient.
        """

    @abstractmethod
    def predict_noise(self, x_t: Tensor, t: Tensor, embeddings: Tensor, cameras: Tensor | None = None) -> Tensor:
        """epsilon-hat(x_t; y, t) for a batch (one call; CFG batching is the caller's).

        Args:
            x_t: noisy inputs. Shape: (B, C, h, w).
            t: timesteps. Shape: (B,) int64.
            embeddings: text embeddings, one per sample. Shape: (B, S, D).
            cameras: (elevation, azimuth) in degrees per sample, (B, 2), for camera-conditioned
                priors (``camera_conditioned``); others ignore it.

        Returns:
            Predicted noise. Shape: (B, C, h, w), dtype of ``x_t``.
        """

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
    def camera_conditioned(self) -> bool:
        """Whether ``predict_noise`` uses ``cameras`` (MVDream-style camera conditioning)."""
        return False

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device
