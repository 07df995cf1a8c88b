"""Stable Diffusion 3 / 3.5 (``StableDiffusion3Pipeline`` folders): an MM-DiT transformer
(SD3Transformer2DModel) on flow matching, with CLIP-L, CLIP-G and T5-XXL text encoders
(Esser et al. 2024).

As ``StableDiffusion3Pipeline.encode_prompt``: the two CLIPs' penultimate hidden states are
concatenated per token and zero-padded to T5's width, then T5's tokens are appended along the
sequence; the pooled embedding is both CLIPs' projected ones concatenated. T5 is optional
(``prior.t5=false``, as diffusers' ``text_encoder_3=None``): its tokens are then zeros. The
schedule is the folder's FlowMatchEulerDiscreteScheduler (shift 3.0 for SD3), the transformer's
timestep input sigma T.
"""

from __future__ import annotations

import torch
from torch import Tensor

from sds3d.cameras import Cameras

from .base import PriorError
from .condition import Condition
from .diffusers_prior import DiffusersPrior
from .loading import FLOW_SCHEDULERS, PipelineFolder
from .schedule import Schedule
from .sd import schedule_from

#: T5 tokens per prompt when ``prior.max_sequence_length`` is None (StableDiffusion3Pipeline's default).
SD3_MAX_SEQUENCE_LENGTH = 256


class SD3Prior(DiffusersPrior):
    """CLIP-L + CLIP-G (+ T5) text encoders, an SD3 transformer and its 16-channel VAE."""

    denoiser_name = "transformer"
    text_encoder_names = ("text_encoder", "text_encoder_2", "text_encoder_3")
    COMPONENTS = {"transformer": (("SD3Transformer2DModel",), "transformer"),
                  "text_encoder": (("CLIPTextModelWithProjection",), "text encoder"),
                  "text_encoder_2": (("CLIPTextModelWithProjection",), "second text encoder"),
                  "text_encoder_3": (("T5EncoderModel",), "T5 text encoder")}
    requires_vae = True
    SCHEDULERS = FLOW_SCHEDULERS

    @property
    def patch(self) -> int:
        return int(self.transformer.config.patch_size)

    @classmethod
    def model_slots(cls, folder: PipelineFolder, cfg) -> list[str]:
        # T5 is loaded when the folder has one (model_index.json names it) and prior.t5 is on.
        slots = super().model_slots(folder, cfg)
        return slots if cfg.t5 and folder.declared("text_encoder_3") else [s for s in slots if s != "text_encoder_3"]

    @classmethod
    def check_folder(cls, folder: PipelineFolder, cfg) -> None:
        if "text_encoder_3" in cls.model_slots(folder, cfg) and not (folder.has("text_encoder_3") and folder.has("tokenizer_3")):
            missing = [s + "/" for s in ("text_encoder_3", "tokenizer_3") if not folder.has(s)]
            raise PriorError(f"{folder.path} lacks {' and '.join(missing)} (SD3's T5 encoder); download it, or set prior.t5=false "
                             f"to run without T5 (zero T5 embeddings, as diffusers' text_encoder_3=None)")
        super().check_folder(folder, cfg)

    def _load_components(self, folder: PipelineFolder) -> None:
        self.text_encoder = self._load(folder, "text_encoder")
        self.text_encoder_2 = self._load(folder, "text_encoder_2")
        self.tokenizer = folder.load_tokenizer("tokenizer", ("clip",), self.text_encoder.config.max_position_embeddings)
        self.tokenizer_2 = folder.load_tokenizer("tokenizer_2", ("clip",), self.text_encoder_2.config.max_position_embeddings)
        self.max_sequence_length = self.cfg.max_sequence_length or SD3_MAX_SEQUENCE_LENGTH
        self.text_encoder_3 = self.tokenizer_3 = None
        if "text_encoder_3" in self.model_slots(folder, self.cfg):
            self.text_encoder_3 = self._load(folder, "text_encoder_3")
            self.tokenizer_3 = folder.load_tokenizer("tokenizer_3", ("t5",), self.max_sequence_length)
        self.transformer = self._load(folder, "transformer")
        # Text tokens the joint attention sees (the CPU cost model): CLIP's + T5's.
        self.text_tokens = self.tokenizer.model_max_length + self.max_sequence_length

    def _build_schedule(self, folder: PipelineFolder) -> Schedule:
        side = self.resolution // self.vae_scale_factor // self.patch
        return schedule_from(folder, self.SCHEDULERS, image_seq_len=side * side)  # SD3.5's dynamic shift, if its config asks

    @torch.no_grad()
    def encode_prompts(self, prompts: list[str]) -> Condition:
        hidden, pooled = [], []
        # Both CLIPs pad to the first tokenizer's length, as the pipeline's tokenizer_max_length.
        length = self.tokenizer.model_max_length
        for tokenizer, encoder in ((self.tokenizer, self.text_encoder), (self.tokenizer_2, self.text_encoder_2)):
            ids = tokenizer(prompts, padding="max_length", max_length=length, truncation=True, return_tensors="pt").input_ids
            with self.on_device(encoder) as device:
                out = encoder(ids.to(device), output_hidden_states=True)
            hidden.append(out.hidden_states[-2])
            pooled.append(out[0])
        clip = torch.cat(hidden, dim=-1)
        width = int(self.transformer.config.joint_attention_dim)
        if self.text_encoder_3 is None:
            t5 = torch.zeros(len(prompts), self.max_sequence_length, width, device=clip.device, dtype=clip.dtype)
        else:
            ids = self.tokenizer_3(prompts, padding="max_length", max_length=self.max_sequence_length, truncation=True,
                                   add_special_tokens=True, return_tensors="pt").input_ids
            with self.on_device(self.text_encoder_3) as device:
                t5 = self.text_encoder_3(ids.to(device))[0].to(clip.device)
        clip = torch.nn.functional.pad(clip, (0, t5.shape[-1] - clip.shape[-1]))
        return Condition(torch.cat([clip, t5.to(clip.dtype)], dim=-2), torch.cat(pooled, dim=-1))

    def _predict(self, x_t: Tensor, t: Tensor, cond: Condition, cameras: Cameras | None) -> Tensor:
        out = self.transformer(hidden_states=x_t.to(self.dtype), timestep=self.schedule.model_time(t).to(self.device),
                               encoder_hidden_states=cond.tokens.to(self.dtype), pooled_projections=cond.pooled.to(self.dtype)).sample
        return out.to(x_t.dtype)
