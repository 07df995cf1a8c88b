"""sds3d: text prompt -> NeRF -> Score Distillation Sampling -> mesh."""

__version__ = "0.1.0"
