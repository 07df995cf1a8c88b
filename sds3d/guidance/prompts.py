"""Prompt processing: encode every distinct text once, then pick per-view embeddings.

View-dependent prompts follow DreamFusion App. A.2 and the toy world's grammar
``"<prompt>, <view> view"``; the view of a camera comes from ``sds3d.cameras.view_labels`` with
the thresholds of ``CameraConfig``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from sds3d.cameras import CameraConfig, view_labels
from sds3d.errors import UserError
from sds3d.priors.base import Prior
from sds3d.priors.condition import Condition

#: View names in the order of ``PromptEmbeddings.view_embeddings``.
VIEWS: tuple[str, ...] = ("front", "side", "back", "overhead")


class PromptError(UserError):
    """The prompt cannot be used (the message says how to fix it)."""


def view_prompt(prompt: str, view: str) -> str:
    """The view-dependent text of ``prompt`` (DreamFusion App. A.2): ``"<prompt>, <view> view"``."""
    return f"{prompt}, {view} view"


@dataclass
class PromptEmbeddings:
    """Text conditions for a batch of B views.

    Attributes:
        cond: the condition of each view's prompt (B rows).
        uncond: the negative prompt's condition ("" = unconditional), B rows.
        azimuth_deg: camera azimuths in [0, 360). Shape: (B,).
        elevation_deg: camera elevations. Shape: (B,).
        views: the view label of each camera (front/side/back/overhead).
        view_embeddings: the four view prompts' conditions in ``VIEWS`` order (4 rows), None when
            prompts are not view dependent (Perp-Neg needs them).
    """

    cond: Condition
    uncond: Condition
    azimuth_deg: Tensor
    elevation_deg: Tensor
    views: list[str]
    view_embeddings: Condition | None = None

    def __len__(self) -> int:
        return len(self.cond)


class PromptProcessor:
    """Encodes a prompt, its view variants and the negative prompt once; serves them per camera.

    All distinct texts go through ONE ``prior.encode_prompts`` call at construction; calls after
    that only index the cached condition.

    Args:
        prior: the diffusion prior whose text encoder is used.
        prompt: the text prompt, e.g. "a red cube".
        negative_prompt: used as the unconditional embedding of classifier-free guidance
            ("" = the plain unconditional embedding).
        view_dependent: append ", <view> view" per camera (DreamFusion App. A.2).
        camera_cfg: view thresholds (front/back half widths, overhead elevation); default
            ``CameraConfig()``.
    """

    def __init__(
        self,
        prior: Prior,
        prompt: str,
        negative_prompt: str = "",
        view_dependent: bool = True,
        camera_cfg: CameraConfig | None = None,
    ):
        if not isinstance(prompt, str) or not prompt.strip():
            raise PromptError('the prompt is empty; pass a text such as prompt="a red cube"')
        if not isinstance(negative_prompt, str):
            raise PromptError('negative_prompt must be a string ("" for none)')
        self.prompt = prompt.strip()
        self.negative_prompt = negative_prompt
        self.view_dependent = view_dependent
        self.camera_cfg = camera_cfg if camera_cfg is not None else CameraConfig()

        texts = [self.prompt, self.negative_prompt]
        if view_dependent:
            texts += [view_prompt(self.prompt, v) for v in VIEWS]
        self.texts: list[str] = list(dict.fromkeys(texts))  # distinct, in first-seen order
        with torch.no_grad():
            encoded = prior.encode_prompts(self.texts)
        if not isinstance(encoded, Condition) or len(encoded) != len(self.texts):
            raise PromptError(f"prior.encode_prompts returned {type(encoded).__name__} for {len(self.texts)} texts; expected a Condition with one row per text")
        self._index = {text: i for i, text in enumerate(self.texts)}
        self.embeddings: Condition = encoded  # one row per text
        self.view_embeddings: Condition | None = (
            encoded[[self._index[view_prompt(self.prompt, v)] for v in VIEWS]] if view_dependent else None
        )

    def embedding(self, text: str) -> Condition:
        """The cached condition of one of ``self.texts`` (one row)."""
        return self.embeddings[self._index[text]]

    def views(self, azimuth_deg: Tensor, elevation_deg: Tensor) -> list[str]:
        """View label per camera, with this processor's ``CameraConfig`` thresholds."""
        c = self.camera_cfg
        return view_labels(azimuth_deg, elevation_deg, c.front_half_width_deg, c.back_half_width_deg, c.overhead_elevation_deg)

    def texts_for(self, azimuth_deg: Tensor, elevation_deg: Tensor) -> list[str]:
        """The conditional prompt text used for each camera (for logging)."""
        return self._texts(self.views(azimuth_deg, elevation_deg))

    def _texts(self, views: list[str]) -> list[str]:
        return [view_prompt(self.prompt, v) for v in views] if self.view_dependent else [self.prompt] * len(views)

    def __call__(self, azimuth_deg: Tensor, elevation_deg: Tensor) -> PromptEmbeddings:
        """Per-view conditional and negative/unconditional conditions.

        Args:
            azimuth_deg: camera azimuths. Shape: (B,).
            elevation_deg: camera elevations. Shape: (B,).
        """
        azimuth_deg = torch.as_tensor(azimuth_deg, dtype=torch.float32).reshape(-1)
        elevation_deg = torch.as_tensor(elevation_deg, dtype=torch.float32).reshape(-1)
        B = azimuth_deg.shape[0]
        views = self.views(azimuth_deg, elevation_deg)  # labelled once per step
        rows = [self._index[t] for t in self._texts(views)]
        cond = self.embeddings[rows]
        uncond = self.embedding(self.negative_prompt).expand(B)
        return PromptEmbeddings(cond, uncond, azimuth_deg % 360.0, elevation_deg, views, self.view_embeddings)
