"""Guidance: estimators of the distillation gradient (SDS), prompt processing, Perp-Neg, t schedules.

Guidance sees images, cameras and a Prior only. ``build_guidance`` makes the configured
estimator (``guidance.method``) from the registry ``GUIDANCE``.
"""

from __future__ import annotations

import difflib

from sds3d.priors.base import Prior

from .base import Guidance
from .config import GuidanceConfig, GuidanceConfigError, check_guidance_config
from .flow_sds import FlowSDSGuidance
from .perp_neg import perp_neg_embeddings, perp_neg_guidance, perpendicular_component
from .prompts import VIEWS, PromptEmbeddings, PromptError, PromptProcessor, view_prompt
from .rfds import RFDSGuidance, RFDSRevGuidance
from .schedules import anneal_progress, timestep_bounds
from .sds import SDSGuidance

#: guidance.method -> its Guidance class (constructed as cls(cfg, prior)).
GUIDANCE: dict[str, type[Guidance]] = {"sds": SDSGuidance}
# Flow-matching priors (SD3, Flux, toy-flow): flow_sds.py, rfds.py.
GUIDANCE.update({"flow_sds": FlowSDSGuidance, "rfds": RFDSGuidance, "rfds_rev": RFDSRevGuidance})


def guidance_class(method: str) -> type[Guidance]:
    """The Guidance class of ``guidance.method``.

    Raises:
        GuidanceConfigError: unknown method (one line naming the closest valid name).
    """
    if method not in GUIDANCE:
        close = difflib.get_close_matches(str(method), GUIDANCE, n=1, cutoff=0.0)
        raise GuidanceConfigError(f"guidance.method={method!r} is unknown; did you mean {close[0]!r}? (one of {', '.join(GUIDANCE)})")
    return GUIDANCE[method]


def build_guidance(cfg: GuidanceConfig, prior: Prior) -> Guidance:
    """The estimator ``cfg.method`` names, on ``prior`` (its constructor checks the other settings)."""
    return guidance_class(cfg.method)(cfg, prior)


__all__ = [
    "GUIDANCE", "Guidance", "build_guidance", "guidance_class",
    "GuidanceConfig", "GuidanceConfigError", "check_guidance_config",
    "PromptEmbeddings", "PromptError", "PromptProcessor", "VIEWS", "view_prompt",
    "SDSGuidance", "anneal_progress", "timestep_bounds",
    "FlowSDSGuidance", "RFDSGuidance", "RFDSRevGuidance",
    "perp_neg_embeddings", "perp_neg_guidance", "perpendicular_component",
]
