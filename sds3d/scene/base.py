"""The Scene protocol: what the trainer, export and evaluation ask of a 3D representation.

A scene is an ``nn.Module`` (its ``state_dict`` is everything a resume needs). The trainer
optimises ``param_groups``, calls ``update_step`` before each step and ``render`` for the step's
views; export and evaluation read the field contract (``bound``, ``density``, ``albedo``,
``surface_density``) and render views. Guidance never sees a scene, only its images.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

from torch import Tensor, nn


class Scene(nn.Module, ABC):
    """A trainable 3D representation in the box ``[-bound, bound]^3`` (world frame, +z up)."""

    #: Half the side of the scene box.
    bound: float

    @abstractmethod
    def param_groups(self, trainer_cfg) -> list[dict]:
        """Optimiser parameter groups, each ``{"params", "lr", "name"}`` with its own learning rate."""

    def update_step(self, step: int, max_steps: int) -> None:
        """Per-step schedules and state refreshes, before the step's render (default: none)."""

    @abstractmethod
    def render(self, cameras, shading: str = "albedo", **kwargs) -> dict[str, Tensor | None]:
        """Images of B views: ``rgb``, ``albedo`` (B, 3, H, W), ``opacity``, ``depth`` (B, 1, H, W),
        ``normal`` (B, 3, H, W), and the orientation loss' inputs ``weights``, ``sample_normals``,
        ``ray_dirs``, ``ray_indices``."""

    @abstractmethod
    def density(self, x: Tensor) -> Tensor:
        """Volume density at world points. (N, 3) -> (N,)."""

    @abstractmethod
    def albedo(self, x: Tensor) -> Tensor:
        """Albedo in [0, 1] at world points. (N, 3) -> (N, 3)."""

    @property
    def surface_density(self) -> float | None:
        """The density of the representation's own surface, if it has one (an SDF's zero level)."""
        return None
