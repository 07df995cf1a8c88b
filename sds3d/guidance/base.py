"""The Guidance protocol: an estimator of the distillation gradient from renders and a prior.

A guidance sees images, the prompts' conditions, cameras and a ``Prior``; never the 3D scene.
``guidance.method`` picks the implementation (``build_guidance``).
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch
from torch import Tensor, nn

from sds3d.cameras import Cameras, schedule_step
from sds3d.priors.base import Prior

from .prompts import PromptEmbeddings
from .schedules import timestep_bounds


class Guidance(nn.Module, ABC):
    """Losses from renders whose gradient w.r.t. the render is the estimator's.

    Its own trainable parameters (none for SDS; e.g. VSD's LoRA) are submodules: they are in
    ``param_groups`` (optimised by the trainer's optimiser, so their optimiser state is in the
    checkpoint) and in ``state_dict`` (checkpointed with the scene). The frozen prior is shared,
    not owned: it is kept out of the module tree, so ``state_dict`` holds no prior weights and
    ``train()`` / ``to()`` on the guidance leave the prior as it is.
    """

    def __init__(self, prior: Prior):
        super().__init__()
        object.__setattr__(self, "prior", prior)  # not registered as a submodule (class docstring)

    @abstractmethod
    def forward(
        self,
        rgb: Tensor,
        prompts: PromptEmbeddings,
        step: int,
        cameras: Cameras | None = None,
        generator: torch.Generator | None = None,
    ) -> dict[str, Tensor]:
        """Losses and detached diagnostics of one training step.

        Args:
            rgb: renders in [0, 1], differentiable. Shape: (B, 3, H, W).
            prompts: one view's conditions per render (``PromptProcessor(...)``).
            step: training step (for schedules over training).
            cameras: the B cameras of the renders (camera-conditioned priors read them).
            generator: source of the step's randomness (seeded -> deterministic).

        Returns:
            "loss_*" entries (scalars the trainer weights and sums), diagnostics (0-dim, detached),
            and "prior_calls": the number of prior evaluations this step made (0-dim float).
        """

    #: The run's length, set by ``update_step``: the t anneal's points are fractions of it.
    max_steps: int | None = None

    def update_step(self, step: int, max_steps: int) -> None:
        """Per-step schedules before the step (the trainer calls it, as ``Scene.update_step``): the run length."""
        self.max_steps = max_steps

    def timestep_bounds(self, step: int) -> tuple[int, int]:
        """Integer (lo, hi), inclusive, of t at training ``step`` from ``self.cfg`` (a GuidanceConfig's t schedule)."""
        c = self.cfg
        if c.t_schedule == "constant":
            start = end = 0
        elif self.max_steps is None:
            raise RuntimeError("an annealed t schedule needs the run length: call update_step(step, max_steps) first")
        else:
            start, end = (schedule_step(f, self.max_steps) for f in (c.anneal_start_fraction, c.anneal_end_fraction))
        return timestep_bounds(step, self.prior.num_train_timesteps, c.t_min, c.t_max, c.t_schedule, c.t_max_end, c.t_min_end,
                               start, end)

    def param_groups(self) -> list[dict]:
        """Optimiser groups (``params``, ``lr``, ``name``) of the guidance's own trainable parameters."""
        return []
