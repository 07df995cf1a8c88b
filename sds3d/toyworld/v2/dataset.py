"""The training data of the v2 priors (toyworld_v2.json ``training_distribution``).

- v1 pairs: unchanged, v1's own dataset (``build_dataset`` of the toy prior's recipe): 16 pairs x
  1500, azimuth uniform, caption always 'a {colour} {shape}, {view} view';
- faced objects (9 trained pairs x 1500) and compositions (120 trained x 200): the front-biased
  azimuth mixture (60% within +-45 deg of the front, 30% sides, 10% back), elevation uniform in
  [-10, 60], and the view suffix appended with the probability of the image's view label
  (front 0.1, side 0.3, back 0.5, overhead 0.3), else the bare prompt: web-photo statistics.

The returned tuple is v1's: images in [-1, 1], captions, base captions (no view) and cameras
(elevation, azimuth) in degrees. The recipe applies its 10% suffix dropout to v1 items only
(``prompts.parse_prompt(base).kind == "v1"``): v2 captions are already sparse.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
from torch import Tensor

from ...cameras import make_cameras, view_labels
from .. import world
from . import spec
from .objects import ToyObject, composition, faced_object
from .prompts import composition_tuples, faced_pairs
from .render import render

_RENDER_CHUNK = 500  # cameras per render call (bounds the memory of one sphere-tracing batch)


def sample_front_biased(n: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """Azimuths from training_distribution.azimuth_mixture and elevations uniform in the v1 range.

    Returns:
        azimuth (n,) in [0, 360) and elevation (n,), degrees.
    """
    weights = torch.tensor([w for _, w, _ in spec.AZIMUTH_MIXTURE], dtype=torch.float64)
    component = torch.multinomial(weights, n, replacement=True, generator=generator)
    half = torch.rand(n, generator=generator)  # picks one of a label's equally likely ranges
    u = torch.rand(n, generator=generator)
    lo, hi = torch.empty(n), torch.empty(n)
    for k, (_, _, ranges) in enumerate(spec.AZIMUTH_MIXTURE):
        r = torch.tensor(ranges)  # (n_ranges, 2)
        pick = (half * len(ranges)).long().clamp(max=len(ranges) - 1)
        mine = component == k
        lo[mine], hi[mine] = r[pick[mine], 0], r[pick[mine], 1]
    azimuth = (lo + (hi - lo) * u) % 360.0
    e_lo, e_hi = world.ELEVATION_RANGE
    elevation = e_lo + (e_hi - e_lo) * torch.rand(n, generator=generator)
    return azimuth, elevation


def sparse_captions(base: str, azimuth: Tensor, elevation: Tensor, generator: torch.Generator) -> list[str]:
    """``base`` or ``base + ', {view} view'`` with the suffix probability of each image's view label."""
    views = view_labels(azimuth, elevation)
    keep = torch.rand(len(views), generator=generator).tolist()
    return [f"{base}, {v} view" if u < spec.CAPTION_SUFFIX_PROBABILITY[v] else base for v, u in zip(views, keep)]


def _render_pairs(objects: list[ToyObject], n: int, generator: torch.Generator):
    images, captions, base, angles = [], [], [], []
    for obj in objects:
        azimuth, elevation = sample_front_biased(n, generator)
        cams = make_cameras(azimuth, elevation, world.CAMERA_DISTANCE, world.FOV_Y_DEG)
        images += [render(obj, cams[i:i + _RENDER_CHUNK])[0] * 2.0 - 1.0 for i in range(0, n, _RENDER_CHUNK)]
        captions += sparse_captions(obj.prompt, azimuth, elevation, generator)
        base += [obj.prompt] * n
        angles.append(cams.view_angles)
    return images, captions, base, angles


def training_objects() -> tuple[list[ToyObject], list[ToyObject]]:
    """The trained faced objects (9, object-major) and compositions (120, relation-major)."""
    faced = [faced_object(o, c) for c, o in faced_pairs(held_out=False)]
    comps = [composition(r, *t) for r in spec.RELATIONS for t in composition_tuples(r, held_out=False)]
    return faced, comps


def build_dataset(seed: int, images_per_pair: dict[str, int] | None = None, v1: bool = True):
    """The v2 training set: v1 pairs, then faced pairs, then compositions; deterministic from ``seed``.

    Args:
        seed: v1's part is v1's ``build_dataset(..., seed)`` exactly; the v2 part draws from its
            own generator seeded with ``seed + 2**32`` (no stream shared with v1's or the recipe's).
        images_per_pair: keys ``v1_pair``, ``faced_object``, ``composition``; default the spec's
            (1500, 1500, 200: 61500 renders).
        v1: include the v1 pairs.

    Returns:
        images (N, 3, 32, 32) in [-1, 1], captions, base captions, cameras (elevation, azimuth) (N, 2).
    """
    counts = dict(spec.IMAGES_PER_PAIR, **(images_per_pair or {}))
    images, captions, base, angles = [], [], [], []
    if v1:
        from ..dataset import build_dataset as build_v1_dataset

        d = build_v1_dataset(counts["v1_pair"], seed)
        images, captions, base, angles = [d.images], list(d.prompts), list(d.base_prompts), [d.cameras.view_angles]
    g = torch.Generator().manual_seed(seed + 2**32)
    faced, comps = training_objects()
    for objects, n in ((faced, counts["faced_object"]), (comps, counts["composition"])):
        x, c, b, a = _render_pairs(objects, n, g)
        images += x
        captions += c
        base += b
        angles += a
    return torch.cat(images), captions, base, torch.cat(angles)


def recipe_counts(images_per_pair: int) -> dict[str, int]:
    """The recipe's counts from one knob: ``images_per_pair`` renders per v1 pair and per faced pair,
    compositions at the spec's ratio to them (200 / 1500), at least one; 1500 gives the spec's counts."""
    ratio = spec.IMAGES_PER_PAIR["composition"] / spec.IMAGES_PER_PAIR["faced_object"]
    return {"v1_pair": images_per_pair, "faced_object": images_per_pair,
            "composition": max(1, round(images_per_pair * ratio))}


def data_digest() -> str:
    """What the renders depend on: the toy world's code and specs (all of ``toyworld/`` but the
    training recipe that consumes them), ``cameras.py`` and the torch version."""
    root = Path(__file__).resolve().parents[1]
    files = sorted(f for f in root.rglob("*") if f.suffix in (".py", ".json") and f.name != "train_prior.py")
    h = hashlib.sha256(torch.__version__.encode())
    for f in files + [root.parent / "cameras.py"]:
        h.update(f.relative_to(root.parent).as_posix().encode() + b"\0" + f.read_bytes())
    return h.hexdigest()[:16]


def training_set(images_per_pair: int, seed: int, cache_dir: Path | None = None) -> tuple[Tensor, list[str], list[str], Tensor]:
    """``build_dataset(seed, recipe_counts(images_per_pair))`` with the images stored as float16.

    float16 halves the 61500 renders' 755 MB; its rounding (< 2^-11 relative, an eighth of an 8-bit
    level) is far below what a 32x32 denoiser resolves. With ``cache_dir`` the set is read from,
    or written to, one safetensors file named by seed, counts and ``data_digest`` (rendering it
    takes minutes; every training stage needs it).

    Returns:
        images (N, 3, 32, 32) float16 in [-1, 1], captions, base captions, cameras (N, 2) (elevation, azimuth).
    """
    from safetensors.torch import load_file, save_file

    counts = recipe_counts(images_per_pair)
    path = None
    if cache_dir is not None:
        path = Path(cache_dir) / f"v2-seed{seed}-n{images_per_pair}-{data_digest()}.safetensors"
        if path.is_file():
            from safetensors import safe_open

            with safe_open(str(path), "pt") as f:
                text = json.loads(f.metadata()["captions"])
            tensors = load_file(path)
            return tensors["images"], text["captions"], text["base"], tensors["angles"]
    images, captions, base, angles = build_dataset(seed, counts)
    # Contiguous like the cache's copy: the renders come channels-last, and convolutions of a
    # channels-last batch take other kernels (other rounding), so a cached and a fresh set would train apart.
    images = images.half().contiguous()
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        save_file({"images": images, "angles": angles.contiguous()}, str(tmp),
                  metadata={"captions": json.dumps({"captions": captions, "base": base})})
        tmp.replace(path)
    return images, captions, base, angles
