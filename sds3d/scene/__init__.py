"""3D representations behind one protocol (``Scene``): what the trainer optimises and export reads."""

from __future__ import annotations

import torch

from .base import Scene
from .config import SCENE_KINDS, SceneConfig, SceneConfigError, check_scene_config


def build_scene(cfg, device: torch.device | str = "cpu") -> Scene:
    """The configured scene (``cfg.scene.kind``), initialised from ``cfg.seed``.

    Args:
        cfg: a checked ``RunConfig``.
        device: where its parameters live.
    """
    check_scene_config(cfg.scene)
    torch.manual_seed(cfg.seed)
    from .nerf import NeRFScene

    sdf = None
    if cfg.scene.init_from:
        from .mesh_init import load_init_mesh, mesh_sdf_grid

        mesh = load_init_mesh(cfg.scene.init_from, cfg.export.up_axis, cfg.scene.init_scale, cfg.field.bound)
        sdf = torch.from_numpy(mesh_sdf_grid(mesh, cfg.field.bound, cfg.scene.init_resolution, cfg.seed))
    frozen_beta = cfg.scene.freeze_beta if cfg.scene.freeze_geometry else None
    return NeRFScene(cfg.field, cfg.background, cfg.render, device, init_sdf=sdf, frozen_beta=frozen_beta)


__all__ = ["Scene", "SceneConfig", "SceneConfigError", "SCENE_KINDS", "build_scene", "check_scene_config"]
