"""An independent judge of toy-world images: which colour and which shape does an image show?

Built only from ground-truth renders (never from the prior or a NeRF), so it can grade both:
- colour: chromaticity (r, g, b) / (r + g + b) of the foreground, weighted by how far each pixel
  is from the white background, nearest to the chromaticities of the world's colours (shading
  scales all channels alike, so chromaticity is independent of the light);
- shape: the foreground silhouette, matched against silhouettes of every shape rendered from a
  dense grid of cameras over the world's camera range (best soft IoU wins).

The templates (4 shapes x 144 cameras, sphere traced: ~2 CPU s) ship as ``judge_templates.npz``,
read when its key (``templates_key``) matches the world and the grid; otherwise, or without the
file, they are rendered. ``python scripts/make_judge_templates.py`` rewrites it (a test checks
that it equals a fresh render).
"""

from __future__ import annotations

import hashlib
import json
import zipfile
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ..cameras import make_cameras
from . import world
from .render import render

TEMPLATES_PATH = Path(__file__).with_name("judge_templates.npz")
#: The template cameras: azimuths every 15 degrees, 6 elevations spanning the world's range.
TEMPLATE_AZIMUTH_STEP_DEG = 15.0
TEMPLATE_ELEVATIONS = 6
#: The files whose content decides the templates besides toyworld.json (the renderer, the SDFs).
_RENDER_SOURCES = ("render.py", "shapes.py")


def foreground(images: Tensor) -> Tensor:
    """Soft foreground mask from how far the darkest channel is below white. (B,3,H,W) -> (B,H,W)."""
    # Every world colour has a channel <= 0.2, so a covered pixel's darkest channel is <= 0.2.
    return ((1.0 - images.min(dim=1).values) / 0.8).clamp(0.0, 1.0)


def _prepare(images: Tensor) -> Tensor:
    images = images.detach().float().cpu().clamp(0.0, 1.0)
    if images.shape[-1] != world.RESOLUTION:
        images = torch.nn.functional.interpolate(images, size=(world.RESOLUTION,) * 2, mode="bilinear", antialias=True, align_corners=False)
    return images


def render_templates() -> tuple[Tensor, Tensor]:
    """Silhouettes of every shape over a camera grid: masks (K, H*W) float32 and shape ids (K,) int64."""
    az = torch.arange(0.0, 360.0, TEMPLATE_AZIMUTH_STEP_DEG)
    lo, hi = world.ELEVATION_RANGE
    el = torch.linspace(lo, hi, TEMPLATE_ELEVATIONS)
    az, el = [a.reshape(-1) for a in torch.meshgrid(az, el, indexing="ij")]
    cams = make_cameras(az, el, world.CAMERA_DISTANCE, world.FOV_Y_DEG)
    masks, ids = [], []
    for i, shape in enumerate(world.SHAPES):
        rgb, _ = render(shape, world.colour_rgb(world.COLOURS[0]), cams)
        masks.append(foreground(rgb).flatten(1))
        ids.append(torch.full((len(cams),), i))
    return torch.cat(masks), torch.cat(ids)


def templates_key() -> str:
    """sha256 of what the templates depend on: toyworld.json, the renderer's and SDFs' sources, the grid."""
    h = hashlib.sha256(world.SPEC_PATH.read_bytes())
    for name in _RENDER_SOURCES:
        h.update(Path(__file__).with_name(name).read_bytes())
    h.update(json.dumps([TEMPLATE_AZIMUTH_STEP_DEG, TEMPLATE_ELEVATIONS, world.COLOURS[0]]).encode())
    return h.hexdigest()


def write_templates(path: Path = TEMPLATES_PATH) -> Path:
    """Render the templates and store them exactly (float32, compressed npz) with their key."""
    masks, ids = render_templates()
    np.savez_compressed(path, masks=masks.numpy(), ids=ids.numpy(), key=np.array(templates_key()))
    return path


def read_templates(path: Path = TEMPLATES_PATH) -> tuple[Tensor, Tensor] | None:
    """The stored templates, or None when the file is missing, unreadable or stale (another key)."""
    try:
        with np.load(path, allow_pickle=False) as f:
            if str(f["key"]) != templates_key():
                return None
            return torch.from_numpy(f["masks"]), torch.from_numpy(f["ids"])
    except (OSError, KeyError, ValueError, zipfile.BadZipFile):
        return None


@lru_cache(maxsize=1)
def _templates() -> tuple[Tensor, Tensor]:
    """The shipped templates when current, else a fresh render (once per process)."""
    return read_templates(TEMPLATES_PATH) or render_templates()


def colour_scores(images: Tensor) -> Tensor:
    """Negative chromaticity distance to each world colour. (B,3,H,W) -> (B, n_colours)."""
    images = _prepare(images)
    w = foreground(images)[:, None]  # (B,1,H,W)
    # Foreground colour without the white background blended into edge pixels: c = a*albedo*s + (1-a),
    # so albedo*s is the least-squares fit of c - (1-a) = a * (albedo*s) over the pixels.
    rgb = ((images - (1 - w)) * w).sum((2, 3)) / (w * w).sum((2, 3)).clamp(min=1e-6)
    chroma = rgb.clamp(min=1e-4) / rgb.clamp(min=1e-4).sum(-1, keepdim=True)
    table = world.colour_table()
    table = table / table.sum(-1, keepdim=True)
    return -torch.cdist(chroma, table)


def shape_scores(images: Tensor) -> Tensor:
    """Best soft IoU of the silhouette with each shape's templates. (B,3,H,W) -> (B, n_shapes)."""
    masks = foreground(_prepare(images)).flatten(1)  # (B, HW)
    templates, ids = _templates()
    inter = torch.minimum(masks[:, None], templates[None]).sum(-1)
    union = torch.maximum(masks[:, None], templates[None]).sum(-1).clamp(min=1e-6)
    iou = inter / union  # (B, K)
    return torch.stack([iou[:, ids == i].max(dim=1).values for i in range(len(world.SHAPES))], dim=1)


def judge(images: Tensor) -> list[tuple[str, str]]:
    """(colour, shape) shown by each image.

    Args:
        images: RGB in [0, 1] on a white background, any square size. Shape: (B, 3, H, W).
    """
    if images.shape[0] == 0:
        return []
    c = colour_scores(images).argmax(dim=1).tolist()
    s = shape_scores(images).argmax(dim=1).tolist()
    return [(world.COLOURS[i], world.SHAPES[j]) for i, j in zip(c, s)]
