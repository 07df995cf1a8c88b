"""A user's mesh as the NeRF's starting shape (``scene.init_from``) or fixed shape (``scene.freeze_geometry``).

threestudio starts a field from a mesh (``shape_init: mesh:PATH``) by fitting its network to the
mesh's signed distance first. sds3d's NeRF instead replaces its density blob by the same function
of the mesh's SDF (``fields.nerf.mesh_density_bias``), so step 0 already renders the mesh: the
SDF is sampled once on a grid over the scene box (``mesh_sdf_grid``) and interpolated at every
query. With ``freeze_geometry`` the density is the mesh's alone (VolSDF's density of its SDF) and
only the colours are distilled; the export then keeps the mesh's own triangles
(``pipeline.export_mesh``).

Frames: a mesh file is read in the frame sds3d writes files in (``export.up_axis``: +y up by
default, the glTF / Blender convention), or by the ``mesh.json`` beside it when sds3d wrote it.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import trimesh
from scipy.spatial import cKDTree

from ..errors import notice
from .config import SceneConfigError

#: Surface samples for the distance part of the SDF (spacing ~0.006 on a unit sphere).
SURFACE_SAMPLES = 200_000


def load_init_mesh(path: str | Path, up_axis: str = "y", scale: float = 0.0, bound: float = 1.0) -> trimesh.Trimesh:
    """The mesh of ``scene.init_from`` in the world frame (+z up), as data (trimesh).

    Args:
        path: a mesh file trimesh reads (.obj, .glb, .ply, .stl, .off).
        up_axis: the file's frame (``export.up_axis``), unless a ``mesh.json`` beside it says otherwise.
        scale: 0 keeps the file's size and position; > 0 centres the mesh's bounding box on the origin
            and scales its largest |coordinate| to ``scale`` (threestudio's ``shape_init_params``).
        bound: the scene box half-side; the mesh must fit inside it.
    """
    from ..export.mesh import world_to_file

    path = Path(path)
    if not path.is_file():
        raise SceneConfigError(f"scene.init_from={str(path)!r}: no such file; give a mesh file (.obj, .glb, .ply, .stl)")
    try:
        loaded = trimesh.load(path, force="mesh")
    except Exception as e:  # trimesh raises many kinds (ValueError, KeyError, ...) for a bad file
        raise SceneConfigError(f"scene.init_from={str(path)!r} could not be read as a mesh "
                               f"({type(e).__name__}: {str(e).splitlines()[0] if str(e) else 'no detail'})") from None
    if not isinstance(loaded, trimesh.Trimesh) or len(loaded.faces) == 0 or not loaded.area > 0:
        raise SceneConfigError(f"scene.init_from={str(path)!r} has no triangles with area; give a surface mesh")
    if not np.isfinite(loaded.vertices).all():
        raise SceneConfigError(f"scene.init_from={str(path)!r} has non-finite vertex coordinates (NaN or inf)")
    meta = path.with_name("mesh.json")
    to_file = np.asarray(json.loads(meta.read_text())["world_to_file"]) if meta.is_file() else world_to_file(up_axis)
    # The file's vertices and normals as they are (a texture-only export keeps them: hard edges stay hard).
    mesh = trimesh.Trimesh(vertices=loaded.vertices, faces=loaded.faces, vertex_normals=loaded.vertex_normals, process=False)
    mesh.apply_transform(np.linalg.inv(to_file))
    if scale > 0:
        mesh.apply_translation(-mesh.bounds.mean(axis=0))
        mesh.apply_scale(scale / np.abs(mesh.vertices).max())
    reach = float(np.abs(mesh.vertices).max())
    if reach >= bound:
        raise SceneConfigError(f"scene.init_from={str(path)!r} reaches |x| = {reach:.3g}, outside the scene box "
                               f"[-{bound:g}, {bound:g}]^3; pass scene.init_scale={0.7 * bound:g} to fit it")
    welded = solid(mesh)
    if not welded.is_watertight:
        notice(f"scene.init_from={path.name}: the mesh is not closed, so inside and outside are guessed by ray "
               "parity and may be wrong near its holes")
    if welded.is_winding_consistent and welded.volume < 0:
        mesh.invert()
    return mesh


def solid(mesh: trimesh.Trimesh) -> trimesh.Trimesh:
    """The mesh with coincident vertices welded (files split them at UV seams and hard edges), for
    the closed-surface tests: watertightness, volume, inside/outside."""
    welded = trimesh.Trimesh(vertices=mesh.vertices, faces=mesh.faces, process=False)
    welded.merge_vertices(merge_tex=True, merge_norm=True)
    return welded


def mesh_sdf_grid(mesh: trimesh.Trimesh, bound: float, resolution: int, seed: int = 0) -> np.ndarray:
    """Signed distance to ``mesh`` (negative inside) at the vertices of a regular grid over [-bound, bound]^3.

    The distance is to the nearest of ``SURFACE_SAMPLES`` area-uniform surface samples and the
    vertices (scipy's KD-tree; within the sample spacing of the exact distance, which does not
    matter for a starting shape or at the surface itself); the sign is trimesh's ``contains`` (ray
    tests on Embree).

    Returns:
        float32 (R, R, R), index [x, y, z] (as ``export.mesh.density_grid``).
    """
    c = np.linspace(-bound, bound, resolution)
    xyz = np.stack(np.meshgrid(c, c, c, indexing="ij"), axis=-1).reshape(-1, 3)
    samples, _ = trimesh.sample.sample_surface(mesh, SURFACE_SAMPLES, seed=seed)
    distance, _ = cKDTree(np.concatenate([samples, mesh.vertices])).query(xyz)
    inside = solid(mesh).contains(xyz)
    return np.where(inside, -distance, distance).reshape(resolution, resolution, resolution).astype(np.float32)
