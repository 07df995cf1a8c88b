"""Calibration of the v2 metrics (metrics.janus.thresholds_calibration): verdicts and margins on
ground-truth meshes, the synthetic Janus variants, and noisy and blurred copies of them.

A noisy copy moves the surface along its normals by a smooth random field (std 0.01, about half a
voxel of the metric grid, wavelength 0.2) and adds N(0, 0.05) to every vertex's albedo (independent
per-vertex displacement would instead roughen the surface at the vertex spacing and inflate its
area, which no exported mesh does: they are marching cubes of smooth fields); a blurred copy is Taubin-smoothed (10 passes; Taubin
1995, which keeps the volume) and its vertex colours are averaged with their neighbours 10 times
(a decal's edge spreads over ~3 vertex spacings). Exported SDS meshes are both: marching cubes of
a soft density field, coloured by a smooth MLP.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse
import trimesh

from .. import world
from . import spec
from .metrics import composition_metrics, ground_truth_mesh, janus_metrics, occupancy, surface_samples
from .objects import composition, faced_object

PERTURBATIONS = ("none", "noisy", "blurred")

#: The verdict each variant must get: janus, n_faces, front_az, face_present (None: not checked).
EXPECTED = {
    None: {"janus": 0, "n_faces": 1, "front_az": 0.0, "face_present": 1},
    "two_faced": {"janus": 1, "n_faces": 2, "face_present": 1},
    "two_faced_eyes_only": {"janus": 1, "face_present": 1},
    "side_faced": {"janus": 0, "n_faces": 1, "front_az": 90.0, "face_present": 1},
    "three_faced": {"janus": 1, "n_faces": 3, "face_present": 1},
    "faceless": {"janus": 0, "n_faces": 0, "face_present": 0},
}


def _with_colours(mesh: trimesh.Trimesh, vertices: np.ndarray, albedo: np.ndarray) -> trimesh.Trimesh:
    rgba = np.concatenate([np.round(np.clip(albedo, 0.0, 1.0) * 255.0), np.full((len(albedo), 1), 255.0)], axis=1)
    return trimesh.Trimesh(vertices, mesh.faces, vertex_colors=rgba.astype(np.uint8), process=False)


def perturbed(mesh: trimesh.Trimesh, kind: str, seed: int = 0) -> trimesh.Trimesh:
    """A copy of a vertex-coloured mesh: ``"none"``, ``"noisy"`` or ``"blurred"`` (module docstring)."""
    albedo = np.asarray(mesh.visual.vertex_colors, np.float64)[:, :3] / 255.0
    if kind == "none":
        return _with_colours(mesh, np.asarray(mesh.vertices), albedo)
    if kind == "noisy":
        rng = np.random.default_rng(seed)
        # A smooth random field (32 random plane waves of wavelength 0.2, std 0.01) along the normals.
        k = rng.normal(size=(32, 3))
        k *= 2.0 * np.pi / 0.2 / np.linalg.norm(k, axis=1, keepdims=True)
        field = np.sin(mesh.vertices @ k.T + rng.uniform(0.0, 2.0 * np.pi, 32)).sum(1) * (0.01 / np.sqrt(16.0))
        vertices = mesh.vertices + field[:, None] * mesh.vertex_normals
        return _with_colours(mesh, vertices, albedo + rng.normal(0.0, 0.05, albedo.shape))
    if kind == "blurred":
        smooth = trimesh.Trimesh(mesh.vertices.copy(), mesh.faces, process=False)
        trimesh.smoothing.filter_taubin(smooth, iterations=10)
        e = mesh.edges_unique
        n = len(mesh.vertices)
        A = scipy.sparse.coo_matrix((np.ones(2 * len(e)), (np.r_[e[:, 0], e[:, 1]], np.r_[e[:, 1], e[:, 0]])), shape=(n, n))
        A = (A + scipy.sparse.identity(n)).tocsr()
        A = scipy.sparse.diags(1.0 / np.asarray(A.sum(1)).ravel()) @ A
        for _ in range(10):
            albedo = A @ albedo
        return _with_colours(mesh, smooth.vertices, albedo)
    raise ValueError(f"unknown perturbation {kind!r}; use one of {', '.join(PERTURBATIONS)}")


def janus_table(resolution: int = 128, colour: str = world.COLOURS[0], perturbations=PERTURBATIONS) -> list[dict]:
    """Verdicts and margins of every faced object x variant x perturbation (GT meshes at ``resolution``).

    Each row: object, variant, perturbation, the ``janus_metrics`` result (with F), ``expected``
    and ``ok`` (every expected field matches), and the margins ``present_margin`` = F_max - 0.5
    and ``second_face_margin`` = F_other - 0.40 (positive: a second face).
    """
    rows = []
    for name in spec.OBJECTS:
        for variant in EXPECTED:
            if variant == "two_faced_eyes_only" and name != "owl":
                continue
            mesh = ground_truth_mesh(faced_object(name, colour, variant), resolution=resolution)
            for kind in perturbations:
                m = janus_metrics(name, perturbed(mesh, kind))
                expected = EXPECTED[variant]
                rows.append({"object": name, "variant": variant, "perturbation": kind, **m, "expected": expected,
                             "ok": all(m[k] == v for k, v in expected.items()) and not m["flooded"],
                             "present_margin": m["F_max"] - spec.FACE_PRESENT,
                             "second_face_margin": m["F_other"] - spec.SECOND_FACE})
    return rows


def composition_table(prompts: list[tuple], resolution: int = 128, perturbations=PERTURBATIONS) -> list[dict]:
    """composition_metrics of GT meshes (each ``(relation, c1, s1, c2, s2)``), unperturbed and perturbed."""
    rows = []
    for args in prompts:
        obj = composition(*args)
        mesh = ground_truth_mesh(obj, resolution=resolution)
        for kind in perturbations:
            m = perturbed(mesh, kind)
            rows.append({"prompt": obj.prompt, "perturbation": kind, **composition_metrics(obj, occupancy(m), surface_samples(m))})
    return rows
