import torch

from sds3d.cameras import CameraConfig, sample_cameras
from sds3d.toyworld import world
from sds3d.toyworld.judge import colour_scores, judge
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


def test_judge_gives_a_grey_blob_no_colour_with_confidence():
    # A grey disc has no hue (the control for unconditional runs): its colour scores are its
    # chromaticity (1/3, 1/3, 1/3)'s distances to the world's colours, all far larger than the
    # distance of any ground-truth render to its own colour, so no colour claims it with confidence.
    yy, xx = torch.meshgrid(torch.arange(32.0), torch.arange(32.0), indexing="ij")
    disc = (((yy - 15.5) ** 2 + (xx - 15.5) ** 2) < 81).float()
    greys = torch.stack([1 - level * disc.expand(3, 32, 32) for level in (0.2, 0.5, 0.9)])
    table = world.colour_table()
    expected = -torch.cdist(torch.full((1, 3), 1 / 3), table / table.sum(-1, keepdim=True))
    scores = colour_scores(greys)
    torch.testing.assert_close(scores, expected.expand(3, -1), atol=1e-4, rtol=0)

    g = torch.Generator().manual_seed(1)
    own = []
    for shape in world.SHAPES:
        for i, colour in enumerate(world.COLOURS):
            images, _ = render(shape, world.colour_rgb(colour), sample_cameras(CameraConfig(), 4, generator=g))
            own.append(-colour_scores(images)[:, i])
    assert -scores.max() > 3 * torch.cat(own).max()
    assert [shape for _, shape in judge(greys)] == ["sphere"] * 3
    assert judge(torch.ones(0, 3, 32, 32)) == []
