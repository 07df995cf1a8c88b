"""Toy world v2's objects as SDFs with surface colour: faced objects, compositions, v1 shapes,
and the synthetic Janus variants that calibrate the metrics (toyworld_v2.json ``faced_objects``,
``compositions``, ``janus_variants``, ``decals``).

An object is the union (min) of its parts, each one primitive placed by an orthogonal matrix
(a rotation or mirror of the spec's frame; both keep an SDF exact). Its albedo at a surface point
is the colour of the part with the smallest SDF there, overridden in list order by every decal
whose region (a ball or a box) contains the point.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import torch
from torch import Tensor

from ...errors import UserError
from .. import world
from . import primitives, spec
from .prompts import ParsedPrompt, make_prompt, parse_prompt


class ObjectError(UserError):
    """An object, variant or prompt toy world v2 does not have (the message lists what it has)."""


def rotation_z(deg: float) -> Tensor:
    """Right-hand rotation about +z by ``deg`` degrees. Shape: (3, 3)."""
    a = math.radians(deg)
    c, s = math.cos(a), math.sin(a)
    return torch.tensor([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


MIRROR_X = torch.diag(torch.tensor([-1.0, 1.0, 1.0]))  # janus_variants: mirror = reflect x -> -x


@dataclass
class Part:
    """One primitive. ``transform`` maps the spec's frame to the world (orthogonal), so the
    world SDF is ``sdf_spec(transform^T p)``; ``slot`` is the index of the prompt colour the part
    carries, None for a fixed colour (the owl's beak)."""

    name: str
    kind: str
    params: dict
    colour: Tensor
    slot: int | None
    transform: Tensor = field(default_factory=lambda: torch.eye(3))
    front_feature: bool = False
    back_feature: bool = False

    def sdf(self, p: Tensor) -> Tensor:
        if not torch.equal(self.transform, torch.eye(3)):
            p = p @ self.transform.to(p)  # rows: (T^T p^T)^T
        return primitives.evaluate(self.kind, self.params, p)

    def bounding_radius(self) -> float:
        return primitives.bounding_radius(self.kind, self.params)


@dataclass
class Decal:
    """A colour region (ball: ``size`` = radius; box: ``size`` = half extents), placed like a part."""

    name: str
    kind: str
    centre: tuple[float, float, float]
    size: float | tuple[float, float, float]
    colour: Tensor
    transform: Tensor = field(default_factory=lambda: torch.eye(3))
    front_feature: bool = False

    def contains(self, p: Tensor) -> Tensor:
        q = p @ self.transform.to(p) - p.new_tensor(self.centre)
        if self.kind == "ball":
            return q.norm(dim=-1) <= self.size
        return (q.abs() <= p.new_tensor(self.size)).all(dim=-1)


def _moved(item, transform: Tensor):
    """A copy of a part or decal with ``transform`` applied after its own."""
    return replace(item, transform=transform @ item.transform)


@dataclass
class ToyObject:
    """What a base prompt depicts (``parsed``: its parts and relation, no view)."""

    parsed: ParsedPrompt
    parts: tuple[Part, ...]
    decals: tuple[Decal, ...] = ()
    variant: str | None = None

    @property
    def prompt(self) -> str:
        return make_prompt(self.parsed)

    @property
    def kind(self) -> str:
        """One of "v1", "faced", "composition"."""
        return self.parsed.kind

    @property
    def colours(self) -> tuple[str, ...]:
        """The prompt's slot colours (one; two for a composition, in prompt order)."""
        return tuple(c for c, _ in self.parsed.parts)

    @property
    def nouns(self) -> tuple[str, ...]:
        """The prompt's shape or object names, in prompt order."""
        return tuple(n for _, n in self.parsed.parts)

    def part_sdf(self, p: Tensor) -> Tensor:
        """Each part's SDF. (..., 3) -> (..., n_parts)."""
        return torch.stack([part.sdf(p) for part in self.parts], dim=-1)

    def sdf(self, p: Tensor) -> Tensor:
        """Union of the parts. (..., 3) -> (...)."""
        out = self.parts[0].sdf(p)
        for part in self.parts[1:]:
            out = torch.minimum(out, part.sdf(p))
        return out

    def part_index(self, p: Tensor) -> Tensor:
        """Index of the part with the smallest SDF. (..., 3) -> (...) long."""
        return self.part_sdf(p).argmin(dim=-1)

    def decal_index(self, p: Tensor) -> Tensor:
        """Index of the last decal containing each point, -1 where none does. (..., 3) -> (...) long."""
        out = torch.full(p.shape[:-1], -1, dtype=torch.long, device=p.device)
        for i, decal in enumerate(self.decals):
            out = torch.where(decal.contains(p), i, out)
        return out

    def albedo(self, p: Tensor) -> Tensor:
        """Surface colour: nearest part's colour, then decals in list order (later wins). (..., 3) -> (..., 3)."""
        table = torch.stack([part.colour for part in self.parts] + [d.colour for d in self.decals]).to(p)
        part, decal = self.part_index(p), self.decal_index(p)
        return table[torch.where(decal >= 0, len(self.parts) + decal, part)]

    def slot_index(self, p: Tensor) -> Tensor:
        """The prompt colour shown at each point (index into ``colours``), -1 under a decal or on a
        fixed-colour part. (..., 3) -> (...) long."""
        slots = torch.tensor([-1 if part.slot is None else part.slot for part in self.parts], device=p.device)
        return torch.where(self.decal_index(p) >= 0, -1, slots[self.part_index(p)])

    def bounding_radius(self) -> float:
        return max(part.bounding_radius() for part in self.parts)


# ---------------------------------------------------------------------------------------------
# Builders
# ---------------------------------------------------------------------------------------------


_PART_KEYS = {"name", "kind", "colour", "note", "front_feature", "back_feature"}


def _part_from_spec(entry: dict, slot_colour: str) -> Part:
    slot = entry["colour"] == "slot"
    colour = spec.colour_rgb(slot_colour if slot else entry["colour"])
    params = {k: v for k, v in entry.items() if k not in _PART_KEYS}
    return Part(entry["name"], entry["kind"], params, colour, 0 if slot else None,
                front_feature=bool(entry.get("front_feature")), back_feature=bool(entry.get("back_feature")))


def _decal_from_spec(entry: dict) -> Decal:
    region = entry["region"]
    size = region["radius"] if region["kind"] == "ball" else tuple(region["half_extent"])
    return Decal(entry["name"], region["kind"], tuple(region["centre"]), size, spec.colour_rgb(entry["colour"]),
                 front_feature=bool(entry.get("front_feature")))


def _reaching_out(decal: Decal, outer: float) -> Decal:
    """A box decal on a front wall (+x) extended outwards to x = ``outer`` in its own frame.

    The house's walls are a box, not rotation symmetric: its door rotated by 120 deg lies inside
    them and would colour nothing; extended along its outward axis it colours the wall patch the
    rotated feature faces (toyworld_v2.json errata, three_faced).
    """
    if decal.kind != "box":
        return decal
    lo = decal.centre[0] - decal.size[0]
    centre = ((lo + outer) / 2, *decal.centre[1:])
    return replace(decal, centre=centre, size=((outer - lo) / 2, *decal.size[1:]))


def _features(parts, decals, key: str):
    return [p for p in parts if getattr(p, key)], [d for d in decals if getattr(d, key, False)]


def faced_object(name: str, colour: str, variant: str | None = None) -> ToyObject:
    """An owl, house or chair of a slot colour, optionally one of the Janus calibration variants."""
    if name not in spec.OBJECTS:
        raise ObjectError(f"unknown faced object {name!r}; toy world v2 has {', '.join(spec.OBJECTS)}")
    if colour not in world.COLOURS:
        raise ObjectError(f"unknown colour {colour!r}; the toy world has {', '.join(world.COLOURS)}")
    entry = spec.FACED[name]
    parts = [_part_from_spec(p, colour) for p in entry["parts"]]
    decals = [_decal_from_spec(d) for d in entry["decals"]]
    # The chair's face is geometric: its backrest (a back feature) plays the part of the face.
    key = "back_feature" if name == "chair" else "front_feature"
    if variant == "two_faced":
        fp, fd = _features(parts, decals, key)
        parts += [_moved(p, MIRROR_X) for p in fp]
        decals += [_moved(d, MIRROR_X) for d in fd]
    elif variant == "two_faced_eyes_only":
        if name != "owl":
            raise ObjectError(f"variant two_faced_eyes_only is the owl's only; {name} has "
                              f"{', '.join(v for v in spec.VARIANTS if v != 'two_faced_eyes_only')}")
        decals += [_moved(d, MIRROR_X) for d in decals if d.name.startswith(("eye_", "pupil_"))]
    elif variant == "side_faced":
        turn = rotation_z(90.0)
        parts, decals = [_moved(p, turn) for p in parts], [_moved(d, turn) for d in decals]
    elif variant == "three_faced":
        fp, fd = _features(parts, decals, key)
        outer = spec.GRID_BOUND
        for deg in (120.0, 240.0):
            parts += [_moved(p, rotation_z(deg)) for p in fp]
            decals += [_moved(_reaching_out(d, outer), rotation_z(deg)) for d in fd]
    elif variant == "faceless":
        parts = [p for p in parts if not getattr(p, key)]
        decals = [d for d in decals if not getattr(d, key)]
    elif variant is not None:
        raise ObjectError(f"unknown Janus variant {variant!r}; toyworld_v2.json has {', '.join(spec.VARIANTS)}")
    return ToyObject(ParsedPrompt(((colour, name),)), tuple(parts), tuple(decals), variant)


def composition_layout(relation: str, s1: str, s2: str) -> tuple[tuple[float, float, float], tuple[float, float, float]]:
    """Centres of the two parts (compositions.relations.*.layout); e1, e2 = their half-heights."""
    e1, e2 = spec.HALF_HEIGHT[s1], spec.HALF_HEIGHT[s2]
    if relation == "on_top_of":
        return (0.0, 0.0, e2), (0.0, 0.0, -e1)
    return (0.0, -spec.NEXT_TO_HALF_GAP_Y, spec.REST_PLANE_Z + e1), (0.0, spec.NEXT_TO_HALF_GAP_Y, spec.REST_PLANE_Z + e2)


def composition(relation: str, c1: str, s1: str, c2: str, s2: str) -> ToyObject:
    """'a {c1} {s1} {relation} a {c2} {s2}': two scaled v1 shapes in the spec's fixed layout."""
    if relation not in spec.RELATIONS:
        raise ObjectError(f"unknown relation {relation!r}; toy world v2 has {', '.join(spec.RELATIONS)}")
    for s in (s1, s2):
        if s not in spec.COMPOSITION_SHAPES:
            raise ObjectError(f"shape {s!r} is not in compositions; they use {', '.join(spec.COMPOSITION_SHAPES)}")
    for c in (c1, c2):
        if c not in world.COLOURS:
            raise ObjectError(f"unknown colour {c!r}; the toy world has {', '.join(world.COLOURS)}")
    if s1 == s2 or c1 == c2:
        raise ObjectError(f"a composition has two different shapes and two different colours (got {c1} {s1}, {c2} {s2})")
    centres = composition_layout(relation, s1, s2)
    parts = tuple(
        Part(s, "v1_shape", {"shape": s, "centre": centre, "scale": spec.COMPOSITION_SCALE}, spec.colour_rgb(c), k)
        for k, (c, s, centre) in enumerate(zip((c1, c2), (s1, s2), centres))
    )
    return ToyObject(ParsedPrompt(((c1, s1), (c2, s2)), relation), parts)


def v1_object(colour: str, shape: str) -> ToyObject:
    """A v1 shape as a v2 object (one part, the v1 SDF unscaled)."""
    if shape not in world.SHAPES or colour not in world.COLOURS:
        raise ObjectError(f"'{colour} {shape}' is not a v1 object; v1 has colours {', '.join(world.COLOURS)} "
                          f"and shapes {', '.join(world.SHAPES)}")
    part = Part(shape, "v1_shape", {"shape": shape, "centre": (0.0, 0.0, 0.0), "scale": 1.0}, spec.colour_rgb(colour), 0)
    return ToyObject(ParsedPrompt(((colour, shape),)), (part,))


def from_prompt(prompt: str | ParsedPrompt, variant: str | None = None) -> ToyObject:
    """The object a v1 or v2 prompt names (its view suffix, if any, is ignored)."""
    parsed = parse_prompt(prompt) if isinstance(prompt, str) else prompt
    if parsed is None:
        raise ObjectError(f"prompt {prompt!r} is not in toy world v2's grammar (e.g. 'a red owl', "
                          "'a red sphere on top of a blue cube', 'a blue cube, side view')")
    if parsed.relation is not None:
        if variant is not None:
            raise ObjectError("Janus variants exist for faced objects only (owl, house, chair)")
        (c1, s1), (c2, s2) = parsed.parts
        return composition(parsed.relation, c1, s1, c2, s2)
    colour, noun = parsed.parts[0]
    if noun in spec.OBJECTS:
        return faced_object(noun, colour, variant)
    if variant is not None:
        raise ObjectError("Janus variants exist for faced objects only (owl, house, chair)")
    return v1_object(colour, noun)
