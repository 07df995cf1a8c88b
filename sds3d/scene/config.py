"""Which 3D representation a run optimises (``scene.kind``)."""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import UserError

SCENE_KINDS = ("nerf",)


class SceneConfigError(UserError):
    """A scene setting is invalid (the message names the key and the allowed values)."""


@dataclass
class SceneConfig:
    """kind: nerf (DreamFusion's NeRF: ``field:`` + ``background:`` + the ``render:`` sampler)."""

    kind: str = "nerf"


def check_scene_config(cfg: SceneConfig) -> None:
    """Raise SceneConfigError naming the first invalid setting of ``cfg``."""
    if cfg.kind not in SCENE_KINDS:
        raise SceneConfigError(f"scene.kind={cfg.kind!r} is unknown; use one of {', '.join(SCENE_KINDS)}")
