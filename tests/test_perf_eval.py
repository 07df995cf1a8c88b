"""Evaluation speed-ups keep the numbers: the yaw search evaluates the ground truth only inside its
bounding sphere and still gives the full-grid IoU at every yaw, exactly."""

import pytest
import torch

from sds3d import eval as ev
from sds3d.toyworld import world
from sds3d.toyworld.shapes import occupancy


@pytest.mark.parametrize("shape", world.SHAPES)
def test_iou_over_yaws_equals_the_full_grid_computation(shape):
    R = 40
    points = ev.grid_points(R)
    g = torch.Generator().manual_seed(0)
    # A prediction: the shape turned by 20 degrees and moved, with noise everywhere (also outside
    # the shape's bounding sphere, where the ground truth is empty).
    moved = ev._rotate_z(points, -20.0) + torch.tensor([0.03, -0.02, 0.01])
    pred = occupancy(shape, moved) ^ (torch.rand(len(points), generator=g) < 0.02)
    yaws = [0.0, 10.0, 20.0, 35.0]
    expected = []
    for yaw in yaws:
        gt = occupancy(shape, ev._rotate_z(points, yaw))
        expected.append(((gt & pred).sum().item() / (gt | pred).sum().item(), yaw))
    assert ev._iou_at_yaws(pred, shape, R, yaws) == max(expected, key=lambda e: e[0])
