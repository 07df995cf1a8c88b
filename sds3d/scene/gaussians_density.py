"""Densify and prune 3D Gaussians: gsplat's ``DefaultStrategy`` (the 3DGS rules), bounded in count.

The rules are those of 3DGS (Kerbl et al. 2023, Sec. 5.2), as gsplat implements them: every
``refine_every`` steps, a Gaussian whose view-space positional gradient (the norm of
dL/d means2d in NDC units, averaged over the views that saw it) exceeds ``grow_grad2d`` is cloned
if its largest scale is <= ``grow_scale3d * scene_scale`` and split in two (positions drawn from
itself, scales / 1.6) otherwise; Gaussians with opacity < ``prune_opa`` (and, after the first
reset, larger than ``prune_scale3d * scene_scale``) are removed; every ``reset_every`` steps all
opacities are clamped to ``2 * prune_opa``.

``DefaultStrategy`` is plain torch and runs on CPU tensors: it needs the rasteriser's meta
(``means2d`` with its gradient, ``radii``, ``width``, ``height``, ``n_cameras``,
``gaussian_ids``), which ``render.splat.rasterize_gaussians`` returns from either backend.
``BoundedStrategy`` adds:

- ``max_gaussians``: growth is limited to the Gaussians with the largest gradients that fit the
  budget (each clone or split adds exactly one); gsplat's strategy has no bound.
- the opacity reset: gsplat 1.5.3 tests ``step % reset_every == 0 & step > 0``, where ``&`` binds
  before ``==`` and the chained comparison is never true, so it never resets
  (nerfstudio-project/gsplat#776, #797). Resetting here is idempotent if a later gsplat resets too.

gsplat expects one optimiser per parameter; sds3d's trainer has one Adam with a named group per
parameter, which ``optimizer_views`` presents in gsplat's shape.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from gsplat.strategy import DefaultStrategy
from gsplat.strategy.ops import reset_opa

from ..errors import UserError


class DensifyConfigError(UserError):
    """A densification setting that cannot work (the message names it and the fix)."""


def check_gaussian_budget(n_initial: int, max_gaussians: int) -> None:
    """Raise DensifyConfigError if the initial Gaussians already exceed ``max_gaussians``."""
    if max_gaussians < n_initial:
        raise DensifyConfigError(f"scene.gaussians.max_gaussians={max_gaussians} is below the initial count {n_initial}; "
                                 f"raise it or initialise fewer Gaussians")


class _GroupView:
    """One named group of a torch optimiser in the shape of gsplat's one-group optimisers.

    gsplat's ops read and replace ``param_groups[0]["params"]`` and ``state[param]``; both are the
    real optimiser's objects, so the trainer's optimiser sees every replacement.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, group: dict):
        self.param_groups = [group]
        self.state = optimizer.state


def optimizer_views(optimizer: torch.optim.Optimizer, names) -> dict[str, _GroupView]:
    """gsplat's ``optimizers`` dict for the groups of ``optimizer`` named ``names`` (one parameter each)."""
    groups = {g.get("name"): g for g in optimizer.param_groups}
    views = {}
    for name in names:
        group = groups.get(name)
        if group is None or len(group["params"]) != 1:
            raise ValueError(f"the optimiser needs one group named {name!r} holding exactly that parameter")
        views[name] = _GroupView(optimizer, group)
    return views


@dataclass
class BoundedStrategy(DefaultStrategy):
    """gsplat's DefaultStrategy with at most ``max_gaussians`` Gaussians and a working opacity reset."""

    max_gaussians: int = 100_000

    def __post_init__(self):
        if self.refine_scale2d_stop_iter > 0:
            raise DensifyConfigError("refine_scale2d_stop_iter > 0 splits by screen size outside the Gaussian budget; "
                                     "leave it at 0")
        if self.absgrad:
            raise DensifyConfigError("absgrad needs gsplat's CUDA absolute gradients, which the CPU rasteriser lacks; "
                                     "leave it off")

    def step_post_backward(self, params, optimizers, state, step, info, packed=False):
        super().step_post_backward(params, optimizers, state, step, info, packed=packed)
        if 0 < step < self.refine_stop_iter and step % self.reset_every == 0:
            reset_opa(params=params, optimizers=optimizers, state=state, value=self.prune_opa * 2.0)

    @torch.no_grad()
    def _grow_gs(self, params, optimizers, state, step):
        # Keep the budget's worth of the highest gradients above the threshold; the rest are
        # zeroed here (the running sums are zeroed after every refinement anyway).
        budget = max(0, self.max_gaussians - len(params["means"]))
        grads = state["grad2d"] / state["count"].clamp_min(1)
        candidates = (grads > self.grow_grad2d).nonzero().squeeze(-1)
        if len(candidates) > budget:
            keep = candidates[grads[candidates].topk(budget).indices]
            drop = torch.ones_like(grads, dtype=torch.bool)
            drop[keep] = False
            state["grad2d"][drop] = 0.0
        return super()._grow_gs(params, optimizers, state, step)
