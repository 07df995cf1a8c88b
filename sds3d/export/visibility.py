"""How deep inside the rendered surface a grid sample lies: optical depth from outside the grid.

A NeRF trained by SDS is only constrained where rays see it. Its density is a shell around the
object with a weak, holey interior (nothing renders it), so ``density > level`` is a hollow mesh
with cavities, internal faces and pin-holes that a renderer never shows. The solid a renderer
shows is what lies behind the surface from every side: here, the samples at which a ray arriving
from outside the grid along *any* of the 26 grid directions has already accumulated
``surface_opacity``. ``visibility_depth`` is that smallest optical depth; marching cubes of it at
``-ln(1 - surface_opacity)`` is the solid's surface (a cavity that some grid direction sees into
stays open, like the torus' hole; one that no direction reaches is filled).

Written here because no library in the stack provides it: nerfacc accumulates transmittance along
camera rays of packed samples, not along the lines of a dense grid, and scipy/scikit-image fill
binary holes, which cannot tell a pin-holed shell from an open concavity.
"""

from __future__ import annotations

import itertools

import numpy as np

#: The 26 grid directions (steps to a neighbouring sample): 6 axes, 12 face and 8 body diagonals.
GRID_DIRECTIONS: tuple[tuple[int, int, int], ...] = tuple(d for d in itertools.product((-1, 0, 1), repeat=3) if any(d))


def _shift2d(a: np.ndarray, dx: int, dy: int) -> np.ndarray:
    """``out[i, j] = a[i - dx, j - dy]``, zero where that index is outside ``a``."""
    out = np.zeros_like(a)
    nx, ny = a.shape
    out[max(dx, 0) : nx + min(dx, 0), max(dy, 0) : ny + min(dy, 0)] = a[max(-dx, 0) : nx + min(-dx, 0), max(-dy, 0) : ny + min(-dy, 0)]
    return out


def depth_along(sigma: np.ndarray, step: tuple[int, int, int], spacing: float) -> np.ndarray:
    """Optical depth at each sample of rays entering the grid from outside and travelling along ``step``.

    Each sample stands for a segment of length ``|step| * spacing`` centred on it (NeRF's
    quadrature, Mildenhall et al. 2020, Eq. 3), so the depth at a sample is the sum over the
    samples before it on its line plus half its own: ``tau_k = sum_{i<k} sigma_i delta + sigma_k delta / 2``.

    Args:
        sigma: density. Shape: (R, R, R), index [x, y, z].
        step: grid step of the ray, each component in {-1, 0, 1}, not all 0.
        spacing: distance between neighbouring samples along an axis.

    Returns:
        tau. Shape: (R, R, R).
    """
    s = np.asarray(step)
    if s.shape != (3,) or not s.any() or np.abs(s).max() > 1:
        raise ValueError(f"step={tuple(step)} must be a grid direction such as (0, 0, 1) or (1, -1, 0)")
    delta = float(np.linalg.norm(s)) * spacing
    sweep = int(np.flatnonzero(s)[0])  # march over the slices of one axis the ray advances along
    perm = [sweep] + [i for i in range(3) if i != sweep]
    x = np.transpose(sigma, perm)
    if s[sweep] < 0:
        x = x[::-1]
    dx, dy = int(s[perm[1]]), int(s[perm[2]])
    tau = np.empty(x.shape, dtype=np.float64)
    before = np.zeros(x.shape[1:], dtype=np.float64)  # depth accumulated up to the current slice
    for k in range(x.shape[0]):
        before = _shift2d(before, dx, dy)
        segment = x[k] * delta
        tau[k] = before + 0.5 * segment
        before = before + segment
    if s[sweep] < 0:
        tau = tau[::-1]
    return np.transpose(tau, np.argsort(perm))


def visibility_depth(sigma: np.ndarray, spacing: float, directions=GRID_DIRECTIONS) -> np.ndarray:
    """Smallest optical depth from outside the grid to each sample over ``directions``.

    ``1 - exp(-visibility_depth)`` is the opacity in front of a sample seen from its most exposed
    side; marching cubes of it at ``-ln(1 - o)`` is the surface of the solid that rays from outside
    see as opacity ``o`` (module docstring). It grows monotonically from the grid's faces inwards
    along every direction.

    Args:
        sigma: density, non-negative. Shape: (R, R, R).
        spacing: distance between neighbouring samples along an axis.
        directions: grid steps of the rays (default: all 26).

    Returns:
        tau_min. Shape: (R, R, R), float64.
    """
    sigma = np.asarray(sigma, dtype=np.float64)
    tau = None
    for d in directions:
        t = depth_along(sigma, d, spacing)
        tau = t if tau is None else np.minimum(tau, t)
    return tau
