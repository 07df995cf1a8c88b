"""Pure-PyTorch twin of ``gsplat.rasterization`` for the CPU (pinhole camera, classic mode).

gsplat's rasteriser is CUDA-only (its kernels JIT-build on a GPU); this is the same maths written
from the formulas, differentiable by autograd. Like gsplat it composites per tile (8 x 8 pixels)
only the Gaussians whose box touches the tile (``_tile_lists``), as batches of depth-sorted lists
in chunks that leave out the lists already ended (``chunk_schedule``), or densely (every visible
Gaussian at every pixel) when that is fewer pairs; both give the same image. It takes gsplat's arguments and returns gsplat's outputs and ``meta``
keys (``means2d``, ``radii``, ``width``, ...), so gsplat's densification strategy runs on it.
Conventions are gsplat's: quaternions wxyz, viewmats OpenCV world-to-camera (x right, y down,
z forward), pixel (col u, row v) centres at (u + 0.5, v + 0.5).

The maths, in the order it runs:

- Covariance (3DGS, Kerbl et al. 2023, Eq. 6): Sigma = R S S^T R^T, R the rotation of the unit
  quaternion q = (w, x, y, z), S = diag(scales).
- World to camera: mu_c = R_v mu + t_v, Sigma_c = R_v Sigma R_v^T (viewmat = [R_v | t_v]).
- EWA projection (Zwicker et al. 2001, "EWA Volume Splatting", Eq. 31; 3DGS Eq. 5):
  mu' = (f_x x/z + c_x, f_y y/z + c_y), Sigma' = J Sigma_c J^T with J the Jacobian of that map
  at mu_c, [[f_x/z, 0, -f_x x/z^2], [0, f_y/z, -f_y y/z^2]]; for J only, x/z and y/z are clamped
  to the frustum widened by 30 % (gsplat's ``persp_proj``: a Gaussian far off-screen keeps a
  bounded footprint instead of an exploding one).
- Dilation (the 3DGS rasteriser's low-pass filter, gsplat's ``eps2d``): Sigma2D = Sigma' + eps2d I.
- Culling (gsplat's fused projection): z outside [near, far], det(Sigma2D) <= 0, opacity < 1/255,
  or the box of half-sides ceil(k sqrt(Sigma2D_xx)), ceil(k sqrt(Sigma2D_yy)) off the image, with
  k = min(3.33, sqrt(2 ln(255 o))) (the opacity-aware extent of Radl et al. 2024, StopThePop,
  Sec. B.2): such a Gaussian has radii 0 and draws nothing.
- Per pixel p (3DGS Eq. 2-3): alpha_i = min(0.999, o_i exp(-1/2 d^T Sigma2D^-1 d)), d = p - mu'_i,
  set to 0 below 1/255; Gaussians sorted by camera depth z, front to back;
  w_i = alpha_i T_i, T_i = prod_{j<i} (1 - alpha_j). A pixel stops before the Gaussian that
  would bring its transmittance to <= 1e-4 (gsplat's kernel: that one and all behind it are
  left out). colour = sum_i w_i c_i + T bg, alpha = 1 - T = sum_i w_i; "RGB+D" appends
  sum_i w_i z_i as a last channel (gsplat's accumulated depth).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor
from torch.utils.checkpoint import checkpoint

ALPHA_MIN = 1.0 / 255.0  # gsplat's ALPHA_THRESHOLD: fainter contributions are skipped
ALPHA_MAX = 0.999  # gsplat's clamp of a single Gaussian's alpha
T_MIN = 1e-4  # transmittance at which a pixel is done
EXTENT_MAX = 3.33  # gsplat's box half-side in standard deviations
# Gaussians are composited in depth-ordered chunks whose (cameras, pixels, Gaussians) intermediates
# hold at most this many elements (2 MiB in float32): cache-sized chunks ran fastest (at 64^2 with
# 1k-5k Gaussians on one thread, chunks of 2^18-2^20 elements were 1.3-1.6x faster than 2^22).
CHUNK_ELEMENTS = 1 << 19
# Above this many (pixel, Gaussian) pairs in all, each chunk is recomputed in the backward pass
# (activation checkpointing), so memory stays O(chunk) instead of O(pixels x Gaussians); below it
# the chunks' intermediates (about ten tensors of that size) are kept, and the backward pass does
# not pay a second forward.
CHECKPOINT_ELEMENTS = 1 << 22
# A chunk ends where the shortest list still compositing ends, but spans at least this many list
# positions: each chunk costs a few calls' overhead (and a recomputation in the backward pass).
MIN_CHUNK = 32
TILE_SIZE = 8  # pixels per tile side (gsplat's kernels use 16 on a GPU)


def quat_to_rotmat(quats: Tensor) -> Tensor:
    """Rotation matrices of quaternions (w, x, y, z), normalised first. (..., 4) -> (..., 3, 3)."""
    w, x, y, z = torch.nn.functional.normalize(quats, dim=-1).unbind(-1)
    rows = (
        (1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)),
        (2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)),
        (2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)),
    )
    return torch.stack([torch.stack(r, dim=-1) for r in rows], dim=-2)


def covariance_3d(quats: Tensor, scales: Tensor) -> Tensor:
    """Sigma = R S S^T R^T. quats (N, 4), scales (N, 3) -> (N, 3, 3)."""
    M = quat_to_rotmat(quats) * scales[..., None, :]
    return M @ M.transpose(-1, -2)


def project(means: Tensor, covars: Tensor, viewmats: Tensor, Ks: Tensor, width: int, height: int,
            eps2d: float, near_plane: float, far_plane: float, radius_clip: float, opacities: Tensor):
    """EWA projection of N Gaussians into C cameras (gsplat's fused projection, non-packed).

    Returns:
        radii (C, N, 2) int32 (0: culled), means2d (C, N, 2) pixels, depths (C, N) camera z,
        conics (C, N, 3) = the upper triangle (a, b, c) of Sigma2D^-1.
    """
    R, t = viewmats[:, None, :3, :3], viewmats[:, None, :3, 3]
    means_c = (R @ means[None, :, :, None]).squeeze(-1) + t  # (C, N, 3)
    covars_c = R @ covars[None] @ R.transpose(-1, -2)
    x, y, z = means_c.unbind(-1)
    in_depth = (z >= near_plane) & (z <= far_plane)
    z = torch.where(in_depth, z, torch.ones_like(z))  # culled ones get a harmless z (no inf gradients)
    fx, fy = Ks[:, None, 0, 0], Ks[:, None, 1, 1]
    cx, cy = Ks[:, None, 0, 2], Ks[:, None, 1, 2]
    means2d = torch.stack([fx * x / z + cx, fy * y / z + cy], dim=-1)
    # The Jacobian's x/z, y/z limited to the frustum widened by 0.3 of its half-width.
    tan_x, tan_y = 0.5 * width / fx, 0.5 * height / fy
    u = torch.minimum(torch.maximum(x / z, -(cx / fx + 0.3 * tan_x)), (width - cx) / fx + 0.3 * tan_x)
    v = torch.minimum(torch.maximum(y / z, -(cy / fy + 0.3 * tan_y)), (height - cy) / fy + 0.3 * tan_y)
    zero = torch.zeros_like(z)
    J = torch.stack([fx / z, zero, -fx * u / z, zero, fy / z, -fy * v / z], dim=-1).reshape(*z.shape, 2, 3)
    cov2d = J @ covars_c @ J.transpose(-1, -2) + eps2d * torch.eye(2, dtype=means.dtype, device=means.device)
    a, b, c = cov2d[..., 0, 0], 0.5 * (cov2d[..., 0, 1] + cov2d[..., 1, 0]), cov2d[..., 1, 1]
    det = a * c - b * b
    det_ok = det > 0
    det_safe = torch.where(det_ok, det, torch.ones_like(det))
    conics = torch.stack([c / det_safe, -b / det_safe, a / det_safe], dim=-1)
    with torch.no_grad():
        o = opacities.detach()[None].expand_as(z)
        extent = torch.sqrt(2.0 * torch.log(torch.clamp(o / ALPHA_MIN, min=1.0))).clamp(max=EXTENT_MAX)
        radius = torch.ceil(extent[..., None] * torch.sqrt(torch.stack([a, c], dim=-1).clamp(min=0.0)))
        m = means2d.detach()
        on_image = ((m[..., 0] + radius[..., 0] > 0) & (m[..., 0] - radius[..., 0] < width)
                    & (m[..., 1] + radius[..., 1] > 0) & (m[..., 1] - radius[..., 1] < height))
        big_enough = (radius > radius_clip).any(-1)
        keep = in_depth & det_ok & (o >= ALPHA_MIN) & big_enough & on_image
        radii = torch.where(keep[..., None], radius, torch.zeros_like(radius)).to(torch.int32)
    return radii, means2d, means_c[..., 2], conics


def _composite_chunk(u: Tensor, v: Tensor, means2d: Tensor, conics: Tensor, opacities: Tensor, features: Tensor,
                     T: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Composite K depth-sorted Gaussians over the H x W pixels of B images, after the chunks in front.

    An image is a camera's (dense) or one tile of a camera's (tiled).

    Args:
        u: (B, W) and v: (B, H) pixel-centre coordinates. means2d (B, K, 2), conics (B, K, 3),
        opacities (B, K) (0 for culled Gaussians and padding), features (B, K, F). T: (B, H*W)
        transmittance in front of this chunk, counting every Gaussian in front (also the ones
        termination left out: T only falls, so "T after this Gaussian <= 1e-4" marks a Gaussian
        and all behind it).

    Returns:
        sum_i w_i f_i (B, H*W, F), sum_i w_i (B, H*W), T behind this chunk (B, H*W).
    """
    C, K = opacities.shape
    # The pixels form a grid, so the quadratic form separates into per-column and per-row
    # factors: 1/2 (a dx^2 + c dy^2) + b dx dy, only the cross term needs the full (H, W) grid.
    dx = u[:, :, None] - means2d[:, None, :, 0]  # (B, W, K)
    dy = v[:, :, None] - means2d[:, None, :, 1]  # (B, H, K)
    a, b, c = conics[:, None, :, 0], conics[:, None, :, 1], conics[:, None, :, 2]
    power = torch.addcmul((0.5 * c * dy * dy)[:, :, None] + (0.5 * a * dx * dx)[:, None], (b * dy)[:, :, None], dx[:, None])
    power = power.reshape(C, -1, K)  # (C, H*W, K)
    # exp(-power) for power > 20 is below 1/255 for any opacity and is dropped below; clamping
    # there keeps exp out of denormal floats (slow on x86) without changing any value or gradient.
    alpha = (opacities[:, None, :] * torch.exp(-power.clamp(max=20.0))).clamp(max=ALPHA_MAX)
    alpha = torch.where((alpha >= ALPHA_MIN) & (power >= 0), alpha, 0.0)
    T_after = T[..., None] * torch.cumprod(1.0 - alpha, dim=-1)
    T_before = torch.cat([T[..., None], T_after[..., :-1]], dim=-1)
    w = torch.where(T_after > T_MIN, alpha * T_before, 0.0)
    return torch.bmm(w, features), w.sum(-1), T_after[..., -1]


def _tile_lists(radii: Tensor, means2d: Tensor, visible: Tensor, order: Tensor, width: int, height: int,
                tile_size: int) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Per camera and tile of ``tile_size``^2 pixels, the visible Gaussians whose box touches it, front to back.

    A Gaussian's box (its ``radii`` about its 2D mean) holds every pixel centre where its alpha
    reaches 1/255 (``project``: with k^2 = 2 ln(255 o), d^T Sigma^-1 d >= dx^2 / Sigma_xx > k^2
    outside it), so a tile composites only those; the rest would add alpha 0 (gsplat's tile
    intersection, ``isect_tiles``).

    Returns:
        images (B,): the non-empty (camera, tile) pairs as camera * tiles + tile; cameras (B,);
        index (B, L): each image's Gaussians in depth order, padded with N; u (B, tile_size),
        v (B, tile_size): the tile's pixel-centre coordinates.
    """
    C, N = visible.shape
    tw, th = math.ceil(width / tile_size), math.ceil(height / tile_size)
    m, r = means2d.detach(), radii.to(means2d.dtype)
    x0, x1 = (torch.floor((m[..., 0] + sign * r[..., 0]) / tile_size).long().clamp(0, tw - 1) for sign in (-1, 1))
    y0, y1 = (torch.floor((m[..., 1] + sign * r[..., 1]) / tile_size).long().clamp(0, th - 1) for sign in (-1, 1))
    rank = torch.full((C, N), N, dtype=torch.long, device=m.device)
    rank.scatter_(1, order, torch.arange(order.shape[1], device=m.device).expand_as(order))
    cam, gid = visible.nonzero(as_tuple=True)
    nx, ny = (x1 - x0 + 1)[cam, gid], (y1 - y0 + 1)[cam, gid]
    counts = nx * ny
    pc, pg = torch.repeat_interleave(cam, counts), torch.repeat_interleave(gid, counts)
    local = torch.arange(int(counts.sum()), device=m.device) - torch.repeat_interleave(counts.cumsum(0) - counts, counts)
    nxr = torch.repeat_interleave(nx, counts)
    tile = (y0[pc, pg] + local // nxr) * tw + x0[pc, pg] + local % nxr
    key, perm = torch.sort((pc * (tw * th) + tile) * (N + 1) + rank[pc, pg])
    image = key // (N + 1)
    per_image = torch.bincount(image, minlength=C * tw * th)
    images = per_image.nonzero().squeeze(-1)
    slot = torch.full((C * tw * th,), -1, dtype=torch.long, device=m.device)
    slot[images] = torch.arange(len(images), device=m.device)
    pos = torch.arange(len(image), device=m.device) - (per_image.cumsum(0) - per_image)[image]
    index = torch.full((len(images), int(per_image.max()) if len(image) else 0), N, dtype=torch.long, device=m.device)
    index[slot[image], pos] = pg[perm]
    t = images % (tw * th)
    offsets = torch.arange(tile_size, dtype=m.dtype, device=m.device) + 0.5
    u = ((t % tw) * tile_size)[:, None].to(m.dtype) + offsets
    v = ((t // tw) * tile_size)[:, None].to(m.dtype) + offsets
    return images, images // (tw * th), index, u, v


def chunk_schedule(lengths: list[int], pixels: int, gaussian_chunk: int | None = None,
                   min_chunk: int | None = None) -> list[tuple[int, int, int]]:
    """The compositing chunks of images whose lists have ``lengths`` (longest first): (start, size, images).

    Chunk j composites list positions [start, start + size) of the first ``images`` images, the
    ones whose lists reach past ``start``. A chunk ends where the shortest of them ends (no
    padding), but is at least ``min_chunk`` long (fewer, larger chunks; images ending inside it
    are padded) and holds at most ``CHUNK_ELEMENTS`` (pixel, Gaussian) pairs, or exactly
    ``gaussian_chunk`` positions when that is given. ``min_chunk`` defaults to ``MIN_CHUNK``.
    """
    min_chunk = MIN_CHUNK if min_chunk is None else min_chunk
    chunks, start = [], 0
    while lengths and start < lengths[0]:
        n = sum(1 for length in lengths if length > start)
        if gaussian_chunk:
            size = gaussian_chunk
        else:
            cap = max(1, CHUNK_ELEMENTS // (n * pixels))
            size = min(cap, max(lengths[n - 1] - start, min(min_chunk, lengths[0] - start)))
        chunks.append((start, size, n))
        start += size
    return chunks


def rasterization(means: Tensor, quats: Tensor, scales: Tensor, opacities: Tensor, colors: Tensor, viewmats: Tensor,
                  Ks: Tensor, width: int, height: int, near_plane: float = 0.01, far_plane: float = 1e10,
                  radius_clip: float = 0.0, eps2d: float = 0.3, backgrounds: Tensor | None = None,
                  render_mode: str = "RGB", gaussian_chunk: int | None = None,
                  tile_size: int | None = None) -> tuple[Tensor, Tensor, dict]:
    """gsplat.rasterization's pinhole, classic, non-packed path, without SH (colours given).

    Args:
        means (N, 3), quats (N, 4) wxyz, scales (N, 3) (not log), opacities (N,) in [0, 1];
        colors (N, D) or (C, N, D); viewmats (C, 4, 4) OpenCV world-to-camera; Ks (C, 3, 3).
        backgrounds: (C, D) or None (black). render_mode: "RGB" or "RGB+D".
        gaussian_chunk: Gaussians per compositing chunk; default from ``CHUNK_ELEMENTS``.
        tile_size: composite per tile of this many pixels squared, only the Gaussians that touch
            it (``_tile_lists``), or 0: every visible Gaussian at every pixel (dense); None: tiles
            of ``TILE_SIZE`` when that is fewer pixel x Gaussian pairs (the same image either way,
            up to float rounding).

    Returns:
        render_colors (C, H, W, D [+1]), render_alphas (C, H, W, 1), meta (gsplat's keys:
        radii, means2d, depths, conics, opacities, width, height, n_cameras, gaussian_ids=None, ...).
    """
    if render_mode not in ("RGB", "RGB+D"):
        raise ValueError(f"render_mode={render_mode!r}: the twin renders 'RGB' or 'RGB+D'")
    C, N = viewmats.shape[0], means.shape[0]
    radii, means2d, depths, conics = project(means, covariance_3d(quats, scales), viewmats, Ks, width, height,
                                             eps2d, near_plane, far_plane, radius_clip, opacities)
    colors = colors if colors.dim() == 3 else colors[None].expand(C, N, colors.shape[-1])
    features = torch.cat([colors, depths[..., None]], dim=-1) if render_mode == "RGB+D" else colors
    visible = (radii > 0).all(-1)
    # Front-to-back order per camera; culled Gaussians sort last and are cut off.
    key = torch.where(visible, depths.detach(), torch.full_like(depths, math.inf))
    order = torch.sort(key, dim=-1, stable=True).indices[:, : int(visible.sum(-1).max())]
    s_opacities = torch.where(visible, opacities[None].expand(C, N), 0.0)  # culled: no alpha
    dtype, device = means.dtype, means.device
    F = features.shape[-1]
    tiles = None
    if tile_size != 0:
        tiles = _tile_lists(radii, means2d, visible, order, width, height, tile_size or TILE_SIZE)
        ts = tile_size or TILE_SIZE
        if tile_size is None and int((tiles[2] < N).sum()) * ts * ts >= order.numel() * width * height:
            tiles = None  # dense is fewer pairs (large Gaussians on a small image)
    if tiles is not None:
        images, cameras, index, u, v = tiles
    else:
        cameras, index = torch.arange(C, device=device), order
        u = (torch.arange(width, dtype=dtype, device=device) + 0.5).expand(C, width)
        v = (torch.arange(height, dtype=dtype, device=device) + 0.5).expand(C, height)

    # Images by list length, longest first: the images still compositing at list position i are a
    # prefix, so each chunk takes only those, and no image is padded to the longest list (a 32^2
    # view of a trained toy object has lists of 1 to 1342 Gaussians per 8x8 tile: padded to the
    # longest, 3.2x the pairs).
    lengths = (index < N).sum(-1)
    lengths, by_length = torch.sort(lengths, descending=True, stable=True)
    cameras, index, u, v = cameras[by_length], index[by_length], u[by_length], v[by_length]
    if tiles is not None:
        images = images[by_length]

    def take(x: Tensor) -> Tensor:
        """Per image, the rows ``index`` of its camera's (C, N, ...) tensor; index N is a zero row (padding)."""
        x = torch.cat([x, x.new_zeros(C, 1, *x.shape[2:])], dim=1)
        return x.reshape(C * (N + 1), *x.shape[2:])[cameras[:, None] * (N + 1) + index]

    s_means2d, s_conics, s_opacities, s_features = take(means2d), take(conics), take(s_opacities), take(features)
    B, P = len(cameras), u.shape[1] * v.shape[1]
    acc = means.new_zeros(B, P, F)
    acc_alpha = means.new_zeros(B, P)
    T = means.new_ones(B, P)
    chunks = chunk_schedule(lengths.tolist(), P, gaussian_chunk)
    checkpointed = (torch.is_grad_enabled() and len(chunks) > 1
                    and sum(n * P * k for _, k, n in chunks) > CHECKPOINT_ELEMENTS)
    for i, k, n in chunks:
        args = (u[:n], v[:n], s_means2d[:n, i : i + k], s_conics[:n, i : i + k], s_opacities[:n, i : i + k],
                s_features[:n, i : i + k], T[:n])
        if checkpointed:
            part, part_alpha, T_n = checkpoint(_composite_chunk, *args, use_reentrant=False)
        else:
            part, part_alpha, T_n = _composite_chunk(*args)
        acc = torch.cat([acc[:n] + part, acc[n:]]) if n < B else acc + part
        acc_alpha = torch.cat([acc_alpha[:n] + part_alpha, acc_alpha[n:]]) if n < B else acc_alpha + part_alpha
        T = torch.cat([T_n, T[n:]]) if n < B else T_n
    if tiles is not None:  # tiles back into images (empty tiles: nothing drawn)
        tw, th = math.ceil(width / ts), math.ceil(height / ts)

        def untile(x: Tensor) -> Tensor:
            x = x.new_zeros(C * tw * th, *x.shape[1:]).index_put((images,), x)
            x = x.reshape(C, th, tw, ts, ts, -1).permute(0, 1, 3, 2, 4, 5)
            return x.reshape(C, th * ts, tw * ts, -1)[:, :height, :width].reshape(C, height * width, -1)

        acc, acc_alpha = untile(acc), untile(acc_alpha[..., None])[..., 0]
    if backgrounds is not None:
        bg = torch.cat([backgrounds, backgrounds.new_zeros(C, 1)], -1) if render_mode == "RGB+D" else backgrounds
        acc = acc + (1.0 - acc_alpha[..., None]) * bg[:, None, :]
    meta = {
        "radii": radii, "means2d": means2d, "depths": depths, "conics": conics,
        "opacities": opacities[None].expand(C, N), "width": width, "height": height, "n_cameras": C,
        "batch_ids": None, "camera_ids": None, "gaussian_ids": None,
    }
    return acc.reshape(C, height, width, F), acc_alpha.reshape(C, height, width, 1), meta
