"""Stable Diffusion XL (``StableDiffusionXLPipeline`` folders): two CLIP text encoders, a pooled
text embedding and the size / crop micro-conditioning ("time ids", Podell et al. 2023, Sec. 2.2).

As ``StableDiffusionXLPipeline.encode_prompt``: the tokens are the penultimate hidden states of
CLIP ViT-L (text_encoder) and OpenCLIP ViT-bigG (text_encoder_2) concatenated per token, the
pooled embedding is text_encoder_2's projected one, and with the pipeline's
``force_zeros_for_empty_prompt`` the empty prompt (the unconditional row) is all zeros. The time
ids are (original size, crop top-left, target size) = (R, R, 0, 0, R, R) for the R x R image the
UNet sees (``_get_add_time_ids`` with the render resized to the prior's resolution, uncropped).
"""

from __future__ import annotations

import torch
from torch import Tensor

from sds3d.cameras import Cameras

from .base import PriorError
from .condition import Condition
from .loading import NOISE_SCHEDULERS, PipelineFolder
from .schedule import Schedule
from .sd import SDPrior, schedule_from


class SDXLPrior(SDPrior):
    """CLIP-L + CLIP-G text encoders, an SDXL UNet (added text/time conditioning) and its VAE."""

    text_encoder_names = ("text_encoder", "text_encoder_2")
    COMPONENTS = {"unet": (("UNet2DConditionModel",), "UNet"), "text_encoder": (("CLIPTextModel",), "text encoder"),
                  "text_encoder_2": (("CLIPTextModelWithProjection",), "second text encoder")}
    requires_vae = True
    SCHEDULERS = NOISE_SCHEDULERS

    def _load_components(self, folder: PipelineFolder) -> None:
        self.text_encoder = self._load(folder, "text_encoder")
        self.text_encoder_2 = self._load(folder, "text_encoder_2")
        self.tokenizer = folder.load_tokenizer("tokenizer", ("clip",), self.text_encoder.config.max_position_embeddings)
        self.tokenizer_2 = folder.load_tokenizer("tokenizer_2", ("clip",), self.text_encoder_2.config.max_position_embeddings)
        self.unet = self._load(folder, "unet")
        self.force_zeros_for_empty_prompt = bool(folder.index.get("force_zeros_for_empty_prompt", True))  # the pipeline's default
        config = self.unet.config
        expected = self.unet.add_embedding.linear_1.in_features if config.addition_embed_type == "text_time" else None
        passed = config.addition_time_embed_dim * 6 + self.text_encoder_2.config.projection_dim if config.addition_time_embed_dim else None
        if expected is None or expected != passed:
            raise PriorError(f"{folder.path / 'unet'} is not an SDXL base UNet for these text encoders (added embedding of {expected} "
                             f"inputs, time ids + text_encoder_2 projection give {passed}); use a StableDiffusionXLPipeline base folder")

    def _build_schedule(self, folder: PipelineFolder) -> Schedule:
        return schedule_from(folder, self.SCHEDULERS)

    @classmethod
    def vae_dtype(cls, dtype: torch.dtype, vae_config: dict) -> torch.dtype:
        # SDXL's VAE overflows in fp16 (its config says force_upcast): fp32 then, as the pipeline upcasts it.
        return torch.float32 if dtype == torch.float16 and vae_config.get("force_upcast", True) else dtype

    @property
    def camera_conditioned(self) -> bool:
        return False

    def time_ids(self, batch: int) -> Tensor:
        """(original_size, crops_coords_top_left, target_size) of the prior's R x R input. Shape: (batch, 6)."""
        R = self.resolution
        return torch.tensor([[R, R, 0, 0, R, R]], dtype=torch.float32).expand(batch, 6)

    @torch.no_grad()
    def encode_prompts(self, prompts: list[str]) -> Condition:
        hidden, pooled = [], None
        for tokenizer, encoder in ((self.tokenizer, self.text_encoder), (self.tokenizer_2, self.text_encoder_2)):
            ids = tokenizer(prompts, padding="max_length", max_length=tokenizer.model_max_length, truncation=True, return_tensors="pt").input_ids
            with self.on_device(encoder) as device:
                out = encoder(ids.to(device), output_hidden_states=True)
            hidden.append(out.hidden_states[-2])  # SDXL conditions on the penultimate layer
            pooled = out[0] if out[0].ndim == 2 else pooled  # text_encoder_2's projected pooled embedding
        tokens = torch.cat(hidden, dim=-1)
        if self.force_zeros_for_empty_prompt:
            empty = torch.tensor([p == "" for p in prompts], device=tokens.device)
            tokens = torch.where(empty[:, None, None], torch.zeros_like(tokens), tokens)
            pooled = torch.where(empty[:, None], torch.zeros_like(pooled), pooled)
        return Condition(tokens, pooled, {"time_ids": self.time_ids(len(prompts)).to(tokens.device)})

    def _predict(self, x_t: Tensor, t: Tensor, cond: Condition, cameras: Cameras | None) -> Tensor:
        added = {"text_embeds": cond.pooled.to(self.dtype), "time_ids": cond.extras["time_ids"].to(self.dtype)}
        out = self.unet(x_t.to(self.dtype), t.to(self.device), encoder_hidden_states=cond.tokens.to(self.dtype), added_cond_kwargs=added).sample
        return out.to(x_t.dtype)
