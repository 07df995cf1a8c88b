"""3D Gaussians as a volume: density and albedo at world points, for mesh export and evaluation.

Export (``export.mesh``: visibility solid, marching cubes, rendered colours, texture) and
evaluation read a field whose density sigma they integrate along rays as an optical depth (NeRF's
quadrature). The Gaussians give one:

    sigma(x) = sum_i tau_i k_i(x) / (sqrt(2 pi) s_i),   k_i(x) = exp(-1/2 (x - mu_i)^T Sigma_i^-1 (x - mu_i)),

with tau_i = -ln(1 - o_i) and s_i Gaussian i's shortest scale. The line integral of k_i along its
shortest axis through mu_i is sqrt(2 pi) s_i, so that ray's optical depth is tau_i and its opacity
1 - exp(-tau_i) = o_i: the splat's peak opacity seen face on (3DGS Eq. 2-3), and Gaussians in a row
add optical depths as compositing multiplies transmittances. DreamGaussian's ``extract_fields``
(Tang et al. 2024, ``gs_renderer.py``) sums o_i k_i(x), a dimensionless occupancy it thresholds at
1; an optical density makes ``export.surface_opacity`` mean the same rendered opacity for Gaussians
as for a NeRF. The albedo is the density-weighted mean colour,
albedo(x) = sum_i sigma_i(x) c_i / sum_i sigma_i(x) (grey 0.5 where no Gaussian reaches).

Export asks for millions of points (a texture bakes each texel from 32 samples along its normal),
and every point lies within reach of tens to hundreds of overlapping Gaussians, so the field is
computed once on a grid of vertices over [-bound, bound]^3 (``VolumeGrid``) and read by trilinear
interpolation (``torch.nn.functional.grid_sample``). Each Gaussian is widened, its face-on optical
depth kept (Sigma_i + delta^2 I, peak tau_i / (sqrt(2 pi) sqrt(s_i^2 + delta^2))), by
delta^2 = (h/2)^2 + eps2d p^2: half the grid spacing h, so the grid resolves it, and the
rasteriser's own dilation of every footprint by eps2d = 0.3 px^2 (3DGS's low-pass filter), in world
units at the training views (p: a pixel's size at the object), so the volume is as wide as the
renders the prior saw (a Gaussian of 0.5 px, common at 32^2, renders 1.4 times wider). Each kernel is cut off outside the ellipsoid of
Mahalanobis radius 3.33 (gsplat's screen-space extent) and splatted onto the vertices of its
bounding box only, so building costs the Gaussian-vertex pairs within reach, not Gaussians x
vertices. Written here because gsplat has no volume query (its rasteriser works in screen space)
and DreamGaussian's block loop assumes every Gaussian smaller than a block.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from ..render._splat_torch import ALPHA_MAX, quat_to_rotmat

EXTENT = 3.33  # cut-off in standard deviations (gsplat's EXTENT_MAX)
GREY = 0.5
PAIRS_PER_PASS = 1 << 22  # Gaussian-vertex pairs evaluated at once (memory ~ 100 bytes each)


@dataclass
class GaussianVolume:
    """N Gaussians ready to evaluate: means (N, 3), whitening W = R S^-1 (N, 3, 3) (so that
    (x - mu)^T Sigma^-1 (x - mu) = |W^T (x - mu)|^2), peaks tau / (sqrt(2 pi) s_min) (N,),
    colours (N, D), reach (N, 3): the half-sides 3.33 sqrt(Sigma_jj) of the cut-off ellipsoid's
    axis-aligned box (a cube of half-side 3.33 s_max held 1.4x the Gaussian-vertex pairs of a
    trained toy sphere, and more for flatter splats)."""

    means: Tensor
    whitening: Tensor
    peaks: Tensor
    colors: Tensor
    reach: Tensor


def gaussian_volume(means: Tensor, quats: Tensor, scales: Tensor, opacities: Tensor, colors: Tensor,
                    dilation: float = 0.0) -> GaussianVolume:
    """The volume of Gaussians given as the rasteriser takes them (scales not log, opacities in
    [0, 1]), each widened by ``dilation``: scales sqrt(s^2 + dilation^2) along its own axes."""
    scales = torch.sqrt(scales * scales + dilation * dilation)
    tau = -torch.log1p(-opacities.clamp(max=ALPHA_MAX))
    peaks = tau / (math.sqrt(2.0 * math.pi) * scales.min(-1).values)
    rot = quat_to_rotmat(quats)
    # The ellipsoid x^T Sigma^-1 x <= k^2 spans +-k sqrt(Sigma_jj) along world axis j, Sigma_jj = sum_k R_jk^2 s_k^2.
    reach = EXTENT * torch.sqrt((rot * rot * (scales * scales)[..., None, :]).sum(-1))
    return GaussianVolume(means, rot / scales[..., None, :], peaks, colors, reach)


def _lattice_size(n: Tensor) -> Tensor:
    """n rounded up to 4-7 times a power of two (at most 25 % more), so boxes share a few sizes."""
    q = torch.pow(2, (torch.floor(torch.log2(n.clamp(min=1).double())) - 2).clamp(min=0)).long()
    return (n + q - 1) // q * q


@dataclass
class VolumeGrid:
    """sigma and sigma * colour at the (R + 1)^3 vertices of a grid over [-bound, bound]^3, index
    [x, y, z]; read by trilinear interpolation (zero density outside the box)."""

    values: Tensor  # (1 + D, R + 1, R + 1, R + 1): sigma, then sum_i sigma_i c_i
    bound: float

    @classmethod
    @torch.no_grad()
    def splat(cls, means: Tensor, quats: Tensor, scales: Tensor, opacities: Tensor, colors: Tensor, bound: float,
              resolution: int, dilation: float = 0.0) -> "VolumeGrid":
        """The grid of N Gaussians, widened by ``dilation`` and half the spacing (module docstring).

        Each Gaussian is evaluated on the lattice of vertices in its box of half-sides ``reach``;
        Gaussians whose boxes have the same (rounded) lattice size are evaluated together by
        broadcasting, and the values are scatter-added into the grid.
        """
        R, h = int(resolution), 2.0 * bound / int(resolution)
        V = gaussian_volume(means, quats, scales, opacities, colors, dilation=math.hypot(0.5 * h, dilation))
        D = colors.shape[-1]
        acc = means.new_zeros((R + 1) ** 3, 1 + D)
        lo = torch.ceil((V.means - V.reach + bound) / h).long()
        n = torch.floor((V.means + V.reach + bound) / h).long() - lo + 1  # vertices per axis of each box
        reaches = (n > 0).all(-1) & (lo + n > 0).all(-1) & (lo <= R).all(-1)
        sizes = _lattice_size(n)
        # Sigma^-1 = W W^T; on a box lattice the quadratic form separates by axis (d = x - mu):
        # m = [Qxx dx^2 + 2 Qxy dx dy + Qyy dy^2] + dz [2 (Qxz dx + Qyz dy)] + Qzz dz^2,
        # so the (Lx, Ly, Lz) lattice costs three broadcast operations instead of a 3x3 product
        # per vertex. Vertices off the grid get m = inf (nothing added).
        Q = V.whitening @ V.whitening.transpose(-1, -2)
        for size in torch.unique(sizes[reaches], dim=0):
            Lx, Ly, Lz = (int(L) for L in size)
            ids = (reaches & (sizes == size).all(-1)).nonzero().squeeze(-1)
            for g in ids.split(max(1, PAIRS_PER_PASS // (Lx * Ly * Lz))):
                axes = [lo[g, a, None] + torch.arange(L, device=means.device) for a, L in enumerate((Lx, Ly, Lz))]
                dx, dy, dz = (v.to(means.dtype) * h - bound - V.means[g, a, None] for a, v in enumerate(axes))
                off = [torch.where((v >= 0) & (v <= R), 0.0, math.inf).to(means.dtype) for v in axes]
                q = Q[g]
                dx, dy = dx[:, :, None], dy[:, None, :]
                a_xy = (q[:, 0, 0, None, None] * dx * dx + 2 * q[:, 0, 1, None, None] * dx * dy
                        + q[:, 1, 1, None, None] * dy * dy + off[0][:, :, None] + off[1][:, None, :])
                b_xy = 2 * (q[:, 0, 2, None, None] * dx + q[:, 1, 2, None, None] * dy)
                c_z = q[:, 2, 2, None] * dz * dz + off[2]
                m = torch.addcmul(a_xy[..., None] + c_z[:, None, None, :], b_xy[..., None], dz[:, None, None, :])
                inside = m <= EXTENT * EXTENT
                gi, ix, iy, iz = inside.nonzero(as_tuple=True)
                w = V.peaks[g][gi] * torch.exp(-0.5 * m[gi, ix, iy, iz])
                flat = (axes[0][gi, ix] * (R + 1) + axes[1][gi, iy]) * (R + 1) + axes[2][gi, iz]
                values = torch.cat([w[:, None], w[:, None] * V.colors[g][gi]], -1)
                acc.index_add_(0, flat, values)
        return cls(acc.T.reshape(1 + D, R + 1, R + 1, R + 1).contiguous(), float(bound))

    def sample(self, x: Tensor) -> Tensor:
        """Trilinear interpolation at points x (P, 3) -> (P, 1 + D)."""
        # grid_sample's last coordinate axis indexes the volume's first spatial axis (here x).
        coords = (x.to(self.values) / self.bound).flip(-1).reshape(1, -1, 1, 1, 3)
        out = F.grid_sample(self.values[None], coords, mode="bilinear", padding_mode="zeros", align_corners=True)
        return out.reshape(self.values.shape[0], -1).T

    def density(self, x: Tensor) -> Tensor:
        """sigma(x). (P, 3) -> (P,)."""
        return self.sample(x)[:, 0]

    def albedo(self, x: Tensor, eps: float = 1e-6) -> Tensor:
        """Density-weighted mean colour, grey where no Gaussian reaches. (P, 3) -> (P, D)."""
        s = self.sample(x)
        return (s[:, 1:] + eps * GREY) / (s[:, :1] + eps)
