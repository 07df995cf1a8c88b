"""3D Gaussian splatting of B views: gsplat's rasteriser on CUDA, its PyTorch twin elsewhere.

``rasterize_gaussians`` renders what the NeRF renderer renders (``render.renderer``): colour over
a background, opacity, depth as the expected distance along each pixel's unit ray
(sum_i w_i t_i, 0 where empty) and world-frame normals (sum_i w_i n_i), so shading, the
regularisers and the SDS loss take either representation. A Gaussian's normal is its shortest
axis (the axis of least extent; a flat splat's surface normal), turned towards the camera
(the normal of GaussianShader, Jiang et al. 2024: a shortest axis has no outside, so it faces the viewer),
composited like colour. Colours, normals and depth are one rasterisation ("RGB+D" with the
normals as extra channels).

Camera conventions: sds3d's ``Cameras`` are OpenGL camera-to-world (columns right, up, backward);
gsplat takes OpenCV world-to-camera ``viewmats`` (x right, y down, z forward) and pinhole ``Ks``,
made by ``cameras_to_gsplat`` with the focal length and pixel-centre convention of
``cameras.get_rays``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..errors import UserError
from . import _splat_torch

BACKENDS = ("auto", "gsplat", "torch")
EPS2D = 0.3  # px^2: the 3DGS rasteriser's dilation of every 2D covariance (gsplat's eps2d)


class SplatBackendError(UserError):
    """A rasteriser backend that cannot run here (gsplat needs CUDA tensors)."""


def cameras_to_gsplat(cameras, height: int, width: int | None = None) -> tuple[Tensor, Tensor]:
    """OpenCV world-to-camera matrices and pinhole intrinsics of sds3d cameras.

    Returns:
        viewmats (B, 4, 4) and Ks (B, 3, 3): focal 0.5 H / tan(fov_y / 2) in both axes, principal
        point (W/2, H/2), as ``get_rays`` (pixel (row i, col j) centre at (j + 0.5, i + 0.5)).
    """
    width = height if width is None else width
    c2w = cameras.c2w
    # OpenGL camera axes (right, up, backward) -> OpenCV (right, down, forward).
    flip = torch.diag(c2w.new_tensor([1.0, -1.0, -1.0]))
    R = c2w[:, :3, :3] @ flip
    R_w2c = R.transpose(1, 2)
    t_w2c = -(R_w2c @ c2w[:, :3, 3:4])
    bottom = c2w.new_tensor([0.0, 0.0, 0.0, 1.0]).expand(len(cameras), 1, 4)
    viewmats = torch.cat([torch.cat([R_w2c, t_w2c], dim=2), bottom], dim=1)
    focal = 0.5 * height / torch.tan(0.5 * torch.deg2rad(cameras.fov_y_deg.to(c2w)))
    zero, one = torch.zeros_like(focal), torch.ones_like(focal)
    Ks = torch.stack([focal, zero, zero + 0.5 * width, zero, focal, zero + 0.5 * height, zero, zero, one], -1)
    return viewmats, Ks.reshape(-1, 3, 3)


def camera_facing_normals(means: Tensor, quats: Tensor, scales: Tensor, viewmats: Tensor) -> Tensor:
    """Each Gaussian's shortest axis, signed towards each camera (world frame). Shape: (C, N, 3)."""
    axes = _splat_torch.quat_to_rotmat(quats)  # columns: the Gaussian's local axes in the world
    k = scales.detach().argmin(-1)
    n = axes.gather(2, k[:, None, None].expand(-1, 3, 1)).squeeze(-1)  # (N, 3)
    R, t = viewmats[:, :3, :3], viewmats[:, :3, 3:4]
    centres = -(R.transpose(1, 2) @ t).squeeze(-1)  # camera positions (C, 3)
    facing = ((centres[:, None, :] - means[None]) * n[None]).sum(-1, keepdim=True)
    return torch.where(facing < 0, -n[None], n[None].expand(len(viewmats), -1, -1))


def ray_lengths(Ks: Tensor, height: int, width: int) -> Tensor:
    """Distance along a pixel's unit ray per unit of camera depth, ||K^-1 (u, v, 1)||. (C, 1, H, W)."""
    v, u = torch.meshgrid(torch.arange(height, dtype=Ks.dtype, device=Ks.device) + 0.5,
                          torch.arange(width, dtype=Ks.dtype, device=Ks.device) + 0.5, indexing="ij")
    x = (u[None] - Ks[:, 0, 2, None, None]) / Ks[:, 0, 0, None, None]
    y = (v[None] - Ks[:, 1, 2, None, None]) / Ks[:, 1, 1, None, None]
    return torch.sqrt(1.0 + x * x + y * y)[:, None]


def resolve_splat_backend(backend: str, device: torch.device) -> str:
    """The rasteriser actually used: ``gsplat`` for CUDA tensors under ``auto``, else ``torch``."""
    if backend not in BACKENDS:
        raise SplatBackendError(f"splat backend {backend!r} is unknown; use one of {', '.join(BACKENDS)}")
    if backend == "gsplat" and device.type != "cuda":
        raise SplatBackendError("splat backend 'gsplat' needs CUDA (its kernels are CUDA-only); use 'auto' or 'torch'")
    if backend == "auto":
        return "gsplat" if device.type == "cuda" else "torch"
    return backend


def rasterize_gaussians(means: Tensor, quats: Tensor, scales: Tensor, opacities: Tensor, colors: Tensor,
                        viewmats: Tensor, Ks: Tensor, width: int, height: int, backgrounds: Tensor | None = None,
                        near_plane: float = 0.01, eps2d: float = EPS2D, backend: str = "auto") -> dict:
    """Render N Gaussians into C views.

    Args:
        means (N, 3) world; quats (N, 4) wxyz, any norm; scales (N, 3) (not log);
        opacities (N,) in [0, 1]; colors (N, D) or per view (C, N, D) (e.g. shaded per view);
        viewmats (C, 4, 4), Ks (C, 3, 3) from ``cameras_to_gsplat``; backgrounds (C, D) or None.
        near_plane: Gaussians with camera depth below it are culled. eps2d: the 2D dilation (px^2).
        backend: auto | gsplat | torch (``resolve_splat_backend``).

    Returns:
        rgb (C, D, H, W) = sum_i w_i c_i + (1 - alpha) bg; alpha (C, 1, H, W) = sum_i w_i;
        depth (C, 1, H, W) = sum_i w_i t_i, t_i the distance of Gaussian i's depth along the
        pixel's unit ray (0 where empty); normal (C, 3, H, W) = sum_i w_i n_i;
        info: the rasteriser's meta (``means2d`` (C, N, 2) in the graph, ``radii`` (C, N, 2),
        ``width``, ``height``, ``n_cameras``, ``gaussian_ids`` None: gsplat's non-packed layout,
        what ``gsplat.strategy.DefaultStrategy`` reads).
    """
    C, D = viewmats.shape[0], colors.shape[-1]
    normals = camera_facing_normals(means, quats, scales, viewmats)
    colors = colors if colors.dim() == 3 else colors[None].expand(C, *colors.shape)
    features = torch.cat([colors, normals], dim=-1)
    if backgrounds is not None:
        backgrounds = torch.cat([backgrounds, backgrounds.new_zeros(C, 3)], dim=-1)
    kwargs = dict(near_plane=near_plane, eps2d=eps2d, backgrounds=backgrounds, render_mode="RGB+D")
    if resolve_splat_backend(backend, means.device) == "gsplat":
        from gsplat import rasterization

        out, alpha, info = rasterization(means, quats, scales, opacities, features, viewmats, Ks, width, height,
                                         packed=False, **kwargs)
    else:
        out, alpha, info = _splat_torch.rasterization(means, quats, scales, opacities, features, viewmats, Ks,
                                                      width, height, **kwargs)
    out = out.permute(0, 3, 1, 2)
    return {
        "rgb": out[:, :D],
        "alpha": alpha.permute(0, 3, 1, 2),
        "depth": out[:, D + 3 :] * ray_lengths(Ks, height, width),
        "normal": out[:, D : D + 3],
        "info": info,
    }
