"""The NeRF scene of DreamFusion: a density/albedo field, a background and a ray sampler.

The field (``fields.nerf``) and background (``fields.background``) are the trainable parts; the
sampler (``render.samplers``: stratified on the CPU, nerfacc's occupancy grid on CUDA) carries
the sampling state that ``update_step`` refreshes. All three are submodules, so
``state_dict`` holds everything a resume needs.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..fields.background import Background
from ..fields.nerf import NeRFField
from ..render import RenderConfig, build_sampler, render
from .base import Scene


class NeRFScene(Scene):
    """Field + background + sampler, rendered by the one volume renderer (``render.render``)."""

    def __init__(self, field_cfg, background_cfg, render_cfg: RenderConfig, device: torch.device | str = "cpu",
                 init_sdf: Tensor | None = None, frozen_beta: float | None = None):
        """``init_sdf``: a mesh's signed-distance grid (``mesh_init.mesh_sdf_grid``) the density starts from
        in place of the blob; with ``frozen_beta`` the density stays the mesh's (``NeRFField.set_mesh_sdf``)."""
        super().__init__()
        device = torch.device(device)
        self.field = NeRFField(field_cfg).to(device)
        if init_sdf is not None:
            self.field.set_mesh_sdf(init_sdf, frozen_beta)
        self.background = Background(background_cfg).to(device)
        self.sampler = build_sampler(render_cfg, self.field.bound, device).to(device)
        self.render_cfg = render_cfg
        self.bound = self.field.bound

    def param_groups(self, trainer_cfg) -> list[dict]:
        groups = [{"params": list(self.field.parameters()), "lr": trainer_cfg.lr, "name": "field"}]
        bg_params = [p for p in self.background.parameters() if p.requires_grad]
        if bg_params:
            groups.append({"params": bg_params, "lr": trainer_cfg.lr_background, "name": "background"})
        return groups

    def update_step(self, step: int, max_steps: int) -> None:
        self.field.update_step(step, max_steps)  # VolSDF beta
        self.sampler.update(step, self.field.density)  # occupancy grid (stateless samplers: nothing)

    def render(self, cameras, shading: str = "albedo", light_dir: Tensor | None = None, resolution: int | None = None,
               generator: torch.Generator | None = None, stratified: bool = True, need_normals: bool | None = None,
               background=None, render_cfg: RenderConfig | None = None) -> dict[str, Tensor | None]:
        """``render.render`` of this scene; ``background`` and ``render_cfg`` override the scene's (eval views)."""
        return render(self.field, self.background if background is None else background, cameras,
                      self.render_cfg if render_cfg is None else render_cfg, shading=shading, light_dir=light_dir,
                      resolution=resolution, generator=generator, stratified=stratified, need_normals=need_normals,
                      sampler=self.sampler)

    def density(self, x: Tensor) -> Tensor:
        return self.field.density(x)

    def albedo(self, x: Tensor) -> Tensor:
        return self.field.albedo(x)

    @property
    def surface_density(self) -> float | None:
        return self.field.surface_density

