"""Which 3D representation a run optimises (``scene.kind``), what it starts from, and the Gaussians' settings."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..errors import UserError

SCENE_KINDS = ("nerf", "gaussians")
SPLAT_BACKENDS = ("auto", "gsplat", "torch")
UP_AXES = ("y", "z")

#: Config keys (and key prefixes) only the NeRF reads: its field and its learning rate, and the ray
#: sampler of the volume renderer. Both read the render resolution, shading and light.
NERF_ONLY_KEYS = ("field", "trainer.lr", "render.num_samples", "render.ray_bounds", "render.need_normals",
                  "render.normal_weight_threshold", "render.backend", "render.chunk_size", "render.nerfacc",
                  "scene.init_scale", "scene.init_resolution", "scene.freeze_geometry", "scene.freeze_beta")
#: Config keys only the Gaussians read.
GAUSSIAN_ONLY_KEYS = ("scene.gaussians",)


class SceneConfigError(UserError):
    """A scene setting is invalid (the message names the key and the allowed values)."""


@dataclass
class DensifyConfig:
    """Densify and prune (gsplat's ``DefaultStrategy``, its names; ``scene.gaussians_density``).

    Every ``refine_every`` steps after ``refine_start_iter`` (until ``refine_stop_iter``), a
    Gaussian whose mean view-space gradient (NDC units) exceeds ``grow_grad2d`` is cloned if its
    largest scale is <= ``grow_scale3d * scene_scale``, else split in two; Gaussians with opacity
    below ``prune_opa`` (and, after the first reset, larger than ``prune_scale3d * scene_scale``)
    are removed; every ``reset_every`` steps the opacities are clamped to ``2 prune_opa``.

    Defaults are DreamGaussian's text-to-3D stage (Tang et al. 2024, ``configs/text.yaml`` and
    ``main.py``: ``densify_and_prune(densify_grad_threshold=0.01, min_opacity=0.01, extent=4)``
    every 50 steps, ``percent_dense`` 0.01, opacity reset every 700 steps): clone/split at
    0.01 x 4 = 0.04, prune above 0.1 x 4 = 0.4 world units.
    """

    refine_start_iter: int = 0
    refine_stop_iter: int = 3000
    refine_every: int = 50
    reset_every: int = 700
    grow_grad2d: float = 0.01
    grow_scale3d: float = 0.01
    prune_opa: float = 0.01
    prune_scale3d: float = 0.1
    scene_scale: float = 4.0


@dataclass
class GaussiansConfig:
    """3D Gaussians (``scene.kind=gaussians``; ``scene.gaussians``).

    Initial set: ``n_init`` points uniform in the ball of ``init_radius`` (DreamGaussian), or the
    points of ``scene.init_from`` (a ``.ply`` point cloud, or ``n_init`` samples of an ``.obj``/``.ply``
    mesh's surface), whose up axis is ``init_up_axis`` (``y`` for files sds3d wrote with
    ``export.up_axis=y``); opacity ``init_opacity``, grey unless the file has colours.
    ``max_gaussians`` bounds densification. ``sh_degree``: 0 is a view-independent colour (the
    SDS default: a prior's views must agree on an albedo); 1-3 add spherical harmonics.

    Learning rates (Adam, one group each; DreamGaussian's ``configs/text.yaml``): positions decay
    exponentially from ``lr_means`` to ``lr_means_end`` over ``lr_means_steps`` steps (0: the whole
    run), as 3DGS's ``get_expon_lr_func`` (position_lr_init 0.001 and final 2e-5 times
    DreamGaussian's spatial_lr_scale 10 for the random ball, over 300 of its 500 steps);
    ``lr_sh0`` (feature_lr) and ``lr_shN`` (feature_lr / 20) train the SH coefficients,
    ``lr_opacities`` the logits, ``lr_scales`` the log scales, ``lr_quats`` the quaternions.
    ``bound``: the box [-bound, bound]^3 of mesh export, where the Gaussians' density is read
    from a grid of ``field_resolution`` cells per axis (``scene.gaussians_field``). ``backend``:
    the rasteriser (``render.splat``): auto (gsplat on CUDA, its PyTorch twin elsewhere), gsplat
    or torch.
    """

    n_init: int = 1000
    init_radius: float = 0.5
    init_up_axis: str = "z"
    init_opacity: float = 0.1
    max_gaussians: int = 20000
    sh_degree: int = 0
    bound: float = 1.0
    field_resolution: int = 128
    backend: str = "auto"
    lr_means: float = 0.01
    lr_means_end: float = 0.0002
    lr_means_steps: int = 0
    lr_scales: float = 0.005
    lr_quats: float = 0.005
    lr_opacities: float = 0.05
    lr_sh0: float = 0.01
    lr_shN: float = 0.0005
    densify: DensifyConfig = field(default_factory=DensifyConfig)


@dataclass
class SceneConfig:
    """kind: nerf (DreamFusion's NeRF: ``field:`` + ``background:`` + the ``render:`` sampler) or
    gaussians (3D Gaussian splatting: ``scene.gaussians`` + ``background:``).

    init_from: a file the scene starts from. NeRF: a mesh whose shape the density starts from, in
        place of the field's density blob (``scene.mesh_init``; threestudio's ``shape_init: mesh:PATH``);
        Gaussians: a ``.ply`` point cloud or a mesh whose surface samples seed them
        (``scene.gaussians_init``). "" starts from the blob / the random ball.

    init_scale: 0 keeps the mesh's size and position (e.g. a mesh sds3d exported); > 0 centres it and
        scales its largest |coordinate| to this (threestudio's ``shape_init_params``).
    init_resolution: samples per axis of the mesh's signed-distance grid over the scene box.
    freeze_geometry: with init_from, the density is the mesh's and is not trained: SDS distils only
        the colours, and the export keeps the mesh's triangles and bakes their texture.
    freeze_beta: the frozen density's edge width, VolSDF's beta (sigma = Psi_beta(-d) / beta): its
        tail outside the mesh widens the rendered silhouette, so it is sharp (the silhouettes of a
        0.7 x 0.5 x 0.36 box match the file's with IoU 0.94-0.95 at 0.005, 0.81 at 0.02).
    """

    kind: str = "nerf"
    init_from: str = ""
    init_scale: float = 0.0
    init_resolution: int = 96
    freeze_geometry: bool = False
    freeze_beta: float = 0.005
    gaussians: GaussiansConfig = field(default_factory=GaussiansConfig)


def check_scene_config(cfg: SceneConfig) -> None:
    """Raise SceneConfigError naming the first invalid setting of ``cfg`` (values only, no files)."""

    def fail(msg: str) -> None:
        raise SceneConfigError(msg)

    if cfg.kind not in SCENE_KINDS:
        fail(f"scene.kind={cfg.kind!r} is unknown; use one of {', '.join(SCENE_KINDS)}")
    if cfg.init_from and not Path(cfg.init_from).expanduser().is_file():
        fail(f"scene.init_from={cfg.init_from!r}: no such file; give a mesh (.obj, .glb, .ply, .stl) or, for Gaussians, "
             "a .ply point cloud")
    if cfg.freeze_geometry and not cfg.init_from:
        fail("scene.freeze_geometry=true keeps a given mesh's shape; name the mesh with scene.init_from=PATH")
    if cfg.init_scale < 0:
        fail(f"scene.init_scale={cfg.init_scale} must be >= 0 (0 keeps the mesh's size, e.g. 0.7 fits it)")
    if cfg.freeze_beta <= 0:
        fail(f"scene.freeze_beta={cfg.freeze_beta} must be positive (e.g. 0.005)")
    if cfg.init_resolution < 8:
        fail(f"scene.init_resolution={cfg.init_resolution} is too coarse; use at least 8 (default 96)")
    if cfg.kind == "gaussians" and cfg.freeze_geometry:
        fail("scene.freeze_geometry=true keeps a mesh's shape in a NeRF; it does not apply to scene.kind=gaussians")
    g, d = cfg.gaussians, cfg.gaussians.densify
    for key in ("n_init", "max_gaussians"):
        if getattr(g, key) < 1:
            fail(f"scene.gaussians.{key}={getattr(g, key)} must be a positive count (e.g. 1000)")
    if g.field_resolution < 8:
        fail(f"scene.gaussians.field_resolution={g.field_resolution} is too coarse; use at least 8 (default 128)")
    for key in ("init_radius", "bound", "lr_means", "lr_means_end", "lr_scales", "lr_quats", "lr_opacities", "lr_sh0", "lr_shN"):
        if not getattr(g, key) > 0:
            fail(f"scene.gaussians.{key}={getattr(g, key)} must be positive")
    if not 0 < g.init_opacity < 1:
        fail(f"scene.gaussians.init_opacity={g.init_opacity} must be within (0, 1), e.g. 0.1")
    if g.lr_means_steps < 0:
        fail(f"scene.gaussians.lr_means_steps={g.lr_means_steps} must be >= 0 (0: the whole run)")
    if g.sh_degree not in (0, 1, 2, 3):
        fail(f"scene.gaussians.sh_degree={g.sh_degree}; use 0 (no view dependence), 1, 2 or 3")
    if g.backend not in SPLAT_BACKENDS:
        fail(f"scene.gaussians.backend={g.backend!r} is unknown; use one of {', '.join(SPLAT_BACKENDS)}")
    if g.init_up_axis not in UP_AXES:
        fail(f"scene.gaussians.init_up_axis={g.init_up_axis!r}; use y (files sds3d wrote) or z (the world frame)")
    for key in ("refine_start_iter", "refine_stop_iter"):
        if getattr(d, key) < 0:
            fail(f"scene.gaussians.densify.{key}={getattr(d, key)} must be a step >= 0")
    for key in ("refine_every", "reset_every"):
        if getattr(d, key) < 1:
            fail(f"scene.gaussians.densify.{key}={getattr(d, key)} must be a positive number of steps")
    for key in ("grow_grad2d", "grow_scale3d", "prune_scale3d", "scene_scale"):
        if not getattr(d, key) > 0:
            fail(f"scene.gaussians.densify.{key}={getattr(d, key)} must be positive")
    if not 0 <= d.prune_opa < 1:
        fail(f"scene.gaussians.densify.prune_opa={d.prune_opa} must be within [0, 1), e.g. 0.01")


def check_scene_inputs(cfg: SceneConfig) -> None:
    """Read what a new run's scene starts from and check it fits; make ``init_from`` absolute.

    For ``scene.kind=gaussians``: ``init_from`` must be a readable point cloud or mesh with finite
    points, and the initial count (``n_init``, or the cloud's points) at most ``max_gaussians``.
    The absolute path is what the run folder's config.yaml records, so ``--resume``, ``export``
    and ``eval`` find the file from any working directory.

    Raises:
        GaussianInitError, DensifyConfigError (both UserErrors, one line).
    """
    if cfg.kind != "gaussians":
        return
    from .gaussians_density import check_gaussian_budget
    from .gaussians_init import initial_points

    g = cfg.gaussians
    if cfg.init_from:
        cfg.init_from = str(Path(cfg.init_from).expanduser().resolve())
    points, _ = initial_points(g, cfg.init_from)
    check_gaussian_budget(len(points), g.max_gaussians)


def foreign_keys(kind: str) -> tuple[str, ...]:
    """The config keys (and key prefixes) only the other scene kind reads."""
    return NERF_ONLY_KEYS if kind == "gaussians" else GAUSSIAN_ONLY_KEYS


def check_scene_run(cfg, explicit_keys=()) -> None:
    """The scene kind against the rest of a run's config (``cfg``: a RunConfig).

    ``explicit_keys``: the dotted keys the user set (config file and overrides, not the file's
    ``defaults``); a key only the other kind reads is a mistake, not a default to ignore.
    """
    kind, foreign = cfg.scene.kind, foreign_keys(cfg.scene.kind)
    for key in sorted(explicit_keys):
        owner = next((f for f in foreign if key == f or key.startswith(f + ".")), None)
        if owner is not None:
            other = "nerf" if kind == "gaussians" else "gaussians"
            raise SceneConfigError(f"{key} is a setting of scene.kind={other}, and this run has scene.kind={kind}; "
                                   f"remove it (or set scene.kind={other})")
    if kind == "gaussians" and cfg.trainer.lambda_orient > 0:
        # The orientation loss penalises normals facing away from the camera; a Gaussian's normal is
        # its shortest axis turned towards each camera (render.splat), so the loss is zero by
        # construction and its weight would silently do nothing.
        raise SceneConfigError(f"trainer.lambda_orient={cfg.trainer.lambda_orient}: the orientation loss does not apply "
                               "to Gaussians (their normals face the camera by construction); set trainer.lambda_orient=0")
    if kind != "gaussians" and "splat_ply" in cfg.export.formats:
        raise SceneConfigError("export.formats includes splat_ply, the 3D Gaussian .ply; it needs scene.kind=gaussians "
                               "(drop it for a NeRF)")
