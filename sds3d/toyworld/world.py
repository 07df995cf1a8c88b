"""The toy world's constants, read from ``toyworld.json`` (a copy of ``shared/toyworld.json``).

Everything about the world (shapes, colours, cameras, light, prompt grammar) comes from that
file; no module hard-codes a number of its own.
"""

from __future__ import annotations

import json
import math
from functools import lru_cache
from pathlib import Path

import torch

SPEC_PATH = Path(__file__).with_name("toyworld.json")


@lru_cache(maxsize=1)
def spec() -> dict:
    """The parsed world specification."""
    return json.loads(SPEC_PATH.read_text())


SHAPES: tuple[str, ...] = tuple(spec()["shapes"].keys())  # sphere, cube, cone, torus
COLOURS: tuple[str, ...] = tuple(spec()["colours"].keys())  # red, green, blue, yellow
VIEWS: tuple[str, ...] = tuple(spec()["prompts"]["views"].keys())  # front, side, back, overhead

CAMERA_DISTANCE: float = float(spec()["camera"]["distance"])
FOV_Y_DEG: float = float(spec()["camera"]["fov_y_deg"])
AZIMUTH_RANGE: tuple[float, float] = tuple(spec()["camera"]["azimuth_deg"])
ELEVATION_RANGE: tuple[float, float] = tuple(spec()["camera"]["elevation_deg"])
RESOLUTION: int = int(spec()["image"]["resolution"])
SUPERSAMPLING: int = int(spec()["image"]["supersampling"])
AMBIENT: float = 0.35  # shading.formula: albedo * (0.35 + 0.65 * max(0, n.l))
DIFFUSE: float = 0.65
assert spec()["shading"]["formula"] == "rgb = albedo * (0.35 + 0.65 * max(0, dot(n, l)))"


def colour_rgb(name: str) -> torch.Tensor:
    """Linear RGB albedo of a named colour. Shape: (3,)."""
    return torch.tensor(spec()["colours"][name], dtype=torch.float32)


def colour_table() -> torch.Tensor:
    """All colours in COLOURS order. Shape: (len(COLOURS), 3)."""
    return torch.stack([colour_rgb(c) for c in COLOURS])


def light_direction() -> torch.Tensor:
    """Unit vector towards the light, world frame. Shape: (3,)."""
    l = torch.tensor(spec()["shading"]["light_direction"], dtype=torch.float32)
    return l / l.norm()


def background() -> torch.Tensor:
    """Background colour. Shape: (3,)."""
    return torch.tensor(spec()["shading"]["background"], dtype=torch.float32)


def torus_rotation() -> torch.Tensor:
    """Rotation matrix R (world <- torus frame) for the torus tilt about +x. Shape: (3, 3)."""
    a = math.radians(float(spec()["shapes"]["torus"]["tilt_deg_about_x"]))
    c, s = math.cos(a), math.sin(a)
    # Right-hand rotation about +x by angle a.
    return torch.tensor([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]])


def camera_config():
    """The toy world's camera distribution as a ``CameraConfig`` (what the prior was trained on)."""
    from ..cameras import CameraConfig

    return CameraConfig(distance=(CAMERA_DISTANCE,) * 2, fov_y_deg=(FOV_Y_DEG,) * 2,
                        elevation_deg=ELEVATION_RANGE, azimuth_deg=AZIMUTH_RANGE)
