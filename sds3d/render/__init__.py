"""Volume rendering of NeRF fields: ray samplers, compositing, shading (DreamFusion Sec. 3.1), regularisers."""

from .config import NerfaccConfig, RenderConfig, RenderConfigError, check_render_config
from .losses import opacity_entropy_loss, opacity_loss, orientation_loss
from .renderer import render, render_rays
from .samplers import GridStratifiedSampler, OccGridSampler, RaySamples, Sampler, StratifiedSampler, build_sampler, select_render_backend
from .shading import light_directions, sample_shading, shade
from .volume import composite

__all__ = [
    "NerfaccConfig",
    "RenderConfig",
    "RenderConfigError",
    "check_render_config",
    "render",
    "render_rays",
    "RaySamples",
    "Sampler",
    "StratifiedSampler",
    "OccGridSampler",
    "GridStratifiedSampler",
    "build_sampler",
    "select_render_backend",
    "composite",
    "sample_shading",
    "light_directions",
    "shade",
    "orientation_loss",
    "opacity_loss",
    "opacity_entropy_loss",
]
