"""Perp-Neg (Armandpour et al. 2023): negative guidance from the other views' prompts.

Written after threestudio's implementation (prompt_processors/base.py
``get_text_embeddings_perp_neg`` and the guidance's ``perpendicular_component``): the positive
prompt interpolates between view prompts by azimuth, and each view's two negative prompts push
eps_hat away only along the component of their direction perpendicular to the positive one:

    eps_hat = eps_u + s (e_pos + sum_k w_k perp(e_k, e_pos)),   e_pos = eps_c - eps_u,
    e_k = eps_neg_k - eps_u,   perp(x, y) = x - <x, y> / max(<y, y>, 1e-6) y   (per sample).
"""

from __future__ import annotations

import torch
from torch import Tensor

from sds3d.priors.condition import Condition

from .prompts import VIEWS, PromptEmbeddings, PromptError

_FRONT, _SIDE, _BACK, _OVERHEAD = (VIEWS.index(v) for v in ("front", "side", "back", "overhead"))


def shifted_exponential_decay(a: float, b: float, c: float, r: Tensor) -> Tensor:
    """a * exp(-b r) + c, the negative-weight curve of threestudio's Perp-Neg."""
    return a * torch.exp(-b * r) + c


def perpendicular_component(x: Tensor, y: Tensor) -> Tensor:
    """Component of each sample of ``x`` perpendicular to the same sample of ``y``.

    Args:
        x, y: Shape: (B, ...). Inner products are over all dimensions but the first.
    """
    dims = tuple(range(1, x.ndim))
    xy = (x * y).sum(dim=dims, keepdim=True)
    yy = (y * y).sum(dim=dims, keepdim=True).clamp_min(1e-6)
    return x - xy / yy * y


def perp_neg_embeddings(
    emb: PromptEmbeddings,
    f_fs: tuple[float, float, float],
    f_sf: tuple[float, float, float],
    f_sb: tuple[float, float, float],
    f_fsb: tuple[float, float, float],
) -> tuple[Condition, Condition, Tensor]:
    """Positive, negative conditions and negative weights per view (threestudio's scheme).

    With a = |azimuth| in [0, 180] (azimuth shifted to (-180, 180]):
    overhead views: positive = overhead prompt, no negatives (weights 0);
    a < 90: r = 1 - a / 90, positive = r front + (1 - r) side, negatives (front, side) with
    weights (-f_fs(r), -f_sf(1 - r)); a >= 90: r = 2 - a / 90, positive = r side + (1 - r) back,
    negatives (side, front) with weights (-f_sb(r), -f_fsb(r)); f(r) = a exp(-b r) + c.
    Every part of the condition (tokens, pooled, extras) is mixed and selected alike.

    Returns:
        positive (B rows), negatives (2 B rows, sample-major: rows 2b, 2b + 1 are sample b's),
        negative weights (B, 2).
    """
    if emb.view_embeddings is None:
        raise PromptError("Perp-Neg needs view-dependent prompts; set guidance.view_dependent_prompts=true")
    V = emb.view_embeddings  # 4 rows, VIEWS order
    device = V.tokens.device
    a = ((emb.azimuth_deg.to(device, torch.float32) + 180.0) % 360.0 - 180.0).abs()  # (B,)
    overhead = torch.tensor([v == "overhead" for v in emb.views], device=device)
    front_side = a < 90.0
    r = torch.where(front_side, 1.0 - a / 90.0, 2.0 - a / 90.0)  # (B,)

    def per_sample(mask: Tensor, v: Tensor) -> Tensor:  # (B,) -> (B, 1, ..., 1) against rows of v
        return mask.view(-1, *([1] * (v.ndim - 1)))

    def positive(v: Tensor) -> Tensor:  # v: the 4 view rows of one part, (4, ...)
        rr = per_sample(r.to(v.dtype), v)
        fs = per_sample(front_side, v)
        mixed = torch.where(fs, rr * v[_FRONT] + (1.0 - rr) * v[_SIDE], rr * v[_SIDE] + (1.0 - rr) * v[_BACK])
        return torch.where(per_sample(overhead, v), v[_OVERHEAD].expand_as(mixed), mixed)

    def negatives(v: Tensor) -> Tensor:
        fs = per_sample(front_side, v)
        neg0 = torch.where(fs, v[_FRONT], v[_SIDE])  # (B, ...)
        neg1 = torch.where(fs, v[_SIDE], v[_FRONT])
        return torch.stack([neg0, neg1], dim=1).flatten(0, 1)

    w0 = torch.where(front_side, -shifted_exponential_decay(*f_fs, r), -shifted_exponential_decay(*f_sb, r))
    w1 = torch.where(front_side, -shifted_exponential_decay(*f_sf, 1.0 - r), -shifted_exponential_decay(*f_fsb, r))
    weights = torch.stack([w0, w1], dim=1) * (~overhead).to(r.dtype)[:, None]  # (B, 2)
    return V.map(positive), V.map(negatives), weights


def perp_neg_guidance(eps_u: Tensor, eps_c: Tensor, eps_neg: Tensor, neg_weights: Tensor, scale: float) -> Tensor:
    """eps_hat with Perp-Neg negatives (module docstring formula).

    Args:
        eps_u: unconditional (negative-prompt) prediction. Shape: (B, C, h, w).
        eps_c: positive-prompt prediction. Shape: (B, C, h, w).
        eps_neg: the K negative-prompt predictions per sample. Shape: (B, K, C, h, w).
        neg_weights: w_k (negative numbers push away). Shape: (B, K).
        scale: guidance scale s.

    Returns:
        eps_hat. Shape: (B, C, h, w).
    """
    e_pos = eps_c - eps_u
    accum = torch.zeros_like(e_pos)
    for k in range(eps_neg.shape[1]):
        e_k = eps_neg[:, k] - eps_u
        w_k = neg_weights[:, k].to(e_pos.dtype).view(-1, *([1] * (e_pos.ndim - 1)))
        accum = accum + w_k * perpendicular_component(e_k, e_pos)
    return eps_u + scale * (e_pos + accum)
