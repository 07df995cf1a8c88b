"""Prompt processing: view-dependent selection, negative prompts, one encode call."""

import zlib

import pytest
import torch
from torch import nn

from sds3d.cameras import CameraConfig
from sds3d.guidance import PromptError, PromptProcessor
from sds3d.priors.base import Prior
from sds3d.priors.condition import Condition

torch.set_num_threads(1)


class TextStubPrior(Prior):
    """Only the text side of a prior: a fixed (S=3, D=4) embedding per text, counting calls."""

    resolution, latent, latent_shape, schedule = 8, False, (3, 8, 8), None

    def __init__(self):
        super().__init__()
        self.dummy = nn.Parameter(torch.zeros(1))
        self.encode_calls: list[list[str]] = []

    @staticmethod
    def text_embedding(text: str) -> torch.Tensor:
        g = torch.Generator().manual_seed(zlib.crc32(text.encode()))
        return torch.randn(3, 4, generator=g)

    def encode_prompts(self, prompts):
        self.encode_calls.append(list(prompts))
        return Condition(torch.stack([self.text_embedding(p) for p in prompts]))

    def _predict(self, x_t, t, cond, cameras):
        raise AssertionError("not used here")

    def encode_images(self, rgb):
        return rgb * 2 - 1

    def decode(self, x):
        return (x + 1) / 2


E = TextStubPrior.text_embedding


def test_encodes_every_distinct_text_once():
    prior = TextStubPrior()
    pp = PromptProcessor(prior, "a red cube", negative_prompt="blurry")
    for _ in range(3):
        pp(torch.rand(4) * 360, torch.rand(4) * 70 - 10)
    assert len(prior.encode_calls) == 1
    assert sorted(prior.encode_calls[0]) == sorted([
        "a red cube", "blurry", "a red cube, front view", "a red cube, side view",
        "a red cube, back view", "a red cube, overhead view",
    ])


# (azimuth, elevation) -> view with the default thresholds (toyworld.json prompts.views)
BOUNDARIES = [
    (0.0, 0.0, "front"), (44.9, 0.0, "front"), (45.0, 0.0, "side"), (134.9, 0.0, "side"),
    (135.0, 0.0, "back"), (224.9, 0.0, "back"), (225.0, 0.0, "side"), (314.9, 0.0, "side"),
    (315.0, 0.0, "front"), (359.9, 0.0, "front"), (-10.0, 0.0, "front"), (180.0, 45.0, "back"),
    (180.0, 45.1, "overhead"), (0.0, 60.0, "overhead"),
]


def test_view_dependent_selection_at_boundaries():
    prior = TextStubPrior()
    pp = PromptProcessor(prior, "a red cube")
    az = torch.tensor([b[0] for b in BOUNDARIES])
    el = torch.tensor([b[1] for b in BOUNDARIES])
    out = pp(az, el)
    assert out.views == [b[2] for b in BOUNDARIES]
    for i, (_, _, view) in enumerate(BOUNDARIES):
        torch.testing.assert_close(out.cond.tokens[i], E(f"a red cube, {view} view"))
        torch.testing.assert_close(out.uncond.tokens[i], E(""))
    assert out.cond.tokens.shape == out.uncond.tokens.shape == (len(BOUNDARIES), 3, 4)
    assert len(out) == len(BOUNDARIES) and out.cond.pooled is None


def test_thresholds_come_from_camera_config():
    prior = TextStubPrior()
    cfg = CameraConfig(front_half_width_deg=30.0, back_half_width_deg=20.0, overhead_elevation_deg=30.0)
    pp = PromptProcessor(prior, "a blue cone", camera_cfg=cfg)
    out = pp(torch.tensor([29.0, 31.0, 165.0, 159.0, 0.0]), torch.tensor([0.0, 0.0, 0.0, 0.0, 31.0]))
    assert out.views == ["front", "side", "back", "side", "overhead"]
    torch.testing.assert_close(out.cond.tokens[1], E("a blue cone, side view"))


def test_negative_prompt_is_the_uncond_embedding():
    pp = PromptProcessor(TextStubPrior(), "a green torus", negative_prompt="a red torus")
    out = pp(torch.tensor([0.0, 200.0]), torch.tensor([0.0, 0.0]))
    torch.testing.assert_close(out.uncond.tokens, E("a red torus").expand(2, -1, -1))


def test_not_view_dependent_uses_base_prompt():
    prior = TextStubPrior()
    pp = PromptProcessor(prior, "a red cube", view_dependent=False)
    out = pp(torch.tensor([0.0, 90.0, 180.0]), torch.tensor([0.0, 0.0, 80.0]))
    torch.testing.assert_close(out.cond.tokens, E("a red cube").expand(3, -1, -1))
    assert out.view_embeddings is None
    assert sorted(prior.encode_calls[0]) == ["", "a red cube"]
    assert pp.texts_for(torch.tensor([90.0]), torch.tensor([0.0])) == ["a red cube"]


def test_view_embeddings_order():
    pp = PromptProcessor(TextStubPrior(), "a red cube")
    out = pp(torch.tensor([0.0]), torch.tensor([0.0]))
    for i, v in enumerate(["front", "side", "back", "overhead"]):
        torch.testing.assert_close(out.view_embeddings.tokens[i], E(f"a red cube, {v} view"))


@pytest.mark.parametrize("prompt", ["", "   "])
def test_empty_prompt_is_a_user_error(prompt):
    with pytest.raises(ValueError, match="prompt is empty"):
        PromptProcessor(TextStubPrior(), prompt)
    assert issubclass(PromptError, ValueError)


class PooledStubPrior(TextStubPrior):
    """A text side with every part of a Condition (SDXL-like): pooled (B, 2) and time ids (B, 6) per text."""

    @staticmethod
    def pooled(text: str) -> torch.Tensor:
        return torch.tensor([float(len(text)), float(zlib.crc32(text.encode()) % 97)])

    def encode_prompts(self, prompts):
        tokens = super().encode_prompts(prompts).tokens
        time_ids = torch.tensor([[32.0, 32.0, 0.0, 0.0, 32.0, float(len(p))] for p in prompts])
        return Condition(tokens, torch.stack([self.pooled(p) for p in prompts]), {"time_ids": time_ids})


def test_pooled_and_extras_follow_their_rows():
    pp = PromptProcessor(PooledStubPrior(), "a red cube", negative_prompt="blurry")
    out = pp(torch.tensor([0.0, 180.0, 90.0]), torch.tensor([0.0, 0.0, 0.0]))
    texts = ["a red cube, front view", "a red cube, back view", "a red cube, side view"]
    for i, text in enumerate(texts):
        torch.testing.assert_close(out.cond.pooled[i], PooledStubPrior.pooled(text))
        assert out.cond.extras["time_ids"][i, 5].item() == len(text)
        torch.testing.assert_close(out.uncond.pooled[i], PooledStubPrior.pooled("blurry"))
        assert out.uncond.extras["time_ids"][i, 5].item() == len("blurry")
    torch.testing.assert_close(out.view_embeddings.pooled[3], PooledStubPrior.pooled("a red cube, overhead view"))


def test_a_prior_that_returns_no_condition_is_named():
    class TensorPrior(TextStubPrior):
        def encode_prompts(self, prompts):
            return super().encode_prompts(prompts).tokens

    with pytest.raises(PromptError, match="returned Tensor for 6 texts; expected a Condition"):
        PromptProcessor(TensorPrior(), "a red cube", negative_prompt="blurry")
