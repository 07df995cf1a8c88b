"""The guidance's typed config (threestudio style) and its validation.

View thresholds (front/back half widths, overhead elevation) are not repeated here: they live in
``sds3d.cameras.CameraConfig`` and the prompt processor reads them from there.
"""

from __future__ import annotations

from dataclasses import dataclass

from sds3d.errors import UserError
from sds3d.priors.schedule import WEIGHTINGS

T_SCHEDULES = ("constant", "linear", "sqrt", "step", "dreamtime")
GRAD_CLIP_MODES = ("norm", "value")
#: NFSD's negative prompt (Katzir et al. 2024, Sec. 4: the prompt of its delta_D term above t = 200).
NFSD_NEGATIVE_PROMPT = "unrealistic, blurry, low quality, out of focus, ugly, low contrast, dull, dark, low-resolution, gloomy"


class GuidanceConfigError(UserError):
    """A guidance setting is invalid (the message names the key and the allowed values)."""


@dataclass
class GuidanceConfig:
    """Score Distillation Sampling settings (DreamFusion Sec. 3, Eq. 3).

    method: the estimator (``build_guidance``'s registry): sds, nfsd, csd, ism, sdi, vsd, cds.
    Every estimator's distillation loss is "loss_sds" (weighted by trainer.lambda_sds); the
    CFG convention is one for all, eps_u + s (eps_c - eps_u) (threestudio's SDS and SDI use
    eps_c + s (eps_c - eps_u): our s is their s + 1).
    t bounds: t ~ U{round(t_lo * T), ..., round(t_hi * T)} with T = prior.num_train_timesteps.
    ``t_schedule`` anneals (t_lo, t_hi) from (t_min, t_max) to (t_min_end, t_max_end) over the
    steps [anneal_start, anneal_end] with progress p in [0, 1]: constant: no annealing; linear: p;
    sqrt: sqrt(p) (fast early decrease); step: a jump from start to end values at anneal_end;
    dreamtime: DreamTime's time-prioritised monotone t (Huang et al. 2023, ``schedules.dreamtime_
    timesteps``): one t per step, decreasing over [anneal_start, anneal_end] within
    [t_min, t_max] T, from the weight prior W_d(t) W_p(t) with the plateau [m2, m1] and Gaussian
    flanks of widths s1 (above m1) and s2 (below m2), as fractions of T (the paper's m1 = 800,
    m2 = 500, s1 = 300, s2 = 100 of T = 1000). ``t_min_end = None`` keeps t_min fixed. The steps
    are fractions of the run (``anneal_start_fraction``, ``anneal_end_fraction``: anneal_start =
    round(fraction * max_steps)), so a shorter run anneals over its own length; a fraction above 1
    is never reached. Every annealed setting (t bounds, grad_clip -> grad_clip_end, CSD's negative
    scale, ISM's delta_t) follows the same [anneal_start, anneal_end].

    Weighting w(t) (``prior.schedule.weight``; abar = alphas_cumprod[t]): sds: 1 - abar
    (DreamFusion); uniform: 1; fantasia3d: sqrt(abar) * (1 - abar) (Fantasia3D, as in
    threestudio's "fantasia").

    grad_clip: None, or a bound applied to g = w(t)(eps_hat - eps) before the loss. mode "norm"
    rescales each sample's g so its L2 norm is <= grad_clip; mode "value" clamps every element
    to [-grad_clip, grad_clip] (threestudio's grad_clip). grad_clip_end: the bound moves linearly
    from grad_clip to grad_clip_end over [anneal_start, anneal_end] (Debiased-SDS score clipping,
    Hong et al. 2023, as threestudio's [0, 2, 8, 1000]; None keeps it constant).

    Estimator settings (each file's docstring has the formula; defaults are the papers'):
    nfsd_negative_prompt, nfsd_t_threshold: NFSD's eps_neg prompt (Katzir et al. 2024, the
    paper's) and the fraction of T below which delta_D = eps_u (200 / 1000).
    csd_negative_prompt, csd_negative_scale(_end): CSD's negative prompt and its weight, annealed
    linearly over [anneal_start, anneal_end] ("" or 0: the classifier score alone).
    delta_t, delta_t_start, xs_delta_t, xs_inv_steps: ISM's interval s = t - delta_t (annealed
    from delta_t_start when set) and its DDIM inversion x0 -> x_s (LucidDreamer's names).
    inversion_scale: CFG scale of the DDIM-inversion predictions (ISM: 0 = unconditional; SDI:
    -6.5 = threestudio's -7.5). inversion_steps, inversion_eta: SDI's DDIM grid and noise.
    lora_*: VSD's LoRA of the prior's denoiser (rank, learning rate, camera dropout);
    lora_camera_scale < 1 is ESD (Wang et al. 2023, 0.5 in the paper).
    cds_delta_t: Consistent3D's ODE step t -> t - delta, delta ~ U{lo..hi}.

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
    grad_clip_end: float | None = None
    dreamtime_m1: float = 0.8
    dreamtime_m2: float = 0.5
    dreamtime_s1: float = 0.3
    dreamtime_s2: float = 0.1
    view_dependent_prompts: bool = True
    perp_neg: bool = False
    perp_neg_f_fs: tuple[float, float, float] = (4.0, 0.5, -2.426)
    perp_neg_f_sf: tuple[float, float, float] = (4.0, 0.5, -2.426)
    perp_neg_f_sb: tuple[float, float, float] = (1.0, 0.5, -0.606)
    perp_neg_f_fsb: tuple[float, float, float] = (1.0, 0.5, 0.967)
    nfsd_negative_prompt: str = NFSD_NEGATIVE_PROMPT
    nfsd_t_threshold: float = 0.2
    csd_negative_prompt: str = ""
    csd_negative_scale: float = 1.0
    csd_negative_scale_end: float | None = None
    delta_t: int = 50
    delta_t_start: int | None = None
    xs_delta_t: int = 200
    xs_inv_steps: int = 5
    inversion_scale: float = 0.0
    inversion_steps: int = 10
    inversion_eta: float = 0.3
    lora_rank: int = 4
    lora_lr: float = 1e-4
    lora_camera_dropout: float = 0.1
    lora_camera_scale: float = 1.0
    cds_delta_t: tuple[int, int] = (100, 299)


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
    if cfg.grad_clip_end is not None and (cfg.grad_clip is None or cfg.grad_clip_end <= 0):
        fail(f"guidance.grad_clip_end={cfg.grad_clip_end} needs a positive grad_clip to start from and must be positive itself")
    bounds = [("t_min", cfg.t_min), ("t_max", cfg.t_max)]
    if cfg.t_schedule not in ("constant", "dreamtime"):
        bounds += [("t_max_end", cfg.t_max_end)] + ([("t_min_end", cfg.t_min_end)] if cfg.t_min_end is not None else [])
    annealed = (cfg.t_schedule != "constant" or cfg.grad_clip_end is not None or cfg.csd_negative_scale_end is not None
                or cfg.delta_t_start is not None)
    if cfg.anneal_start_fraction < 0:
        fail(f"guidance.anneal_start_fraction={cfg.anneal_start_fraction} must be >= 0 (a fraction of trainer.max_steps)")
    if annealed and cfg.anneal_end_fraction < cfg.anneal_start_fraction:
        fail(f"guidance.anneal_end_fraction={cfg.anneal_end_fraction} is before anneal_start_fraction="
             f"{cfg.anneal_start_fraction}; swap them")
    for name, value in bounds:
        if not 0.0 <= value <= 1.0:
            fail(f"guidance.{name}={value} must be a fraction of T in [0, 1] (e.g. 0.02 or 0.98)")
    if cfg.t_min > cfg.t_max:
        fail(f"guidance.t_min={cfg.t_min} exceeds t_max={cfg.t_max}; use t_min <= t_max")
    if cfg.t_schedule not in ("constant", "dreamtime"):
        t_min_end = cfg.t_min if cfg.t_min_end is None else cfg.t_min_end
        if t_min_end > cfg.t_max_end:
            fail(f"guidance.t_max_end={cfg.t_max_end} is below the final t_min={t_min_end}; raise t_max_end")
    for name in ("perp_neg_f_fs", "perp_neg_f_sf", "perp_neg_f_sb", "perp_neg_f_fsb"):
        if len(tuple(getattr(cfg, name))) != 3:
            fail(f"guidance.{name} must be three numbers (a, b, c) of a * exp(-b r) + c")
    _check_estimator_settings(cfg, fail)


def _check_estimator_settings(cfg: GuidanceConfig, fail) -> None:
    """The ranges of the estimators' own settings (the prior-independent part of their checks)."""
    if not 0.0 <= cfg.dreamtime_m2 <= cfg.dreamtime_m1 <= 1.0:
        fail(f"guidance.dreamtime_m2={cfg.dreamtime_m2} and dreamtime_m1={cfg.dreamtime_m1} must satisfy 0 <= m2 <= m1 <= 1 "
             "(fractions of T; DreamTime's are 0.5 and 0.8)")
    for name in ("dreamtime_s1", "dreamtime_s2"):
        if getattr(cfg, name) <= 0:
            fail(f"guidance.{name}={getattr(cfg, name)} must be positive (a fraction of T; DreamTime's s1 = 0.3, s2 = 0.1)")
    if not 0.0 <= cfg.nfsd_t_threshold <= 1.0:
        fail(f"guidance.nfsd_t_threshold={cfg.nfsd_t_threshold} must be a fraction of T in [0, 1] (NFSD's is 0.2)")
    for name in ("csd_negative_scale", "csd_negative_scale_end"):
        value = getattr(cfg, name)
        if value is not None and value < 0:
            fail(f"guidance.{name}={value} is negative; use 0 (no negative term) or more (CSD anneals 1 -> 0.5)")
    for name in ("delta_t", "delta_t_start", "xs_delta_t", "xs_inv_steps", "inversion_steps", "lora_rank"):
        value = getattr(cfg, name)
        if value is not None and value < 1:
            fail(f"guidance.{name}={value} must be a positive integer (LucidDreamer: delta_t 50, xs_delta_t 200, xs_inv_steps 5; "
                 "SDI: inversion_steps 10; VSD: lora_rank 4)")
    if cfg.inversion_eta < 0:
        fail(f"guidance.inversion_eta={cfg.inversion_eta} is negative; use 0 (deterministic DDIM) or more (SDI's 0.3)")
    if cfg.lora_lr <= 0:
        fail(f"guidance.lora_lr={cfg.lora_lr} must be positive (ProlificDreamer's 1e-4)")
    if not 0.0 <= cfg.lora_camera_dropout <= 1.0:
        fail(f"guidance.lora_camera_dropout={cfg.lora_camera_dropout} must be a probability in [0, 1] (ProlificDreamer's 0.1)")
    if not 0.0 <= cfg.lora_camera_scale <= 1.0:
        fail(f"guidance.lora_camera_scale={cfg.lora_camera_scale} must be in [0, 1]: 1 is VSD, below 1 ESD (the paper's 0.5)")
    delta = tuple(cfg.cds_delta_t)
    if len(delta) != 2 or not 1 <= delta[0] <= delta[1]:
        fail(f"guidance.cds_delta_t={list(delta)} must be two integers 1 <= lo <= hi (Consistent3D's [100, 299])")
