"""Noise schedules: the forward process, conversions between model outputs, w(t) and the DDIM step.

Every formula of the diffusion process that guidance, sampling and the toy prior's training need
is written here, once, and nowhere else. A schedule describes x_t = alpha_t x + sigma_t eps at
integer timesteps t in [0, num_train_timesteps) and what the denoiser predicts from x_t
(``prediction_type``). ``Schedule`` is the interface, with the parts every such process shares
(the forward process, the deterministic DDIM step, which for x_t = (1 - sigma) x + sigma eps is
the Euler step of flow matching); ``NoiseSchedule`` is the DDPM family (alpha_t = sqrt(abar_t),
sigma_t = sqrt(1 - abar_t)), built from a diffusers scheduler config; ``FlowSchedule`` is flow
matching (alpha_t = 1 - sigma_t, velocity prediction), built from a
``FlowMatchEulerDiscreteScheduler`` config.

The DDIM step is written here rather than taken from diffusers' ``DDIMScheduler.step``: that
takes one scalar t for the whole batch and keeps sampler state (``set_timesteps``), while
distillation estimators need per-sample t and the inversion step (ISM, DDIM inversion); the
tests check it against ``DDIMScheduler.step``.

Shapes: t is (B,) int64; per-t values are (B,) float32, or (B, 1, ..., 1) in the dtype and on
the device of ``like`` when a tensor (B, ...) is given to broadcast against.
"""

from __future__ import annotations

import inspect
import math
from abc import ABC, abstractmethod
from typing import Mapping

import torch
from torch import Tensor

PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")
#: What a flow-matching denoiser predicts: the velocity eps - x (diffusers' name for it).
FLOW_PREDICTION = "flow_prediction"
#: The family of a prediction type, as ``sds3d doctor`` names it.
FAMILIES = {"epsilon": "ε", "v_prediction": "v", "sample": "x0", FLOW_PREDICTION: "flow"}
#: w(t) of the SDS gradient (DreamFusion Eq. 3), by name (``Schedule.weight``).
WEIGHTINGS = ("sds", "uniform", "fantasia3d", "ism", "sjc")


def classifier_free_guidance(out_uncond: Tensor, out_cond: Tensor, scale: float) -> Tensor:
    """out_u + s (out_c - out_u) (Ho & Salimans 2022, Eq. 6), the one CFG formula.

    Any prediction type: it is linear, so guiding eps, v or x0 outputs gives the same x0-hat.
    """
    return out_uncond + scale * (out_cond - out_uncond)


def scheduler_from_config(cls: type, config: Mapping):
    """``cls(**the config's keys its __init__ takes)``: the scheduler ``cls.from_config(config)`` builds.

    Written out because ``from_config`` imports every compatible scheduler class to filter the keys
    (LMSDiscreteScheduler imports scipy.stats: ~0.5 s of every prior load). Keys the config marks as
    defaulted (``_use_default_values``) and private keys are dropped, as ``from_config`` does.
    """
    defaulted = set(config.get("_use_default_values", ()))
    keys = set(inspect.signature(cls.__init__).parameters) - {"self", "kwargs"} - set(cls.ignore_for_config)
    return cls(**{k: v for k, v in config.items() if k in keys and k not in defaulted})


def _broadcast(values: Tensor, like: Tensor | None) -> Tensor:
    if like is None:
        return values
    return values.view(-1, *([1] * (like.ndim - 1))).to(device=like.device, dtype=like.dtype)


class Schedule(ABC):
    """x_t = alpha_t x + sigma_t eps, and what a denoiser of it predicts.

    Attributes:
        num_train_timesteps: T; timesteps are integers in [0, T). A negative t is the clean end
            of the process (alpha = 1 for DDIM's last step).
        prediction_type: what ``Prior.predict`` returns, e.g. "epsilon".
    """

    num_train_timesteps: int
    prediction_type: str

    @abstractmethod
    def alpha(self, t: Tensor, like: Tensor | None = None) -> Tensor:
        """alpha_t, the signal coefficient of x_t."""

    @abstractmethod
    def sigma(self, t: Tensor, like: Tensor | None = None) -> Tensor:
        """sigma_t, the noise coefficient of x_t."""

    @abstractmethod
    def to_eps(self, model_output: Tensor, x_t: Tensor, t: Tensor) -> Tensor:
        """eps-hat from a model output (shapes (B, ...))."""

    @abstractmethod
    def to_x0(self, model_output: Tensor, x_t: Tensor, t: Tensor) -> Tensor:
        """x0-hat from a model output (shapes (B, ...))."""

    @abstractmethod
    def to_v(self, model_output: Tensor, x_t: Tensor, t: Tensor) -> Tensor:
        """The schedule's velocity from a model output (shapes (B, ...))."""

    @abstractmethod
    def target(self, x: Tensor, eps: Tensor, t: Tensor) -> Tensor:
        """The training target of ``prediction_type`` for clean x and noise eps."""

    @abstractmethod
    def weight(self, t: Tensor, kind: str, like: Tensor | None = None) -> Tensor:
        """The SDS weighting w(t) named ``kind`` (one of ``WEIGHTINGS``)."""

    @abstractmethod
    def ddim_timesteps(self, num_inference_steps: int) -> tuple[Tensor, Tensor]:
        """(t, t_prev) of a deterministic sampler with ``num_inference_steps`` steps, t descending."""

    @property
    def family(self) -> str:
        """ε, v, x0 or flow: what the denoiser predicts, in one word."""
        return FAMILIES[self.prediction_type]

    def model_time(self, t: Tensor) -> Tensor:
        """The denoiser's timestep input at t (the DDPM family: t itself)."""
        return t

    def step(self, x_t: Tensor, t: Tensor, t_prev: Tensor, model_output: Tensor) -> Tensor:
        """One deterministic sampler step from t to t_prev < t with a (guided) model output at
        (x_t, t): the DDIM step of ``to_eps(model_output)``."""
        return self.ddim_step(x_t, t, t_prev, self.to_eps(model_output, x_t, t))

    def invert_step(self, x_s: Tensor, s: Tensor, t: Tensor, model_output: Tensor) -> Tensor:
        """``step`` run from the less noisy s to t > s with the model output at (x_s, s) (inversion)."""
        return self.ddim_invert_step(x_s, s, t, self.to_eps(model_output, x_s, s))

    def add_noise(self, x: Tensor, eps: Tensor, t: Tensor) -> Tensor:
        """x_t ~ q(x_t | x): alpha_t x + sigma_t eps (DDPM, Ho et al. 2020, Eq. 4)."""
        return self.alpha(t, x) * x + self.sigma(t, x) * eps

    def ddim_step(self, x_t: Tensor, t: Tensor, t_prev: Tensor, eps: Tensor) -> Tensor:
        """x_{t_prev} = alpha_prev x0-hat + sigma_prev eps-hat with x0-hat = (x_t - sigma_t eps-hat) / alpha_t
        (DDIM, Song et al. 2021, Eq. 12 with eta = 0). x0-hat is not clipped or thresholded.

        Args:
            x_t: Shape: (B, ...). t, t_prev: (B,) with t_prev < t (negative: the clean end).
            eps: eps-hat at (x_t, t) (``to_eps`` of the model output). Shape: (B, ...).
        """
        return self._move(x_t, t, t_prev, eps)

    def ddim_invert_step(self, x_s: Tensor, s: Tensor, t: Tensor, eps: Tensor) -> Tensor:
        """DDIM inversion: Eq. 12 run from the less noisy s to t > s with eps-hat taken at (x_s, s)
        (the deterministic noising of ISM / DDIM inversion). Shapes as ``ddim_step``.
        """
        return self._move(x_s, s, t, eps)

    def ddim_posterior_std(self, t: Tensor, t_prev: Tensor, like: Tensor | None = None) -> Tensor:
        """The std of q(x_{t_prev} | x_t, x) for t_prev < t: sqrt(sigma_prev^2 / sigma_t^2 (sigma_t^2 -
        (alpha_t / alpha_prev)^2 sigma_prev^2)), i.e. DDIM's sigma_t(eta = 1) (Song et al. 2021, Eq. 16;
        for the DDPM family (1 - abar_prev) / (1 - abar_t) (1 - abar_t / abar_prev)). SDI's inversion
        adds eta times it as noise (with t_prev < t the less noisy end). Shapes as ``alpha``.
        """
        a, s = self.alpha(t, like), self.sigma(t, like)
        a_prev, s_prev = self.alpha(t_prev, like), self.sigma(t_prev, like)
        return (s_prev**2 / s**2 * (s**2 - (a / a_prev) ** 2 * s_prev**2)).clamp_min(0.0).sqrt()

    def _move(self, x_from: Tensor, t_from: Tensor, t_to: Tensor, eps: Tensor) -> Tensor:
        x0 = (x_from - self.sigma(t_from, x_from) * eps) / self.alpha(t_from, x_from)
        return self.alpha(t_to, x_from) * x0 + self.sigma(t_to, x_from) * eps


class NoiseSchedule(Schedule):
    """The DDPM family (Ho et al. 2020): alpha_t = sqrt(abar_t), sigma_t = sqrt(1 - abar_t).

    Prediction types (``PREDICTION_TYPES``): "epsilon" (eps), "v_prediction"
    (v = alpha_t eps - sigma_t x; Salimans & Ho 2022, Sec. 4), "sample" (x).

    Args:
        config: a diffusers scheduler config (``scheduler_config.json`` as a dict). abar_t is
            ``DDPMScheduler``'s ``alphas_cumprod`` (betas, beta schedule, zero-SNR rescaling as
            diffusers computes them); the sampler's timesteps and its final abar are
            ``DDIMScheduler``'s for the same config.
    """

    def __init__(self, config: Mapping):
        from diffusers import DDIMScheduler, DDPMScheduler

        config = dict(config)
        ddpm = scheduler_from_config(DDPMScheduler, config)
        self.prediction_type = ddpm.config.prediction_type
        if self.prediction_type not in PREDICTION_TYPES:
            raise ValueError(f"unknown prediction_type {self.prediction_type!r}; use one of {', '.join(PREDICTION_TYPES)}")
        self.num_train_timesteps = int(ddpm.config.num_train_timesteps)
        self.alphas_cumprod = ddpm.alphas_cumprod.float()  # (T,)
        self._ddim = scheduler_from_config(DDIMScheduler, config)
        # abar at DDIM's last step (t_prev < 0): 1 (set_alpha_to_one) or abar_0, as the config says.
        self.final_alpha_cumprod = float(self._ddim.final_alpha_cumprod)

    def alphas_cumprod_at(self, t: Tensor, like: Tensor | None = None) -> Tensor:
        """abar_t (negative t: the final abar of the DDIM sampler)."""
        abar = self.alphas_cumprod.to(t.device)[t.clamp_min(0)]
        abar = torch.where(t >= 0, abar, torch.full_like(abar, self.final_alpha_cumprod))
        return _broadcast(abar, like)

    def alpha(self, t: Tensor, like: Tensor | None = None) -> Tensor:
        return self.alphas_cumprod_at(t, like).sqrt()

    def sigma(self, t: Tensor, like: Tensor | None = None) -> Tensor:
        return (1.0 - self.alphas_cumprod_at(t, like)).sqrt()

    def to_eps(self, model_output: Tensor, x_t: Tensor, t: Tensor) -> Tensor:
        if self.prediction_type == "epsilon":
            return model_output
        alpha, sigma = self.alpha(t, x_t), self.sigma(t, x_t)
        if self.prediction_type == "v_prediction":
            return alpha * model_output + sigma * x_t
        return (x_t - alpha * model_output) / sigma

    def to_x0(self, model_output: Tensor, x_t: Tensor, t: Tensor) -> Tensor:
        if self.prediction_type == "sample":
            return model_output
        alpha, sigma = self.alpha(t, x_t), self.sigma(t, x_t)
        if self.prediction_type == "v_prediction":
            return alpha * x_t - sigma * model_output
        return (x_t - sigma * model_output) / alpha

    def to_v(self, model_output: Tensor, x_t: Tensor, t: Tensor) -> Tensor:
        if self.prediction_type == "v_prediction":
            return model_output
        eps, x0 = self.to_eps(model_output, x_t, t), self.to_x0(model_output, x_t, t)
        return self.alpha(t, x_t) * eps - self.sigma(t, x_t) * x0

    def target(self, x: Tensor, eps: Tensor, t: Tensor) -> Tensor:
        """eps (L_simple, DDPM Eq. 14), v = alpha_t eps - sigma_t x, or x."""
        if self.prediction_type == "epsilon":
            return eps
        if self.prediction_type == "sample":
            return x
        return self.alpha(t, x) * eps - self.sigma(t, x) * x

    def weight(self, t: Tensor, kind: str, like: Tensor | None = None) -> Tensor:
        """sds: 1 - abar_t (DreamFusion); uniform: 1; fantasia3d: sqrt(abar_t) (1 - abar_t)
        (Fantasia3D's weighting as implemented in threestudio); ism: sqrt((1 - abar_t) / abar_t)
        (LucidDreamer's ISM); sjc: sqrt(abar_t / (1 - abar_t)) (Score Jacobian Chaining's score
        (D(x + sigma eps) - x) / sigma^2 as an SDS weighting; see ``guidance/sds.py``)."""
        abar = self.alphas_cumprod_at(t, like)
        if kind == "sds":
            return 1.0 - abar
        if kind == "uniform":
            return torch.ones_like(abar)
        if kind == "fantasia3d":
            return abar.sqrt() * (1.0 - abar)
        if kind == "ism":
            return ((1.0 - abar) / abar).sqrt()
        if kind == "sjc":
            return (abar / (1.0 - abar)).sqrt()
        raise ValueError(f"unknown weighting {kind!r}; use one of {', '.join(WEIGHTINGS)}")

    def ddim_timesteps(self, num_inference_steps: int) -> tuple[Tensor, Tensor]:
        """DDIMScheduler's timesteps for this config (its timestep_spacing and steps_offset), and
        t_prev = t - T // n as in ``DDIMScheduler.step`` (negative for the last step)."""
        self._ddim.set_timesteps(num_inference_steps)
        t = self._ddim.timesteps.to(torch.long)
        return t, t - self.num_train_timesteps // num_inference_steps


class FlowSchedule(Schedule):
    """Flow matching / rectified flow (Lipman et al. 2023; Liu et al. 2023; Esser et al. 2024, SD3):
    x_t = (1 - sigma_t) x + sigma_t eps (alpha_t = 1 - sigma_t), and the denoiser predicts the
    velocity v = d x_t / d sigma = eps - x (``prediction_type`` "flow_prediction").

    sigma_t = shift(u) with u = (t + 1) / T: at integer t in [0, T) these are the training sigmas
    of diffusers' ``FlowMatchEulerDiscreteScheduler`` in increasing order (its ``sigmas`` reversed),
    t = T - 1 is pure noise (sigma = 1) and t = -1 the clean end (sigma = 0). t may be fractional:
    the Euler sampler's steps (``ddim_timesteps``) lie between grid points. The shift is SD3's
    resolution shift, sigma = s u / (1 + (s - 1) u) (Esser et al. 2024, Eq. 23, s = ``shift``), or
    with ``use_dynamic_shifting`` (Flux) ``time_shift(mu, 1, u)`` with mu from the image sequence
    length (``calculate_shift``, as FluxPipeline computes it).

    ε and x0 from a velocity at x_t: eps-hat = x_t + (1 - sigma) v, x0-hat = x_t - sigma v. The
    sampler step is Euler, x_prev = x_t + (sigma_prev - sigma_t) v (``FlowMatchEulerDiscreteScheduler.step``),
    which is also the DDIM step (Schedule's docstring); its inversion runs the same step towards
    the noise end.

    Args:
        config: a ``FlowMatchEulerDiscreteScheduler`` config (``scheduler_config.json`` as a dict).
        image_seq_len: the denoiser's image tokens (Flux: (h / 2) (w / 2) latent patches); needed
            only with ``use_dynamic_shifting``.
        flux_sigmas: the sampler starts from sigmas linspace(1, 1/n, n), as FluxPipeline passes
            them (else set_timesteps' own, as StableDiffusion3Pipeline).
    """

    prediction_type = FLOW_PREDICTION

    def __init__(self, config: Mapping, image_seq_len: int | None = None, flux_sigmas: bool = False):
        from diffusers import FlowMatchEulerDiscreteScheduler

        self._scheduler = scheduler_from_config(FlowMatchEulerDiscreteScheduler, dict(config))
        c = self._scheduler.config
        unsupported = [k for k in ("use_karras_sigmas", "use_exponential_sigmas", "use_beta_sigmas", "invert_sigmas",
                                   "stochastic_sampling", "shift_terminal") if c.get(k)]
        if unsupported:
            raise ValueError(f"flow scheduler options {', '.join(unsupported)} are not supported; sds3d uses the Euler sampler's plain sigmas")
        self.num_train_timesteps = int(c.num_train_timesteps)
        self.shift = float(c.shift)
        self.flux_sigmas = flux_sigmas
        self.mu = None
        if c.use_dynamic_shifting:
            if image_seq_len is None:
                raise ValueError("a flow schedule with use_dynamic_shifting needs the image sequence length (image_seq_len)")
            from diffusers.pipelines.flux.pipeline_flux import calculate_shift

            self.mu = calculate_shift(image_seq_len, c.base_image_seq_len, c.max_image_seq_len, c.base_shift, c.max_shift)

    def shifted(self, u: Tensor) -> Tensor:
        """sigma of the unshifted time u in [0, 1] (u = 0: sigma = 0, u = 1: sigma = 1)."""
        if self.mu is None:
            return self.shift * u / (1 + (self.shift - 1) * u)
        return self._scheduler.time_shift(self.mu, 1.0, u)

    def unshifted(self, sigma: Tensor) -> Tensor:
        """The inverse of ``shifted``: u with shifted(u) = sigma (float64)."""
        sigma = sigma.double()
        if self.mu is None:
            return sigma / (self.shift - (self.shift - 1) * sigma)
        scale = math.exp(self.mu) if self._scheduler.config.time_shift_type == "exponential" else self.mu
        return 1.0 / (1.0 + scale * (1.0 / sigma - 1.0))

    def sigma(self, t: Tensor, like: Tensor | None = None) -> Tensor:
        # Integer t: float32 as diffusers computes its sigmas; fractional t keep their precision.
        u = (t + 1).to(torch.float32 if not t.is_floating_point() else t.dtype) / self.num_train_timesteps
        return _broadcast(self.shifted(u).to(torch.float32), like)

    def alpha(self, t: Tensor, like: Tensor | None = None) -> Tensor:
        return 1.0 - self.sigma(t, like)

    def model_time(self, t: Tensor) -> Tensor:
        """sigma_t T: the timestep FlowMatchEulerDiscreteScheduler gives the denoiser."""
        return self.sigma(t) * self.num_train_timesteps

    def to_eps(self, model_output: Tensor, x_t: Tensor, t: Tensor) -> Tensor:
        return x_t + self.alpha(t, x_t) * model_output

    def to_x0(self, model_output: Tensor, x_t: Tensor, t: Tensor) -> Tensor:
        return x_t - self.sigma(t, x_t) * model_output

    def to_v(self, model_output: Tensor, x_t: Tensor, t: Tensor) -> Tensor:
        return model_output

    def target(self, x: Tensor, eps: Tensor, t: Tensor) -> Tensor:
        """v = eps - x (the conditional flow-matching target, Lipman et al. 2023, Eq. 23 with sigma_min = 0)."""
        return eps - x

    def weight(self, t: Tensor, kind: str, like: Tensor | None = None) -> Tensor:
        """The weight of eps-hat - eps, written in this process's sigma_t: sds: sigma_t^2 (DreamFusion's
        1 - abar_t = sigma_t^2 of the DDPM family); uniform: 1; fantasia3d: alpha_t sigma_t^2
        (sqrt(abar_t) (1 - abar_t) = alpha_t sigma_t^2); ism: sigma_t / alpha_t; sjc: alpha_t / sigma_t,
        with alpha_t = 1 - sigma_t (the DDPM family's sqrt((1 - abar) / abar) and its inverse)."""
        sigma = self.sigma(t, like)
        if kind == "sds":
            return sigma**2
        if kind == "uniform":
            return torch.ones_like(sigma)
        if kind == "fantasia3d":
            return (1.0 - sigma) * sigma**2
        if kind == "ism":
            return sigma / (1.0 - sigma)
        if kind == "sjc":
            return (1.0 - sigma) / sigma
        raise ValueError(f"unknown weighting {kind!r}; use one of {', '.join(WEIGHTINGS)}")

    def ddim_timesteps(self, num_inference_steps: int) -> tuple[Tensor, Tensor]:
        """The Euler sampler's steps as FlowMatchEulerDiscreteScheduler.set_timesteps makes them
        (with mu when the shift is dynamic, and ``flux_sigmas``: linspace(1, 1/n, n), as the
        pipelines call it), as fractional t (float64) with sigma(t) = its sigmas; the last t_prev is -1."""
        import numpy as np

        n = num_inference_steps
        self._scheduler.set_timesteps(n, sigmas=np.linspace(1.0, 1 / n, n) if self.flux_sigmas else None, mu=self.mu)
        s = self._scheduler
        t = self.unshifted(s.sigmas) * self.num_train_timesteps - 1.0
        return t[:-1], t[1:]

    def step(self, x_t: Tensor, t: Tensor, t_prev: Tensor, model_output: Tensor) -> Tensor:
        """Euler: x_t + (sigma_prev - sigma_t) v (FlowMatchEulerDiscreteScheduler.step)."""
        return x_t + (self.sigma(t_prev, x_t) - self.sigma(t, x_t)) * model_output

    def invert_step(self, x_s: Tensor, s: Tensor, t: Tensor, model_output: Tensor) -> Tensor:
        """The Euler step from s towards the noise end, x_s + (sigma_t - sigma_s) v; to t = T - 1 it is
        the noise x_s + (1 - sigma_s) v the straight flow through (x_s, v) reaches (RFDS-Rev's inversion)."""
        return x_s + (self.sigma(t, x_s) - self.sigma(s, x_s)) * model_output
