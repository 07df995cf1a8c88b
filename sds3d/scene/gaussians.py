"""3D Gaussian splatting as a Scene (DreamGaussian / GaussianDreamer style): splats + background + densification.

Parameters (an ``nn.ParameterDict``, gsplat's names and activations): ``means`` (N, 3), ``scales``
(N, 3, log), ``quats`` (N, 4, wxyz, any norm), ``opacities`` (N, logits), ``sh0`` (N, 1, 3) and,
for SH degree > 0, ``shN`` (N, K - 1, 3): spherical-harmonics coefficients whose colour is
max(0, sum_k c_k Y_k(d) + 1/2), d from the camera to the mean (3DGS / gsplat). Each parameter is
one optimiser group of its own (gsplat's strategy resizes them), the positions with their own
exponential lr decay (3DGS's ``get_expon_lr_func``).

Rendering (``render.splat.rasterize_gaussians``: gsplat on CUDA, its PyTorch twin elsewhere) gives
what the NeRF renderer gives: for lambertian / textureless shading each Gaussian is shaded per view
with its camera-facing normal (the shortest axis, ``render.splat``), and the shaded colour and the
albedo are rasterised together as per-view colours; the background, a function of the ray
direction, is composited here as rgb + (1 - alpha) bg(d). There are no per-ray samples, so the
orientation loss' inputs are None (``scene.config`` refuses ``trainer.lambda_orient > 0``).

Densification (``scene.gaussians_density``) runs in the trainer's hooks, in gsplat's order:
``before_backward`` (retain the 2D means' gradient), ``after_optimizer_step`` (accumulate it, clone,
split, prune, reset). It replaces parameter objects in this module and in the optimiser's groups
together, so nothing else may hold them. ``state_dict`` carries the strategy's running sums;
``load_state_dict`` resizes the parameters in place (the optimiser keeps its references) before
loading, so a resume after densification continues exactly.

The field contract of export and evaluation (``density``, ``albedo``, ``bound``) is
``scene.gaussians_field``'s volume of the current Gaussians, on a grid.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from ..cameras import get_rays
from ..export.splat_ply import SH_C0, Splats
from ..fields.background import Background
from ..render import RenderConfig, light_directions, shade
from ..render.splat import EPS2D, camera_facing_normals, cameras_to_gsplat, rasterize_gaussians
from . import gaussians_field
from .base import Scene
from .config import GaussiansConfig
from .gaussians_density import BoundedStrategy, check_gaussian_budget, optimizer_views
from .gaussians_init import initial_gaussians, initial_points


def view_pixel_size(camera_cfg, resolution: int) -> float:
    """World size of one pixel at the look-at point of the mean training camera: 2 d tan(fov / 2) / res."""
    distance, fov = sum(camera_cfg.distance) / 2, sum(camera_cfg.fov_y_deg) / 2
    return 2.0 * distance * math.tan(math.radians(fov) / 2) / resolution


def spherical_harmonics(degree: int, dirs: Tensor, coeffs: Tensor) -> Tensor:
    """sum_k c_k Y_k(d / |d|) over the bands up to ``degree``. dirs (..., 3), coeffs (..., K, 3) -> (..., 3).

    gsplat's PyTorch implementation (the same real SH basis as its CUDA kernel and 3DGS).
    """
    from gsplat.cuda._torch_impl import _spherical_harmonics

    return _spherical_harmonics(degree, dirs, coeffs)


class GaussianScene(Scene):
    """N Gaussians (at most ``cfg.max_gaussians``) and a background, rendered by splatting."""

    def __init__(self, cfg: GaussiansConfig, background_cfg, render_cfg: RenderConfig, device: torch.device | str = "cpu",
                 seed: int = 0, view_pixel: float = 0.0, init_from: str = ""):
        """``view_pixel``: the world size of a training pixel at the object (``view_pixel_size``), by
        which the export volume is widened as the rasteriser widens footprints (``gaussians_field``);
        ``init_from``: the point cloud or mesh the Gaussians start from (``scene.init_from``)."""
        super().__init__()
        device = torch.device(device)
        self.cfg, self.render_cfg, self.bound = cfg, render_cfg, float(cfg.bound)
        self.view_pixel = float(view_pixel)
        points, colours = initial_points(cfg, init_from, seed=seed)
        init = initial_gaussians(points, colours, cfg.init_opacity)
        check_gaussian_budget(len(init), cfg.max_gaussians)
        params = {"means": init.means, "scales": init.scales.log(), "quats": init.quats,
                  "opacities": torch.logit(init.opacities), "sh0": ((init.colors - 0.5) / SH_C0)[:, None, :]}
        K = (cfg.sh_degree + 1) ** 2
        if K > 1:
            params["shN"] = torch.zeros(len(init), K - 1, 3)
        self.params = nn.ParameterDict({k: nn.Parameter(v.to(device)) for k, v in params.items()})
        self.background = Background(background_cfg).to(device)
        d = cfg.densify
        self.strategy = BoundedStrategy(prune_opa=d.prune_opa, grow_grad2d=d.grow_grad2d, grow_scale3d=d.grow_scale3d,
                                        prune_scale3d=d.prune_scale3d, refine_start_iter=d.refine_start_iter,
                                        refine_stop_iter=d.refine_stop_iter, reset_every=d.reset_every,
                                        refine_every=d.refine_every, max_gaussians=cfg.max_gaussians)
        self.strategy_state = self.strategy.initialize_state(scene_scale=d.scene_scale)
        self._info: dict | None = None  # the rasteriser's meta of the step being trained
        self._grid, self._grid_key = None, None

    def __len__(self) -> int:
        return self.params["means"].shape[0]

    # -- training ---------------------------------------------------------------------------

    def param_groups(self, trainer_cfg) -> list[dict]:
        c = self.cfg
        lrs = {"means": c.lr_means, "scales": c.lr_scales, "quats": c.lr_quats, "opacities": c.lr_opacities,
               "sh0": c.lr_sh0, "shN": c.lr_shN}
        groups = [{"params": [p], "lr": lrs[k], "name": k} for k, p in self.params.items()]
        # 3DGS's position decay: lr_means (lr_means_end / lr_means)^(step / steps), then constant.
        groups[0]["lr_schedule"] = {"kind": "exponential", "end_factor": c.lr_means_end / c.lr_means,
                                    "steps": c.lr_means_steps}
        bg_params = [p for p in self.background.parameters() if p.requires_grad]
        if bg_params:
            groups.append({"params": bg_params, "lr": trainer_cfg.lr_background, "name": "background"})
        return groups

    def before_backward(self, step: int, out: dict) -> None:
        self.strategy.step_pre_backward(self.params, {}, self.strategy_state, step, out["info"])
        self._info = out["info"]

    def after_optimizer_step(self, step: int, optimizer: torch.optim.Optimizer) -> None:
        info, self._info = self._info, None
        self.strategy.step_post_backward(self.params, optimizer_views(optimizer, self.params.keys()),
                                         self.strategy_state, step, info)

    def stats(self) -> dict[str, float]:
        return {"gaussians": float(len(self))}

    # -- rendering --------------------------------------------------------------------------

    def colours(self, viewmats: Tensor) -> Tensor:
        """Each Gaussian's colour, (N, 3) for SH degree 0, else per view (C, N, 3) (3DGS: max(0, SH + 1/2))."""
        sh0 = self.params["sh0"]
        if "shN" not in self.params:
            return (SH_C0 * sh0[:, 0] + 0.5).clamp(min=0.0)
        R, t = viewmats[:, :3, :3], viewmats[:, :3, 3:4]
        centres = -(R.transpose(1, 2) @ t).squeeze(-1)  # camera positions (C, 3)
        dirs = self.params["means"][None] - centres[:, None]
        coeffs = torch.cat([sh0, self.params["shN"]], dim=1)
        return (spherical_harmonics(self.cfg.sh_degree, dirs, coeffs.expand(len(viewmats), *coeffs.shape)) + 0.5).clamp(min=0.0)

    def render(self, cameras, shading: str = "albedo", light_dir: Tensor | None = None, resolution: int | None = None,
               generator: torch.Generator | None = None, stratified: bool = True, need_normals: bool | None = None,
               background=None, render_cfg: RenderConfig | None = None) -> dict[str, Tensor | None]:
        """B views (the NeRF scene's outputs and arguments; ``stratified`` and ``need_normals`` have no
        meaning for splats: normals always come with the render). Also ``info``: the rasteriser's meta."""
        cfg = self.render_cfg if render_cfg is None else render_cfg
        res = cfg.resolution if resolution is None else int(resolution)
        p = self.params
        means, quats, scales, opacities = p["means"], p["quats"], p["scales"].exp(), p["opacities"].sigmoid()
        viewmats, Ks = cameras_to_gsplat(cameras, res)
        C, N = len(cameras), len(self)
        albedo = self.colours(viewmats)
        if shading == "albedo":
            colors = albedo
        else:
            albedo = albedo.expand(C, N, 3)
            light = light_directions(cfg, cameras, generator) if light_dir is None else light_dir.to(means)
            light = torch.nn.functional.normalize(light.reshape(-1, 3), dim=-1).expand(C, 3)
            normals = camera_facing_normals(means, quats, scales, viewmats)
            shaded = shade(albedo, normals, light[:, None, :], shading, cfg.ambient, cfg.diffuse)
            colors = torch.cat([shaded, albedo], dim=-1)
        out = rasterize_gaussians(means, quats, scales, opacities, colors, viewmats, Ks, res, res, backend=self.cfg.backend)
        _, dirs = get_rays(cameras, res)
        bg = (self.background if background is None else background)(dirs).permute(0, 3, 1, 2)
        transmittance = 1.0 - out["alpha"]
        rgb = out["rgb"][:, :3] + transmittance * bg
        albedo_img = (out["rgb"][:, 3:] if shading != "albedo" else out["rgb"]) + transmittance * bg
        return {"rgb": rgb.clamp(0.0, 1.0), "albedo": albedo_img, "opacity": out["alpha"], "depth": out["depth"],
                "normal": out["normal"], "weights": None, "sample_normals": None, "ray_dirs": dirs.reshape(-1, 3),
                "ray_indices": None, "info": out["info"]}

    # -- the field contract of export and evaluation -----------------------------------------

    def grid(self) -> gaussians_field.VolumeGrid:
        """The current Gaussians' volume on a ``cfg.field_resolution`` grid (``gaussians_field``; albedo:
        the degree-0 colour), rebuilt when a parameter changed: an optimiser step bumps a tensor's
        version, densification replaces it."""
        key = tuple((id(p), p._version, tuple(p.shape)) for p in self.params.values())
        if self._grid_key != key:
            p = self.params
            rgb = (SH_C0 * p["sh0"][:, 0] + 0.5).clamp(0.0, 1.0)
            self._grid = gaussians_field.VolumeGrid.splat(p["means"], p["quats"], p["scales"].exp(), p["opacities"].sigmoid(),
                                                          rgb, self.bound, self.cfg.field_resolution,
                                                          dilation=math.sqrt(EPS2D) * self.view_pixel)
            self._grid_key = key
        return self._grid

    def density(self, x: Tensor) -> Tensor:
        return self.grid().density(x)

    def albedo(self, x: Tensor) -> Tensor:
        return self.grid().albedo(x).clamp(0.0, 1.0)

    @torch.no_grad()
    def splats(self) -> Splats:
        """The Gaussians as a splat viewer reads them (world frame), for ``export.splat_ply``."""
        p = {k: v.detach().double().cpu() for k, v in self.params.items()}
        quats = torch.nn.functional.normalize(p["quats"], dim=-1)
        return Splats(means=p["means"].numpy(), rgb=(SH_C0 * p["sh0"][:, 0] + 0.5).numpy(),
                      opacities=torch.sigmoid(p["opacities"]).numpy(), scales=p["scales"].exp().numpy(),
                      quats=quats.numpy(), sh_rest=p["shN"].numpy() if "shN" in p else None)

    # -- resume -----------------------------------------------------------------------------

    def get_extra_state(self) -> dict:
        s = self.strategy_state
        return {k: None if s[k] is None else s[k].clone() for k in ("grad2d", "count")}

    def set_extra_state(self, state: dict) -> None:
        self.strategy_state.update(state)

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        """nn.Module's, after resizing each parameter in place to the checkpoint's Gaussian count."""
        for k, p in self.params.items():
            shape = state_dict[f"params.{k}"].shape
            if p.shape != shape:
                p.data = p.data.new_empty(shape)
        return super().load_state_dict(state_dict, strict=strict, assign=assign)

