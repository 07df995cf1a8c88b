"""One prior call for the estimators of several runs (``sds3d sweep --batch-runs``).

An estimator that supports it splits its step in two: ``prepare(rgb, prompts, step, cameras,
generator) -> PriorRequest`` (everything up to the prior's inputs, drawing its randomness as
``forward`` does) and ``finish(request, output) -> losses`` (everything after). ``forward`` is
``finish(prepare(...), prior.predict(*request))``, so a run computes the same thing either way.
``predict_together`` evaluates the requests of K runs that share one prior as a single batched
``Prior.predict`` and hands each run its rows back.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from sds3d.cameras import Cameras
from sds3d.priors.base import Prior
from sds3d.priors.condition import Condition


@dataclass
class PriorRequest:
    """The inputs of one estimator's prior evaluation, and what its ``finish`` needs afterwards.

    Attributes:
        x_t, t, cond, cameras: the arguments of ``Prior.predict`` (N rows; cameras None for a
            prior that is not camera conditioned).
        context: the estimator's own values between prepare and finish (the render in the
            prior's space, the noise, the timesteps, ...).
    """

    x_t: Tensor
    t: Tensor
    cond: Condition
    cameras: Cameras | None
    context: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return self.x_t.shape[0]


def supports_batching(guidance) -> bool:
    """Whether the estimator splits its step into ``prepare`` and ``finish``."""
    return callable(getattr(guidance, "prepare", None)) and callable(getattr(guidance, "finish", None))


def _cat_cameras(cameras: list[Cameras]) -> Cameras:
    fields = ("c2w", "fov_y_deg", "azimuth_deg", "elevation_deg", "distance")
    return Cameras(*(torch.cat([getattr(c, f) for c in cameras]) for f in fields))


@torch.no_grad()
def predict_together(prior: Prior, requests: list[PriorRequest]) -> list[Tensor]:
    """``prior.predict`` of all requests in one call (rows concatenated in order), split back per request.

    A single request is passed through unchanged (the call a solo run makes).
    """
    if len(requests) == 1:
        r = requests[0]
        return [prior.predict(r.x_t, r.t, r.cond, r.cameras)]
    with_cameras = [r.cameras is not None for r in requests]
    if any(with_cameras) and not all(with_cameras):
        raise ValueError("predict_together: some requests carry cameras and some do not; they must share one prior")
    out = prior.predict(torch.cat([r.x_t for r in requests]), torch.cat([r.t for r in requests]),
                        Condition.cat([r.cond for r in requests]),
                        _cat_cameras([r.cameras for r in requests]) if all(with_cameras) else None)
    return list(out.split([len(r) for r in requests]))
