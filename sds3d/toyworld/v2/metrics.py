"""Toy world v2's metrics of an exported mesh (toyworld_v2.json ``metrics``), and its ground-truth meshes.

The mesh is in the world frame (+z up, front +x) with per-vertex or texture albedo. It is read
two ways: its occupancy at the 64^3 voxel centres of [-0.75, 0.75]^3 (ray parity,
``toyworld.meshes.mesh_occupancy``) and 120000 surface samples uniform by area with their
albedo. From them:

- Janus (faced objects): face evidence F(phi) on the 24-azimuth grid, then the decision rule
  (janus, n_faces, front_az, front_ok, face_present) and the validity check (flooded);
- compositions: union IoU at the best yaw, per-part IoU and colour, composition_ok;
- every object: IoU at the best yaw, v1's colour error, body_colour_err and albedo_err.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch
import trimesh
from torch import Tensor

from .. import world
from ..meshes import grid_centres, mesh_colour_at, mesh_occupancy
from . import spec
from .objects import ObjectError, ToyObject, faced_object, from_prompt, rotation_z

# ---------------------------------------------------------------------------------------------
# Reading a mesh
# ---------------------------------------------------------------------------------------------


@dataclass
class Samples:
    """Surface samples: points (N, 3), albedo (N, 3) in [0, 1], the area each one stands for."""

    points: np.ndarray
    albedo: np.ndarray
    area: float


def surface_samples(mesh: trimesh.Trimesh, n: int = spec.N_SURFACE_SAMPLES, seed: int = 0) -> Samples:
    """Points uniform by area (trimesh, fixed seed) with barycentric vertex colours (metrics.about)."""
    points, face_index = trimesh.sample.sample_surface(mesh, n, seed=seed)
    return Samples(np.asarray(points), mesh_colour_at(mesh, points, face_index), float(mesh.area) / n)


def occupancy(mesh: trimesh.Trimesh) -> np.ndarray:
    """Ray-parity occupancy at the metric grid, index [x, y, z]. (64, 64, 64) bool."""
    return mesh_occupancy(mesh, spec.GRID_RESOLUTION, spec.GRID_BOUND)


def grid_points() -> Tensor:
    """The metric grid's voxel centres in [x, y, z] index order. (64^3, 3)."""
    c = torch.from_numpy(grid_centres(spec.GRID_RESOLUTION, spec.GRID_BOUND)).float()
    return torch.stack(torch.meshgrid(c, c, c, indexing="ij"), dim=-1).reshape(-1, 3)


def colour_classes(albedo: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """colour_classes_for_the_judge: (white, dark) masks of albedo rows (..., 3)."""
    lo, hi = albedo.min(-1), albedo.max(-1)
    return (lo >= spec.WHITE_MIN) & (hi - lo <= spec.WHITE_SPREAD), hi <= spec.DARK_MAX


def _circular(a: np.ndarray) -> np.ndarray:
    """|a| on the circle, degrees in [0, 180]."""
    return np.abs((np.asarray(a) + 180.0) % 360.0 - 180.0)


# ---------------------------------------------------------------------------------------------
# Janus: face evidence (metrics.janus.face_evidence) and the decision rule
# ---------------------------------------------------------------------------------------------

PHI = spec.AZIMUTH_GRID_DEG.numpy().astype(np.float64)


def _within(s: Samples, half_window: float, z: tuple[float, float], mask: np.ndarray | None = None) -> np.ndarray:
    """Which samples lie within ``half_window`` deg of each phi and in the z band. (24, N) bool."""
    az = np.degrees(np.arctan2(s.points[:, 1], s.points[:, 0]))
    inside = (s.points[:, 2] >= z[0]) & (s.points[:, 2] <= z[1])
    if mask is not None:
        inside &= mask
    return (_circular(az[None] - PHI[:, None]) <= half_window) & inside[None]


def _owl_terms(s: Samples) -> tuple[np.ndarray, np.ndarray]:
    """Eye area per phi, beak protrusion P(phi) per phi (owl)."""
    white, _ = colour_classes(s.albedo)
    eye_area = _within(s, spec.EYE_HALF_WINDOW_DEG, spec.EYE_Z, white).sum(1) * s.area
    radius = np.hypot(s.points[:, 0], s.points[:, 1])
    window = _within(s, spec.BEAK_HALF_WINDOW_DEG, spec.BEAK_Z)
    # An empty window (a hole in the mesh) has no protrusion: NaN, left out of the median, E_beak 0.
    pct = np.array([np.percentile(radius[w], spec.BEAK_PERCENTILE) if w.any() else np.nan for w in window])
    return eye_area, pct - np.nanmedian(pct)


def _house_terms(s: Samples) -> tuple[np.ndarray, np.ndarray]:
    """Door area and window area per phi (house)."""
    white, dark = colour_classes(s.albedo)
    door = _within(s, spec.HOUSE_HALF_WINDOW_DEG, spec.DOOR_Z, dark).sum(1) * s.area
    windows = _within(s, spec.HOUSE_HALF_WINDOW_DEG, spec.WINDOWS_Z, white).sum(1) * s.area
    return door, windows


def _box_fraction(occ: np.ndarray, inside_box: Tensor) -> float:
    n = int(inside_box.sum())
    return float(torch.from_numpy(occ.reshape(-1))[inside_box].sum()) / n if n else 0.0


def _chair_terms(occ: np.ndarray) -> tuple[np.ndarray, float]:
    """B(psi) for psi on the grid and C (chair): occupied fractions of metric-grid voxel centres."""
    p = grid_points().double()
    box, col = spec.BACKREST_BOX, spec.CENTRAL_COLUMN
    in_z = (p[:, 2] >= box["z"][0]) & (p[:, 2] <= box["z"][1])
    B = []
    for psi in PHI:
        # The frame in which azimuth psi is -x': x' = -(p . d_psi), y' = the perpendicular.
        d = torch.tensor([np.cos(np.radians(psi)), np.sin(np.radians(psi))], dtype=p.dtype)
        x_rot = -(p[:, :2] @ d)
        y_rot = p[:, 0] * -d[1] + p[:, 1] * d[0]
        B.append(_box_fraction(occ, in_z & (x_rot >= box["x"][0]) & (x_rot <= box["x"][1]) & (y_rot.abs() <= box["half_y"])))
    column = (p[:, 0].abs() <= col["half_xy"]) & (p[:, 1].abs() <= col["half_xy"]) & (p[:, 2] >= col["z"][0]) & (p[:, 2] <= col["z"][1])
    return np.array(B), _box_fraction(occ, column)


@lru_cache(maxsize=None)
def reference(name: str) -> dict:
    """The GT mesh's normalisers of one faced object (A_eye, P_gt; A_door, A_windows; B_gt) and
    its total white- and dark-class areas (validity). Computed once from ``ground_truth_mesh``."""
    mesh = ground_truth_mesh(faced_object(name, world.COLOURS[0]))
    s = surface_samples(mesh)
    white, dark = colour_classes(s.albedo)
    ref = {"white_area": float(white.sum() * s.area), "dark_area": float(dark.sum() * s.area)}
    if name == "owl":
        eye, P = _owl_terms(s)
        ref.update(A_eye=float(eye[0]), P_gt=float(P[0]))
    elif name == "house":
        door, windows = _house_terms(s)
        ref.update(A_door=float(door[0]), A_windows=float(windows[0]))
    else:
        B, _ = _chair_terms(occupancy(mesh))
        ref.update(B_gt=float(B[PHI == 180.0][0]))
    return ref


def face_evidence(name: str, mesh: trimesh.Trimesh | None = None, samples: Samples | None = None,
                  occ: np.ndarray | None = None, clip: bool = True) -> np.ndarray:
    """F(phi) for phi = 0, 15, ..., 345 (metrics.janus.face_evidence). Owl and house read the
    surface samples, the chair the occupancy; pass them to reuse them, else they are computed.
    ``clip=False``: the same sums without clipping the terms to [0, 1] (ties of F at 1 are
    broken by it, ``janus_decision``)."""
    ref = reference(name)
    c = (lambda x: np.clip(x, 0.0, 1.0)) if clip else (lambda x: x)  # noqa: E731
    if name == "chair":
        B, C = _chair_terms(occupancy(mesh) if occ is None else occ)
        B_opposite = np.roll(B, -len(PHI) // 2)  # B(phi + 180)
        return c(B_opposite * (1.0 - C) / ref["B_gt"])
    s = surface_samples(mesh) if samples is None else samples
    if name == "owl":
        eye, P = _owl_terms(s)
        return 0.5 * c(eye / ref["A_eye"]) + 0.5 * c(np.nan_to_num(P / ref["P_gt"], nan=0.0))
    door, windows = _house_terms(s)
    return 0.5 * c(door / ref["A_door"]) + 0.5 * c(windows / ref["A_windows"])


def janus_decision(F: np.ndarray, F_unclipped: np.ndarray | None = None) -> dict:
    """metrics.janus.decision on F over the azimuth grid.

    Clipping makes F plateau at 1 over neighbouring azimuths; ties (of phi* and of the greedy
    peak order) are broken by ``F_unclipped`` (the spec leaves them open; the first grid azimuth
    would pull phi* towards 0).

    Returns:
        {"janus", "n_faces", "front_az", "front_ok", "face_present", "F_max", "F_other"}: phi* =
        argmax F; face_present = F(phi*) >= 0.5; F_other = max F at least 90 deg from phi*;
        janus = face_present and F_other >= 0.40; n_faces = greedy peaks >= 0.40 pairwise >= 90
        deg apart (0 without a face); front_ok = |phi*| <= 45.
    """
    F = np.asarray(F, np.float64)
    order = np.lexsort((-(F if F_unclipped is None else np.asarray(F_unclipped, np.float64)), -F))
    k = int(order[0])
    front = PHI[k]
    present = bool(F[k] >= spec.FACE_PRESENT)
    F_other = float(F[_circular(PHI - front) >= spec.FACE_SEPARATION_DEG].max())
    peaks: list[float] = []
    for i in order:
        if F[i] < spec.SECOND_FACE:
            break
        if all(_circular(PHI[i] - q) >= spec.FACE_SEPARATION_DEG for q in peaks):
            peaks.append(PHI[i])
    return {"janus": int(present and F_other >= spec.SECOND_FACE), "n_faces": len(peaks) if present else 0,
            "front_az": float(front), "front_ok": bool(_circular(front) <= spec.FRONT_OK_DEG),
            "face_present": int(present), "F_max": float(F[k]), "F_other": F_other}


def janus_metrics(name: str, mesh: trimesh.Trimesh, samples: Samples | None = None, occ: np.ndarray | None = None) -> dict:
    """Face evidence and decision of one faced object's mesh, with the validity check.

    ``flooded`` (janus None): the white- or dark-class area of the whole mesh exceeds 4x the GT's
    (metrics.janus.validity); the chair's face is geometric and its GT has neither class, so a
    chair is never flooded (toyworld_v2.json errata).
    """
    if name not in spec.OBJECTS:
        raise ObjectError(f"{name!r} is not a faced object; toy world v2 has {', '.join(spec.OBJECTS)}")
    s = surface_samples(mesh) if samples is None and name != "chair" else samples
    if name == "chair" and occ is None:
        occ = occupancy(mesh)
    F = face_evidence(name, mesh, s, occ)
    out = janus_decision(F, face_evidence(name, mesh, s, occ, clip=False))
    flooded = False
    if name != "chair":
        ref = reference(name)
        white, dark = colour_classes(s.albedo)
        flooded = bool(white.sum() * s.area > spec.FLOOD_FACTOR * ref["white_area"]
                       or dark.sum() * s.area > spec.FLOOD_FACTOR * ref["dark_area"])
    if flooded:
        out["janus"] = None
    out.update(flooded=flooded, F=[round(float(f), 4) for f in F])
    return out


# ---------------------------------------------------------------------------------------------
# Shape and colour against the ground truth, at the best yaw
# ---------------------------------------------------------------------------------------------


def _to_gt_frame(p: Tensor, yaw: float) -> Tensor:
    """World points -> the frame of the GT rotated by +yaw about +z: R_z(-yaw) p (row vectors)."""
    return p @ rotation_z(yaw).to(p)


def best_yaw(obj: ToyObject, occ: np.ndarray) -> tuple[float, float]:
    """(IoU, yaw) of the mesh occupancy with the GT occupancy rotated by yaw, best over 15 deg steps."""
    pred = torch.from_numpy(occ.reshape(-1))
    points = grid_points()
    best = (-1.0, 0.0)
    with torch.no_grad():
        for yaw in np.arange(0.0, 360.0, spec.YAW_STEP_DEG):
            gt = obj.sdf(_to_gt_frame(points, float(yaw))) < 0
            union = int((gt | pred).sum())
            iou = int((gt & pred).sum()) / union if union else 0.0
            if iou > best[0]:
                best = (iou, float(yaw))
    return best


def nearest_surface_point(obj: ToyObject, q: Tensor, iterations: int = 4, eps: float = 1e-4) -> Tensor:
    """Project points onto the GT surface: q <- q - sdf(q) grad sdf(q) (exact for an SDF with
    |grad| = 1; a few steps settle points that land inside another part of the union)."""
    offsets = torch.eye(3, dtype=q.dtype) * eps
    for _ in range(iterations):
        grad = torch.stack([obj.sdf(q + offsets[i]) - obj.sdf(q - offsets[i]) for i in range(3)], dim=-1)
        q = q - obj.sdf(q)[:, None] * torch.nn.functional.normalize(grad, dim=-1)
    return q


def colour_metrics(obj: ToyObject, s: Samples, yaw: float) -> dict:
    """v1's colour error and v2's body_colour_err and albedo_err (metrics.v1.colour_err).

    colour_err: mean_p |albedo(p) - slot| (v1's ``sds3d.eval.colour_error``, kept as is; single-colour
    objects only); body_colour_err: |mean albedo of samples whose nearest GT surface point shows
    the slot colour (no decal, no fixed-colour part) - slot|; albedo_err: mean_p |albedo(p) -
    GT albedo at the nearest GT surface point|; both with the GT at ``yaw``.
    """
    albedo = torch.from_numpy(s.albedo).float()
    with torch.no_grad():
        q = nearest_surface_point(obj, _to_gt_frame(torch.from_numpy(s.points).float(), yaw))
        gt_albedo, slot = obj.albedo(q), obj.slot_index(q)
    out = {"albedo_err": float((albedo - gt_albedo).norm(dim=-1).mean())}
    if len(obj.colours) == 1:
        c = spec.colour_rgb(obj.colours[0])
        body = slot == 0
        out["colour_err"] = float((albedo - c).norm(dim=-1).mean())
        out["body_colour_err"] = float((albedo[body].mean(0) - c).norm()) if body.any() else None
    return out


def composition_metrics(obj: ToyObject, occ: np.ndarray, s: Samples) -> dict:
    """metrics.compositions: union IoU at the best yaw, part IoU, part colour, composition_ok.

    Returns:
        {"union_iou", "yaw", "part_iou", "part_colour_err", "part_colour_ok", "composition_ok"},
        per-part values as lists in prompt order (s1, s2); a part no sample is assigned to has
        colour error None and colour_ok False.
    """
    union_iou, yaw = best_yaw(obj, occ)
    pred = torch.from_numpy(occ.reshape(-1))
    with torch.no_grad():
        d = obj.part_sdf(_to_gt_frame(grid_points(), yaw))
        label = d.argmin(-1)
        part_iou = []
        for k in range(len(obj.parts)):
            gt, mine = d[:, k] < 0, pred & (label == k)
            union = int((gt | mine).sum())
            part_iou.append(int((gt & mine).sum()) / union if union else 0.0)
        ds = obj.part_sdf(_to_gt_frame(torch.from_numpy(s.points).float(), yaw))
    near = ds.min(-1).values.abs() <= spec.SURFACE_BAND
    nearest = ds.abs().argmin(-1)
    albedo = torch.from_numpy(s.albedo).float()
    table = world.colour_table()
    errs, oks = [], []
    for k, colour in enumerate(obj.colours):
        mine = near & (nearest == k)
        if not mine.any():
            errs.append(None)
            oks.append(False)
            continue
        m = albedo[mine].mean(0)
        errs.append(float((m - spec.colour_rgb(colour)).norm()))
        oks.append(world.COLOURS[int((table - m).norm(dim=-1).argmin())] == colour)
    ok = (union_iou >= spec.COMPOSITION_OK["union_iou"] and min(part_iou) >= spec.COMPOSITION_OK["part_iou"] and all(oks))
    return {"union_iou": union_iou, "yaw": yaw, "part_iou": part_iou, "part_colour_err": errs,
            "part_colour_ok": oks, "composition_ok": bool(ok)}


def evaluate_mesh(prompt: str, mesh: trimesh.Trimesh, seed: int = 0) -> dict:
    """All v2 metrics of an exported world-frame mesh for a v1 or v2 prompt.

    Returns:
        {"prompt", "kind"} plus: every kind: "iou", "yaw", "albedo_err"; single-colour objects:
        "colour_err", "body_colour_err"; faced objects: ``janus_metrics``; compositions:
        ``composition_metrics`` (its union IoU is "iou").
    """
    obj = from_prompt(prompt)
    occ = occupancy(mesh)
    s = surface_samples(mesh, seed=seed)
    out: dict = {"prompt": obj.prompt, "kind": obj.kind}
    if obj.kind == "composition":
        comp = composition_metrics(obj, occ, s)
        out.update(comp, iou=comp["union_iou"])
    else:
        out["iou"], out["yaw"] = best_yaw(obj, occ)
    out.update(colour_metrics(obj, s, out["yaw"]))
    if obj.kind == "faced":
        out.update(janus_metrics(obj.nouns[0], mesh, s, occ))
    return out


# ---------------------------------------------------------------------------------------------
# Ground truth
# ---------------------------------------------------------------------------------------------


def ground_truth_mesh(obj: ToyObject | str, variant: str | None = None, resolution: int = 128) -> trimesh.Trimesh:
    """Marching cubes of an object's SDF on a ``resolution^3`` lattice spanning [-0.75, 0.75]^3, with
    the GT albedo at each vertex (uint8 vertex colours, as sds3d exports). World frame.

    Args:
        obj: an object, or a prompt (``objects.from_prompt``; ``variant`` picks a Janus variant).
    """
    from skimage.measure import marching_cubes

    if isinstance(obj, str):
        obj = from_prompt(obj, variant)
    elif variant is not None:
        raise ObjectError("pass the variant with a prompt, or build the variant with objects.faced_object")
    c = torch.linspace(-spec.GRID_BOUND, spec.GRID_BOUND, resolution)
    grid = torch.stack(torch.meshgrid(c, c, c, indexing="ij"), dim=-1)
    with torch.no_grad():
        values = obj.sdf(grid.reshape(-1, 3)).reshape(grid.shape[:3]).numpy()
    h = float(c[1] - c[0])
    verts, faces, _, _ = marching_cubes(values, 0.0, spacing=(h, h, h))
    verts = verts - spec.GRID_BOUND
    with torch.no_grad():
        albedo = obj.albedo(torch.from_numpy(verts).float()).numpy()
    rgba = np.concatenate([np.round(albedo * 255.0), np.full((len(verts), 1), 255.0)], axis=1).astype(np.uint8)
    return trimesh.Trimesh(verts, faces, vertex_colors=rgba, process=False)
