"""Flux-type priors (``FluxPipeline`` folders): a FluxTransformer2DModel on flow matching with a
CLIP pooled embedding and T5 tokens; Flux-dev is guidance-distilled (its transformer takes the
guidance scale as an input, ``guidance_embeds``), so it is evaluated without an unconditional row.

As ``FluxPipeline``: tokens = T5's last hidden states (512 per prompt for dev), pooled = CLIP's
pooler output; the 16-channel latent is packed into 2 x 2 patches (``_pack_latents``) with image
position ids (row, column) and zero text ids, the timestep input is sigma (the scheduler's
timestep / 1000), the guidance input the scale; the schedule's shift is the resolution-dependent
one (``use_dynamic_shifting``, mu from the image sequence length). The prior's own space is the
unpacked latent (B, 16, h, w), like every other latent prior.
"""

from __future__ import annotations

import torch
from torch import Tensor

from sds3d.cameras import Cameras

from .condition import Condition
from .diffusers_prior import DiffusersPrior
from .loading import FLOW_SCHEDULERS, PipelineFolder
from .schedule import Schedule
from .sd import schedule_from

#: T5 tokens per prompt when ``prior.max_sequence_length`` is None (FluxPipeline's default).
FLUX_MAX_SEQUENCE_LENGTH = 512
#: FluxPipeline's default_sample_size (latent pixels): 1024 px images.
FLUX_SAMPLE_SIZE = 128


class FluxPrior(DiffusersPrior):
    """CLIP (pooled) + T5 (tokens) text encoders, a Flux transformer and its 16-channel VAE."""

    denoiser_name = "transformer"
    text_encoder_names = ("text_encoder", "text_encoder_2")
    COMPONENTS = {"transformer": (("FluxTransformer2DModel",), "transformer"), "text_encoder": (("CLIPTextModel",), "CLIP text encoder"),
                  "text_encoder_2": (("T5EncoderModel",), "T5 text encoder")}
    requires_vae = True
    SCHEDULERS = FLOW_SCHEDULERS
    patch = 2  # latents are packed into 2 x 2 patches

    def _load_components(self, folder: PipelineFolder) -> None:
        self.text_encoder = self._load(folder, "text_encoder")
        self.tokenizer = folder.load_tokenizer("tokenizer", ("clip",), self.text_encoder.config.max_position_embeddings)
        self.max_sequence_length = self.cfg.max_sequence_length or FLUX_MAX_SEQUENCE_LENGTH
        self.text_encoder_2 = self._load(folder, "text_encoder_2")
        self.tokenizer_2 = folder.load_tokenizer("tokenizer_2", ("t5",), self.max_sequence_length)
        self.transformer = self._load(folder, "transformer")
        self.text_tokens = self.max_sequence_length

    @property
    def native_latent_size(self) -> int:
        return FLUX_SAMPLE_SIZE

    def _build_schedule(self, folder: PipelineFolder) -> Schedule:
        side = self.resolution // self.vae_scale_factor // self.patch
        return schedule_from(folder, self.SCHEDULERS, image_seq_len=side * side, flux_sigmas=True)

    @property
    def guidance_distilled(self) -> bool:
        return bool(self.transformer.config.guidance_embeds)

    @torch.no_grad()
    def encode_prompts(self, prompts: list[str]) -> Condition:
        ids = self.tokenizer(prompts, padding="max_length", max_length=self.tokenizer.model_max_length, truncation=True,
                             return_tensors="pt").input_ids
        with self.on_device(self.text_encoder) as device:
            pooled = self.text_encoder(ids.to(device), output_hidden_states=False).pooler_output
        ids = self.tokenizer_2(prompts, padding="max_length", max_length=self.max_sequence_length, truncation=True,
                               return_tensors="pt").input_ids
        with self.on_device(self.text_encoder_2) as device:
            tokens = self.text_encoder_2(ids.to(device), output_hidden_states=False)[0]
        return Condition(tokens.to(pooled.device), pooled)

    def _predict(self, x_t: Tensor, t: Tensor, cond: Condition, cameras: Cameras | None) -> Tensor:
        from diffusers import FluxPipeline

        B, C, h, w = x_t.shape
        device = self.device
        packed = FluxPipeline._pack_latents(x_t.to(self.dtype), B, C, h, w)
        img_ids = FluxPipeline._prepare_latent_image_ids(B, h // 2, w // 2, device, self.dtype)
        txt_ids = torch.zeros(cond.tokens.shape[1], 3, device=device, dtype=self.dtype)
        guidance = None
        if self.guidance_distilled:
            default = torch.full((B,), float(self.cfg.guidance_embed), device=device)
            guidance = cond.extras.get("guidance", default).to(device=device, dtype=torch.float32)
        out = self.transformer(hidden_states=packed, timestep=(self.schedule.model_time(t) / 1000).to(device), guidance=guidance,
                               pooled_projections=cond.pooled.to(self.dtype), encoder_hidden_states=cond.tokens.to(self.dtype),
                               txt_ids=txt_ids, img_ids=img_ids).sample
        return FluxPipeline._unpack_latents(out, h * self.vae_scale_factor, w * self.vae_scale_factor, self.vae_scale_factor).to(x_t.dtype)
