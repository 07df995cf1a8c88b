"""The guidance's typed config (threestudio style) and its validation.

View thresholds (front/back half widths, overhead elevation) are not repeated here: they live in
``sds3d.cameras.CameraConfig`` and the prompt processor reads them from there.
"""

from __future__ import annotations

from dataclasses import dataclass

from sds3d.errors import UserError
from sds3d.priors.schedule import WEIGHTINGS

T_SCHEDULES = ("constant", "linear", "sqrt", "step")
GRAD_CLIP_MODES = ("norm", "value")


class GuidanceConfigError(UserError):
    """A guidance setting is invalid (the message names the key and the allowed values)."""


@dataclass
class GuidanceConfig:
    """Score Distillation Sampling settings (DreamFusion Sec. 3, Eq. 3).

    method: the estimator (``build_guidance``'s registry): sds.
    t bounds: t ~ U{round(t_lo * T), ..., round(t_hi * T)} with T = prior.num_train_timesteps.
    ``t_schedule`` anneals (t_lo, t_hi) from (t_min, t_max) to (t_min_end, t_max_end) over the
    steps [anneal_start, anneal_end] with progress p in [0, 1]: constant: no annealing; linear: p;
    sqrt: sqrt(p) (fast early decrease); step: a jump from start to end values at anneal_end.
    ``t_min_end = None`` keeps t_min fixed. The steps are fractions of the run
    (``anneal_start_fraction``, ``anneal_end_fraction``: anneal_start = round(fraction * max_steps)),
    so a shorter run anneals over its own length; a fraction above 1 is never reached.

    Weighting w(t) (``prior.schedule.weight``; abar = alphas_cumprod[t]): sds: 1 - abar
    (DreamFusion); uniform: 1; fantasia3d: sqrt(abar) * (1 - abar) (Fantasia3D, as in
    threestudio's "fantasia").

    grad_clip: None, or a bound applied to g = w(t)(eps_hat - eps) before the loss. mode "norm"
    rescales each sample's g so its L2 norm is <= grad_clip; mode "value" clamps every element
    to [-grad_clip, grad_clip] (threestudio's grad_clip).

    Perp-Neg (Armandpour et al. 2023, threestudio's implementation): each f_* = (a, b, c) gives a
    negative-prompt weight a * exp(-b r) + c of the view interpolation ratio r; the defaults are
    threestudio's. f_fs / f_sf: front/side negatives for |azimuth| < 90; f_sb / f_fsb:
    side/front negatives for |azimuth| >= 90.
    """

    method: str = "sds"
    scale: float = 7.5
    negative_prompt: str = ""
    weighting: str = "sds"
    t_min: float = 0.02
    t_max: float = 0.98
    t_schedule: str = "constant"
    t_max_end: float = 0.5
    t_min_end: float | None = None
    anneal_start_fraction: float = 0.0
    anneal_end_fraction: float = 1.0
    grad_clip: float | None = None
    grad_clip_mode: str = "norm"
    view_dependent_prompts: bool = True
    perp_neg: bool = False
    perp_neg_f_fs: tuple[float, float, float] = (4.0, 0.5, -2.426)
    perp_neg_f_sf: tuple[float, float, float] = (4.0, 0.5, -2.426)
    perp_neg_f_sb: tuple[float, float, float] = (1.0, 0.5, -0.606)
    perp_neg_f_fsb: tuple[float, float, float] = (1.0, 0.5, 0.967)


def check_guidance_config(cfg: GuidanceConfig) -> None:
    """Raise GuidanceConfigError naming the first invalid setting of ``cfg``."""

    def fail(msg: str) -> None:
        raise GuidanceConfigError(msg)

    if cfg.weighting not in WEIGHTINGS:
        fail(f"guidance.weighting={cfg.weighting!r} is unknown; use one of {', '.join(WEIGHTINGS)}")
    if cfg.t_schedule not in T_SCHEDULES:
        fail(f"guidance.t_schedule={cfg.t_schedule!r} is unknown; use one of {', '.join(T_SCHEDULES)}")
    if cfg.grad_clip_mode not in GRAD_CLIP_MODES:
        fail(f"guidance.grad_clip_mode={cfg.grad_clip_mode!r} is unknown; use one of {', '.join(GRAD_CLIP_MODES)}")
    if cfg.scale < 0:
        fail(f"guidance.scale={cfg.scale} is negative; use 0 (unconditional) or more (7.5 is typical)")
    if cfg.grad_clip is not None and cfg.grad_clip <= 0:
        fail(f"guidance.grad_clip={cfg.grad_clip} must be positive; use null to disable clipping")
    bounds = [("t_min", cfg.t_min), ("t_max", cfg.t_max)]
    if cfg.t_schedule != "constant":
        bounds += [("t_max_end", cfg.t_max_end)] + ([("t_min_end", cfg.t_min_end)] if cfg.t_min_end is not None else [])
        if cfg.anneal_start_fraction < 0:
            fail(f"guidance.anneal_start_fraction={cfg.anneal_start_fraction} must be >= 0 (a fraction of trainer.max_steps)")
        if cfg.anneal_end_fraction < cfg.anneal_start_fraction:
            fail(f"guidance.anneal_end_fraction={cfg.anneal_end_fraction} is before anneal_start_fraction="
                 f"{cfg.anneal_start_fraction}; swap them")
    for name, value in bounds:
        if not 0.0 <= value <= 1.0:
            fail(f"guidance.{name}={value} must be a fraction of T in [0, 1] (e.g. 0.02 or 0.98)")
    if cfg.t_min > cfg.t_max:
        fail(f"guidance.t_min={cfg.t_min} exceeds t_max={cfg.t_max}; use t_min <= t_max")
    if cfg.t_schedule != "constant":
        t_min_end = cfg.t_min if cfg.t_min_end is None else cfg.t_min_end
        if t_min_end > cfg.t_max_end:
            fail(f"guidance.t_max_end={cfg.t_max_end} is below the final t_min={t_min_end}; raise t_max_end")
    for name in ("perp_neg_f_fs", "perp_neg_f_sf", "perp_neg_f_sb", "perp_neg_f_fsb"):
        if len(tuple(getattr(cfg, name))) != 3:
            fail(f"guidance.{name} must be three numbers (a, b, c) of a * exp(-b r) + c")
