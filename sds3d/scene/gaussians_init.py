"""Initial 3D Gaussians: a random ball of points (DreamGaussian), or a user's point cloud or mesh.

What the field does:

- DreamGaussian (Tang et al. 2024; ``gs_renderer.Renderer.initialize``, ``configs/text.yaml``):
  5000 points uniform in the ball of radius 0.5 (radius R u^(1/3), uniform directions), colour
  ``SH2RGB(U[0,1) / 255)``, i.e. grey 0.5 to within 1e-3, opacity 0.1, isotropic scales from the
  point spacing, identity rotations; cameras on an orbit of radius 2.5.
- GaussianDreamer (Yi et al. 2024; ``threestudio/systems/GaussianDreamer.py``) starts from a
  3D prior instead: Shap-E's point cloud, or 50k samples of a mesh's surface, plus "noisy point
  growing" around them. For a prompt alone that is not available, so the random start follows
  DreamGaussian; GaussianDreamer's mesh route is ``load_points`` (surface samples).
- Scales (3DGS, Kerbl et al. 2023, Sec. 5.1; its ``simple-knn``): sqrt of the mean squared
  distance to the 3 nearest other points, squared distances clamped below at 1e-7.

What sds3d picks: radius 0.5, because sds3d's frame is DreamGaussian's (scene box [-1, 1]^3,
cameras at distance 2.5 looking at the origin; the toy world's objects reach r = 0.5-0.7), and
``DEFAULT_NUM_POINTS`` = 1000 for the CPU. The CPU rasteriser's time per step grows with the
Gaussians times the pixels they cover (``scripts/bench_splat.py``, one thread, forward+backward
of the initial ball: 0.044 s at 1k and 32^2, 0.15 s at 5k), and at the toy prior's 32^2 the median initial scale of 1000
points is already ~1 px (0.061 world units; 5000 points: 0.035, 0.6 px, below what a 32^2 image
resolves beyond the 0.3 px^2 dilation). Densification adds Gaussians where the image gradient
asks for them. DreamGaussian's 5000 suit its 128-512 px GPU renders. Grey 0.5 and opacity 0.1
are DreamGaussian's.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import trimesh
from scipy.spatial import cKDTree
from torch import Tensor

from ..errors import UserError

DEFAULT_NUM_POINTS = 1000
DEFAULT_RADIUS = 0.5
INITIAL_OPACITY = 0.1
GREY = 0.5


class GaussianInitError(UserError):
    """An initial point set that cannot be used (missing or unreadable file, no points, NaN/inf)."""


@dataclass
class InitialGaussians:
    """N Gaussians in world units: means (N, 3), colors (N, 3) in [0, 1], scales (N, 3) (not log),
    quats (N, 4) wxyz, opacities (N,) in (0, 1)."""

    means: Tensor
    colors: Tensor
    scales: Tensor
    quats: Tensor
    opacities: Tensor

    def __len__(self) -> int:
        return self.means.shape[0]


def random_ball(num_points: int, radius: float = DEFAULT_RADIUS, generator: torch.Generator | None = None) -> Tensor:
    """Points uniform in the ball of ``radius`` about the origin. Shape: (num_points, 3)."""
    directions = torch.nn.functional.normalize(torch.randn(num_points, 3, generator=generator), dim=-1)
    r = radius * torch.rand(num_points, 1, generator=generator) ** (1.0 / 3.0)  # uniform in volume
    return directions * r


def _colours(visual, n: int) -> np.ndarray | None:
    rgba = getattr(visual, "vertex_colors", None) if getattr(visual, "kind", None) == "vertex" else None
    if rgba is None or len(rgba) != n:
        return None
    return np.asarray(rgba, dtype=np.float64)[:, :3] / 255.0


def load_points(path: str | Path, num_points: int, to_world: np.ndarray | None = None,
                seed: int = 0) -> tuple[Tensor, Tensor | None]:
    """Points (and colours) from a user file, read as data by trimesh.

    A point cloud (``.ply``) gives its points and vertex colours; a mesh (``.obj``, ``.ply``, ...)
    gives ``num_points`` area-uniform surface samples, coloured by barycentric interpolation of its
    vertex colours (or its texture, by trimesh's ``sample_color``).

    Args:
        to_world: a 4x4 transform from the file's frame to the world frame (e.g. the inverse of
            ``export.mesh.world_to_file(up_axis)`` for files sds3d wrote); None: identity.

    Returns:
        points (M, 3) float32 and colours (M, 3) in [0, 1], or None if the file has none.
    """
    path = Path(path)
    if not path.is_file():
        raise GaussianInitError(f"scene.init_from={str(path)!r}: no such file; give a .ply point cloud or an .obj/.ply mesh")
    try:
        loaded = trimesh.load(path)
    except Exception as e:  # trimesh raises many kinds (ValueError, KeyError, ...) for a bad file
        raise GaussianInitError(f"scene.init_from={str(path)!r} could not be read as a point cloud or mesh "
                                f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else 'no detail'})") from None
    if isinstance(loaded, trimesh.Scene):
        loaded = loaded.to_geometry() if loaded.geometry else None
    colours = None
    if isinstance(loaded, trimesh.Trimesh) and len(loaded.faces) > 0 and loaded.area > 0:
        kind = getattr(loaded.visual, "kind", None)
        if kind == "texture":
            points, _, rgba = trimesh.sample.sample_surface(loaded, num_points, sample_color=True, seed=seed)
            colours = np.asarray(rgba, dtype=np.float64)[:, :3] / 255.0
        else:
            points, faces, bary = trimesh.sample.sample_surface(loaded, num_points, return_barycentric=True, seed=seed)
            vertex = _colours(loaded.visual, len(loaded.vertices))
            if vertex is not None:
                colours = np.einsum("nk,nkc->nc", bary, vertex[loaded.faces[faces]])
    elif isinstance(loaded, (trimesh.PointCloud, trimesh.Trimesh)):
        points = np.asarray(loaded.vertices)
        colours = _colours(loaded.visual, len(points))
    else:
        points = np.zeros((0, 3))
    points = np.asarray(points, dtype=np.float64).reshape(-1, 3)
    if len(points) == 0:
        raise GaussianInitError(f"scene.init_from={str(path)!r} has no points (an empty cloud, or a mesh without area)")
    if not np.isfinite(points).all():
        raise GaussianInitError(f"scene.init_from={str(path)!r} has non-finite coordinates (NaN or inf); "
                                f"fix or remove those points")
    if to_world is not None:
        points = points @ to_world[:3, :3].T + to_world[:3, 3]
    as_tensor = lambda a: torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))  # noqa: E731
    return as_tensor(points), None if colours is None else as_tensor(np.clip(colours, 0.0, 1.0))


def nearest_neighbour_scales(points: Tensor, k: int = 3) -> Tensor:
    """sqrt of the mean squared distance to the ``k`` nearest other points (3DGS). (N, 3) -> (N,)."""
    n = points.shape[0]
    if n < 2:
        return torch.full((n,), math.sqrt(1e-7), dtype=points.dtype)
    k = min(k, n - 1)
    dist, _ = cKDTree(points.double().numpy()).query(points.double().numpy(), k=k + 1)  # the first is the point itself
    dist2 = np.maximum((dist[:, 1:] ** 2).mean(axis=1), 1e-7)
    return torch.from_numpy(np.sqrt(dist2)).to(points.dtype)


def initial_points(cfg, init_from: str = "", generator: torch.Generator | None = None,
                   seed: int = 0) -> tuple[Tensor, Tensor | None]:
    """The points (and colours, or None) a run starts from: ``init_from``'s (``scene.init_from``), else a random ball.

    Args:
        cfg: ``scene.config.GaussiansConfig`` (``init_up_axis``, ``n_init``, ``init_radius``).
        init_from: a point cloud or mesh file, or "".
        generator: for the ball; seed: for the surface samples of a mesh.
    """
    if init_from:
        from ..export.mesh import world_to_file

        to_world = None if cfg.init_up_axis == "z" else np.linalg.inv(world_to_file(cfg.init_up_axis))
        return load_points(init_from, cfg.n_init, to_world, seed)
    return random_ball(cfg.n_init, cfg.init_radius, generator), None


def initial_gaussians(points: Tensor, colors: Tensor | None = None, opacity: float = INITIAL_OPACITY) -> InitialGaussians:
    """Isotropic Gaussians at ``points`` (3DGS / DreamGaussian): neighbour-distance scales, identity
    rotations, ``opacity``, the given colours or grey."""
    n = points.shape[0]
    scales = nearest_neighbour_scales(points)[:, None].expand(n, 3).clone()
    colors = torch.full((n, 3), GREY, dtype=points.dtype) if colors is None else colors.to(points.dtype)
    quats = torch.zeros(n, 4, dtype=points.dtype)
    quats[:, 0] = 1.0
    return InitialGaussians(points, colors, scales, quats, torch.full((n,), opacity, dtype=points.dtype))
