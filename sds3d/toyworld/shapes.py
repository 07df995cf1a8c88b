"""Signed distance functions of the toy world's shapes (world frame, +z up).

SDFs follow Inigo Quilez's exact distance functions (iquilezles.org/articles/distfunctions),
written for torch so they batch over points. They are the ground truth for rendering and for
evaluating exported meshes (occupancy = sdf < 0).
"""

from __future__ import annotations

import torch
from torch import Tensor

from .world import SHAPES, spec, torus_rotation


def _sphere(p: Tensor, radius: float) -> Tensor:
    return p.norm(dim=-1) - radius


def _rounded_box(p: Tensor, half_extent: float, rounding: float) -> Tensor:
    # SDF = box(half_extent) - rounding (toyworld.json note).
    q = p.abs() - half_extent
    outside = q.clamp(min=0.0).norm(dim=-1)
    inside = q.max(dim=-1).values.clamp(max=0.0)
    return outside + inside - rounding


def _dot2(v: Tensor) -> Tensor:
    return (v * v).sum(-1)


def _capped_cone(p: Tensor, half_height: float, r_bottom: float, r_top: float) -> Tensor:
    # iq's sdCappedCone with its y axis mapped to our +z axis.
    h = half_height
    q = torch.stack([p[..., :2].norm(dim=-1), p[..., 2]], dim=-1)
    k1 = q.new_tensor([r_top, h])
    k2 = q.new_tensor([r_top - r_bottom, 2.0 * h])
    r_side = torch.where(q[..., 1] < 0.0, q.new_tensor(r_bottom), q.new_tensor(r_top))
    ca = torch.stack([q[..., 0] - torch.minimum(q[..., 0], r_side), q[..., 1].abs() - h], dim=-1)
    t = (((k1 - q) * k2).sum(-1) / _dot2(k2)).clamp(0.0, 1.0)
    cb = q - k1 + k2 * t[..., None]
    sign = torch.where((cb[..., 0] < 0.0) & (ca[..., 1] < 0.0), -1.0, 1.0)
    return sign * torch.minimum(_dot2(ca), _dot2(cb)).sqrt()


def _torus(p: Tensor, major: float, minor: float, rotation: Tensor) -> Tensor:
    # World point -> torus frame: p_local = R^T p (row vectors: p @ R).
    p_local = p @ rotation.to(p)
    q = torch.stack([p_local[..., :2].norm(dim=-1) - major, p_local[..., 2]], dim=-1)
    return q.norm(dim=-1) - minor


def sdf(shape: str, p: Tensor) -> Tensor:
    """Signed distance of points to a toy shape.

    Args:
        shape: one of ``SHAPES``.
        p: points in the world frame. Shape: (..., 3).

    Returns:
        Signed distance, negative inside. Shape: (...).
    """
    if shape not in SHAPES:
        raise ValueError(f"unknown toy shape {shape!r}; the toy world has {', '.join(SHAPES)}")
    s = spec()["shapes"][shape]
    if s["kind"] == "sphere":
        return _sphere(p, s["radius"])
    if s["kind"] == "rounded_box":
        return _rounded_box(p, s["half_extent"], s["rounding"])
    if s["kind"] == "capped_cone":
        return _capped_cone(p, s["half_height"], s["base_radius"], s["top_radius"])
    if s["kind"] == "torus":
        return _torus(p, s["major_radius"], s["minor_radius"], torus_rotation())
    raise ValueError(f"unknown shape kind {s['kind']!r}")


def occupancy(shape: str, p: Tensor) -> Tensor:
    """Ground-truth inside/outside. Shape: (...) bool."""
    return sdf(shape, p) < 0.0


def bounding_radius(shape: str) -> float:
    """Radius of a sphere about the origin that contains the shape."""
    s = spec()["shapes"][shape]
    if s["kind"] == "sphere":
        return s["radius"]
    if s["kind"] == "rounded_box":
        return (s["half_extent"] + s["rounding"]) * 3**0.5
    if s["kind"] == "capped_cone":
        return (s["half_height"] ** 2 + s["base_radius"] ** 2) ** 0.5
    return s["major_radius"] + s["minor_radius"]


def occupancy_grid(shape: str, resolution: int, bound: float = 1.0) -> Tensor:
    """Occupancy sampled at voxel centres of [-bound, bound]^3. Shape: (R, R, R) bool, index [x, y, z]."""
    c = (torch.arange(resolution, dtype=torch.float32) + 0.5) / resolution * 2 * bound - bound
    grid = torch.stack(torch.meshgrid(c, c, c, indexing="ij"), dim=-1)
    return occupancy(shape, grid)
