"""The toy prior's training data: toy-world renders of every (shape, colour) with their captions and cameras."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
from torch import Tensor

from ..cameras import Cameras, sample_cameras, view_labels

from . import world
from .prompts import make_prompt
from .render import render


@dataclass
class ToyDataset:
    """N renders from the toy camera distribution (DESIGN.md "The toy prior").

    Attributes:
        images: renders in [-1, 1] (the prior's pixel space). Shape: (N, 3, 32, 32).
        prompts: full captions, "a {colour} {shape}, {view} view".
        base_prompts: the same without the view suffix (for view-suffix dropout).
        cameras: each render's camera (N cameras).
    """

    images: Tensor
    prompts: list[str]
    base_prompts: list[str]
    cameras: Cameras

    def __len__(self) -> int:
        return self.images.shape[0]


def _cat_cameras(parts: list[Cameras]) -> Cameras:
    return Cameras(**{f.name: torch.cat([getattr(c, f.name) for c in parts]) for f in dataclasses.fields(Cameras)})


def build_dataset(images_per_pair: int, seed: int) -> ToyDataset:
    """``images_per_pair`` renders of each (shape, colour), shapes then colours in ``world`` order."""
    g = torch.Generator().manual_seed(seed)
    cam_cfg = world.camera_config()
    images, prompts, base, cameras = [], [], [], []
    for shape in world.SHAPES:
        for colour in world.COLOURS:
            cams = sample_cameras(cam_cfg, images_per_pair, generator=g)
            rgb, _ = render(shape, world.colour_rgb(colour), cams)
            images.append(rgb * 2.0 - 1.0)
            cameras.append(cams)
            for view in view_labels(cams.azimuth_deg, cams.elevation_deg):
                prompts.append(make_prompt(colour, shape, view))
                base.append(make_prompt(colour, shape))
    return ToyDataset(torch.cat(images), prompts, base, _cat_cameras(cameras))
