"""An independent judge of toy world v2 images: which object or composition, in which colours?

v1's judge (``toyworld.judge``) extended, and like it built only from ground-truth renders:

- geometry: the soft foreground silhouette matched against silhouettes of every geometry (4 v1
  shapes, 3 faced objects, 6 'on top of' and 3 'next to' layouts) rendered from a grid of cameras
  over the world's range (best soft IoU wins). 'A next to B' and 'B next to A' are one geometry
  (the same two objects seen from opposite sides), so the judge names scenes, not wordings
  (``prompts.canonical``);
- colours: the chromaticity of the pixels the best template shows in each prompt colour (its
  slot coverage: not a decal, not the beak), v1's background-corrected estimate, nearest to the
  world's colours; one colour per part, so a colour swap between the parts is seen.
"""

from __future__ import annotations

from functools import lru_cache

import torch
from torch import Tensor

from ...cameras import make_cameras
from .. import world
from ..judge import _prepare, foreground
from . import spec
from .objects import ToyObject, composition, faced_object, v1_object
from .prompts import ParsedPrompt, canonical, parse_prompt
from .render import render_slots

TEMPLATE_AZIMUTH_STEP_DEG, TEMPLATE_ELEVATIONS = 10.0, 8  # v1: 15, 6; denser for the compositions
_BATCH = 64  # images per IoU batch (B x templates x pixels floats)


def geometries() -> list[ToyObject]:
    """One object per geometry the judge tells apart, slot colours arbitrary (first two v1 colours)."""
    c1, c2 = world.COLOURS[:2]
    out = [v1_object(c1, s) for s in world.SHAPES] + [faced_object(o, c1) for o in spec.OBJECTS]
    shapes = spec.COMPOSITION_SHAPES
    out += [composition("on_top_of", c1, a, c2, b) for a in shapes for b in shapes if a != b]
    out += [composition("next_to", c1, a, c2, b) for i, a in enumerate(shapes) for b in shapes[i + 1:]]
    return out


@lru_cache(maxsize=1)
def _templates() -> tuple[Tensor, Tensor, Tensor]:
    """Silhouettes (K, H*W), slot coverages (K, 2, H*W; one-colour geometries leave slot 1 empty)
    and geometry ids (K,) over a camera grid (24x6 in v1; denser here: a next_to layout turns fast with azimuth)."""
    az = torch.arange(0.0, 360.0, TEMPLATE_AZIMUTH_STEP_DEG)
    el = torch.linspace(*world.ELEVATION_RANGE, TEMPLATE_ELEVATIONS)
    az, el = [a.reshape(-1) for a in torch.meshgrid(az, el, indexing="ij")]
    cams = make_cameras(az, el, world.CAMERA_DISTANCE, world.FOV_Y_DEG)
    masks, slots, ids = [], [], []
    for i, obj in enumerate(geometries()):
        rgb, _, cover = render_slots(obj, cams)
        masks.append(foreground(rgb).flatten(1))
        two = torch.zeros(len(cams), 2, cover.shape[-2] * cover.shape[-1])
        two[:, : cover.shape[1]] = cover.flatten(2)
        slots.append(two)
        ids.append(torch.full((len(cams),), i))
    return torch.cat(masks), torch.cat(slots), torch.cat(ids)


def _best_template(fg: Tensor) -> Tensor:
    """Index of the template with the best soft IoU with each silhouette (its geometry is the
    judged one, its camera the view the colours are read in). (B, H*W) -> (B,)."""
    templates, _, _ = _templates()
    area = templates.sum(-1)
    best = []
    for chunk in fg.split(_BATCH):
        inter = torch.minimum(chunk[:, None], templates[None]).sum(-1)
        iou = inter / (chunk.sum(-1, keepdim=True) + area[None] - inter).clamp(min=1e-6)  # max(a,b) = a + b - min(a,b)
        best.append(iou.argmax(dim=1))
    return torch.cat(best)


def slot_colour_scores(images: Tensor, weights: Tensor) -> Tensor:
    """Negative chromaticity distance to each world colour of the pixels ``weights`` select.

    v1's estimate (``toyworld.judge.colour_scores``) with per-pixel weights: a covered pixel is
    c = a * albedo * s + (1 - a), so (c - (1 - a)) weighted by a estimates albedo * s.

    Args:
        images: background-corrected pixels c - (1 - a). Shape: (B, 3, H*W).
        weights: the foreground a times the pixels' slot coverage. Shape: (B, H*W).

    Returns:
        (B, n_colours); the largest is the nearest colour.
    """
    w = weights[:, None]
    rgb = (images * w).sum(-1) / (w * w).sum(-1).clamp(min=1e-6)
    chroma = rgb.clamp(min=1e-4) / rgb.clamp(min=1e-4).sum(-1, keepdim=True)
    table = world.colour_table()
    return -torch.cdist(chroma, table / table.sum(-1, keepdim=True))


def judge(images: Tensor) -> list[ParsedPrompt]:
    """The scene each image shows, as a canonical prompt (``prompts.canonical``, no view).

    A composition whose parts look the same colour is returned with that colour twice (no prompt
    names it, so it never matches). Compare with ``matches``.

    Args:
        images: RGB in [0, 1] on a white background, any square size. Shape: (B, 3, H, W).
    """
    if images.shape[0] == 0:
        return []
    images = _prepare(images)
    fg = foreground(images).flatten(1)
    best = _best_template(fg)
    _, slots, ids = _templates()
    corrected = images.flatten(2) - (1.0 - fg[:, None])
    objects = geometries()
    out = []
    for b, t in enumerate(best.tolist()):
        obj = objects[int(ids[t])]
        colours = [world.COLOURS[int(slot_colour_scores(corrected[b : b + 1], fg[b : b + 1] * slots[t, k][None]).argmax())]
                   for k in range(len(obj.colours))]
        out.append(canonical(ParsedPrompt(tuple(zip(colours, obj.nouns)), obj.parsed.relation)))
    return out


def matches(verdicts: list[ParsedPrompt], prompts: list[str]) -> list[bool]:
    """Whether each verdict is the scene its prompt names (view ignored; next_to in either wording)."""
    out = []
    for v, p in zip(verdicts, prompts):
        parsed = parse_prompt(p)
        out.append(parsed is not None and v == canonical(parsed))
    return out
