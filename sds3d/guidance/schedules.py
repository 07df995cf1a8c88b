"""Timestep bounds over training (t annealing); w(t) is the prior's schedule's (``Schedule.weight``)."""

from __future__ import annotations

import math


def anneal_progress(step: int, anneal_start: int, anneal_end: int, schedule: str) -> float:
    """Fraction f in [0, 1] of the way from the start bounds to the end bounds at ``step``.

    constant: 0; linear: p; sqrt: sqrt(p); step: 0 before ``anneal_end``, 1 from it on;
    with p = clamp((step - anneal_start) / (anneal_end - anneal_start), 0, 1).
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

