"""Guidance: Score Distillation Sampling and prompt processing (sees images and a Prior only)."""

from .config import GuidanceConfig, GuidanceConfigError, check_guidance_config
from .perp_neg import perp_neg_embeddings, perp_neg_guidance, perpendicular_component
from .prompts import VIEWS, PromptEmbeddings, PromptError, PromptProcessor, view_prompt
from .schedules import anneal_progress, sds_weight, timestep_bounds
from .sds import SDSGuidance

__all__ = [
    "GuidanceConfig", "GuidanceConfigError", "check_guidance_config",
    "PromptEmbeddings", "PromptError", "PromptProcessor", "VIEWS", "view_prompt",
    "SDSGuidance", "anneal_progress", "sds_weight", "timestep_bounds",
    "perp_neg_embeddings", "perp_neg_guidance", "perpendicular_component",
]
