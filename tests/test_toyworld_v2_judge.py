"""The v2 judge on noisy ground-truth renders: objects, compositions, colour swaps, wordings."""

import torch

from sds3d.cameras import make_cameras, sample_cameras
from sds3d.toyworld import world
from sds3d.toyworld.v2 import judge as v2_judge
from sds3d.toyworld.v2.dataset import sample_front_biased
from sds3d.toyworld.v2.objects import from_prompt
from sds3d.toyworld.v2.prompts import held_out_prompts, make_prompt, parse_prompt, training_prompts
from sds3d.toyworld.v2.render import render

torch.set_num_threads(1)


def noisy_renders(prompt: str, n: int, g: torch.Generator) -> torch.Tensor:
    """GT renders from the prompt's training camera distribution, plus N(0, 0.03) pixel noise (as v1's test)."""
    obj = from_prompt(prompt)
    if obj.kind == "v1":
        cams = sample_cameras(world.camera_config(), n, generator=g)
    else:
        az, el = sample_front_biased(n, g)
        cams = make_cameras(az, el, world.CAMERA_DISTANCE, world.FOV_Y_DEG)
    images, _ = render(obj, cams)
    return (images + 0.03 * torch.randn(images.shape, generator=g)).clamp(0, 1)


def test_judge_recognises_noisy_ground_truth_renders():
    g = torch.Generator().manual_seed(0)
    prompts = training_prompts()[::5] + held_out_prompts()  # 29 trained (every kind) + 27 held out
    images = torch.cat([noisy_renders(p, 3, g) for p in prompts])
    expected = [p for p in prompts for _ in range(3)]
    ok = v2_judge.matches(v2_judge.judge(images), expected)
    assert sum(ok) / len(ok) >= 0.95
    faced = [o for o, p in zip(ok, expected) if parse_prompt(p).kind == "faced"]
    assert all(faced)


def test_judge_sees_a_colour_swap_and_a_swapped_stack():
    cams = make_cameras(torch.tensor([0.0, 30.0, 330.0]), torch.tensor([10.0, 20.0, 0.0]), world.CAMERA_DISTANCE, world.FOV_Y_DEG)
    images, _ = render(from_prompt("a red sphere on top of a blue cube"), cams)
    verdicts = v2_judge.judge(images)
    assert v2_judge.matches(verdicts, ["a red sphere on top of a blue cube"] * 3) == [True] * 3
    for wrong in ("a blue sphere on top of a red cube", "a blue cube on top of a red sphere", "a red cube on top of a blue sphere"):
        assert v2_judge.matches(verdicts, [wrong] * 3) == [False] * 3


def test_next_to_is_judged_as_a_scene_in_either_wording():
    cams = make_cameras(torch.tensor([0.0, 180.0]), torch.tensor([15.0, 15.0]), world.CAMERA_DISTANCE, world.FOV_Y_DEG)
    images, _ = render(from_prompt("a green cone next to a yellow cube"), cams)
    verdicts = v2_judge.judge(images)
    assert verdicts[0] == verdicts[1]
    assert v2_judge.matches(verdicts, ["a yellow cube next to a green cone, back view"] * 2) == [True, True]
    assert make_prompt(verdicts[0]) == "a yellow cube next to a green cone"  # shapes in compositions.shapes order


def test_judge_of_a_v1_render_and_of_nothing():
    cams = make_cameras(torch.tensor([40.0]), torch.tensor([20.0]), world.CAMERA_DISTANCE, world.FOV_Y_DEG)
    images, _ = render(from_prompt("a yellow torus"), cams)
    assert make_prompt(v2_judge.judge(images)[0]) == "a yellow torus"
    assert v2_judge.judge(torch.ones(0, 3, 32, 32)) == []
    assert v2_judge.matches(v2_judge.judge(images), ["a purple torus"]) == [False]
