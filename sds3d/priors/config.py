"""How a prior is loaded and run (precision, attention, memory options): a small typed config.

``RunConfig`` composes it as ``prior:``; the defaults are the right ones for Stable Diffusion on
CUDA and for anything on CPU.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .base import PriorError

DTYPES = {"auto": None, "float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
ATTENTIONS = ("sdpa", "default")


@dataclass
class PriorConfig:
    """Which prior, and its precision and memory settings (diffusers' memory guide; threestudio's SD guidance).

    name_or_path: "toy" (the shipped toy prior), a diffusers pipeline folder, or a hub id in the
        local Hugging Face cache (``sds3d.priors.load_prior``).
    download: fetch a hub id that is not in the local cache (its configs, tokenizer and safetensors
        weights, as ``download_command`` lists them); off by default: a run never reaches the network
        unless asked to.

    dtype: auto = float16 on CUDA, float32 on CPU (no half-precision ops on CPU).
    channels_last: UNet weights in channels_last on CUDA (faster convolutions with cuDNN).
    attention: sdpa = torch's scaled_dot_product_attention (flash / memory-efficient kernels);
        default = diffusers' plain attention (matmul + softmax, for debugging).
    attention_slicing: compute attention in head slices (less memory, a little slower).
    vae_slicing: VAE-encode a batch one image at a time (less peak memory for batch > 1).
    vae_tiling: VAE-encode large images in overlapping tiles (only above the VAE's tile size).
    offload_text_encoder: keep the text encoder on the CPU and move it to the GPU only while
        prompts are encoded (they are encoded once per run), freeing its memory for the UNet.
    warn_cpu: warn once, with a time-per-step estimate, when a latent (Stable-Diffusion-like)
        prior runs on the CPU.
    """

    name_or_path: str = "toy"
    download: bool = False
    dtype: str = "auto"
    channels_last: bool = True
    attention: str = "sdpa"
    attention_slicing: bool = False
    vae_slicing: bool = True
    vae_tiling: bool = False
    offload_text_encoder: bool = True
    warn_cpu: bool = True


def check_prior_config(cfg: PriorConfig) -> None:
    """Raise PriorError naming the first invalid setting of ``cfg``."""
    if cfg.dtype not in DTYPES:
        raise PriorError(f"prior.dtype={cfg.dtype!r} is unknown; use one of {', '.join(DTYPES)}")
    if cfg.attention not in ATTENTIONS:
        raise PriorError(f"prior.attention={cfg.attention!r} is unknown; use one of {', '.join(ATTENTIONS)}")


def resolve_dtype(cfg: PriorConfig, device: torch.device) -> torch.dtype:
    """The weight dtype on ``device``: auto -> float16 on CUDA, float32 elsewhere.

    Raises:
        PriorError: float16 asked for on the CPU.
    """
    check_prior_config(cfg)
    dtype = DTYPES[cfg.dtype]
    if dtype is None:
        return torch.float16 if device.type == "cuda" else torch.float32
    if dtype == torch.float16 and device.type != "cuda":
        raise PriorError("prior.dtype=float16 needs a CUDA device (half precision is slow or missing on CPU); use prior.dtype=auto")
    return dtype
