"""Timestep bounds over training (t annealing, DreamTime), linearly annealed settings; w(t) is the
prior's schedule's (``Schedule.weight``)."""

from __future__ import annotations

import math

import torch
from torch import Tensor


def anneal_progress(step: int, anneal_start: int, anneal_end: int, schedule: str) -> float:
    """Fraction f in [0, 1] of the way from the start bounds to the end bounds at ``step``.

    constant: 0; linear: p; sqrt: sqrt(p); step: 0 before ``anneal_end``, 1 from it on;
    with p = clamp((step - anneal_start) / (anneal_end - anneal_start), 0, 1). (dreamtime is a
    table of t per step, ``dreamtime_timesteps``.)
    """
    if schedule == "constant":
        return 0.0
    if schedule == "step":
        return 1.0 if step >= anneal_end else 0.0
    span = anneal_end - anneal_start
    p = (1.0 if step >= anneal_start else 0.0) if span <= 0 else min(max((step - anneal_start) / span, 0.0), 1.0)
    if schedule == "linear":
        return p
    if schedule == "sqrt":
        return math.sqrt(p)
    raise ValueError(f"unknown t schedule {schedule!r}; use constant, linear, sqrt or step")


def timestep_bounds(
    step: int,
    num_train_timesteps: int,
    t_min: float,
    t_max: float,
    schedule: str = "constant",
    t_max_end: float | None = None,
    t_min_end: float | None = None,
    anneal_start: int = 0,
    anneal_end: int = 1000,
) -> tuple[int, int]:
    """Integer bounds (lo, hi), inclusive, of t at training ``step``.

    Fractions of T are annealed by ``anneal_progress`` (t_max -> t_max_end, t_min -> t_min_end;
    None keeps the start value) and rounded to integers, clamped to [0, T - 1] with lo <= hi.
    """
    f = anneal_progress(step, anneal_start, anneal_end, schedule)
    hi_frac = t_max + f * ((t_max if t_max_end is None else t_max_end) - t_max)
    lo_frac = t_min + f * ((t_min if t_min_end is None else t_min_end) - t_min)
    T = num_train_timesteps
    hi = min(max(round(hi_frac * T), 0), T - 1)
    lo = min(max(round(lo_frac * T), 0), hi)
    return lo, hi



def linear_anneal(start: float, end: float | None, step: int, anneal_start: int, anneal_end: int) -> float:
    """A setting moved linearly from ``start`` to ``end`` over [anneal_start, anneal_end] (None: constant)."""
    if end is None:
        return start
    return start + anneal_progress(step, anneal_start, anneal_end, "linear") * (end - start)


def dreamtime_weights(schedule, t: Tensor, m1: float, m2: float, s1: float, s2: float) -> Tensor:
    """DreamTime's unnormalised prior weight W(t) = W_d(t) W_p(t) (Huang et al. 2023, Sec. 4.2).

    W_d(t) = sigma_t / alpha_t = sqrt((1 - abar_t) / abar_t), the diffusion model's own weighting
    of the noise levels; W_p(t) is 1 on the plateau [m2, m1] and Gaussian outside it:
    exp(-(t - m1)^2 / (2 s1^2)) above m1, exp(-(t - m2)^2 / (2 s2^2)) below m2. m1, m2, s1, s2 are
    fractions of T (the paper's 800, 500, 300, 100 of T = 1000).

    Args:
        schedule: the prior's ``Schedule`` (alpha_t, sigma_t).
        t: integer timesteps. Shape: (n,).
    """
    T = schedule.num_train_timesteps
    tf = t.double()
    W_d = (schedule.sigma(t) / schedule.alpha(t)).double()
    above = torch.exp(-((tf - m1 * T) ** 2) / (2 * (s1 * T) ** 2))
    below = torch.exp(-((tf - m2 * T) ** 2) / (2 * (s2 * T) ** 2))
    W_p = torch.where(tf > m1 * T, above, torch.where(tf < m2 * T, below, torch.ones_like(tf)))
    return W_d * W_p


def dreamtime_timesteps(schedule, n_steps: int, m1: float, m2: float, s1: float, s2: float, t_lo: int, t_hi: int) -> Tensor:
    """DreamTime's time-prioritised schedule: t(i) = argmin_t |sum_{t' >= t} p(t') - i / N| for i < N.

    p = W / sum W over t in [t_lo, t_hi] (``dreamtime_weights``); t(i) is monotone non-increasing
    in the step i, from near t_hi (i = 0) to near t_lo, spending more steps where p is large.

    Returns:
        t(i) for i = 0 .. n_steps - 1. Shape: (n_steps,) int64.
    """
    t = torch.arange(t_lo, t_hi + 1)
    p = dreamtime_weights(schedule, t, m1, m2, s1, s2)
    p = p / p.sum()
    tail = p.flip(0).cumsum(0).flip(0)  # tail[k] = sum of p over t >= t[k]
    i = torch.arange(n_steps, dtype=torch.float64)
    return t[(tail[None, :] - (i / n_steps)[:, None]).abs().argmin(dim=1)]
