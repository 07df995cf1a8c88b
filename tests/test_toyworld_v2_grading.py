"""Grading a v2 prior: samples drawn as the training data show each prompt, judged by the v2 judge."""

import torch
from torch import nn

from sds3d.cameras import make_cameras
from sds3d.priors.base import Prior
from sds3d.priors.condition import Condition
from sds3d.priors.schedule import NoiseSchedule
from sds3d.toyworld import world
from sds3d.toyworld.v2 import spec
from sds3d.toyworld.v2.grading import grade, sampling_conditions
from sds3d.toyworld.v2.objects import from_prompt
from sds3d.toyworld.v2.render import render


class ExactPrior(Prior):
    """The exact denoiser of a distribution concentrated on one image per prompt (whatever the view)."""

    resolution, latent, latent_shape = 32, False, (3, 32, 32)

    def __init__(self, images: dict[str, torch.Tensor]):
        super().__init__()
        self.schedule = NoiseSchedule({"num_train_timesteps": 1000, "beta_schedule": "linear", "beta_start": 1e-4, "beta_end": 0.02})
        self.dummy = nn.Parameter(torch.zeros(1))
        self.names = list(images)
        self.x_star = torch.stack([images[n] * 2 - 1 for n in self.names])

    def encode_prompts(self, prompts):
        ids = [self.names.index(_base(p)) if p else -1 for p in prompts]
        return Condition(torch.tensor(ids, dtype=torch.float32).reshape(-1, 1, 1))

    def _predict(self, x_t, t, cond, cameras):
        ids = cond.tokens.reshape(-1).long()
        B = len(ids) // 2
        ids = torch.cat([ids[:B], ids[:B]])  # the unconditional half denoises towards its sample's image too
        abar = self.schedule.alphas_cumprod[t].view(-1, 1, 1, 1)
        return (x_t - abar.sqrt() * self.x_star[ids]) / (1 - abar).sqrt()

    def encode_images(self, rgb):
        return rgb * 2 - 1

    def decode(self, x):
        return (x + 1) / 2


def _base(prompt: str) -> str:
    return prompt.split(",")[0]


def _front(prompt: str) -> torch.Tensor:
    cams = make_cameras(torch.tensor([20.0]), torch.tensor([20.0]), world.CAMERA_DISTANCE, world.FOV_Y_DEG)
    return render(from_prompt(prompt), cams)[0][0]


def test_sampling_conditions_follow_the_training_captions():
    g = torch.Generator().manual_seed(0)
    texts, angles = sampling_conditions("a red cube", 50, g, cameras=True)
    assert all(t.startswith("a red cube, ") and t.endswith(" view") for t in texts) and angles.shape == (50, 2)
    texts, angles = sampling_conditions("a red owl", 400, g, cameras=True)
    assert set(texts) <= {"a red owl"} | {f"a red owl, {v} view" for v in world.VIEWS}
    # Sparse captions and the front-biased mixture as the spec has them (n = 400: 0.08 is > 4 sigma).
    assert abs(texts.count("a red owl") / 400 - spec.CAPTION_FRACTIONS["bare"]) < 0.08
    front = ((angles[:, 1] + 45.0) % 360.0 < 90.0).float().mean().item()
    assert abs(front - dict((k, w) for k, w, _ in spec.AZIMUTH_MIXTURE)["front"]) < 0.08
    assert sampling_conditions("a red owl", 3, g, cameras=False) == (["a red owl"] * 3, None)


def test_grade_recognises_the_prompted_scenes_and_not_the_others():
    prompts = ["a red owl", "a blue sphere on top of a green cube", "a yellow cone"]
    images = {p: _front(p) for p in prompts}
    grades = grade(ExactPrior(images), prompts, guidance_scale=3.0, n=2, steps=10, batch=4)
    assert grades.rate() == 1.0 and grades.rate_by_kind() == {"faced": 1.0, "composition": 1.0, "v1": 1.0}
    assert grades.verdicts[:2] == ["a red owl"] * 2 and len(grades.texts) == 6
    assert torch.allclose(grades.images[0], images["a red owl"], atol=1e-3)  # DDIM reaches the image
    swapped = {**images, "a blue sphere on top of a green cube": _front("a green sphere on top of a blue cube")}
    grades = grade(ExactPrior(swapped), prompts, guidance_scale=3.0, n=2, steps=10, cameras=False)
    assert grades.rate(prompts[1]) == 0.0 and grades.rate(prompts[0]) == 1.0 and grades.rate() == 2 / 3
    assert grades.verdicts[2] == "a green sphere on top of a blue cube"
