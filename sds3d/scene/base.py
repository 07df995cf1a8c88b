"""The Scene protocol: what the trainer, export and evaluation ask of a 3D representation.

A scene is an ``nn.Module`` (its ``state_dict`` is everything a resume needs). The trainer
optimises ``param_groups``, calls ``update_step`` before each step, ``render`` for the step's
views, ``before_backward`` and ``after_optimizer_step`` around its optimiser step, and logs
``stats``; export and evaluation read the field contract (``bound``, ``density``, ``albedo``,
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
        """Optimiser parameter groups, each ``{"params", "lr", "name"}`` with its own learning rate, and
        optionally ``"lr_schedule": {"kind", "end_factor", "steps"}``, a decay of its own
        (``config.lr_factor`` over ``steps``, 0: the run) instead of the trainer's."""

    def update_step(self, step: int, max_steps: int) -> None:
        """Per-step schedules and state refreshes, before the step's render (default: none)."""

    def before_backward(self, step: int, out: dict) -> None:
        """Called with the step's render output just before ``loss.backward()`` (default: nothing)."""

    def after_optimizer_step(self, step: int, optimizer) -> None:
        """Called just after ``optimizer.step()`` (default: nothing). A scene that replaces its parameters
        here (densification) replaces them in ``optimizer.param_groups`` too, in place."""

    def stats(self) -> dict[str, float]:
        """Numbers of the scene for the metrics record (e.g. the Gaussian count; default: none)."""
        return {}

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
