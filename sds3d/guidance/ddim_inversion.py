"""DDIM inversion along per-sample timestep paths, shared by ISM (x0 -> x_s -> x_t) and SDI (x0 -> x_t).

Each step is the schedule's ``ddim_invert_step`` (DDIM Eq. 12 run from the less noisy t_k to
t_{k+1} with eps-hat taken at (x_{t_k}, t_k)), optionally plus eta times DDIM's posterior std as
noise (SDI's ``inversion_eta``). Samples of a batch have their own paths (their own t); paths of
different lengths are padded at the front with no-op steps (t_k = t_{k+1}, x kept), so each step
is ONE batched prior evaluation of all samples and every sample's last step is a real one.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from sds3d.priors.base import Prior
from sds3d.priors.schedule import Schedule

from .config import GuidanceConfigError
from .distillation import randn


def check_ddim_schedule(prior: Prior, method: str) -> None:
    """Raise GuidanceConfigError when the prior's schedule has no DDIM (inversion) step."""
    schedule = prior.schedule
    missing = [name for name in ("ddim_step", "ddim_invert_step", "ddim_posterior_std", "ddim_timesteps") if not callable(getattr(schedule, name, None))]
    if missing:
        raise GuidanceConfigError(f"guidance.method={method} needs a deterministic DDIM sampler, but the prior's schedule "
                                  f"({type(schedule).__name__}) has no {', '.join(missing)}; use guidance.method=sds with this prior")


def pad_paths(paths: list[list[int]], device: torch.device | None = None) -> Tensor:
    """Per-sample timestep paths as one (K + 1, B) tensor, shorter ones padded at the front with their first t."""
    K = max(len(p) for p in paths)
    return torch.tensor([[p[0]] * (K - len(p)) + list(p) for p in paths], device=device).T.contiguous()


def ddim_invert(
    schedule: Schedule,
    eps_fn: Callable[[Tensor, Tensor], Tensor],
    x: Tensor,
    path: Tensor,
    eta: float = 0.0,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor]:
    """Invert x from path[0] to path[-1] (per sample), one prior evaluation per step.

    Args:
        schedule: the prior's schedule.
        eps_fn: (x_t, t) -> eps-hat at x_t (one batched prior call, no grad).
        x: the samples at t = path[0]. Shape: (B, C, h, w).
        path: non-decreasing timesteps per sample, (K + 1, B) (``pad_paths``); K >= 1.
        eta: noise added after each real step: eta * ``schedule.ddim_posterior_std(t_{k+1}, t_k)`` * z.
        generator: source of z (only drawn when eta > 0).

    Returns:
        (x at path[-1], eps-hat of the last step, i.e. at (x_{path[-2]}, path[-2])).
    """
    if path.shape[0] < 2:
        raise ValueError("ddim_invert needs a path of at least two timesteps per sample")
    eps = None
    for t_from, t_to in zip(path[:-1], path[1:]):
        eps = eps_fn(x, t_from)
        moved = schedule.ddim_invert_step(x, t_from, t_to, eps)
        if eta > 0:
            moved = moved + eta * schedule.ddim_posterior_std(t_to, t_from, like=x) * randn(x.shape, generator, x)
        x = torch.where((t_to == t_from).view(-1, *([1] * (x.ndim - 1))), x, moved)
    return x, eps
