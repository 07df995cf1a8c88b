"""Toy world v2's renderer against the spec: decals where the spec puts them, seen from the front
camera (+y is image-right), v1's shading and camera conventions, composition layouts in the image."""

import math
from dataclasses import replace

import torch

from sds3d.cameras import make_cameras
from sds3d.toyworld import world
from sds3d.toyworld.v2 import spec
from sds3d.toyworld.v2.objects import composition, faced_object
from sds3d.toyworld.v2.render import render, render_slots

H = 128  # test renders: 128 x 128, one sample per pixel, so a pixel is one ray


def front(az: float = 0.0, el: float = 0.0):
    return make_cameras(torch.tensor([az]), torch.tensor([el]), world.CAMERA_DISTANCE, world.FOV_Y_DEG)


def pixel_of(p) -> tuple[int, int]:
    """(row, col) of a world point in the front view, by the pinhole model written out: the camera
    at (2.5, 0, 0) looks along -x with up +z, so image-right is +y and image-up is +z."""
    x, y, z = p
    f = 0.5 * H / math.tan(math.radians(world.FOV_Y_DEG) / 2)
    depth = world.CAMERA_DISTANCE - x
    return int(H / 2 - f * z / depth), int(H / 2 + f * y / depth)


def ray_of(row: int, col: int) -> torch.Tensor:
    """The unit direction of the front camera's ray through a pixel centre."""
    f = 0.5 * H / math.tan(math.radians(world.FOV_Y_DEG) / 2)
    d = torch.tensor([-1.0, (col + 0.5 - H / 2) / f, -(row + 0.5 - H / 2) / f])
    return d / d.norm()


def expected_on_sphere(row, col, centre, radius, albedo):
    """v1 shading at the front ray's hit with a sphere (analytic intersection): the renderer's colour there."""
    o, d, c = torch.tensor([world.CAMERA_DISTANCE, 0.0, 0.0]), ray_of(row, col), torch.tensor(centre)
    b = (d * (o - c)).sum()
    t = -b - (b * b - ((o - c) ** 2).sum() + radius**2).sqrt()
    n = (o + t * d - c) / radius
    l = torch.tensor(world.spec()["shading"]["light_direction"], dtype=torch.float32)
    return albedo * (0.35 + 0.65 * max(0.0, float(n @ (l / l.norm()))))


def test_owl_eyes_and_beak_from_the_front():
    owl = faced_object("owl", "blue")
    img, mask = render(owl, front(), resolution=H, supersampling=1)
    img = img[0]
    head, r = (0.0, 0.0, 0.10), 0.38
    for side in (1, -1):
        eye = (0.324, side * 0.172, 0.198)
        row, col = pixel_of(eye)
        # The pupil at the eye centre, a white ring 0.09 below it (between the pupil and the white's edge).
        assert torch.allclose(img[:, row, col], expected_on_sphere(row, col, head, r, spec.colour_rgb("pupil")), atol=2e-3)
        ring_row, _ = pixel_of((0.324, side * 0.172, 0.198 - 0.09))
        assert torch.allclose(img[:, ring_row, col], expected_on_sphere(ring_row, col, head, r, spec.colour_rgb("white")), atol=2e-3)
    # The beak, centred below the eyes, on the front's centre column: its colour's chromaticity.
    row, col = pixel_of((0.45, 0.0, 0.015))
    beak = spec.colour_rgb("beak")
    assert torch.allclose(img[:, row, col] / img[:, row, col].sum(), beak / beak.sum(), atol=1e-3)
    # Plain body below the beak, in the slot colour.
    row, col = pixel_of((0.33, 0.0, -0.3))
    blue = spec.colour_rgb("blue")
    assert torch.allclose(img[:, row, col] / img[:, row, col].sum(), blue / blue.sum(), atol=1e-3)


def test_the_owls_left_eye_is_image_right_from_the_front():
    # +y is image-right from the front camera (frame.image_axes_from_front_camera); the decal named
    # eye_white_left is the owl's own left, at +y.
    owl = faced_object("owl", "red")
    only_left = replace(owl, decals=tuple(d for d in owl.decals if d.name == "eye_white_left"))

    def white(cams):
        img, mask = render(only_left, cams, resolution=H, supersampling=1)
        return (img[0].min(0).values > 0.3) & (mask[0, 0] == 1)  # the slot colour red has channels <= 0.1

    cols = white(front()).nonzero()[:, 1].float()
    assert len(cols) > 20 and (cols > H / 2).all()
    assert abs(cols.mean().item() - pixel_of((0.324, 0.172, 0.198))[1]) < 2
    # From the back the same eye is hidden; from azimuth 90 (camera at +y) it faces the camera.
    assert not white(front(180.0)).any() and white(front(90.0)).sum() > 20


def test_house_door_and_windows_from_the_front():
    house = faced_object("house", "green")
    img, _ = render(house, front(), resolution=H, supersampling=1)
    l = world.light_direction()
    lit = 0.35 + 0.65 * max(0.0, float(l[0]))  # the front wall's normal is +x
    row, col = pixel_of((0.32, 0.0, -0.27))
    assert torch.allclose(img[0, :, row, col], spec.colour_rgb("door") * lit, atol=1e-3)
    for y in (0.24, -0.24):
        row, col = pixel_of((0.32, y, -0.02))
        assert torch.allclose(img[0, :, row, col], spec.colour_rgb("white") * lit, atol=1e-3)
    row, col = pixel_of((0.32, 0.2, -0.3))  # beside the door, below the window: plain wall
    assert torch.allclose(img[0, :, row, col], spec.colour_rgb("green") * lit, atol=1e-3)
    only_left = replace(house, decals=tuple(d for d in house.decals if d.name == "window_left"))
    img, mask = render(only_left, front(), resolution=H, supersampling=1)
    white = (img[0].min(0).values > 0.3) & (mask[0, 0] == 1)
    assert white.sum() > 20 and (white.nonzero()[:, 1] > H / 2).all()
    # The back wall is plain: every covered pixel shows the slot colour's chromaticity.
    img, mask = render(house, front(180.0), resolution=H, supersampling=1)
    covered = img[0][:, mask[0, 0] == 1]
    green = spec.colour_rgb("green")
    assert torch.allclose(covered / covered.sum(0), (green / green.sum())[:, None], atol=1e-3)


def test_front_renders_at_32_match_the_spec_measurements():
    # resolution.argument: in the 32x32 front render (elevation 0, blue) the owl has 24 clean-white
    # pixels (min channel > 0.5, fully covered) and the house 24; dark (max channel < 0.25, fully
    # covered): 18 and 28.
    for name, white, dark in (("owl", 24, 18), ("house", 24, 28)):
        img, mask = render(faced_object(name, "blue"), front())
        full = mask[0, 0] == 1
        assert ((img[0].min(0).values > 0.5) & full).sum().item() == white
        assert ((img[0].max(0).values < 0.25) & full).sum().item() == dark


def test_next_to_puts_s1_image_left_from_the_front_and_right_from_the_back():
    scene = composition("next_to", "red", "sphere", "blue", "cube")
    for az, s1_left in ((0.0, True), (180.0, False)):
        _, _, slots = render_slots(scene, front(az), resolution=64, supersampling=1)
        cols = torch.arange(64.0)
        c1 = (slots[0, 0].sum(0) * cols).sum() / slots[0, 0].sum()
        c2 = (slots[0, 1].sum(0) * cols).sum() / slots[0, 1].sum()
        assert (c1 < 32 < c2) == s1_left and (c2 < 32 < c1) == (not s1_left)


def test_on_top_of_stacks_s1_above_s2():
    scene = composition("on_top_of", "yellow", "cone", "green", "cube")
    _, _, slots = render_slots(scene, front(), resolution=64, supersampling=1)
    rows = torch.arange(64.0)
    r1 = (slots[0, 0].sum(1) * rows).sum() / slots[0, 0].sum()
    r2 = (slots[0, 1].sum(1) * rows).sum() / slots[0, 1].sum()
    assert r1 < 32 < r2  # row 0 is the top
    # The contact at z = e2 - e1 = 0.24 - 0.27 = -0.03: no gap in the centre column.
    col = slots[0, :, :, 32].sum(0)
    top, bottom = (col > 0).nonzero()[[0, -1], 0]
    assert (col[top : bottom + 1] > 0).all()


def test_renderer_batches_is_deterministic_and_white_outside():
    owl = faced_object("owl", "yellow", "two_faced")
    cams = make_cameras(torch.tensor([0.0, 120.0, 240.0]), torch.tensor([-10.0, 30.0, 60.0]), 2.5, 40.0)
    a, ma = render(owl, cams)
    b, mb = render(owl, cams[1])
    assert a.shape == (3, 3, 32, 32) and ma.shape == (3, 1, 32, 32)
    assert torch.allclose(a[1:2], b) and torch.allclose(ma[1:2], mb)
    assert torch.equal(a[:, :, 0, 0], torch.ones(3, 3)) and a.min() >= 0 and a.max() <= 1
    _, m, slots = render_slots(owl, cams)
    assert (slots.sum(1) <= m[:, 0] + 1e-6).all()  # decals and the beak are not the slot colour
