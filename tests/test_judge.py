import torch

from sds3d.cameras import CameraConfig, sample_cameras
from sds3d.toyworld import world
from sds3d.toyworld.judge import judge
from sds3d.toyworld.render import render


def test_judge_recognises_ground_truth_renders_with_noise():
    g = torch.Generator().manual_seed(0)
    hits = total = 0
    for shape in world.SHAPES:
        for colour in world.COLOURS:
            cams = sample_cameras(CameraConfig(), 4, generator=g)
            images, _ = render(shape, world.colour_rgb(colour), cams)
            images = (images + 0.03 * torch.randn(images.shape, generator=g)).clamp(0, 1)
            verdicts = judge(images)
            hits += sum(v == (colour, shape) for v in verdicts)
            total += len(verdicts)
    assert hits / total >= 0.95


def test_judge_does_not_recognise_a_blank_or_grey_blob_as_the_prompt_colour():
    # A grey disc has no hue: its chromaticity is equidistant from nothing in particular, but it
    # must not be called "a red cube" (the control for unconditional runs).
    yy, xx = torch.meshgrid(torch.arange(32.0), torch.arange(32.0), indexing="ij")
    disc = (((yy - 15.5) ** 2 + (xx - 15.5) ** 2) < 81).float()
    grey = 1 - 0.5 * disc[None, None].expand(1, 3, 32, 32)
    colour, shape = judge(grey)[0]
    assert shape == "sphere"
    assert judge(torch.ones(0, 3, 32, 32)) == []
