"""Grading a v2 prior: DDIM samples of its prompts, judged by the independent v2 judge (``judge``).

A prior recognises a prompt's sample when the judge names the prompt's scene (``judge.matches``:
view ignored, 'next to' in either wording). With ``cameras`` each sample is drawn as the training
data show the prompt: a camera from the prompt's training distribution (v1: uniform azimuth;
faced objects and compositions: the front-biased mixture) and the caption the data would give
it (v1: always the view suffix; v2: the sparse suffix), the camera passed to a camera-conditioned
prior; without, every sample has the bare prompt and no camera.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ...cameras import make_cameras, sample_cameras, view_labels
from ...priors.sampling import sample_images
from .. import world
from .dataset import sample_front_biased, sparse_captions
from .judge import judge, matches
from .prompts import make_prompt, parse_prompt


@dataclass
class Grades:
    """Samples of a list of prompts and their verdicts, prompt-major (n per prompt).

    Attributes:
        prompts: the base prompts; texts: the caption of every sample.
        images: the samples in [0, 1]. Shape: (len(prompts) * n, 3, 32, 32).
        verdicts: the judge's scene of every sample, as a prompt.
        matched: whether every sample shows its prompt's scene.
    """

    prompts: list[str]
    texts: list[str]
    images: Tensor
    verdicts: list[str]
    matched: list[bool]

    def rate(self, prompt: str | None = None) -> float:
        """Fraction of samples recognised (of one prompt, or of all)."""
        n = len(self.matched) // len(self.prompts)
        if prompt is None:
            return sum(self.matched) / len(self.matched)
        i = self.prompts.index(prompt)
        return sum(self.matched[i * n:(i + 1) * n]) / n

    def rate_by_kind(self) -> dict[str, float]:
        """Recognition rate per prompt kind (v1, faced, composition) present."""
        out: dict[str, list[float]] = {}
        for p in self.prompts:
            out.setdefault(parse_prompt(p).kind, []).append(self.rate(p))
        return {k: sum(v) / len(v) for k, v in out.items()}


def sampling_conditions(prompt: str, n: int, generator: torch.Generator, cameras: bool) -> tuple[list[str], Tensor | None]:
    """Captions and (elevation, azimuth) in degrees (n, 2) of n samples of a base prompt (module docstring)."""
    if not cameras:
        return [prompt] * n, None
    if parse_prompt(prompt).kind == "v1":
        cams = sample_cameras(world.camera_config(), n, generator=generator)
        azimuth, elevation = cams.azimuth_deg, cams.elevation_deg
        texts = [f"{prompt}, {v} view" for v in view_labels(azimuth, elevation)]
    else:
        azimuth, elevation = sample_front_biased(n, generator)
        texts = sparse_captions(prompt, azimuth, elevation, generator)
    return texts, torch.stack([elevation, azimuth], dim=-1)


def grade(prior, prompts: list[str], guidance_scale: float, n: int = 8, steps: int = 50, seed: int = 0,
          cameras: bool = True, batch: int = 64) -> Grades:
    """n DDIM samples of every prompt (batches of ``batch`` samples), judged.

    Args:
        prior: a toy prior (32x32 pixels); its ``camera_conditioned`` decides whether the cameras reach it.
        prompts: base prompts (no view suffix).
        cameras: sample as the training data show each prompt (module docstring).
    """
    g = torch.Generator().manual_seed(seed)
    texts, angles = [], []
    for prompt in prompts:
        t, a = sampling_conditions(prompt, n, g, cameras)
        texts += t
        angles.append(a)
    angles = torch.cat(angles) if cameras else None
    images = []
    for i in range(0, len(texts), batch):
        cams = None
        if angles is not None and prior.camera_conditioned:
            a = angles[i:i + batch]
            cams = make_cameras(a[:, 1], a[:, 0], world.CAMERA_DISTANCE, world.FOV_Y_DEG)
        images.append(sample_images(prior, texts[i:i + batch], guidance_scale=guidance_scale, num_inference_steps=steps,
                                    generator=g, cameras=cams))
    images = torch.cat(images)
    verdicts = judge(images)
    return Grades(list(prompts), texts, images, [make_prompt(v) for v in verdicts], matches(verdicts, texts))
