"""Exact signed distance functions of toy world v2's primitives (toyworld_v2.json ``primitives``).

Inigo Quilez, "distance functions" (iquilezles.org/articles/distfunctions and distfunctions2d):
sdSphere, sdCapsule, sdCappedCone (the general form between two points), sdRoundBox, and
sdTriangleIsosceles extruded with opExtrusion. Written for torch so they batch over points
(``p``: (..., 3) -> (...)); negative inside. World frame +z up (iq's formulas are frame-free
except the triangle, whose plane is given explicitly below).
"""

from __future__ import annotations

import math
from itertools import product

import torch
from torch import Tensor

from .. import shapes as v1_shapes


def _vec(v, like: Tensor) -> Tensor:
    return torch.as_tensor(v, dtype=like.dtype, device=like.device)


def _dot(a: Tensor, b: Tensor) -> Tensor:
    return (a * b).sum(-1)


def sphere(p: Tensor, centre, radius: float) -> Tensor:
    """|p - centre| - radius."""
    return (p - _vec(centre, p)).norm(dim=-1) - radius


def capsule(p: Tensor, a, b, radius: float) -> Tensor:
    """iq sdCapsule: distance to the segment ab minus the radius."""
    a, b = _vec(a, p), _vec(b, p)
    pa, ba = p - a, b - a
    h = (_dot(pa, ba) / _dot(ba, ba)).clamp(0.0, 1.0)
    return (pa - h[..., None] * ba).norm(dim=-1) - radius


def capped_cone(p: Tensor, a, b, ra: float, rb: float) -> Tensor:
    """iq sdCappedCone(p, a, b, ra, rb): a frustum with disc radius ``ra`` at ``a`` and ``rb`` at ``b``."""
    a, b = _vec(a, p), _vec(b, p)
    rba = rb - ra
    baba = _dot(b - a, b - a)
    papa = _dot(p - a, p - a)
    paba = _dot(p - a, b - a) / baba
    # Distance from the axis; rounding can make the difference slightly negative on the axis.
    x = (papa - paba * paba * baba).clamp(min=0.0).sqrt()
    cax = (x - torch.where(paba < 0.5, ra, rb)).clamp(min=0.0)
    cay = (paba - 0.5).abs() - 0.5
    k = rba * rba + baba
    f = ((rba * (x - ra) + paba * baba) / k).clamp(0.0, 1.0)
    cbx = x - ra - f * rba
    cby = paba - f
    s = torch.where((cbx < 0.0) & (cay < 0.0), -1.0, 1.0)
    return s * torch.minimum(cax * cax + cay * cay * baba, cbx * cbx + cby * cby * baba).sqrt()


def rounded_box(p: Tensor, centre, half_extent, rounding: float) -> Tensor:
    """iq sdRoundBox, axis aligned: q = |p - c| - h; |max(q, 0)| + min(max_i q_i, 0) - r (faces at h + r)."""
    q = (p - _vec(centre, p)).abs() - _vec(half_extent, p)
    return q.clamp(min=0.0).norm(dim=-1) + q.max(dim=-1).values.clamp(max=0.0) - rounding


def triangle_isosceles(p: Tensor, half_width: float, height: float) -> Tensor:
    """iq sdTriangleIsosceles (2D, exact): apex at the origin, base from (-w, h) to (w, h). (..., 2) -> (...)."""
    q = p.new_tensor([half_width, height])
    p = torch.stack([p[..., 0].abs(), p[..., 1]], dim=-1)
    a = p - q * (_dot(p, q) / _dot(q, q)).clamp(0.0, 1.0)[..., None]
    b = p - q * torch.stack([(p[..., 0] / q[0]).clamp(0.0, 1.0), torch.ones_like(p[..., 0])], dim=-1)
    s = -math.copysign(1.0, height)
    dx = torch.minimum(_dot(a, a), _dot(b, b))
    dy = torch.minimum(s * (p[..., 0] * q[1] - p[..., 1] * q[0]), s * (p[..., 1] - q[1]))
    return -dx.sqrt() * torch.sign(dy)


def extrusion(d2: Tensor, w: Tensor, half_length: float) -> Tensor:
    """iq opExtrusion: a 2D SDF ``d2`` extruded over |w| <= half_length along the third axis (exact)."""
    v = torch.stack([d2, w.abs() - half_length], dim=-1)
    return v.max(dim=-1).values.clamp(max=0.0) + v.clamp(min=0.0).norm(dim=-1)


def tri_prism_y(p: Tensor, apex, half_width: float, height: float, half_length: float) -> Tensor:
    """Isosceles triangle in the xz-plane (apex at ``apex``'s (x, z), base ``height`` below it),
    extruded along y over |y - apex_y| <= half_length."""
    apex = _vec(apex, p)
    # The triangle's 2D frame: u = x - apex_x, v = apex_z - z, so the base lies at v = +height.
    uv = torch.stack([p[..., 0] - apex[0], apex[2] - p[..., 2]], dim=-1)
    return extrusion(triangle_isosceles(uv, half_width, height), p[..., 1] - apex[1], half_length)


def v1_shape(p: Tensor, shape: str, centre, scale: float) -> Tensor:
    """A v1 shape scaled about its centre: scale * sdf_v1((p - centre) / scale) (exact)."""
    return scale * v1_shapes.sdf(shape, (p - _vec(centre, p)) / scale)


PRIMITIVES = {"sphere": sphere, "capsule": capsule, "capped_cone": capped_cone, "rounded_box": rounded_box,
              "tri_prism_y": tri_prism_y, "v1_shape": v1_shape}


def evaluate(kind: str, params: dict, p: Tensor) -> Tensor:
    """The SDF of a primitive given by its spec entry (``kind`` and the spec's parameter names)."""
    return PRIMITIVES[kind](p, **params)


def bounding_radius(kind: str, params: dict) -> float:
    """Radius of a ball about the origin that contains the primitive (rotations about the origin keep it)."""
    n = lambda v: math.sqrt(sum(float(x) ** 2 for x in v))  # noqa: E731
    if kind == "sphere":
        return n(params["centre"]) + params["radius"]
    if kind == "capsule":
        return max(n(params["a"]), n(params["b"])) + params["radius"]
    if kind == "capped_cone":
        return max(n(params["a"]), n(params["b"])) + max(params["ra"], params["rb"])
    if kind == "rounded_box":
        c, h = params["centre"], params["half_extent"]
        return max(n([ci + si * hi for ci, si, hi in zip(c, signs, h)]) for signs in product((-1, 1), repeat=3)) + params["rounding"]
    if kind == "tri_prism_y":
        (x, y, z), w, h, L = params["apex"], params["half_width"], params["height"], params["half_length"]
        return max(n([x + dx, y + dy, z - dz]) for dx, dz in ((0.0, 0.0), (-w, h), (w, h)) for dy in (-L, L))
    if kind == "v1_shape":
        return n(params["centre"]) + params["scale"] * v1_shapes.bounding_radius(params["shape"])
    raise ValueError(f"unknown primitive kind {kind!r}; toyworld_v2.json has {', '.join(PRIMITIVES)}")
