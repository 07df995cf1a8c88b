"""Optical depth from outside the grid (export surface "visibility") against a direct per-ray sum."""

from __future__ import annotations

import math

import numpy as np
import pytest

from sds3d.export.visibility import GRID_DIRECTIONS, depth_along, visibility_depth


def brute_force_depth(sigma: np.ndarray, step, spacing: float) -> np.ndarray:
    """Walk back from every sample along -step to the grid's edge and sum NeRF's quadrature."""
    n = sigma.shape[0]
    delta = math.sqrt(sum(c * c for c in step)) * spacing
    tau = np.zeros_like(sigma, dtype=np.float64)
    for idx in np.ndindex(sigma.shape):
        total = 0.5 * sigma[idx] * delta
        p = np.array(idx) - np.array(step)
        while ((p >= 0) & (p < n)).all():
            total += sigma[tuple(p)] * delta
            p = p - np.array(step)
        tau[idx] = total
    return tau


@pytest.mark.parametrize("step", [(0, 0, 1), (-1, 0, 0), (0, 1, -1), (1, 1, 1), (-1, 1, -1), (1, -1, 0)])
def test_depth_along_matches_a_direct_sum(step):
    rng = np.random.default_rng(0)
    sigma = rng.uniform(0.0, 3.0, size=(7, 7, 7))
    np.testing.assert_allclose(depth_along(sigma, step, 0.1), brute_force_depth(sigma, step, 0.1), rtol=1e-12)


def test_visibility_depth_is_the_minimum_over_the_26_directions():
    rng = np.random.default_rng(1)
    sigma = rng.uniform(0.0, 2.0, size=(6, 6, 6))
    expected = np.min([brute_force_depth(sigma, d, 0.2) for d in GRID_DIRECTIONS], axis=0)
    assert len(GRID_DIRECTIONS) == 26
    np.testing.assert_allclose(visibility_depth(sigma, 0.2), expected, rtol=1e-12)


def test_a_cavity_inside_a_solid_block_is_deep_and_the_open_side_is_not():
    sigma = np.zeros((12, 12, 12))
    sigma[2:10, 2:10, 2:10] = 10.0
    sigma[4:8, 4:8, 4:8] = 0.0  # a sealed cavity
    tau = visibility_depth(sigma, 0.1)
    assert tau[6, 6, 6] >= 2 * 10.0 * 0.1  # behind two opaque voxels from every side
    sigma[5:7, 5:7, 4:10] = 0.0  # bore a shaft from the cavity out through the top face
    tau_open = visibility_depth(sigma, 0.1)
    assert tau_open[6, 6, 6] == 0.0


def test_bad_step_is_a_clear_error():
    with pytest.raises(ValueError, match="grid direction"):
        depth_along(np.zeros((4, 4, 4)), (0, 0, 2), 0.1)
    with pytest.raises(ValueError, match="grid direction"):
        depth_along(np.zeros((4, 4, 4)), (0, 0, 0), 0.1)
