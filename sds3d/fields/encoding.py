"""Multi-resolution hash-grid encoding (Instant-NGP) behind one module with several backends.

Backends: ``torch`` (pure PyTorch, ``sds3d.cuda_ext._torch_impl._hash_grid_encode``, runs everywhere),
``cuda_ext`` (our fused C++/CUDA kernel, ``sds3d.cuda_ext``), ``tcnn`` (tiny-cuda-nn on CUDA).
``auto`` picks tcnn if importable and on CUDA, else cuda_ext if it builds, else torch; the choice
is logged once per device type (``select_backend`` gives it with the reason, for ``sds3d doctor``).
A requested ``cuda_ext`` that cannot build falls back to torch with one warning.

cuda_ext's backward is once-differentiable, so when ``x`` requires grad (autograd normals, whose
losses need second derivatives) the module uses the torch twin for that call.
"""

from __future__ import annotations

import importlib.util
import logging
import math
import warnings
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from sds3d.cuda_ext._torch_impl import _hash_grid_encode

from ..errors import UserError

logger = logging.getLogger(__name__)

BACKENDS = ("auto", "torch", "cuda_ext", "tcnn")


class EncodingConfigError(UserError):
    """An encoding setting the user can fix (the message says how)."""


# (requested, device type) -> (backend, reason): decided once per process, logged once.
_chosen: dict[tuple[str, str], tuple[str, str]] = {}
_warned_cuda_ext = False


def _tcnn_importable() -> bool:
    return importlib.util.find_spec("tinycudann") is not None


def select_backend(requested: str = "auto", device: torch.device | str = "cpu") -> tuple[str, str]:
    """Which hash-grid backend runs on ``device`` for the configured ``requested`` one, and why.

    May compile ``sds3d.cuda_ext`` on first call (cached afterwards). Returns (backend, reason).

    Raises:
        EncodingConfigError: unknown backend, or ``tcnn`` requested where it cannot run.
    """
    if requested not in BACKENDS:
        raise EncodingConfigError(f"encoding.backend={requested!r} is unknown; use one of {', '.join(BACKENDS)}")
    device_type = torch.device(device).type
    key = (requested, device_type)
    if key in _chosen:
        return _chosen[key]
    if requested == "torch":
        choice = ("torch", "requested")
    elif requested == "tcnn":
        if device_type != "cuda" or not _tcnn_importable():
            raise EncodingConfigError(
                "encoding.backend=tcnn needs tinycudann installed and a CUDA device; use encoding.backend=auto"
            )
        choice = ("tcnn", "requested")
    else:
        choice = _select_auto_or_cuda_ext(requested, device_type)
    _chosen[key] = choice
    logger.info("hash-grid encoding backend on %s: %s (%s)", device_type, *choice)
    return choice


def _select_auto_or_cuda_ext(requested: str, device_type: str) -> tuple[str, str]:
    global _warned_cuda_ext
    if requested == "auto" and device_type == "cuda" and _tcnn_importable():
        return ("tcnn", "auto: tinycudann importable and on CUDA")
    from sds3d import cuda_ext

    module = cuda_ext.load()
    if module is not None and (device_type != "cuda" or module.with_cuda()):
        return ("cuda_ext", f"{requested}: sds3d.cuda_ext built")
    why = cuda_ext.build_error() or "built without its CUDA target"
    if requested == "cuda_ext" and not _warned_cuda_ext:
        _warned_cuda_ext = True
        warnings.warn(f"sds3d.cuda_ext is not available ({why}); using the torch hash-grid encoding", stacklevel=3)
    return ("torch", f"{requested}: sds3d.cuda_ext not available ({why})")


@dataclass
class HashGridConfig:
    n_levels: int = 16
    n_features_per_level: int = 2
    log2_hashmap_size: int = 19
    base_resolution: int = 16
    max_resolution: int = 2048
    backend: str = "auto"  # auto | torch | cuda_ext | tcnn


def check_encoding_config(cfg: HashGridConfig, prefix: str = "field.encoding") -> None:
    """Raise EncodingConfigError naming the first invalid size in ``cfg`` (the backend is checked by ``select_backend``)."""
    for key in ("n_levels", "n_features_per_level", "log2_hashmap_size", "base_resolution"):
        if getattr(cfg, key) < 1:
            raise EncodingConfigError(f"{prefix}.{key}={getattr(cfg, key)} must be at least 1")
    if cfg.max_resolution < cfg.base_resolution:
        raise EncodingConfigError(
            f"{prefix}.max_resolution={cfg.max_resolution} is below {prefix}.base_resolution={cfg.base_resolution}; "
            "the finest level must not be coarser than the first (e.g. 16 and 2048)"
        )


def level_resolutions(cfg: HashGridConfig) -> list[int]:
    """Cells per axis of each level: base * b^l with b = exp((ln max - ln base) / (L - 1)) (Eq. 3)."""
    if cfg.n_levels == 1:
        return [cfg.base_resolution]
    b = math.exp((math.log(cfg.max_resolution) - math.log(cfg.base_resolution)) / (cfg.n_levels - 1))
    return [int(math.floor(cfg.base_resolution * b**level)) for level in range(cfg.n_levels)]


class HashGridEncoding(nn.Module):
    """Encodes positions in [0, 1]^3 into (N, n_levels * n_features_per_level) features."""

    def __init__(self, cfg: HashGridConfig):
        super().__init__()
        self.cfg = cfg
        table = 2**cfg.log2_hashmap_size
        resolutions = level_resolutions(cfg)
        sizes = [min(table, ((r + 1) ** 3 + 7) // 8 * 8) for r in resolutions]
        offsets = [0]
        for s in sizes:
            offsets.append(offsets[-1] + s)
        self.register_buffer("resolutions", torch.tensor(resolutions, dtype=torch.long), persistent=False)
        self.register_buffer("offsets", torch.tensor(offsets, dtype=torch.long), persistent=False)
        # Instant-NGP initialises the tables uniformly in [-1e-4, 1e-4].
        self.embeddings = nn.Parameter(torch.empty(offsets[-1], cfg.n_features_per_level).uniform_(-1e-4, 1e-4))
        if cfg.backend not in BACKENDS:
            raise EncodingConfigError(f"encoding.backend={cfg.backend!r} is unknown; use one of {', '.join(BACKENDS)}")
        # Python copies of the level table: the kernels take them without a device sync.
        self._offsets_list, self._resolutions_list = offsets, resolutions
        self._tcnn: nn.Module | None = None
        if cfg.backend in ("auto", "tcnn") and torch.cuda.is_available() and _tcnn_importable():
            self._tcnn = self._make_tcnn()

    @property
    def n_output_dims(self) -> int:
        return self.cfg.n_levels * self.cfg.n_features_per_level

    @property
    def backend(self) -> str:
        """The backend that runs on the parameters' current device (may build cuda_ext once)."""
        return select_backend(self.cfg.backend, self.embeddings.device)[0]

    def forward(self, x: Tensor) -> Tensor:
        """x: (N, 3) in [0, 1] -> (N, n_output_dims)."""
        backend = self.backend
        if backend == "cuda_ext" and self._cuda_ext_can_run(x):
            from sds3d import cuda_ext

            return cuda_ext.hash_grid_encode(x, self.embeddings, self._offsets_list, self._resolutions_list)
        if backend == "tcnn":
            return self._tcnn_forward(x)
        return _hash_grid_encode(x, self.embeddings, self.offsets, self.resolutions)

    def _cuda_ext_can_run(self, x: Tensor) -> bool:
        # Second derivatives (x requires grad), fp16 tables and > 64 levels go to the twin.
        return (
            not (x.requires_grad and torch.is_grad_enabled())
            and self.embeddings.dtype in (torch.float32, torch.float64)
            and self.cfg.n_levels <= 64
        )

    def _tcnn_forward(self, x: Tensor) -> Tensor:
        if self._tcnn is None:
            raise EncodingConfigError("tcnn was not available when the encoding was built; use encoding.backend=auto")
        return self._tcnn(x).to(x.dtype)

    def _make_tcnn(self) -> nn.Module:
        # Created at construction so its parameters exist before the optimizer is built. tcnn keeps
        # its own (often fp16) tables and aligns vertices at +0.5, so it is not bit-identical to the
        # twin; untested here (no GPU).
        import tinycudann as tcnn

        cfg = self.cfg
        scale = math.exp((math.log(cfg.max_resolution) - math.log(cfg.base_resolution)) / max(cfg.n_levels - 1, 1))
        config = {
            "otype": "HashGrid",
            "n_levels": cfg.n_levels,
            "n_features_per_level": cfg.n_features_per_level,
            "log2_hashmap_size": cfg.log2_hashmap_size,
            "base_resolution": cfg.base_resolution,
            "per_level_scale": scale,
        }
        return tcnn.Encoding(3, config)
