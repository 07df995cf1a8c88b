"""sds3d.cuda_ext: our fused multi-resolution hash-encoding kernel (CPU C++ and CUDA).

The C++/CUDA sources ship next to this file and are compiled lazily, on first use, with
``torch.utils.cpp_extension.load`` into a folder named by a digest of the sources, torch and the
flags, under ``TORCH_EXTENSIONS_DIR`` (default ``~/.cache/torch_extensions``; see ``_build.py``);
importing this module never compiles. The pure-PyTorch reference twin of every kernel is
``sds3d.cuda_ext._torch_impl._<kernel name>``, beside it (gsplat's layout).

This package is a leaf: it imports only torch. Falling back to the twin when the build is
impossible is the caller's choice (``sds3d.fields.encoding`` does it, with one warning).
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from ._build import build_extension

__all__ = ["build", "load", "is_available", "build_error", "hash_grid_encode", "MAX_LEVELS"]

logger = logging.getLogger(__name__)

#: Most levels one call accepts (``kMaxLevels`` in hash_grid.h: the level table is a kernel argument).
MAX_LEVELS = 64

_SOURCE_DIR = Path(__file__).resolve().parent

_lock = threading.Lock()
_module: ModuleType | None = None
_error: str | None = None


def build(with_cuda: bool | None = None, verbose: bool = False) -> ModuleType:
    """Compiles (or loads from its build folder) the extension and returns it; raises on failure.

    The build folder is named by a digest of the sources, torch and the flags (``_build.py``), so
    checkouts and venvs never rebuild each other's kernel; a real compile prints one line first.

    Args:
        with_cuda: also compile the CUDA target (needs nvcc and a CUDA build of torch; no GPU
            is needed to compile). Default: ``torch.cuda.is_available()``.
        verbose: print the compiler commands.
    """
    if with_cuda is None:
        with_cuda = torch.cuda.is_available()
    return build_extension(_SOURCE_DIR, with_cuda, verbose)


def load() -> ModuleType | None:
    """The compiled extension, building it on the first call; None (and ``build_error()``) if it cannot build.

    Set ``SDS3D_DISABLE_CUDA_EXT=1`` to pretend the build failed (tests of the fallback path).
    """
    global _module, _error
    with _lock:
        if _module is not None or _error is not None:
            return _module
        if os.environ.get("SDS3D_DISABLE_CUDA_EXT", "") not in ("", "0"):
            _error = "disabled by SDS3D_DISABLE_CUDA_EXT"
            return None
        try:
            _module = build()
        except Exception as exc:  # noqa: BLE001 -- any compiler/ninja/link failure means "not available"
            _error = f"{type(exc).__name__}: {str(exc).strip().splitlines()[-1] if str(exc).strip() else ''}"
            logger.debug("sds3d.cuda_ext build failed", exc_info=True)
        return _module


def is_available() -> bool:
    """True when the extension builds (or is cached) on this machine. May compile on first call."""
    return load() is not None


def build_error() -> str | None:
    """Why the last ``load()`` failed, or None."""
    return _error


def _levels(values: Tensor | Sequence[int]) -> list[int]:
    return [int(v) for v in (values.tolist() if isinstance(values, Tensor) else values)]


class _HashGridEncode(torch.autograd.Function):
    """Fused forward; backward gives d/d embeddings always and d/dx when x requires grad."""

    @staticmethod
    def forward(ctx, x: Tensor, embeddings: Tensor, offsets: list[int], resolutions: list[int]) -> Tensor:
        module = _require()
        x = x.to(embeddings.dtype).contiguous()
        embeddings = embeddings.contiguous()
        ctx.save_for_backward(x, embeddings)
        ctx.offsets, ctx.resolutions = offsets, resolutions
        return module.hash_grid_encode_forward(x, embeddings, offsets, resolutions)

    @staticmethod
    @once_differentiable  # second derivatives (e.g. losses on autograd normals) are not implemented
    def backward(ctx, grad_out: Tensor):
        x, embeddings = ctx.saved_tensors
        grad_embeddings, grad_x = _require().hash_grid_encode_backward(
            grad_out.contiguous(), x, embeddings, ctx.offsets, ctx.resolutions, ctx.needs_input_grad[0]
        )
        return grad_x, grad_embeddings, None, None


def _require() -> ModuleType:
    module = load()
    if module is None:
        raise RuntimeError(f"sds3d.cuda_ext is not available: {_error}")
    return module


def hash_grid_encode(
    x: Tensor, embeddings: Tensor, offsets: Tensor | Sequence[int], resolutions: Tensor | Sequence[int]
) -> Tensor:
    """Multi-resolution hash encoding, fused (twin: ``sds3d.cuda_ext._torch_impl._hash_grid_encode``).

    Args:
        x: positions, clamped to [0, 1] (zero gradient where clamped). Shape: (N, 3).
        embeddings: feature tables of all levels, float32 or float64. Shape: (offsets[-1], F).
        offsets: first table row of each level, plus the total. Shape: (L + 1,). Pass Python ints
            to avoid a device sync on CUDA.
        resolutions: cells per axis of each level. Shape: (L,).

    Returns:
        Features of all levels, level-major. Shape: (N, L * F).

    Raises:
        RuntimeError: the extension could not be built (see ``build_error()``).
    """
    return _HashGridEncode.apply(x, embeddings, _levels(offsets), _levels(resolutions))
