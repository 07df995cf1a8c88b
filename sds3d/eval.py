"""Metrics of a run for toy-world prompts ("a {colour} {shape}"): shape IoU, colour error, recognition;
for toy world v2's faced objects and compositions, v2's mesh metrics (``evaluate_run_v2``).

Everything is compared in the world frame (+z up) against the analytic ground truth of
``sds3d.toyworld``. ``evaluate_run`` measures what it is given (the run's config, its exported
mesh and its scene) and returns the metrics; it writes nothing (``sds3d.pipeline`` records them
in summary.json).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import trimesh
from torch import Tensor

from .errors import UserError
from .toyworld import world
from .toyworld.judge import judge
from .toyworld.meshes import grid_centres, mesh_colour_at, mesh_occupancy
from .toyworld.prompts import parse_prompt
from .toyworld.shapes import bounding_radius, occupancy
from .toyworld.v2.prompts import parse_prompt as parse_v2_prompt

#: Yaw period of each shape kind about +z (0: rotationally symmetric, no search needed).
YAW_PERIOD_DEG = {"sphere": 0.0, "capped_cone": 0.0, "rounded_box": 90.0, "torus": 360.0}


class EvalError(UserError):
    """A run that cannot be evaluated (the message says why and what to do)."""


@dataclass
class EvalConfig:
    """Toy-world metrics after a run (toy prompts with a toy prior only).

    enabled: compute them; iou_resolution: voxels per axis of the IoU grid over [-1, 1]^3 (see
    ``mesh_iou``); yaw_step_deg: step of the yaw search of the ground truth.
    """

    enabled: bool = True
    iou_resolution: int = 160
    yaw_step_deg: float = 5.0


def check_eval_config(cfg: EvalConfig) -> None:
    """Raise EvalError naming the first invalid setting of ``cfg``."""
    if cfg.iou_resolution < 8:
        raise EvalError(f"eval.iou_resolution={cfg.iou_resolution} is too coarse; use at least 8 (default 160)")
    if cfg.yaw_step_deg <= 0:
        raise EvalError(f"eval.yaw_step_deg={cfg.yaw_step_deg} must be positive (e.g. 5)")


def grid_points(resolution: int, bound: float = 1.0) -> Tensor:
    """Voxel centres of the ``resolution^3`` evaluation grid over [-bound, bound]^3, ij order. Shape: (R^3, 3)."""
    c = torch.from_numpy(grid_centres(resolution, bound)).float()
    return torch.stack(torch.meshgrid(c, c, c, indexing="ij"), dim=-1).reshape(-1, 3)


def _rotate_z(p: Tensor, deg: float) -> Tensor:
    a = math.radians(deg)
    ca, sa = math.cos(a), math.sin(a)
    R = p.new_tensor([[ca, -sa, 0.0], [sa, ca, 0.0], [0.0, 0.0, 1.0]])
    return p @ R  # row vectors: p @ R = (R^T p^T)^T, i.e. rotation by -deg


def _iou_at_yaws(pred: Tensor, shape: str, resolution: int, yaws) -> tuple[float, float]:
    points = grid_points(resolution)
    # The ground truth is empty outside its bounding sphere, at every yaw about +z: only the voxels
    # inside it are evaluated (an eighth of the grid or less), |gt & pred| and |gt| there.
    r = bounding_radius(shape)
    near = (points.norm(dim=-1) <= r * (1.0 + 1e-6) + 1e-6).nonzero().squeeze(-1)
    points, pred_near, n_pred = points[near], pred[near], int(pred.sum())
    best = (-1.0, 0.0)
    with torch.no_grad():
        for yaw in yaws:
            # Ground truth rotated by +yaw about +z: inside(p) = occupancy(R_z(-yaw) p).
            gt = occupancy(shape, _rotate_z(points, float(yaw)))
            inter = int((gt & pred_near).sum())
            union = n_pred + int(gt.sum()) - inter
            iou = inter / union if union else 0.0
            if iou > best[0]:
                best = (iou, float(yaw))
    return best


def mesh_iou_yaw(
    mesh_world: trimesh.Trimesh, shape: str, resolution: int = 160, yaw_step_deg: float = 5.0, search_resolution: int = 64
) -> tuple[float, float]:
    """Best IoU over yaw and the yaw (degrees) of the ground truth that achieves it. See ``mesh_iou``.

    The yaw is searched on a ``search_resolution^3`` grid (when coarser than ``resolution``), then
    the IoU is read on the ``resolution^3`` grid at that yaw and its two neighbours.
    """
    if yaw_step_deg <= 0:
        raise EvalError(f"yaw_step_deg={yaw_step_deg}; use a positive step such as 5")
    kind = world.spec()["shapes"][shape]["kind"] if shape in world.SHAPES else None
    if kind is None:
        raise EvalError(f"unknown toy shape {shape!r}; the toy world has {', '.join(world.SHAPES)}")
    period = YAW_PERIOD_DEG[kind]
    yaws = np.arange(0.0, period, yaw_step_deg) if period > 0 else np.zeros(1)
    if search_resolution < resolution and len(yaws) > 3:
        coarse = torch.from_numpy(mesh_occupancy(mesh_world, search_resolution)).reshape(-1)
        _, yaw = _iou_at_yaws(coarse, shape, search_resolution, yaws)
        yaws = [(yaw + k * yaw_step_deg) % period for k in (-1, 0, 1)]
    pred = torch.from_numpy(mesh_occupancy(mesh_world, resolution)).reshape(-1)
    return _iou_at_yaws(pred, shape, resolution, yaws)


def mesh_iou(mesh_world: trimesh.Trimesh, shape: str, resolution: int = 160, yaw_step_deg: float = 5.0) -> float:
    """Volumetric IoU of a mesh with a toy shape, best over yaw of the ground truth about +z.

    Both occupancies are sampled at the voxel centres of a ``resolution^3`` grid over
    ``[-1, 1]^3`` in the world frame: the mesh's by ``mesh_occupancy``, the ground truth's by
    ``toyworld.shapes.occupancy`` rotated by yaw in ``[0, period)`` with ``yaw_step_deg`` steps,
    where the period is the shape's symmetry about +z (sphere and cone: none needed; cube: 90°;
    torus: 360°). SDS fixes no azimuth of the object, so yaw is a free parameter; tilt is not.

    The default grid is 160^3: voxel centres bias the IoU by where the shapes' flat faces fall
    between sample layers, and at 160^3 the cube's faces (+-0.40) and the cone's base (-0.45) lie
    exactly half-way between layers. The exact cone (marching cubes of its SDF) moved down / up
    by 0.01 scores 0.873 / 0.975 at 64^3 (the base lies 0.003 above a layer), 0.964 / 0.920 at
    128^3, 0.928 / 0.929 at 160^3 and 0.930 / 0.930 at 320^3.

    Returns:
        IoU in [0, 1].
    """
    return mesh_iou_yaw(mesh_world, shape, resolution, yaw_step_deg)[0]


def colour_error(
    field, mesh_world: trimesh.Trimesh, colour: str, n_points: int = 4096, seed: int = 0, albedo: str = "rendered"
) -> float:
    """Mean L2 distance in linear RGB between the surface albedo and the prompted colour.

    ``n_points`` points are sampled uniformly by area on the mesh surface (trimesh, fixed
    ``seed``); at each, the albedo is the field's as the export colours the mesh
    (``export.mesh.surface_albedo`` with mode ``albedo``: by default composited along the inward
    normal ray, as a render shows it; ``"surface"``: ``field.albedo(p)`` at the point) or, with
    ``field=None``, the mesh's own vertex/texture colour; the error is ``mean_p ||albedo(p) - c||_2``
    where ``c`` is the colour's linear RGB in ``toyworld.json``. Range [0, sqrt(3)]; 0 is a perfect
    match. For scale: the nearest two world colours (red and yellow) are 0.75 apart.

    Returns:
        The mean error.
    """
    if colour not in world.COLOURS:
        raise EvalError(f"unknown toy colour {colour!r}; the toy world has {', '.join(world.COLOURS)}")
    if len(mesh_world.faces) == 0:
        raise EvalError("the mesh is empty; export the run again (sds3d export RUN_DIR)")
    points, face_index = trimesh.sample.sample_surface(mesh_world, n_points, seed=seed)
    if field is None:
        rgb = mesh_colour_at(mesh_world, points, face_index)
    else:
        from .export.mesh import surface_albedo

        rgb = surface_albedo(field, points, mesh_world.face_normals[face_index], albedo).astype(np.float64)
    target = world.colour_rgb(colour).numpy().astype(np.float64)
    return float(np.linalg.norm(rgb - target, axis=-1).mean())


def recognition(images: Tensor, expected: tuple[str, str]) -> tuple[float, list[tuple[str, str]]]:
    """How many views the independent toy-world judge recognises as the prompted object.

    Args:
        images: views of the object on white, RGB in [0, 1]. Shape: (B, 3, H, W) (8 views, 32x32).
        expected: (colour, shape) of the prompt.

    Returns:
        fraction of views judged exactly ``expected`` (colour and shape), and the per-view labels.
    """
    labels = [tuple(label) for label in judge(images)]
    if not labels:
        return 0.0, []
    return sum(label == tuple(expected) for label in labels) / len(labels), labels


# ---------------------------------------------------------------------------------------------
# Run folders
# ---------------------------------------------------------------------------------------------


def default_render_views(scene, n_views: int = 8, render_cfg=None) -> Tensor:
    """Toy-world-like views of a scene for the judge: lambertian under the world's light, on white.

    ``n_views`` cameras orbit at 20° elevation at the world's camera distance and field of view;
    each view is rendered at 32 x 2 pixels and box-filtered to 32 (toyworld.json image spec).
    The background is always the world's white (the judge separates the object from white).

    Args:
        scene: the trained scene (``sds3d.scene.Scene``).
        n_views: number of views.
        render_cfg: the run's ``RenderConfig`` (samples per ray, chunking); its light and shading
            constants are replaced by the toy world's.

    Returns:
        (n_views, 3, 32, 32) in [0, 1].
    """
    import dataclasses

    from .cameras import orbit_cameras

    if render_cfg is not None:
        render_cfg = dataclasses.replace(render_cfg, light="fixed", ambient=world.AMBIENT, diffuse=world.DIFFUSE,
                                         light_direction=tuple(world.spec()["shading"]["light_direction"]))
    cams = orbit_cameras(n_views, elevation_deg=20.0, distance=world.CAMERA_DISTANCE, fov_y_deg=world.FOV_Y_DEG)
    device = next(scene.parameters()).device

    def white(dirs: Tensor) -> Tensor:
        return world.background().to(dirs).expand(dirs.shape)

    with torch.no_grad():
        out = scene.render(cams.to(device), shading="lambertian", light_dir=world.light_direction().to(device),
                           resolution=world.RESOLUTION * world.SUPERSAMPLING, stratified=False, background=white,
                           render_cfg=render_cfg)
    return torch.nn.functional.avg_pool2d(out["rgb"].float().cpu(), world.SUPERSAMPLING)


def load_mesh_world(run_dir: Path, up_axis: str = "y") -> trimesh.Trimesh:
    """The run's ``mesh/mesh.obj`` moved back into the world frame (+z up).

    The file -> world transform comes from ``mesh/mesh.json`` (written by ``write_mesh``), else
    from ``up_axis`` (the run's ``export.up_axis``).
    """
    from .export.mesh import world_to_file

    mesh_dir = Path(run_dir) / "mesh"
    obj = mesh_dir / "mesh.obj"
    if not obj.exists():
        raise EvalError(f"{obj} does not exist; export the mesh first (sds3d export {run_dir})")
    mesh = trimesh.load(obj, force="mesh")
    meta = mesh_dir / "mesh.json"
    if meta.exists():
        T = np.asarray(json.loads(meta.read_text())["world_to_file"], np.float64)
    else:
        T = world_to_file(up_axis)
    mesh.apply_transform(np.linalg.inv(T))
    return mesh


def is_v2_prompt(prompt: str) -> bool:
    """Whether the prompt names a toy world v2 faced object or composition (v1 prompts are v1's)."""
    parsed = parse_v2_prompt(prompt)
    return parsed is not None and parsed.kind != "v1"


V2_PRIOR_NAMES = ("toy-v2-text", "toy-v2-camera")


def is_v2_prior(name_or_path: str) -> bool:
    """Whether a prior is a toy world v2 prior: one of ``V2_PRIOR_NAMES`` or a folder whose training.json
    says ``"world": "v2"`` (``sds3d train-prior --world v2`` writes it)."""
    if name_or_path in V2_PRIOR_NAMES:
        return True
    info = Path(name_or_path).expanduser() / "training.json"
    try:
        return json.loads(info.read_text()).get("world") == "v2"
    except (OSError, ValueError, AttributeError):
        return False


def evaluate_run_v2(cfg, mesh_world: trimesh.Trimesh) -> dict:
    """Toy world v2's metrics of a run's exported mesh (``toyworld.v2.metrics.evaluate_mesh``).

    They read the mesh alone, its colours included (toyworld_v2.json ``metrics``).

    Returns:
        {"world": "v2", "prompt", "kind", "iou", "yaw", "albedo_err", "colour_source"} plus, for a
        faced object, "colour_err", "body_colour_err" and the Janus metrics ("janus", "n_faces",
        "front_az", "front_ok", "face_present", "flooded", "F", ...); for a composition,
        "union_iou", "part_iou", "part_colour_err", "part_colour_ok", "composition_ok".

    Raises:
        EvalError: the mesh is empty.
    """
    from .toyworld.v2.metrics import evaluate_mesh

    if len(mesh_world.faces) == 0:
        raise EvalError("the mesh is empty; export the run again (sds3d export RUN_DIR)")
    return {"world": "v2", **evaluate_mesh(str(cfg.prompt), mesh_world), "colour_source": "mesh"}


def evaluate_run(cfg, mesh_world: trimesh.Trimesh, scene=None,
                 render_views: Callable[[object], Tensor] | None = None) -> dict:
    """Toy-world metrics of a run's exported mesh (and scene, when given).

    Without a scene the colour error reads the mesh's own colours and recognition is skipped;
    every skipped metric is None with its reason under ``"skipped"``. A v2 faced object or
    composition prompt of a v2 prior (``is_v2_prior``) gets ``evaluate_run_v2``'s metrics instead (a v1
    prior knows no such prompt: an EvalError, as for any prompt outside its grammar).

    Args:
        cfg: the run's ``RunConfig``: ``prompt``, ``export.albedo`` (the colours are read as the
            export read them), ``render`` (for the judge's views), ``eval`` (grid, yaw step).
        mesh_world: the exported mesh in the world frame (``load_mesh_world``).
        scene: the trained scene, if loaded.
        render_views: ``scene -> (8, 3, 32, 32)`` views for the judge; default ``default_render_views``
            with the run's render config.

    Returns:
        {"prompt", "colour", "shape", "mesh_iou", "yaw_deg", "iou_resolution", "colour_error",
        "colour_source", "recognition", "recognition_labels", "skipped"}.

    Raises:
        EvalError: the prompt is not a toy-world prompt; the mesh is empty.
    """
    prompt = str(cfg.prompt)
    if is_v2_prompt(prompt) and is_v2_prior(str(cfg.prior.name_or_path)):
        return evaluate_run_v2(cfg, mesh_world)
    colour, shape, _ = parse_prompt(prompt)
    if colour is None or shape is None:
        raise EvalError(f"prompt {prompt!r} is not a toy-world prompt 'a {{colour}} {{shape}}'; eval only knows the toy world")
    if render_views is None:
        render_views = lambda s: default_render_views(s, render_cfg=cfg.render)  # noqa: E731
    resolution = int(cfg.eval.iou_resolution)
    skipped: dict[str, str] = {}
    iou, yaw = mesh_iou_yaw(mesh_world, shape, resolution, float(cfg.eval.yaw_step_deg))
    metrics: dict = {"prompt": prompt, "colour": colour, "shape": shape, "mesh_iou": iou, "yaw_deg": yaw,
                     "iou_resolution": resolution}
    metrics["colour_error"] = colour_error(scene, mesh_world, colour, albedo=str(cfg.export.albedo))
    metrics["colour_source"] = "field" if scene is not None else "mesh"
    metrics["recognition"], metrics["recognition_labels"] = None, None
    if scene is None:
        skipped["recognition"] = "no scene: the run has no ckpt/last.pt to render views from"
    else:
        frac, labels = recognition(render_views(scene), (colour, shape))
        metrics["recognition"], metrics["recognition_labels"] = frac, [list(x) for x in labels]
    metrics["skipped"] = skipped
    return metrics
