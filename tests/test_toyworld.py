import math

import pytest
import torch

from sds3d.cameras import make_cameras, view_labels
from sds3d.toyworld import world
from sds3d.toyworld.prompts import all_prompts, check_vocabulary, make_prompt, parse_prompt
from sds3d.toyworld.render import render
from sds3d.toyworld.shapes import occupancy_grid, sdf


def test_sphere_silhouette_area_matches_projection():
    # A sphere of radius r at distance d subtends half-angle asin(r/d); in a pinhole image of
    # vertical fov f it is a disc of radius tan(asin(r/d)) / tan(f/2) * H/2 pixels.
    cams = make_cameras(torch.tensor([30.0]), torch.tensor([10.0]), world.CAMERA_DISTANCE, world.FOV_Y_DEG)
    _, mask = render("sphere", world.colour_rgb("red"), cams, resolution=64, supersampling=2)
    r, d, f = 0.5, world.CAMERA_DISTANCE, math.radians(world.FOV_Y_DEG)
    radius_px = math.tan(math.asin(r / d)) / math.tan(f / 2) * 32
    # The silhouette of a sphere off the optical axis is an ellipse; on axis it is this disc.
    assert mask.sum().item() == pytest.approx(math.pi * radius_px**2, rel=0.02)


def test_centre_pixel_follows_the_shading_formula():
    cams = make_cameras(torch.tensor([0.0]), torch.tensor([0.0]), world.CAMERA_DISTANCE, world.FOV_Y_DEG)
    albedo = world.colour_rgb("green")
    img, mask = render("sphere", albedo, cams, resolution=33, supersampling=1)
    # The centre ray hits (0.5, 0, 0) where the normal is +x.
    l = torch.tensor([0.5, -0.7, 1.0])
    expected = albedo * (0.35 + 0.65 * max(0.0, (l / l.norm())[0].item()))
    assert torch.allclose(img[0, :, 16, 16], expected, atol=1e-3)
    assert mask[0, 0, 16, 16] == 1
    assert torch.allclose(img[0, :, 0, 0], torch.ones(3))  # background is white


def test_light_is_fixed_in_the_world_frame():
    # The face of the cube towards -y (n = -y, n.l = 0.7/|l|) is brighter than the face towards +y (n.l < 0).
    front = make_cameras(torch.tensor([270.0]), torch.tensor([0.0]), world.CAMERA_DISTANCE, world.FOV_Y_DEG)
    back = make_cameras(torch.tensor([90.0]), torch.tensor([0.0]), world.CAMERA_DISTANCE, world.FOV_Y_DEG)
    a = render("cube", world.colour_rgb("red"), front, resolution=33, supersampling=1)[0][0, 0, 16, 16]
    b = render("cube", world.colour_rgb("red"), back, resolution=33, supersampling=1)[0][0, 0, 16, 16]
    l = torch.tensor([0.5, -0.7, 1.0]); l = l / l.norm()
    assert a.item() == pytest.approx(0.9 * (0.35 + 0.65 * l[1].abs().item()), abs=1e-3)
    assert b.item() == pytest.approx(0.9 * 0.35, abs=1e-3)


def test_shape_sdfs_follow_the_spec():
    assert sdf("sphere", torch.tensor([0.5, 0.0, 0.0])).abs() < 1e-6
    assert sdf("cube", torch.tensor([0.40, 0.0, 0.0])).abs() < 1e-6  # faces at 0.38 + 0.02
    assert sdf("cube", torch.tensor([0.38, 0.38, 0.38])).item() == pytest.approx(-0.02, abs=1e-6)
    assert sdf("cone", torch.tensor([0.0, 0.0, 0.45])).abs() < 1e-6  # apex
    assert sdf("cone", torch.tensor([0.5, 0.0, -0.45])).abs() < 1e-6  # base rim
    assert sdf("cone", torch.tensor([0.0, 0.0, 0.0])) < 0
    # Torus ring point (0, 0.42, 0) rotated by -30 deg about +x, and the tilted axis.
    a = math.radians(-30)
    p = torch.tensor([0.0, 0.42 * math.cos(a), 0.42 * math.sin(a)])
    assert sdf("torus", p).item() == pytest.approx(-0.16, abs=1e-5)
    axis = torch.tensor([0.0, 0.5, math.sqrt(3) / 2])
    assert sdf("torus", 0.3 * axis).item() > 0  # the hole along the tilted axis is empty
    with pytest.raises(ValueError, match="unknown toy shape"):
        sdf("pyramid", torch.zeros(3))


def test_occupancy_volumes():
    grid = occupancy_grid("sphere", 64)
    volume = grid.float().mean().item() * 8.0  # [-1, 1]^3 has volume 8
    assert volume == pytest.approx(4 / 3 * math.pi * 0.5**3, rel=0.03)


@pytest.mark.parametrize(
    "az, el, label",
    [(0, 0, "front"), (44.9, 0, "front"), (45, 0, "side"), (134.9, 0, "side"), (135, 0, "back"),
     (224.9, 0, "back"), (225, 0, "side"), (314.9, 0, "side"), (315, 0, "front"), (359.9, 0, "front"),
     (180, 45, "back"), (180, 45.1, "overhead"), (-90, 0, "side")],
)
def test_view_labels_at_boundaries(az, el, label):
    assert view_labels(torch.tensor([float(az)]), torch.tensor([float(el)])) == [label]


def test_prompt_grammar():
    assert make_prompt("red", "cube") == "a red cube"
    assert make_prompt("blue", "torus", "side") == "a blue torus, side view"
    assert len(all_prompts()) == 16 and len(set(all_prompts())) == 16
    assert parse_prompt("a yellow cone, overhead view") == ("yellow", "cone", "overhead")
    assert parse_prompt("A Yellow Cone!") == ("yellow", "cone", None)
    assert parse_prompt("a purple cat") == (None, None, None)
    # Only the grammar is graded: a second object, or any other word, is not "a red cube".
    for prompt in ("a red cube next to a blue sphere", "a red cube a blue sphere", "a big red cube", "a red cube, front"):
        assert parse_prompt(prompt) == (None, None, None), prompt
    unknown, message = check_vocabulary("a purple cat")
    assert unknown == ["purple", "cat"] and "purple, cat" in message and "red" in message and "\n" not in message
    unknown, message = check_vocabulary("a red cube next to a blue sphere")
    assert unknown == ["next", "to"] and "next, to" in message
    assert check_vocabulary("a red cube a blue sphere") == ([], check_vocabulary("a red cube a blue sphere")[1])
    assert "is not of that form" in check_vocabulary("a red cube a blue sphere")[1]
    assert check_vocabulary("a red cube, side view") == ([], None)


def test_renderer_batches_and_is_deterministic():
    cams = make_cameras(torch.tensor([0.0, 120.0, 240.0]), torch.tensor([0.0, 30.0, 60.0]), 2.5, 40.0)
    a, ma = render("torus", world.colour_rgb("blue"), cams)
    b, mb = render("torus", world.colour_rgb("blue"), cams[1])
    assert a.shape == (3, 3, 32, 32) and ma.shape == (3, 1, 32, 32)
    assert torch.allclose(a[1:2], b) and torch.allclose(ma[1:2], mb)
    assert a.min() >= 0 and a.max() <= 1
