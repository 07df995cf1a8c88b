"""Cameras: the DreamFusion camera distribution, look-at poses, rays and view labels.

Conventions (shared by the toy world renderer and the NeRF renderer):
world frame right-handed with +z up; a camera at
``distance * (cos(el) cos(az), cos(el) sin(az), sin(el))`` looks at the origin;
camera-to-world matrices are OpenGL style (columns: right, up, backward, position);
pixel (row 0, col 0) is the top-left corner and rays pass through pixel centres.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass
class CameraConfig:
    """The camera distribution sampled at each training step (DreamFusion Sec. 3 / App. A)."""

    distance: tuple[float, float] = (2.5, 2.5)
    fov_y_deg: tuple[float, float] = (40.0, 40.0)
    elevation_deg: tuple[float, float] = (-10.0, 60.0)
    azimuth_deg: tuple[float, float] = (0.0, 360.0)
    # A late refinement phase: from step round(late_start_fraction * trainer.max_steps) on,
    # elevations are drawn from ``late_elevation_deg`` instead (None: never). Low views late in
    # training are the only ones that show a skirt hanging under a flat base (the toy world's
    # lowest camera, -10 deg, sits just above the cone's base plane); early on the full range
    # shapes tops and sides. A fraction, so a shorter run keeps the recipe's phases.
    late_start_fraction: float | None = None
    late_elevation_deg: tuple[float, float] | None = None
    # Views per step (rendered as one batch, one prior call).
    batch_size: int = 1
    # Thresholds of the view-dependent prompt suffixes (DreamFusion App. A.2; toyworld.json).
    front_half_width_deg: float = 45.0
    back_half_width_deg: float = 45.0
    overhead_elevation_deg: float = 45.0


@dataclass
class Cameras:
    """A batch of pinhole cameras. B = batch size."""

    c2w: Tensor  # (B, 4, 4)
    fov_y_deg: Tensor  # (B,)
    azimuth_deg: Tensor  # (B,)
    elevation_deg: Tensor  # (B,)
    distance: Tensor  # (B,)

    def __len__(self) -> int:
        return self.c2w.shape[0]

    def __getitem__(self, index) -> "Cameras":
        """A sub-batch (slice, index tensor or list), keeping the batch dimension."""
        if isinstance(index, int):
            index = slice(index, index + 1)
        return Cameras(*(getattr(self, f)[index] for f in ("c2w", "fov_y_deg", "azimuth_deg", "elevation_deg", "distance")))

    @property
    def view_angles(self) -> Tensor:
        """(elevation, azimuth) in degrees, the camera condition of camera-conditioned priors. Shape: (B, 2)."""
        return torch.stack([self.elevation_deg, self.azimuth_deg], dim=-1)

    @property
    def position(self) -> Tensor:
        """Camera centres. Shape: (B, 3)."""
        return self.c2w[:, :3, 3]

    def to(self, device) -> "Cameras":
        return Cameras(*(getattr(self, f).to(device) for f in ("c2w", "fov_y_deg", "azimuth_deg", "elevation_deg", "distance")))


def spherical_to_position(azimuth_deg: Tensor, elevation_deg: Tensor, distance: Tensor) -> Tensor:
    """Camera centres on a sphere about the origin. Inputs (B,), output (B, 3)."""
    az, el = torch.deg2rad(azimuth_deg), torch.deg2rad(elevation_deg)
    return distance[:, None] * torch.stack(
        [torch.cos(el) * torch.cos(az), torch.cos(el) * torch.sin(az), torch.sin(el)], dim=-1
    )


def look_at(eye: Tensor, target: Tensor | None = None, up: Tensor | None = None) -> Tensor:
    """OpenGL camera-to-world matrices looking from ``eye`` at ``target``.

    Args:
        eye: camera centres. Shape: (B, 3).
        target: look-at points, default the origin. Shape: (B, 3) or (3,).
        up: world up, default +z. Shape: (3,).

    Returns:
        c2w. Shape: (B, 4, 4).
    """
    target = torch.zeros_like(eye) if target is None else target.expand_as(eye)
    up = eye.new_tensor([0.0, 0.0, 1.0]) if up is None else up.to(eye)
    forward = torch.nn.functional.normalize(target - eye, dim=-1)
    right = torch.linalg.cross(forward, up.expand_as(forward), dim=-1)
    # Looking straight up or down: any right vector orthogonal to forward will do.
    degenerate = right.norm(dim=-1, keepdim=True) < 1e-6
    right = torch.where(degenerate, eye.new_tensor([0.0, 1.0, 0.0]).expand_as(right), right)
    right = torch.nn.functional.normalize(right, dim=-1)
    cam_up = torch.linalg.cross(right, forward, dim=-1)
    c2w = torch.eye(4, dtype=eye.dtype, device=eye.device).repeat(eye.shape[0], 1, 1)
    c2w[:, :3, 0], c2w[:, :3, 1], c2w[:, :3, 2], c2w[:, :3, 3] = right, cam_up, -forward, eye
    return c2w


def make_cameras(azimuth_deg: Tensor, elevation_deg: Tensor, distance: Tensor | float, fov_y_deg: Tensor | float) -> Cameras:
    """Cameras looking at the origin from given spherical coordinates (all (B,) or scalars)."""
    azimuth_deg = torch.as_tensor(azimuth_deg, dtype=torch.float32).reshape(-1)
    elevation_deg = torch.as_tensor(elevation_deg, dtype=torch.float32).reshape(-1)
    B = azimuth_deg.shape[0]
    distance = torch.as_tensor(distance, dtype=torch.float32).reshape(-1).expand(B).clone()
    fov = torch.as_tensor(fov_y_deg, dtype=torch.float32).reshape(-1).expand(B).clone()
    c2w = look_at(spherical_to_position(azimuth_deg, elevation_deg, distance))
    return Cameras(c2w, fov, azimuth_deg % 360.0, elevation_deg, distance)


def schedule_step(fraction: float, max_steps: int) -> int:
    """The step at which a schedule point given as a fraction of the run starts: round(fraction * max_steps)."""
    return round(fraction * max_steps)


def elevation_range(cfg: CameraConfig, step: int | None = None, max_steps: int | None = None) -> tuple[float, float]:
    """The elevation range (degrees) cameras are drawn from at training step ``step`` of ``max_steps``."""
    late = cfg.late_start_fraction is not None and cfg.late_elevation_deg is not None
    if late and step is not None:
        if max_steps is None:
            raise ValueError("camera.late_start_fraction needs the run length: pass max_steps with step")
        if step >= schedule_step(cfg.late_start_fraction, max_steps):
            return tuple(cfg.late_elevation_deg)
    return tuple(cfg.elevation_deg)


def sample_cameras(
    cfg: CameraConfig, batch_size: int | None = None, generator: torch.Generator | None = None, step: int | None = None,
    max_steps: int | None = None,
) -> Cameras:
    """Sample cameras uniformly in azimuth, elevation (``elevation_range`` at ``step`` of ``max_steps``), distance and field of view."""
    B = cfg.batch_size if batch_size is None else batch_size

    def uniform(lo_hi):
        lo, hi = lo_hi
        return lo + (hi - lo) * torch.rand(B, generator=generator)

    return make_cameras(uniform(cfg.azimuth_deg), uniform(elevation_range(cfg, step, max_steps)), uniform(cfg.distance), uniform(cfg.fov_y_deg))


def orbit_cameras(n: int, elevation_deg: float = 20.0, distance: float = 2.5, fov_y_deg: float = 40.0, start_azimuth_deg: float = 0.0) -> Cameras:
    """``n`` cameras evenly spaced in azimuth at a fixed elevation (validation renders, videos)."""
    az = start_azimuth_deg + torch.arange(n, dtype=torch.float32) * (360.0 / n)
    return make_cameras(az, torch.full((n,), float(elevation_deg)), distance, fov_y_deg)


def get_rays(cameras: Cameras, height: int, width: int | None = None) -> tuple[Tensor, Tensor]:
    """World-space rays through pixel centres.

    Returns:
        origins (B, H, W, 3) and unit directions (B, H, W, 3).
    """
    width = height if width is None else width
    c2w = cameras.c2w
    device, dtype = c2w.device, c2w.dtype
    focal = 0.5 * height / torch.tan(0.5 * torch.deg2rad(cameras.fov_y_deg.to(device, dtype)))  # (B,)
    j = torch.arange(width, device=device, dtype=dtype) + 0.5
    i = torch.arange(height, device=device, dtype=dtype) + 0.5
    ii, jj = torch.meshgrid(i, j, indexing="ij")
    x = (jj - 0.5 * width)[None] / focal[:, None, None]
    y = -(ii - 0.5 * height)[None] / focal[:, None, None]
    dirs_cam = torch.stack([x, y, -torch.ones_like(x)], dim=-1)  # (B, H, W, 3)
    dirs = torch.einsum("bhwk,bjk->bhwj", dirs_cam, c2w[:, :3, :3])
    dirs = torch.nn.functional.normalize(dirs, dim=-1)
    origins = c2w[:, None, None, :3, 3].expand_as(dirs)
    return origins, dirs


def view_labels(
    azimuth_deg: Tensor,
    elevation_deg: Tensor,
    front_half_width_deg: float = 45.0,
    back_half_width_deg: float = 45.0,
    overhead_elevation_deg: float = 45.0,
) -> list[str]:
    """View names for prompt suffixes (toyworld.json ``prompts.views``; DreamFusion App. A.2).

    overhead: elevation > ``overhead_elevation_deg`` (takes precedence); front: azimuth within
    ``front_half_width_deg`` of 0; back: within ``back_half_width_deg`` of 180; side: the rest.
    With the defaults: front [315, 360) or [0, 45), side [45, 135) or [225, 315), back [135, 225).

    Args:
        azimuth_deg: (B,). elevation_deg: (B,).
    """
    az = torch.as_tensor(azimuth_deg, dtype=torch.float64).reshape(-1) % 360.0
    el = torch.as_tensor(elevation_deg, dtype=torch.float64).reshape(-1)
    labels = []
    for a, e in zip(az.tolist(), el.tolist()):
        if e > overhead_elevation_deg:
            labels.append("overhead")
        elif a >= 360.0 - front_half_width_deg or a < front_half_width_deg:
            labels.append("front")
        elif 180.0 - back_half_width_deg <= a < 180.0 + back_half_width_deg:
            labels.append("back")
        else:
            labels.append("side")
    return labels
