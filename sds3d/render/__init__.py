"""Volume rendering of NeRF fields: ray sampling, shading (DreamFusion Sec. 3.1), regularisers."""

from .config import RenderConfig, RenderConfigError, check_render_config
from .losses import opacity_entropy_loss, opacity_loss, orientation_loss
from .renderer import render, render_rays, resolve_backend
from .shading import light_directions, sample_shading, shade

__all__ = [
    "RenderConfig",
    "RenderConfigError",
    "check_render_config",
    "render",
    "render_rays",
    "resolve_backend",
    "sample_shading",
    "light_directions",
    "shade",
    "orientation_loss",
    "opacity_loss",
    "opacity_entropy_loss",
]
