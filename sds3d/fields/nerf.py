"""The NeRF field of DreamFusion: hash-grid encoding -> small MLP -> density (with a blob bias) and albedo.

Positions are world coordinates in the scene box [-bound, bound]^3 (+z up); the encoding sees
them rescaled to [0, 1]^3. One MLP trunk gives 4 outputs (raw density, 3 albedo logits), so a
single encoding pass serves density, albedo and finite-difference normals together
(``forward_with_normals``), the renderer's hot path.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from ..errors import UserError
from .encoding import HashGridConfig, HashGridEncoding, check_encoding_config

DENSITY_ACTIVATIONS = ("softplus", "exp", "volsdf")
DENSITY_BIASES = ("none", "blob_dreamfusion", "blob_magic3d", "sphere_sdf")
NORMAL_MODES = ("finite_difference", "analytic")
FINITE_DIFFERENCE_SCHEMES = ("forward", "central")


class FieldConfigError(UserError):
    """A field setting is invalid (the message names the key and the allowed values)."""


@dataclass
class FieldConfig:
    """NeRF field settings (names follow threestudio's ``implicit-volume``).

    density_bias (added to the raw density before the activation, x in world units):
    blob_dreamfusion: scale * exp(-|x|^2 / (2 std^2)) (DreamFusion App. A.4);
    blob_magic3d: scale * (1 - |x| / std) (Magic3D / threestudio default); none: 0.
    normals: finite_difference (``finite_difference_scheme`` forward: 3 extra density
    evaluations, central: 6) or analytic (autograd, double backward through the encoding).
    """

    bound: float = 1.0
    # Stable-Diffusion-sized default (threestudio: 16 levels x 2 features, 2^19 table, base 16).
    encoding: HashGridConfig = field(
        default_factory=lambda: HashGridConfig(
            n_levels=16, n_features_per_level=2, log2_hashmap_size=19, base_resolution=16, max_resolution=2048
        )
    )
    hidden_dim: int = 64
    n_hidden_layers: int = 1
    density_activation: str = "softplus"
    density_bias: str = "blob_magic3d"
    density_blob_scale: float = 10.0
    density_blob_std: float = 0.5
    # volsdf: output 0 is a negative signed distance -d, sigma = Psi_beta(-d) / beta (VolSDF Eq. 2-3);
    # sphere_sdf starts from the sphere |x| = sdf_init_radius. With sdf_beta_end, beta goes
    # geometrically from sdf_beta to sdf_beta_end over training (soft early, so topology can change;
    # sharp late, so edges and faces are crisp).
    sdf_beta: float = 0.02
    sdf_beta_end: float | None = None
    sdf_init_radius: float = 0.5
    normals: str = "finite_difference"
    finite_difference_eps: float = 1e-2
    finite_difference_scheme: str = "forward"


def check_field_config(cfg: FieldConfig) -> None:
    """Raise FieldConfigError naming the first invalid setting of ``cfg``."""
    choices = [
        ("density_activation", DENSITY_ACTIVATIONS),
        ("density_bias", DENSITY_BIASES),
        ("normals", NORMAL_MODES),
        ("finite_difference_scheme", FINITE_DIFFERENCE_SCHEMES),
    ]
    for name, allowed in choices:
        if getattr(cfg, name) not in allowed:
            raise FieldConfigError(f"field.{name}={getattr(cfg, name)!r} is unknown; use one of {', '.join(allowed)}")
    if cfg.bound <= 0:
        raise FieldConfigError(f"field.bound={cfg.bound} must be positive (the scene box is [-bound, bound]^3)")
    if cfg.hidden_dim < 1 or cfg.n_hidden_layers < 0:
        raise FieldConfigError("field.hidden_dim must be >= 1 and field.n_hidden_layers >= 0")
    sdf_bias, sdf_density = cfg.density_bias == "sphere_sdf", cfg.density_activation == "volsdf"
    if sdf_bias and not sdf_density:
        raise FieldConfigError("field.density_bias=sphere_sdf is a signed-distance init; use it with field.density_activation=volsdf")
    if sdf_density and cfg.density_bias not in ("sphere_sdf", "none"):
        raise FieldConfigError("field.density_activation=volsdf reads output 0 as a signed distance; use field.density_bias=sphere_sdf (or none)")
    if cfg.sdf_beta <= 0 or cfg.sdf_init_radius <= 0 or (cfg.sdf_beta_end is not None and cfg.sdf_beta_end <= 0):
        raise FieldConfigError("field.sdf_beta, field.sdf_beta_end and field.sdf_init_radius must be positive (e.g. 0.02 and 0.5)")
    if cfg.density_blob_std <= 0:
        raise FieldConfigError(f"field.density_blob_std={cfg.density_blob_std} must be positive (e.g. 0.5)")
    if cfg.finite_difference_eps <= 0:
        raise FieldConfigError(f"field.finite_difference_eps={cfg.finite_difference_eps} must be positive (e.g. 1e-2)")
    check_encoding_config(cfg.encoding)


class _TruncExp(torch.autograd.Function):
    # Hand-written: none of our libraries ships it (torch-ngp / threestudio define it the same way).
    """exp(x) whose gradient uses exp(min(x, 15)), so large densities cannot blow up the gradient."""

    @staticmethod
    def forward(ctx, x: Tensor) -> Tensor:
        ctx.save_for_backward(x)
        return torch.exp(x)

    @staticmethod
    def backward(ctx, grad: Tensor) -> Tensor:
        (x,) = ctx.saved_tensors
        return grad * torch.exp(x.clamp(max=15.0))


def trunc_exp(x: Tensor) -> Tensor:
    """Truncated-gradient exponential (Instant-NGP density activation)."""
    return _TruncExp.apply(x)


def volsdf_density(neg_sdf: Tensor, beta: float | Tensor) -> Tensor:
    """sigma = alpha * Psi_beta(-d) with alpha = 1 / beta, Psi_beta the Laplace CDF (VolSDF Eq. 2-3)."""
    # 0.5 exp(s / beta) for s <= 0, 1 - 0.5 exp(-s / beta) for s > 0. Each exp sees s cut at 0 so
    # the unused branch stays finite (torch.where would still backpropagate its inf * 0 = nan). The
    # cut is a torch.where, not a clamp: where's gradient goes to the branch it selects, so at s = 0
    # it is the inner branch's, the Laplace density 1 / (2 beta), whereas clamp's gradient at its
    # bound is a convention that changed between torch releases (2.13: 1, 2.14: 0). s > 0 tests
    # false for nan, which therefore stays nan.
    positive = neg_sdf > 0
    inside = 0.5 * torch.exp(torch.where(positive, 0.0, neg_sdf) / beta)
    outside = 1.0 - 0.5 * torch.exp(-torch.where(positive, neg_sdf, 0.0) / beta)
    return torch.where(positive, outside, inside) / beta


def density_blob(x: Tensor, kind: str, scale: float, std: float, radius: float = 0.5) -> Tensor:
    """Density bias that starts optimisation from a blob at the origin (DreamFusion App. A.4; Magic3D).

    Args:
        x: world positions. Shape: (N, 3).

    Returns:
        Bias added to the raw density. Shape: (N,).
    """
    if kind == "blob_dreamfusion":
        return scale * torch.exp(-0.5 * (x * x).sum(-1) / std**2)
    if kind == "blob_magic3d":
        return scale * (1.0 - x.norm(dim=-1) / std)
    if kind == "sphere_sdf":  # -d of the sphere of the given radius
        return radius - x.norm(dim=-1)
    return torch.zeros_like(x[:, 0])


def mesh_sdf_at(grid: Tensor, x: Tensor, bound: float) -> Tensor:
    """Trilinear interpolation of a signed distance sampled at the vertices of a regular grid over
    ``[-bound, bound]^3`` (``scene.mesh_init.mesh_sdf_grid``, index [x, y, z]); the box's faces' values
    beyond it. Differentiable in ``x``. (N, 3) -> (N,)."""
    # grid_sample's last axis (x, y, z) indexes the input's (W, H, D), i.e. our (z, y, x).
    coords = (x / bound).flip(-1).reshape(1, -1, 1, 1, 3).to(grid.dtype)
    return nn.functional.grid_sample(grid[None, None], coords, mode="bilinear", padding_mode="border",
                                     align_corners=True).reshape(-1).to(x.dtype)


def mesh_density_bias(sdf: Tensor, activation: str, scale: float, beta: float) -> Tensor:
    """The density bias of ``scene.init_from`` in place of the blob: a step of height ``scale`` at the mesh.

    ``scale tanh(-d / beta)``: +scale inside (the blob's peak), -scale outside (empty), 0 on the mesh,
    over a width of a few ``beta`` (``field.sdf_beta``, the edge width of a VolSDF field). Unlike the
    blob's slow ramp ``scale (1 - |x| / std)``, whose opacity reaches 10% only ~0.03 inside a thin
    shape, the first render shows the mesh. A VolSDF field (``density_activation=volsdf``, whose
    output 0 is -d) starts from ``-d`` itself, as ``sphere_sdf`` starts from a sphere's. (N,) -> (N,).
    """
    if activation == "volsdf":
        return -sdf
    return scale * torch.tanh(-sdf / beta)


class NeRFField(nn.Module):
    """Density and albedo of a bounded scene. All inputs are world positions (N, 3)."""

    def __init__(self, cfg: FieldConfig):
        super().__init__()
        check_field_config(cfg)
        self.cfg = cfg
        self.bound = float(cfg.bound)
        if cfg.density_activation == "volsdf":
            # The current beta is state (annealed by ``update_step``), so a checkpoint restores it.
            self.register_buffer("beta", torch.tensor(float(cfg.sdf_beta)))
        self.encoding = HashGridEncoding(cfg.encoding)
        layers: list[nn.Module] = []
        width = self.encoding.n_output_dims
        for _ in range(cfg.n_hidden_layers):
            layers += [nn.Linear(width, cfg.hidden_dim), nn.ReLU(inplace=True)]
            width = cfg.hidden_dim
        # Output 0: raw density; outputs 1..3: albedo logits (one shared trunk, one encoding pass).
        layers.append(nn.Linear(width, 4))
        self.mlp = nn.Sequential(*layers)
        # A mesh's signed distance (``set_mesh_sdf``); None: the density blob of ``cfg.density_bias``.
        self.register_buffer("mesh_sdf", None)
        self.frozen_beta: float | None = None  # set: the density is the mesh's alone (``set_mesh_sdf``)

    def set_mesh_sdf(self, sdf: Tensor, frozen_beta: float | None = None) -> None:
        """Start the density from a mesh (``sdf``: (R, R, R) over the box, ``mesh_sdf_at``) in place of
        the blob; with ``frozen_beta``, the density is the mesh's, sigma = Psi_beta(-d) / beta (VolSDF
        Eq. 2-3), and the MLP's density output is unused (only the albedo trains)."""
        self.mesh_sdf = sdf.to(next(self.parameters()).device, torch.float32)
        self.frozen_beta = None if frozen_beta is None else float(frozen_beta)

    # -- building blocks ---------------------------------------------------------------------
    def _raw(self, x: Tensor) -> Tensor:
        """Pre-activation outputs (raw density incl. blob, albedo logits). (N, 3) -> (N, 4)."""
        h = self.mlp(self.encoding((x / self.bound + 1.0) * 0.5))
        c = self.cfg
        if self.mesh_sdf is None:
            bias = density_blob(x, c.density_bias, c.density_blob_scale, c.density_blob_std, c.sdf_init_radius)
        else:
            sdf = mesh_sdf_at(self.mesh_sdf, x, self.bound)
            if self.frozen_beta is not None:
                return torch.cat([-sdf[:, None], h[:, 1:]], dim=-1)
            bias = mesh_density_bias(sdf, c.density_activation, c.density_blob_scale, c.sdf_beta)
        return torch.cat([h[:, :1] + bias[:, None], h[:, 1:]], dim=-1)

    def _activate_density(self, raw: Tensor) -> Tensor:
        if self.frozen_beta is not None:
            return volsdf_density(raw, self.frozen_beta)
        if self.cfg.density_activation == "volsdf":
            return volsdf_density(raw, self.beta)
        return trunc_exp(raw) if self.cfg.density_activation == "exp" else nn.functional.softplus(raw)

    def _fd_offsets(self, x: Tensor) -> Tensor:
        """Finite-difference offsets, (K, 3): +eps e_k (forward) or +-eps e_k interleaved (central)."""
        eye = torch.eye(3, dtype=x.dtype, device=x.device) * self.cfg.finite_difference_eps
        if self.cfg.finite_difference_scheme == "forward":
            return eye
        return torch.stack([eye, -eye], dim=1).reshape(6, 3)

    def _fd_normals(self, raw_x: Tensor | None, raw_offsets: Tensor) -> Tensor:
        """Normals from raw densities at the offsets ((K, N)) and at x ((N,), forward scheme only)."""
        eps = self.cfg.finite_difference_eps
        if self.cfg.finite_difference_scheme == "forward":
            grad = (raw_offsets - raw_x[None]) / eps  # (3, N)
        else:
            grad = (raw_offsets[0::2] - raw_offsets[1::2]) / (2.0 * eps)
        # The activation is monotone, so grad(raw) has the direction of grad(sigma) and is
        # better conditioned where softplus saturates.
        return nn.functional.normalize(-grad.T, dim=-1)

    # -- public API --------------------------------------------------------------------------
    def update_step(self, step: int, max_steps: int) -> None:
        """Per-step schedules (the trainer calls it before each step): the VolSDF beta anneal."""
        c = self.cfg
        if c.density_activation == "volsdf" and c.sdf_beta_end is not None:
            p = min(max(step / max(1, max_steps), 0.0), 1.0)
            self.beta.fill_(c.sdf_beta * (c.sdf_beta_end / c.sdf_beta) ** p)

    @property
    def surface_density(self) -> float | None:
        """The density on the field's own surface (an SDF's zero level: 1 / (2 beta)), else None."""
        if self.frozen_beta is not None:
            return 0.5 / self.frozen_beta
        return 0.5 / float(self.beta) if self.cfg.density_activation == "volsdf" else None

    def density(self, x: Tensor) -> Tensor:
        """Volume density sigma >= 0, blob included. (N, 3) -> (N,)."""
        return self._activate_density(self._raw(x)[:, 0])

    def albedo(self, x: Tensor) -> Tensor:
        """Albedo in [0, 1]. (N, 3) -> (N, 3)."""
        return torch.sigmoid(self._raw(x)[:, 1:])

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Density (N,) and albedo (N, 3) from one encoding pass."""
        raw = self._raw(x)
        return self._activate_density(raw[:, 0]), torch.sigmoid(raw[:, 1:])

    def normals(self, x: Tensor) -> Tensor:
        """Unit outward normals -grad(sigma)/|grad(sigma)|, differentiable. (N, 3) -> (N, 3)."""
        return self.forward_with_normals(x)[2]

    def forward_with_normals(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Density (N,), albedo (N, 3) and unit normals (N, 3).

        Finite differences batch x and its K offsets into one encoding + MLP pass.
        """
        N = x.shape[0]
        if self.cfg.normals == "analytic":
            with torch.enable_grad():
                xg = x if x.requires_grad else x.detach().requires_grad_(True)
                raw = self._raw(xg)
                (grad,) = torch.autograd.grad(raw[:, 0].sum(), xg, create_graph=torch.is_grad_enabled())
            if not torch.is_grad_enabled():
                raw, grad = raw.detach(), grad.detach()
            normals = nn.functional.normalize(-grad, dim=-1)
        else:
            offsets = self._fd_offsets(x)  # (K, 3)
            points = torch.cat([x, (x[None] + offsets[:, None]).reshape(-1, 3)], dim=0)
            raw_all = self._raw(points)
            raw = raw_all[:N]
            raw_offsets = raw_all[N:, 0].reshape(offsets.shape[0], N)
            normals = self._fd_normals(raw[:, 0], raw_offsets)
        return self._activate_density(raw[:, 0]), torch.sigmoid(raw[:, 1:]), normals
