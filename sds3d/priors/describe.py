"""What a prior folder will be before a run loads it: its family, text encoders, dtype and memory.

Read from the folder's index and config files only (no weights are loaded: the models are built
on the meta device to count their parameters, the weights' dtype is read from a safetensors
header), with the same checks ``load_prior`` makes first, so ``sds3d doctor --prior X`` fails
exactly where a run would.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from .config import PriorConfig, resolve_dtype
from .loading import FLOW_SCHEDULERS, PipelineFolder
from .schedule import FAMILIES, FLOW_PREDICTION

_BYTES = {torch.float32: 4, torch.float16: 2, torch.bfloat16: 2}
_NAMES = {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16"}


@dataclass
class Component:
    """One model folder: its slot (e.g. "text_encoder_3"), class name, parameters and dtype."""

    slot: str
    cls: str
    params: int
    dtype: torch.dtype

    @property
    def bytes(self) -> int:
        return self.params * _BYTES[self.dtype]


@dataclass
class PriorFacts:
    """The answers of ``describe_prior``.

    Attributes:
        pipeline: model_index.json's class; prediction: ε, v, x0 or flow.
        denoiser, vae: Components (vae None for pixel priors); text_encoders: the ones that load.
        dtype: the weights' dtype on ``device``; shipped: the denoiser's stored dtype (CUDA auto only).
        device_bytes: peak weights on ``device`` (with offload: denoiser + VAE + the largest text
            encoder while prompts are encoded); host_bytes: weights kept in CPU RAM meanwhile.
        dropped: text encoders the folder has that the config leaves out (prior.t5=false).
        guidance_distilled: the denoiser takes the guidance scale as an input (Flux-dev).
    """

    pipeline: str
    prediction: str
    device: str
    dtype: torch.dtype
    denoiser: Component
    vae: Component | None
    text_encoders: list[Component] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    shipped: torch.dtype | None = None
    offload: bool = False
    guidance_distilled: bool = False

    @property
    def device_bytes(self) -> int:
        fixed = self.denoiser.bytes + (self.vae.bytes if self.vae else 0)
        encoders = [c.bytes for c in self.text_encoders]
        if self.device == "cpu" or not self.offload:
            return fixed + sum(encoders)
        return fixed + max(encoders, default=0)

    @property
    def host_bytes(self) -> int:
        return sum(c.bytes for c in self.text_encoders) if self.device != "cpu" and self.offload else 0

    def dtype_name(self) -> str:
        return _NAMES[self.dtype]


def describe_prior(folder: PipelineFolder, cfg: PriorConfig | None = None, device: torch.device | str = "cpu") -> PriorFacts:
    """The family, encoders, dtype and weight memory of the prior ``load_prior`` would build from ``folder``.

    Raises:
        PriorError: what loading would raise first (missing component, unknown class, pickled weights).
    """
    from . import prior_class

    cfg = cfg if cfg is not None else PriorConfig()
    device = torch.device(device)
    cls = prior_class(folder.family)
    cls.check_folder(folder, cfg)
    slots = cls.model_slots(folder, cfg)
    for slot in slots:
        folder.weights(slot)  # safetensors present (pickles refused)
    shipped = folder.shipped_dtype(cls.denoiser_name) if cfg.dtype == "auto" and device.type == "cuda" else None
    dtype = resolve_dtype(cfg, device, shipped)
    scheduler = folder.scheduler_config(cls.SCHEDULERS)
    prediction = FAMILIES[FLOW_PREDICTION] if scheduler.get("_class_name") in FLOW_SCHEDULERS else FAMILIES.get(scheduler.get("prediction_type", "epsilon"), "?")

    def component(slot: str) -> Component:
        allowed = cls.allowed(slot)
        comp_dtype = cls.vae_dtype(dtype, folder.config("vae")) if slot == "vae" else dtype
        return Component(slot, folder.class_name(slot, allowed), folder.parameter_count(slot, allowed), comp_dtype)

    encoders = [s for s in slots if s.startswith("text_encoder")]
    return PriorFacts(
        pipeline=str(folder.pipeline), prediction=prediction, device=device.type, dtype=dtype,
        denoiser=component(cls.denoiser_name), vae=component("vae") if "vae" in slots else None,
        text_encoders=[component(s) for s in encoders],
        dropped=[s for s in cls.text_encoder_names if s not in encoders and folder.declared(s)],
        shipped=shipped, offload=cfg.offload_text_encoder,
        guidance_distilled=bool(folder.config(cls.denoiser_name).get("guidance_embeds", False)),
    )
