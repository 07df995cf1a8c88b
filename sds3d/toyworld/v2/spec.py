"""Toy world v2's constants, read from ``toyworld_v2.json`` (a copy of ``shared/toyworld-v2.json``
with its ``errata`` applied).

v2 extends v1 (``toyworld.world``): frame, v1 shapes, colours, camera, shading and image are v1's.
Numbers the spec states only in prose (layouts, the azimuth mixture's ranges, the metric
thresholds) are written here once, each checked against the sentence that defines it, so an
edit of the spec that changes one fails at import instead of silently disagreeing.
"""

from __future__ import annotations

import json
import re
from functools import lru_cache
from pathlib import Path

import torch

from .. import world

SPEC_PATH = Path(__file__).resolve().parents[1] / "toyworld_v2.json"


@lru_cache(maxsize=1)
def spec() -> dict:
    """The parsed v2 specification."""
    return json.loads(SPEC_PATH.read_text())


def _says(text: str, *phrases: str) -> None:
    """Fail at import if a constant below no longer matches the spec's sentence that defines it."""
    for phrase in phrases:
        assert phrase in text, f"toyworld_v2.json changed: {phrase!r} not in {text!r}"


_S = spec()
assert _S["extends"]["version"] == 1 and world.spec()["version"] == 1

OBJECTS: tuple[str, ...] = tuple(_S["prompts"]["objects"])  # owl, house, chair
FACED: dict = _S["faced_objects"]
VARIANTS: tuple[str, ...] = tuple(k for k in _S["janus_variants"] if k != "about")
FIXED_COLOURS: dict[str, tuple[float, float, float]] = {k: tuple(v) for k, v in _S["fixed_colours"].items()}

# Colour classes of the judge and the Janus metric (albedo, not shaded).
WHITE_MIN, WHITE_SPREAD, DARK_MAX = 0.55, 0.25, 0.40
_says(_S["colour_classes_for_the_judge"]["white"], "min(rgb) >= 0.55", "max(rgb) - min(rgb) <= 0.25")
_says(_S["colour_classes_for_the_judge"]["dark"], "max(rgb) <= 0.40")

# Compositions.
COMPOSITION_SHAPES: tuple[str, ...] = tuple(_S["compositions"]["shapes"])  # sphere, cube, cone
COMPOSITION_SCALE: float = float(_S["compositions"]["scale"])
HALF_HEIGHT: dict[str, float] = {k: float(v) for k, v in _S["compositions"]["half_height_at_scale"].items()}
RELATIONS: tuple[str, ...] = tuple(_S["compositions"]["relations"])  # on_top_of, next_to
RELATION_WORDS: dict[str, str] = {
    r: re.fullmatch(r"a \{c1\} \{s1\} (.+) a \{c2\} \{s2\}", _S["compositions"]["relations"][r]["grammar"]).group(1)
    for r in RELATIONS
}  # on_top_of: "on top of", next_to: "next to"
NEXT_TO_HALF_GAP_Y, REST_PLANE_Z = 0.36, -0.30
_says(_S["compositions"]["relations"]["next_to"]["layout"], "(0, -0.36, -0.30 + e1)", "(0, +0.36, -0.30 + e2)")
_says(_S["compositions"]["relations"]["on_top_of"]["layout"], "centre (0, 0, -e1)", "centre (0, 0, +e2)")

# Training distribution of faced objects and compositions.
_TD = _S["training_distribution"]["faced_and_compositions"]


def _ranges(text: str) -> tuple[tuple[float, float], ...]:
    return tuple((float(a), float(b)) for a, b in re.findall(r"\[(-?\d+), (-?\d+)\)", text))


#: (label, weight, azimuth ranges in degrees, each [lo, hi), equally likely within the label).
AZIMUTH_MIXTURE: tuple[tuple[str, float, tuple[tuple[float, float], ...]], ...] = tuple(
    (m["label"], float(m["weight"]), _ranges(m["azimuth_deg"])) for m in _TD["azimuth_mixture"]
)
assert [len(r) for _, _, r in AZIMUTH_MIXTURE] == [1, 2, 1]
_says(_TD["elevation_deg"], "uniform in [-10, 60]")
CAPTION_SUFFIX_PROBABILITY: dict[str, float] = {k: float(v) for k, v in _TD["caption_suffix_probability"].items()}
CAPTION_FRACTIONS: dict = _TD["caption_fractions"]
IMAGES_PER_PAIR: dict[str, int] = {k: int(v) for k, v in _TD["images_per_pair"].items() if k != "note"}

# Held-out lists (prompts.py derives them from their rules and checks them against these).
HELD_OUT_FACED: tuple[tuple[str, str], ...] = tuple(tuple(p) for p in _S["held_out"]["faced"]["pairs"])
HELD_OUT_COMPOSITIONS: dict[str, tuple[tuple[str, str, str, str], ...]] = {
    r: tuple(tuple(c) for c in _S["held_out"]["compositions"][r]) for r in RELATIONS
}
HELD_OUT_COUNTS: dict[str, tuple[int, int]] = {r: tuple(_S["held_out"]["compositions"]["counts"][r]) for r in RELATIONS}

# Metrics.
_M = _S["metrics"]
GRID_RESOLUTION, GRID_BOUND, N_SURFACE_SAMPLES = 64, 0.75, 120000
_says(_M["about"], "64^3 voxel centres of [-0.75,0.75]^3", "120000 points uniform by area")
AZIMUTH_GRID_DEG = torch.arange(0.0, 360.0, 15.0)
_says(_M["azimuth_grid_deg"], "{0, 15, ..., 345}", "atan2(y, x)")
YAW_STEP_DEG = 15.0
_says(_M["compositions"]["pose"], "15 deg steps")
FACE_PRESENT, SECOND_FACE, FACE_SEPARATION_DEG, FRONT_OK_DEG = 0.5, 0.40, 90.0, 45.0
_says(_M["janus"]["decision"], "F(phi*) >= 0.5", "F_other >= 0.40", "at least 90 deg", "|phi*| <= 45")
_F = _M["janus"]["face_evidence"]
EYE_Z, EYE_HALF_WINDOW_DEG = (0.0, 0.45), 45.0
BEAK_Z, BEAK_HALF_WINDOW_DEG, BEAK_PERCENTILE = (-0.15, 0.15), 20.0, 95.0
_says(_F["owl"], "z in [0, 0.45] and azimuth within 45 deg", "95th percentile of sqrt(x^2+y^2)",
      "z in [-0.15, 0.15] and azimuth within 20 deg", "median of that percentile over all 24 phi")
DOOR_Z, WINDOWS_Z, HOUSE_HALF_WINDOW_DEG = (-0.45, -0.08), (-0.12, 0.10), 45.0
_says(_F["house"], "z in [-0.45, -0.08], within 45 deg", "white-class samples, z in [-0.12, 0.10]")
BACKREST_BOX = {"x": (-0.27, -0.17), "half_y": 0.22, "z": (0.12, 0.50)}
CENTRAL_COLUMN = {"half_xy": 0.10, "z": (0.15, 0.45)}
_says(_F["chair"], "x' in [-0.27, -0.17], |y'| <= 0.22, z in [0.12, 0.50]", "|x|,|y| <= 0.10, z in [0.15, 0.45]",
      "B(phi + 180) * (1 - C) / B_gt", "B_gt = B(180)")
FLOOD_FACTOR = 4.0
_says(_M["janus"]["validity"], "exceeds 4x the GT's")
SURFACE_BAND = 0.06
_says(_M["compositions"]["part_colour"], "within 0.06 of the GT surface")
COMPOSITION_OK = {"union_iou": 0.5, "part_iou": 0.3}
_says(_M["compositions"]["composition_ok"], "union_iou >= 0.5", "part_iou >= 0.3")


def colour_rgb(name: str) -> torch.Tensor:
    """Linear RGB albedo of a v1 slot colour or a v2 fixed colour. Shape: (3,)."""
    if name in FIXED_COLOURS:
        return torch.tensor(FIXED_COLOURS[name], dtype=torch.float32)
    return world.colour_rgb(name)
