"""The base of every prior loaded from a diffusers pipeline folder (pixel or latent).

What all of them share is here: the VAE (latent priors: encode with gradient, decode, the
scaling and shift factors) or pixel space, the working resolution, precision, attention and
memory options, and text encoders that stay on the CPU between encodings. Each family (sd.py:
SD 1.x/2.x and the toy priors; sdxl.py; sd3.py; flux.py) loads its denoiser and text encoders
and writes ``encode_prompts`` and ``_predict``. Components load through ``loading.PipelineFolder``
(class allow-list, safetensors only, offline).
"""

from __future__ import annotations

import contextlib

import torch
from torch import Tensor, nn

from .base import Prior, PriorError
from .config import PriorConfig, check_prior_config, resolve_dtype
from .loading import PipelineFolder
from .schedule import Schedule


class DiffusersPrior(Prior):
    """Denoiser + text encoders (+ VAE for latent priors) of one pipeline folder, frozen.

    Subclasses set ``denoiser_name``, ``text_encoder_names`` and ``COMPONENTS`` (the classes each
    model folder may hold) and implement ``_load_components`` (denoiser, text encoders,
    tokenizers), ``_build_schedule``, ``native_latent_size``, ``encode_prompts`` and ``_predict``.

    Attributes:
        path: the pipeline folder.
        dtype: the weights' dtype (``PriorConfig.dtype``; an explicit ``dtype`` wins).
        patch: latent pixels per denoiser patch side (1 for UNets; 2 for SD3's and Flux's patches).
    """

    denoiser_name = "unet"
    text_encoder_names: tuple[str, ...] = ("text_encoder",)
    #: Model folder -> (the class names allowed there, what error messages call it).
    COMPONENTS: dict[str, tuple[tuple[str, ...], str]] = {}
    VAE = (("AutoencoderKL",), "VAE")
    #: Scheduler config classes the family reads (``loading.NOISE_SCHEDULERS`` / ``FLOW_SCHEDULERS``).
    SCHEDULERS: tuple[str, ...] = ()
    requires_vae = False
    patch = 1

    def __init__(self, folder: PipelineFolder, device: torch.device | str = "cpu", dtype: torch.dtype | None = None,
                 cfg: PriorConfig | None = None):
        super().__init__()
        import diffusers
        import transformers

        # Loading bars of a few-MB model are noise in a run's output.
        diffusers.utils.logging.disable_progress_bar()
        transformers.utils.logging.disable_progress_bar()
        device = torch.device(device)
        self.path = folder.path
        self.cfg = cfg = cfg if cfg is not None else PriorConfig()
        check_prior_config(cfg)
        self.check_folder(folder, cfg)
        # The weights' own dtype matters only for auto on CUDA (bf16 weights stay bf16).
        shipped = folder.shipped_dtype(self.denoiser_name) if dtype is None and cfg.dtype == "auto" and device.type == "cuda" else None
        self.dtype = dtype or resolve_dtype(cfg, device, shipped)
        self._load_components(folder)
        self.vae = self._load_vae(folder) if folder.has("vae") else None
        self.latent = self.vae is not None
        self.vae_scale_factor = 2 ** (len(self.vae.config.block_out_channels) - 1) if self.latent else 1
        self.resolution = self._resolution()
        self.schedule = self._build_schedule(folder)
        self.requires_grad_(False)
        self.eval()
        self.to(device)
        self._apply_runtime_options(device)
        if self.latent and device.type == "cpu" and cfg.warn_cpu:
            _warn_cpu_once(self)

    @classmethod
    def model_slots(cls, folder: PipelineFolder, cfg: PriorConfig) -> list[str]:
        """The model folders this family loads from ``folder`` under ``cfg``: denoiser, text encoders, VAE."""
        return [cls.denoiser_name, *cls.text_encoder_names] + (["vae"] if cls.requires_vae or folder.has("vae") else [])

    @classmethod
    def allowed(cls, slot: str) -> tuple[str, ...]:
        """The class names allowed in a model folder."""
        return (cls.VAE if slot == "vae" else cls.COMPONENTS[slot])[0]

    @classmethod
    def check_folder(cls, folder: PipelineFolder, cfg: PriorConfig) -> None:
        """Raise PriorError naming what the folder lacks (before any weights are read)."""
        slots = cls.model_slots(folder, cfg)
        folder.require(*slots, *[s.replace("text_encoder", "tokenizer") for s in slots if s.startswith("text_encoder")], "scheduler")
        folder.class_name(cls.denoiser_name, cls.allowed(cls.denoiser_name))

    def _load(self, folder: PipelineFolder, slot: str, dtype: torch.dtype | None = None) -> nn.Module:
        """One model component in ``dtype`` (default: the prior's)."""
        allowed, what = self.VAE if slot == "vae" else self.COMPONENTS[slot]
        return folder.load_model(slot, allowed, dtype or self.dtype, what)

    def _load_components(self, folder: PipelineFolder) -> None:
        raise NotImplementedError

    def _build_schedule(self, folder: PipelineFolder) -> Schedule:
        raise NotImplementedError

    @property
    def native_latent_size(self) -> int:
        """The denoiser's own sample size in its input space (latent pixels, or pixels)."""
        return int(self.denoiser.config.sample_size)

    def _load_vae(self, folder: PipelineFolder) -> nn.Module:
        return self._load(folder, "vae", self.vae_dtype(self.dtype, folder.config("vae")))

    @classmethod
    def vae_dtype(cls, dtype: torch.dtype, vae_config: dict) -> torch.dtype:
        """The VAE's dtype for a prior in ``dtype`` (the same; a family may keep it in fp32)."""
        return dtype

    def _resolution(self) -> int:
        """Pixels per side: ``cfg.resolution`` or the model's own; a whole number of denoiser patches."""
        step = self.vae_scale_factor * self.patch
        if self.cfg.resolution is None:
            return self.native_latent_size * self.vae_scale_factor
        if self.cfg.resolution % step:
            raise PriorError(f"prior.resolution={self.cfg.resolution} must be a multiple of {step} for {self.path.name} "
                             f"(VAE factor {self.vae_scale_factor} x patch {self.patch}); e.g. {max(step, self.cfg.resolution // step * step)}")
        return self.cfg.resolution

    def _apply_runtime_options(self, device: torch.device) -> None:
        """UNets: SDPA (or plain) attention, attention slicing, channels_last on CUDA; VAE slicing/tiling;
        text encoders offloaded to the CPU (transformer denoisers keep diffusers' SDPA processors)."""
        cfg = self.cfg
        denoiser = self.denoiser
        if self.denoiser_name == "unet" and hasattr(denoiser, "set_attn_processor"):  # the toy UNet has its own blocks
            from diffusers.models.attention_processor import AttnProcessor, AttnProcessor2_0

            denoiser.set_attn_processor(AttnProcessor2_0() if cfg.attention == "sdpa" else AttnProcessor())
            if cfg.attention_slicing:
                denoiser.set_attention_slice("auto")
        if device.type == "cuda" and cfg.channels_last and self.denoiser_name == "unet":
            denoiser.to(memory_format=torch.channels_last)
        if self.vae is not None:
            self.vae.enable_slicing() if cfg.vae_slicing else self.vae.disable_slicing()
            self.vae.enable_tiling() if cfg.vae_tiling else self.vae.disable_tiling()
        # Text-encoder offload only matters on an accelerator (on CPU it already is "offloaded").
        self._offload_text_encoder = cfg.offload_text_encoder and device.type != "cpu"
        if self._offload_text_encoder:
            for encoder in self.text_encoders:
                encoder.to("cpu")

    @property
    def denoiser(self) -> nn.Module:
        """The UNet or transformer."""
        return getattr(self, self.denoiser_name)

    @property
    def text_encoders(self) -> list[nn.Module]:
        return [e for e in (getattr(self, n, None) for n in self.text_encoder_names) if e is not None]

    @property
    def device(self) -> torch.device:
        # The denoiser's device: the text encoders may sit on the CPU (offload_text_encoder).
        return next(self.denoiser.parameters()).device

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        side = self.resolution // self.vae_scale_factor
        channels = self.vae.config.latent_channels if self.latent else self.denoiser.config.in_channels
        return (int(channels), side, side)

    @contextlib.contextmanager
    def on_device(self, encoder: nn.Module):
        """``encoder`` on the prior's device while the block runs, then back on the CPU when offloaded."""
        device = self.device
        if self._offload_text_encoder:
            encoder.to(device)
        try:
            yield device
        finally:
            if self._offload_text_encoder:
                encoder.to("cpu")
                if device.type == "cuda":
                    torch.cuda.empty_cache()

    def encode_images(self, rgb: Tensor) -> Tensor:
        size = (self.resolution, self.resolution)
        if rgb.shape[-2:] != size:
            down = rgb.shape[-1] > self.resolution
            rgb = torch.nn.functional.interpolate(rgb, size=size, mode="bilinear", align_corners=False, antialias=down)
        x = rgb * 2.0 - 1.0
        if not self.latent:
            return x
        # Latent prior: VAE encode with gradient (the SDS gradient reaches the render through it);
        # z' = (z - shift) * scale (SD 1.x/2.x/XL have no shift; SD3 and Flux do).
        posterior = self.vae.encode(x.to(self.vae.dtype)).latent_dist
        z, shift = posterior.sample(), self.vae.config.get("shift_factor")
        return ((z if shift is None else z - shift) * self.vae.config.scaling_factor).to(rgb.dtype)

    @torch.no_grad()
    def decode(self, x: Tensor) -> Tensor:
        if self.latent:
            z, shift = x / self.vae.config.scaling_factor, self.vae.config.get("shift_factor")
            x = self.vae.decode((z if shift is None else z + shift).to(self.vae.dtype)).sample.to(torch.float32)
        return ((x + 1.0) / 2.0).clamp(0.0, 1.0)


# CPU cost model of one SDS step, fp32, from scripts/bench_sd_step.py (random weights, 2 threads of a
# 2-core CPU, torch 2.13, 2026-11-24): SD 2.1-base UNet on the CFG batch 2 x 4 x 64 x 64 took 19.3 s
# (866M params -> 2.72e-12 s per parameter x latent pixel x batch row); the SD VAE encoder forward +
# backward at 256 px took 5.96 s (34.2M params -> 2.66e-12 s per parameter x image pixel), ~24 s at
# 512 px. Parameter count x pixels tracks the FLOPs of a fixed conv layout, so this is meant for
# SD-sized models (tiny ones are overhead-bound: the 1.9M test pipeline measured 4.6 ms, 1 thread).
CPU_UNET_SECONDS_PER_PARAM_PIXEL = 2.72e-12
CPU_VAE_SECONDS_PER_PARAM_PIXEL = 2.66e-12
# (The SDXL UNet at 1024 px measured 1.0e-12 per parameter x latent pixel x row, 84 s per CFG call:
# most of its parameters sit in the 32^2 stage, so this SD-calibrated constant overestimates it ~2.7x.)
# Transformer denoisers cost ~2 FLOPs per parameter per token (+ attention): seconds per parameter x
# token x batch row. scripts/bench_prior_step.py on 2 idle threads of this 2-core CPU (2026-12-01):
# the full SD3-medium transformer, one CFG call at 512 px (2 x (1024 image + 333 text tokens)), 32.6 s
# -> 5.9e-12; a Flux-dev-shaped transformer extrapolated from 1 and 2 double blocks, 7.2e-12.
CPU_TRANSFORMER_SECONDS_PER_PARAM_TOKEN = 5.9e-12

_cpu_warned: set[str] = set()


def _count(module) -> int:
    return sum(p.numel() for p in module.parameters()) if module is not None else 0


def denoiser_tokens(prior: DiffusersPrior) -> int:
    """Tokens a transformer denoiser attends over per sample: image patches + text tokens."""
    side = prior.resolution // prior.vae_scale_factor // prior.patch
    return side * side + int(getattr(prior, "text_tokens", 0))


def estimate_cpu_step_seconds(prior: DiffusersPrior, views: int = 1) -> float:
    """Rough seconds of one SDS step on this kind of CPU: denoiser on [x_t, x_t] + VAE encode with grad.

    Args:
        prior: a loaded prior.
        views: renders per step (``camera.batch_size``).
    """
    rows = 1 if prior.guidance_distilled else 2
    if prior.denoiser_name == "unet":
        h = prior.resolution // prior.vae_scale_factor
        seconds = CPU_UNET_SECONDS_PER_PARAM_PIXEL * _count(prior.denoiser) * h * h * rows * views
    else:
        seconds = CPU_TRANSFORMER_SECONDS_PER_PARAM_TOKEN * _count(prior.denoiser) * denoiser_tokens(prior) * rows * views
    if prior.latent:
        seconds += CPU_VAE_SECONDS_PER_PARAM_PIXEL * _count(prior.vae.encoder) * prior.resolution**2 * views
    return seconds


def _warn_cpu_once(prior: DiffusersPrior) -> None:
    key = str(prior.path)
    if key in _cpu_warned:
        return
    _cpu_warned.add(key)
    import warnings

    seconds = estimate_cpu_step_seconds(prior)
    warnings.warn(
        f"the latent prior {prior.path.name!r} runs on the CPU (fp32): about {seconds:.3g} s per SDS step per view "
        f"(estimate; {_count(prior.denoiser) / 1e6:.3g}M-parameter {prior.denoiser_name} at {prior.resolution}px); "
        f"a CUDA GPU is far faster",
        CPUPriorWarning,
        stacklevel=4,  # the caller of load_prior
    )


class CPUPriorWarning(UserWarning):
    """A Stable-Diffusion-like (latent) prior is running on the CPU."""
