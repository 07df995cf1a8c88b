"""A Prior backed by the parts of a diffusers pipeline folder (pixel or latent).

One code path for the shipped toy prior (pixel space, ToyUNet) and Stable Diffusion (latent
space, UNet2DConditionModel + AutoencoderKL): components are loaded one by one from their
subfolders with ``from_pretrained``; class names are looked up in an allow-list (files on disk
are data, never code to import).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import Tensor

from sds3d.cameras import Cameras

from .base import Prior, PriorError
from .condition import Condition
from .config import PriorConfig, check_prior_config, resolve_dtype
from .schedule import NoiseSchedule

#: Prediction types of the denoisers sds3d loads (SD 1.x/2.x-base: epsilon; SD 2.x 768: v_prediction).
SUPPORTED_PREDICTIONS = ("epsilon", "v_prediction")


def _unet2d_condition_model():
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel


def _toy_unet():
    from .toy_unet import ToyUNet

    return ToyUNet


#: UNet ``_class_name`` -> the function importing its class: only the one a folder names is
#: imported (diffusers' UNet package imports every model family, ~1 s on a CPU).
UNET_CLASSES = {"UNet2DConditionModel": _unet2d_condition_model, "ToyUNet": _toy_unet}


def _dtype_kwarg(module, dtype: torch.dtype) -> dict:
    # transformers >= 4.56 calls it `dtype`; older releases (and diffusers) `torch_dtype`.
    if module == "transformers":
        import transformers

        major, minor = (int(v) for v in transformers.__version__.split(".")[:2])
        return {"dtype": dtype} if (major, minor) >= (4, 56) else {"torch_dtype": dtype}
    return {"torch_dtype": dtype}


def _read_json(path: Path, what: str) -> dict:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise PriorError(f"{path.parent} is not a diffusers pipeline folder: {what} {path.name} is missing") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise PriorError(f"{path} is corrupt ({e.__class__.__name__}); re-download or re-train the prior") from None


class DiffusersPrior(Prior):
    """Text encoder + tokenizer + UNet (+ VAE for latent priors) + the scheduler config's noise schedule."""

    def __init__(
        self,
        path: str | Path,
        device: torch.device | str = "cpu",
        dtype: torch.dtype | None = None,
        cfg: PriorConfig | None = None,
    ):
        super().__init__()
        from diffusers import DDPMScheduler
        from transformers import CLIPTextModel, CLIPTokenizer

        import diffusers
        import transformers

        # Loading bars of a few-MB model are noise in a run's output.
        diffusers.utils.logging.disable_progress_bar()
        transformers.utils.logging.disable_progress_bar()
        path = Path(path)
        device = torch.device(device)
        self.cfg = cfg = cfg if cfg is not None else PriorConfig()
        check_prior_config(cfg)
        # fp16 on CUDA, fp32 on CPU (no half-precision ops on CPU); an explicit dtype wins.
        self.dtype = dtype or resolve_dtype(cfg, device)
        _read_json(path / "model_index.json", "the pipeline index")
        missing = [p for p in ("unet", "text_encoder", "tokenizer", "scheduler") if not (path / p).is_dir()]
        if missing:
            raise PriorError(f"{path} is not a complete diffusers pipeline: missing {', '.join(missing)}/")
        unet_cfg = _read_json(path / "unet" / "config.json", "the UNet config")
        unet_import = UNET_CLASSES.get(unet_cfg.get("_class_name"))
        if unet_import is None:
            raise PriorError(f"{path}/unet is a {unet_cfg.get('_class_name')!r}; sds3d supports {', '.join(UNET_CLASSES)}")
        unet_cls = unet_import()

        def load(what, fn):
            try:
                return fn()
            except PriorError:
                raise
            except Exception as e:  # corrupt or truncated weights: say which file, not a traceback
                raise PriorError(f"could not load the {what} of {path}: {str(e).splitlines()[0][:200]}") from None

        self.tokenizer = load("tokenizer", lambda: CLIPTokenizer.from_pretrained(path, subfolder="tokenizer"))
        self.text_encoder = load("text encoder", lambda: CLIPTextModel.from_pretrained(path, subfolder="text_encoder", **_dtype_kwarg("transformers", self.dtype)))
        self.unet = load("UNet", lambda: unet_cls.from_pretrained(path, subfolder="unet", **_dtype_kwarg("diffusers", self.dtype)))
        scheduler = load("scheduler", lambda: DDPMScheduler.from_pretrained(path, subfolder="scheduler"))
        self.vae = None
        if (path / "vae").is_dir():
            from diffusers import AutoencoderKL

            self.vae = load("VAE", lambda: AutoencoderKL.from_pretrained(path, subfolder="vae", **_dtype_kwarg("diffusers", self.dtype)))
        if scheduler.config.prediction_type not in SUPPORTED_PREDICTIONS:
            raise PriorError(f"{path} predicts {scheduler.config.prediction_type!r}; sds3d supports {' and '.join(SUPPORTED_PREDICTIONS)} models")

        self.path = path
        self.schedule = NoiseSchedule(scheduler.config)
        self.latent = self.vae is not None
        if self.latent:
            self.vae_scale_factor = 2 ** (len(self.vae.config.block_out_channels) - 1)
            self.resolution = int(self.unet.config.sample_size) * self.vae_scale_factor
        else:
            self.resolution = int(self.unet.config.sample_size)
        self.requires_grad_(False)
        self.eval()
        self.to(device)
        self._apply_runtime_options(device)
        if self.latent and device.type == "cpu" and cfg.warn_cpu:
            _warn_cpu_once(self)

    def _apply_runtime_options(self, device: torch.device) -> None:
        """channels_last + SDPA on CUDA, attention slicing, VAE slicing/tiling, text-encoder offload."""
        cfg = self.cfg
        if hasattr(self.unet, "set_attn_processor"):  # diffusers' UNets (the toy UNet has its own blocks)
            from diffusers.models.attention_processor import AttnProcessor, AttnProcessor2_0

            self.unet.set_attn_processor(AttnProcessor2_0() if cfg.attention == "sdpa" else AttnProcessor())
            if cfg.attention_slicing:
                self.unet.set_attention_slice("auto")
        if device.type == "cuda" and cfg.channels_last:
            self.unet.to(memory_format=torch.channels_last)
        if self.vae is not None:
            self.vae.enable_slicing() if cfg.vae_slicing else self.vae.disable_slicing()
            self.vae.enable_tiling() if cfg.vae_tiling else self.vae.disable_tiling()
        # Text-encoder offload only matters on an accelerator (on CPU it already is "offloaded").
        self._offload_text_encoder = cfg.offload_text_encoder and device.type != "cpu"
        if self._offload_text_encoder:
            self.text_encoder.to("cpu")

    @property
    def device(self) -> torch.device:
        # The UNet's device: the text encoder may sit on the CPU (offload_text_encoder).
        return next(self.unet.parameters()).device

    @property
    def latent_shape(self) -> tuple[int, int, int]:
        side = self.resolution // self.vae_scale_factor if self.latent else self.resolution
        return (int(self.unet.config.in_channels), side, side)

    @torch.no_grad()
    def encode_prompts(self, prompts: list[str]) -> Condition:
        # SD 1.x/2.x and the toy UNet take the per-token embeddings only (no pooled embedding).
        tokens = self.tokenizer(prompts, padding="max_length", max_length=self.tokenizer.model_max_length, truncation=True, return_tensors="pt")
        device = self.device
        if self._offload_text_encoder:  # on the GPU only while encoding, then back to the CPU
            self.text_encoder.to(device)
        try:
            return Condition(self.text_encoder(tokens.input_ids.to(device))[0])
        finally:
            if self._offload_text_encoder:
                self.text_encoder.to("cpu")
                if device.type == "cuda":
                    torch.cuda.empty_cache()

    @property
    def camera_conditioned(self) -> bool:
        return bool(getattr(self.unet.config, "camera_conditioning", False))

    def _predict(self, x_t: Tensor, t: Tensor, cond: Condition, cameras: Cameras | None) -> Tensor:
        # The toy UNet's camera embedding reads (elevation, azimuth) in degrees (None: the null camera).
        extra = {"camera": None if cameras is None else cameras.view_angles.to(self.device)} if self.camera_conditioned else {}
        out = self.unet(x_t.to(self.dtype), t.to(self.device), encoder_hidden_states=cond.tokens.to(self.dtype), **extra).sample
        return out.to(x_t.dtype)

    def encode_images(self, rgb: Tensor) -> Tensor:
        size = (self.resolution, self.resolution)
        if rgb.shape[-2:] != size:
            down = rgb.shape[-1] > self.resolution
            rgb = torch.nn.functional.interpolate(rgb, size=size, mode="bilinear", align_corners=False, antialias=down)
        x = rgb * 2.0 - 1.0
        if not self.latent:
            return x
        # Latent prior: VAE encode with gradient (the SDS gradient reaches the render through it).
        posterior = self.vae.encode(x.to(self.dtype)).latent_dist
        return (posterior.sample() * self.vae.config.scaling_factor).to(rgb.dtype)

    @torch.no_grad()
    def decode(self, x: Tensor) -> Tensor:
        if self.latent:
            x = self.vae.decode((x / self.vae.config.scaling_factor).to(self.dtype)).sample.to(torch.float32)
        return ((x + 1.0) / 2.0).clamp(0.0, 1.0)


# CPU cost model of one SDS step, fp32, from scripts/bench_sd_step.py (random weights, 2 threads of a
# 2-core CPU, torch 2.13, 2026-11-24): SD 2.1-base UNet on the CFG batch 2 x 4 x 64 x 64 took 19.3 s
# (866M params -> 2.72e-12 s per parameter x latent pixel x batch row); the SD VAE encoder forward +
# backward at 256 px took 5.96 s (34.2M params -> 2.66e-12 s per parameter x image pixel), ~24 s at
# 512 px. Parameter count x pixels tracks the FLOPs of a fixed conv layout, so this is meant for
# SD-sized models (tiny ones are overhead-bound: the 1.9M test pipeline measured 4.6 ms, 1 thread).
CPU_UNET_SECONDS_PER_PARAM_PIXEL = 2.72e-12
CPU_VAE_SECONDS_PER_PARAM_PIXEL = 2.66e-12

_cpu_warned: set[str] = set()


def _count(module) -> int:
    return sum(p.numel() for p in module.parameters()) if module is not None else 0


def estimate_cpu_step_seconds(prior: DiffusersPrior, views: int = 1) -> float:
    """Rough seconds of one SDS step on this kind of CPU: UNet on [x_t, x_t] + VAE encode with grad.

    Args:
        prior: a loaded prior.
        views: renders per step (``camera.batch_size``).
    """
    h, w = (prior.resolution // prior.vae_scale_factor,) * 2 if prior.latent else (prior.resolution,) * 2
    seconds = CPU_UNET_SECONDS_PER_PARAM_PIXEL * _count(prior.unet) * h * w * 2 * views
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
        f"(estimate; {_count(prior.unet) / 1e6:.3g}M-parameter UNet at {prior.resolution}px); a CUDA GPU is far faster",
        CPUPriorWarning,
        stacklevel=4,  # the caller of load_prior
    )


class CPUPriorWarning(UserWarning):
    """A Stable-Diffusion-like (latent) prior is running on the CPU."""
