"""A camera-conditioned toy UNet's weights as a camera-free UNet with the same null-camera function.

The camera-conditioned ToyUNet adds ``camera_embedding(features)`` to the timestep embedding, and
the null camera's features are zeros (``toy_unet.camera_features``), so with the null camera it adds
the constant c = camera_embedding(0). Adding c to the bias of ``time_embedding.linear_2`` (whose
output the camera term is summed with) and dropping the camera embedding gives a camera-free
UNet computing exactly that null-camera function: the start of a text-only prior fine-tuned from
a camera-conditioned one (the shipped toy prior was trained with 10% null cameras, so its
null-camera function is a trained text-only model).
"""

from __future__ import annotations

import torch
from diffusers.models.embeddings import TimestepEmbedding
from torch import Tensor

from ..priors.toy_unet import CAMERA_FEATURES

PREFIX = "camera_embedding."


def drop_camera_embedding(state: dict[str, Tensor]) -> dict[str, Tensor]:
    """A ToyUNet state dict without ``camera_embedding.*``, its null-camera output folded into
    ``time_embedding.linear_2.bias`` (float32). A camera-free state dict is returned unchanged."""
    camera = {k[len(PREFIX):]: v.float() for k, v in state.items() if k.startswith(PREFIX)}
    if not camera:
        return state
    out = {k: v for k, v in state.items() if not k.startswith(PREFIX)}
    embedding = TimestepEmbedding(CAMERA_FEATURES, camera["linear_2.weight"].shape[0])
    embedding.load_state_dict(camera)
    with torch.no_grad():
        null = embedding(torch.zeros(1, CAMERA_FEATURES))[0]
    key = "time_embedding.linear_2.bias"
    out[key] = out[key].float() + null
    return out
