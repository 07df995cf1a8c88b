"""Chunked, gradient-free queries of a field on numpy points (export, colours, evaluation)."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor


def field_device(field) -> torch.device:
    """The device of a module's parameters (CPU for parameter-free stubs)."""
    if isinstance(field, torch.nn.Module):
        p = next(field.parameters(), None)
        if p is not None:
            return p.device
    return torch.device("cpu")


@torch.no_grad()
def query_field(fn, points: np.ndarray | Tensor, device: torch.device, chunk_size: int = 65536) -> np.ndarray:
    """Evaluate a field function on points in chunks without gradients.

    Args:
        fn: ``field.density`` or ``field.albedo``.
        points: world points. Shape: (N, 3).

    Returns:
        float32 array of shape (N,) or (N, C).
    """
    pts = torch.as_tensor(np.asarray(points), dtype=torch.float32)
    out = [fn(pts[i : i + chunk_size].to(device)).float().cpu() for i in range(0, len(pts), chunk_size)]
    return torch.cat(out).numpy() if out else np.zeros((0,), np.float32)
