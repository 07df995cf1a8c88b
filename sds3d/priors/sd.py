"""Stable Diffusion 1.x / 2.x (ε-, v- or x0-prediction UNet, one CLIP text encoder) and the toy priors.

One code path for the shipped toy priors (pixel space, ToyUNet, an ε- or a flow-matching
schedule) and Stable Diffusion (latent space, UNet2DConditionModel + AutoencoderKL). The
scheduler config decides the schedule: a DDPM-family config (any of ``loading.NOISE_SCHEDULERS``,
its ``prediction_type`` epsilon, v_prediction or sample) -> ``NoiseSchedule``; a
``FlowMatchEulerDiscreteScheduler`` config (the toy flow prior) -> ``FlowSchedule``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from sds3d.cameras import Cameras

from .base import PriorError
from .condition import Condition
from .diffusers_prior import DiffusersPrior
from .loading import FLOW_SCHEDULERS, NOISE_SCHEDULERS, PipelineFolder
from .schedule import PREDICTION_TYPES, FlowSchedule, NoiseSchedule, Schedule

class SDPrior(DiffusersPrior):
    """CLIP tokenizer + text encoder + UNet (+ VAE for latent priors) + the scheduler config's schedule."""

    COMPONENTS = {"unet": (("UNet2DConditionModel", "ToyUNet"), "UNet"), "text_encoder": (("CLIPTextModel",), "text encoder")}
    SCHEDULERS = NOISE_SCHEDULERS + FLOW_SCHEDULERS

    def _load_components(self, folder: PipelineFolder) -> None:
        self.text_encoder = self._load(folder, "text_encoder")
        self.tokenizer = folder.load_tokenizer("tokenizer", ("clip",), self.text_encoder.config.max_position_embeddings)
        self.unet = self._load(folder, "unet")

    def _build_schedule(self, folder: PipelineFolder) -> Schedule:
        return schedule_from(folder, self.SCHEDULERS)

    @torch.no_grad()
    def encode_prompts(self, prompts: list[str]) -> Condition:
        # SD 1.x/2.x and the toy UNet take the per-token embeddings only (no pooled embedding).
        tokens = self.tokenizer(prompts, padding="max_length", max_length=self.tokenizer.model_max_length, truncation=True, return_tensors="pt")
        with self.on_device(self.text_encoder) as device:
            return Condition(self.text_encoder(tokens.input_ids.to(device))[0])

    @property
    def camera_conditioned(self) -> bool:
        return bool(getattr(self.unet.config, "camera_conditioning", False))

    def _predict(self, x_t: Tensor, t: Tensor, cond: Condition, cameras: Cameras | None) -> Tensor:
        # The toy UNet's camera embedding reads (elevation, azimuth) in degrees (None: the null camera).
        extra = {"camera": None if cameras is None else cameras.view_angles.to(self.device)} if self.camera_conditioned else {}
        timestep = self.schedule.model_time(t).to(self.device)
        out = self.unet(x_t.to(self.dtype), timestep, encoder_hidden_states=cond.tokens.to(self.dtype), **extra).sample
        return out.to(x_t.dtype)


def schedule_from(folder: PipelineFolder, allowed: tuple[str, ...], image_seq_len: int | None = None,
                  flux_sigmas: bool = False) -> Schedule:
    """The folder's noise schedule: ``FlowSchedule`` for a flow-matching scheduler config (with the
    image tokens of its dynamic shift and the sampler sigmas of its pipeline), else ``NoiseSchedule``.

    Raises:
        PriorError: a scheduler class outside ``allowed`` or a prediction type sds3d does not know.
    """
    config = folder.scheduler_config(allowed)
    if config.get("_class_name") in FLOW_SCHEDULERS:
        try:
            return FlowSchedule(config, image_seq_len, flux_sigmas)
        except ValueError as e:
            raise PriorError(f"{folder.path / 'scheduler'}: {e}") from None
    prediction = config.get("prediction_type", "epsilon")
    if prediction not in PREDICTION_TYPES:
        raise PriorError(f"{folder.path} predicts {prediction!r}; sds3d supports {', '.join(PREDICTION_TYPES)} models")
    return NoiseSchedule(config)
