"""Shared fixtures: a tiny random-weight pixel prior in the toy prior's diffusers layout, and a fringed-sphere stub field."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

TEXT_LEN = 16


def build_tiny_pixel_prior(folder: Path, seed: int = 0) -> Path:
    """ToyUNet + CLIP text model with random weights, saved like the shipped toy prior."""
    from diffusers import DDPMScheduler
    from transformers import CLIPTextConfig, CLIPTextModel

    from sds3d.priors.toy_unet import ToyUNet
    from sds3d.toyworld.train_prior import build_tokenizer

    torch.manual_seed(seed)
    tokenizer = build_tokenizer(TEXT_LEN, folder.parent / f"{folder.name}-tokenizer-src")
    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=tokenizer.vocab_size, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
        max_position_embeddings=TEXT_LEN, bos_token_id=49406, eos_token_id=49407, pad_token_id=49407))
    unet = ToyUNet(sample_size=32, block_out_channels=(8, 16, 16), cross_attention_dim=16, attention_heads=2, norm_num_groups=4)
    scheduler = DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear", beta_start=1e-4, beta_end=0.02, clip_sample=False)
    unet.save_pretrained(folder / "unet")
    text_encoder.save_pretrained(folder / "text_encoder")
    tokenizer.save_pretrained(folder / "tokenizer")
    scheduler.save_pretrained(folder / "scheduler")
    (folder / "model_index.json").write_text(json.dumps({
        "_class_name": "SDS3DToyPipeline", "unet": ["sds3d.priors.toy_unet", "ToyUNet"],
        "text_encoder": ["transformers", "CLIPTextModel"], "tokenizer": ["transformers", "CLIPTokenizer"],
        "scheduler": ["diffusers", "DDPMScheduler"]}))
    return folder


@pytest.fixture(scope="session")
def tiny_pixel_prior(tmp_path_factory) -> Path:
    return build_tiny_pixel_prior(tmp_path_factory.mktemp("priors") / "tiny-pixel")


class FringedSphere:
    """Stub field: density 2 in a fringe 0.45 < r < 0.5 (albedo blue), 100 inside r < 0.45 (albedo red).

    A render shows the core (red, with ~0.095 of fringe blue); the albedo at a 10%-opacity surface is blue.
    """

    bound = 1.0

    def density(self, x):
        r = x.norm(dim=-1)
        return torch.where(r < 0.45, 100.0, torch.where(r < 0.5, 2.0, 0.0))

    def albedo(self, x):
        inner = (x.norm(dim=-1) < 0.45).float()[:, None]
        return inner * torch.tensor([1.0, 0.0, 0.0]) + (1.0 - inner) * torch.tensor([0.0, 0.0, 1.0])


@pytest.fixture
def fringed_sphere() -> FringedSphere:
    return FringedSphere()


# Tiny random-weight pipelines of the modern families (tests/tiny_pipelines.py), built once per session.
@pytest.fixture(scope="session")
def tiny_sd_v_prediction(tmp_path_factory) -> Path:
    from test_sd_prior import build_tiny_sd

    return build_tiny_sd(tmp_path_factory.mktemp("tiny-sd2v") / "pipeline", prediction_type="v_prediction")


@pytest.fixture(scope="session")
def tiny_sdxl(tmp_path_factory) -> Path:
    from tiny_pipelines import build_tiny_sdxl

    return build_tiny_sdxl(tmp_path_factory.mktemp("tiny-sdxl") / "pipeline")


@pytest.fixture(scope="session")
def tiny_sd3(tmp_path_factory) -> Path:
    from tiny_pipelines import build_tiny_sd3

    return build_tiny_sd3(tmp_path_factory.mktemp("tiny-sd3") / "pipeline")


@pytest.fixture(scope="session")
def tiny_flux(tmp_path_factory) -> Path:
    from tiny_pipelines import build_tiny_flux

    return build_tiny_flux(tmp_path_factory.mktemp("tiny-flux") / "pipeline")


@pytest.fixture(scope="session")
def tiny_toy_flow(tmp_path_factory) -> Path:
    from tiny_pipelines import build_tiny_toy_flow

    return build_tiny_toy_flow(tmp_path_factory.mktemp("tiny-toy-flow") / "pipeline")
