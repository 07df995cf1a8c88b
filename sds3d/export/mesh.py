"""Mesh extraction from a density field: grid -> iso level -> marching cubes -> cleanup -> colours.

The field contract (``sds3d.fields.nerf``): ``field.bound`` (scene AABB ``[-bound, bound]^3``, world
frame, +z up), ``field.density(x (N, 3)) -> sigma (N,)``, ``field.albedo(x (N, 3)) -> (N, 3)`` in [0, 1].
Everything is world frame until ``write_mesh``, which applies the file's up axis.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field as dataclass_field
from pathlib import Path
from typing import Any

import numpy as np
import trimesh
from skimage.measure import marching_cubes

from ..errors import UserError
from . import cleanup, files
from . import texture as texture_mod
from .colour import rendered_albedo
from .query import field_device, query_field
from .visibility import visibility_depth


SURFACES = ("visibility", "density")
ALBEDOS = ("rendered", "surface")
UP_AXES = ("y", "z")
TEXTURE_MODES = ("auto", "uv", "vertex")
FORMATS = ("obj", "glb", "ply")


class ExportError(UserError):
    """A user-fixable problem with mesh export (the message says what to change)."""


class EmptyMeshError(ExportError):
    """The field has no surface at the chosen level."""


@dataclass
class ExportConfig:
    """Mesh export settings (threestudio-style typed config).

    Attributes:
        resolution: density grid samples per axis over ``[-bound, bound]``.
        surface: ``"visibility"``: the surface of the solid that rays from outside see, i.e. where
            a ray entering the grid along any of the 26 grid directions first accumulates
            ``surface_opacity`` (``visibility.visibility_depth``; interior cavities and pin-holes
            of a hollow SDS density shell are filled, open concavities kept); ``"density"``: an
            iso level of sigma itself (``threshold``), which leaves those cavities as internal faces.
        threshold: with ``surface="density"``, the iso level on the density sigma. ``"auto"``: the
            field's own surface level if it has one (``field.surface_density``: an SDF field's zero
            level), else the density at which rays entering the grid along the 6 axis directions
            reach ``surface_opacity`` (see ``auto_threshold``), so the mesh sits where the rendered
            surface is, whatever the scale of the trained density; a number is used as is.
        surface_opacity: the accumulated opacity at which a ray is taken to reach the surface
            (``surface="visibility"``, or ``"density"`` with ``threshold="auto"``); 0.5 is the
            median of the ray's weights, lower values sit further out, where a soft density shell
            starts to occlude.
        up_axis: ``"y"``: files are +y up with the object's front (world +x, azimuth 0) facing +z
            (glTF / Blender OBJ import convention); ``"z"``: files keep the world frame.
        min_component_fraction: connected components with fewer than this fraction of all faces
            are floaters and are dropped (0 keeps everything).
        target_faces: decimate to about this many faces (quadric edge collapse, ``cleanup.decimate``);
            0 keeps marching cubes' faces.
        smooth_iterations: Taubin smoothing steps after decimation (``cleanup.smooth``: evens out
            marching cubes' slivers and the field's bumps without shrinking); 0 leaves the vertices.
        albedo: colour of a surface point (vertex or texel): ``"rendered"``, the albedo composited
            along the inward normal ray through it as a render does (``colour.rendered_albedo``);
            ``"surface"``, the field's albedo exactly at the point (in a soft shell's barely
            trained outer fringe when ``surface_opacity`` is low).
        texture: ``"auto"``: xatlas UV atlas + baked albedo PNG if ``xatlas`` imports, else vertex
            colours; ``"uv"``: require the atlas; ``"vertex"``: vertex colours only.
        texture_size: albedo texture width = height in pixels.
        fidelity: after the export, render the mesh file from the validation cameras and compare it
            with the scene's renders (``fidelity.mesh_fidelity``: summary.json, renders/fidelity.png).
        formats: files to write, any of ``obj``, ``glb``, ``ply``.
        chunk_size: points per field query.
    """

    resolution: int = 128
    surface: str = "visibility"
    threshold: Any = "auto"  # str | float (OmegaConf structured configs have no unions)
    surface_opacity: float = 0.5
    up_axis: str = "y"
    albedo: str = "rendered"
    min_component_fraction: float = 0.05
    target_faces: int = 0
    smooth_iterations: int = 10
    texture: str = "auto"
    texture_size: int = 512
    fidelity: bool = True
    formats: list = dataclass_field(default_factory=lambda: ["obj", "glb"])
    chunk_size: int = 65536

    def __post_init__(self) -> None:
        check_config(self)


def check_config(cfg: ExportConfig) -> None:
    """Raise ``ExportError`` naming the first invalid setting."""
    if int(cfg.resolution) < 8:
        raise ExportError(f"export.resolution={cfg.resolution} is too small; use at least 8 (default 128)")
    if not 0.0 < float(cfg.surface_opacity) < 1.0:
        raise ExportError(f"export.surface_opacity={cfg.surface_opacity} must be within (0, 1), e.g. 0.5")
    if cfg.surface not in SURFACES:
        raise ExportError(f"export.surface={cfg.surface!r}; use one of {', '.join(SURFACES)}")
    if cfg.surface == "visibility" and cfg.threshold != "auto":
        raise ExportError(
            f"export.threshold={cfg.threshold} is a density level; add export.surface=density to use it "
            "(export.surface=visibility places the surface by export.surface_opacity)"
        )
    if isinstance(cfg.threshold, str) and cfg.threshold != "auto":
        try:
            float(cfg.threshold)
        except ValueError:
            raise ExportError(f"export.threshold={cfg.threshold!r}; use 'auto' or a density value such as 10") from None
    if cfg.albedo not in ALBEDOS:
        raise ExportError(f"export.albedo={cfg.albedo!r}; use one of {', '.join(ALBEDOS)}")
    if cfg.up_axis not in UP_AXES:
        raise ExportError(f"export.up_axis={cfg.up_axis!r}; use one of {', '.join(UP_AXES)}")
    if cfg.texture not in TEXTURE_MODES:
        raise ExportError(f"export.texture={cfg.texture!r}; use one of {', '.join(TEXTURE_MODES)}")
    bad = [f for f in cfg.formats if f not in FORMATS]
    if bad or not cfg.formats:
        raise ExportError(f"export.formats={list(cfg.formats)}; use a non-empty subset of {', '.join(FORMATS)}")
    if not 0.0 <= float(cfg.min_component_fraction) < 1.0:
        raise ExportError(f"export.min_component_fraction={cfg.min_component_fraction}; use a value in [0, 1)")
    if int(cfg.texture_size) < 16:
        raise ExportError(f"export.texture_size={cfg.texture_size}; use at least 16 (default 512)")
    if int(cfg.target_faces) < 0 or 0 < int(cfg.target_faces) < 4:
        raise ExportError(f"export.target_faces={cfg.target_faces}; use 0 (no decimation) or a face count such as 20000")
    if int(cfg.smooth_iterations) < 0:
        raise ExportError(f"export.smooth_iterations={cfg.smooth_iterations}; use 0 (off) or a step count such as 10")


def density_grid(field, resolution: int, chunk_size: int = 65536) -> tuple[np.ndarray, float]:
    """Density sampled at the vertices of a regular grid over ``[-bound, bound]^3``.

    Returns:
        sigma of shape (R, R, R), index [x, y, z]; the grid spacing.
    """
    bound = float(field.bound)
    c = np.linspace(-bound, bound, resolution, dtype=np.float32)
    xyz = np.stack(np.meshgrid(c, c, c, indexing="ij"), axis=-1).reshape(-1, 3)
    sigma = query_field(field.density, xyz, field_device(field), chunk_size).reshape(resolution, resolution, resolution)
    return np.nan_to_num(sigma, nan=0.0, posinf=0.0, neginf=0.0).clip(min=0.0), 2.0 * bound / (resolution - 1)


def auto_threshold(sigma: np.ndarray, spacing: float, surface_opacity: float = 0.5) -> float:
    """The density level of the surface a renderer sees, from axis-aligned rays through the grid.

    Along each grid line, in each of the 6 axis directions, the optical depth
    ``tau = sum_i sigma_i delta`` is accumulated from the entry face with NeRF's quadrature
    (Mildenhall et al. 2020, Eq. 3: sample i stands for the segment of length delta around it, so
    alpha_i = 1 - exp(-sigma_i delta)). Where it first reaches ln 2 (accumulated opacity 1/2) the
    density is read off, linearly interpolated between grid samples as marching cubes does, so the
    mesh passes through that point; a sub-voxel-sharp edge thus gets a level near half its jump
    rather than one hugging the outer sample. A semi-transparent field whose density levels off
    before the ray is half opaque takes the half-maximum edge instead (the min of the two). The
    level is the median over all rays that become half opaque. Unlike a fixed density (which
    empties the mesh of a weakly trained field) or Otsu on the histogram (which follows
    exponential density tails), this level tracks the rendered surface.

    Args:
        sigma: density grid. Shape: (R, R, R).
        spacing: distance between grid samples (delta).
        surface_opacity: accumulated opacity that defines the crossing (0.5 above).

    Returns:
        The iso level.

    Raises:
        EmptyMeshError: no ray becomes half opaque.
    """
    depth = -math.log(1.0 - surface_opacity)  # optical depth tau with 1 - exp(-tau) = surface_opacity
    levels = []
    n = sigma.shape[0]
    for axis in range(3):
        for flip in (False, True):
            s = np.moveaxis(sigma, axis, -1)
            s = s[..., ::-1] if flip else s
            s = s.reshape(-1, n).astype(np.float64)
            tau = np.cumsum(s * spacing, axis=1)  # optical depth at the far end of each sample's segment
            crossed = tau[:, -1] >= depth
            if not crossed.any():
                continue
            s, tau = s[crossed], tau[crossed]
            rows = np.arange(len(s))
            k = np.argmax(tau >= depth, axis=1)  # segment where the ray becomes half opaque
            before = tau[rows, k] - s[rows, k] * spacing
            # Crossing position in sample units: inside segment [k - 1/2, k + 1/2].
            x = k - 0.5 + (depth - before) / np.maximum(s[rows, k] * spacing, 1e-12)
            x = np.clip(x, 0.0, n - 1.0)
            i0 = np.minimum(np.floor(x).astype(np.int64), n - 2)
            f = x - i0
            crossing = (1.0 - f) * s[rows, i0] + f * s[rows, i0 + 1]
            levels.append(np.minimum(crossing, 0.5 * s.max(axis=1)))
    if not levels:
        raise EmptyMeshError(
            f"the field is transparent: no ray through the grid reaches {surface_opacity:.0%} opacity (max density "
            f"{float(sigma.max()):.3g}); train longer, check the run's density, or pass export.threshold=<smaller number>"
        )
    return float(np.median(np.concatenate(levels)))


def resolve_threshold(cfg: ExportConfig, sigma: np.ndarray, spacing: float, surface_density: float | None = None) -> float:
    """The iso level cfg asks for on this grid (``surface_density``: the field's own level, if it has one)."""
    if cfg.threshold != "auto":
        return float(cfg.threshold)
    return surface_density if surface_density is not None else auto_threshold(sigma, spacing, cfg.surface_opacity)


def remove_floaters(mesh: trimesh.Trimesh, min_component_fraction: float) -> trimesh.Trimesh:
    """Drop connected components with fewer than ``min_component_fraction`` of the faces.

    The largest component is always kept.
    """
    if min_component_fraction <= 0.0 or len(mesh.faces) == 0:
        return mesh
    parts = mesh.split(only_watertight=False)
    if len(parts) <= 1:
        return mesh
    n_faces = sum(len(p.faces) for p in parts)
    largest = max(len(p.faces) for p in parts)
    keep = [p for p in parts if len(p.faces) >= min_component_fraction * n_faces or len(p.faces) == largest]
    return trimesh.util.concatenate(keep)


def extract_mesh(field, cfg: ExportConfig | None = None) -> trimesh.Trimesh:
    """Marching cubes of the field's surface, cleaned up (``cleanup``), with albedo vertex colours. World frame.

    ``cfg.surface`` picks the scalar grid: the optical depth from outside (``visibility``) or the
    density itself (``density``). The grid is padded with one layer of zeros so surfaces cut by
    the box are closed.

    Args:
        field: a field (module docstring contract).
        cfg: export settings; ``resolution``, ``surface``, ``surface_opacity``, ``threshold``,
            ``min_component_fraction``, ``target_faces``, ``smooth_iterations``, ``albedo`` are used.

    Returns:
        A mesh with outward faces (positive volume when closed) and RGBA uint8 vertex colours;
        ``metadata``: ``surface`` and ``iso_level`` (an optical depth or a density).

    Raises:
        EmptyMeshError: no surface at the level (the message says what to try).
    """
    cfg = cfg or ExportConfig()
    check_config(cfg)
    bound = float(field.bound)
    sigma, spacing = density_grid(field, int(cfg.resolution), int(cfg.chunk_size))
    if cfg.surface == "visibility":
        grid = visibility_depth(sigma, spacing)
        level = -math.log(1.0 - float(cfg.surface_opacity))  # 1 - exp(-tau) = surface_opacity
        if not (level < float(grid.max())):
            raise EmptyMeshError(
                f"the field is transparent: no ray from outside reaches {cfg.surface_opacity:.0%} opacity (max density "
                f"{float(sigma.max()):.3g}); train longer, or pass export.surface_opacity=<smaller> (or export.surface=density "
                "export.threshold=<number>)"
            )
    else:
        grid = sigma
        level = resolve_threshold(cfg, sigma, spacing, getattr(field, "surface_density", None))
        hi = float(sigma.max())
        if not (level < hi):
            raise EmptyMeshError(
                f"no density exceeds the iso level {level:.3g} (max density {hi:.3g}); "
                f"pass export.threshold=<number below {hi:.3g}> or train longer"
            )
    padded = np.pad(grid, 1, mode="constant", constant_values=0.0)
    # Both grids grow inwards; "ascent" makes skimage wind faces counter-clockwise seen from outside.
    verts, faces, _, _ = marching_cubes(padded, level=level, spacing=(spacing,) * 3, gradient_direction="ascent")
    verts = verts - (bound + spacing)  # undo the padding offset: grid sample 1 is at -bound
    mesh = trimesh.Trimesh(vertices=verts, faces=faces, process=True)
    mesh.update_faces(mesh.nondegenerate_faces())
    mesh.remove_unreferenced_vertices()
    mesh = remove_floaters(mesh, float(cfg.min_component_fraction))
    if len(mesh.faces) == 0:
        raise EmptyMeshError(
            f"marching cubes at level {level:.3g} found no surface; pass a smaller export.surface_opacity "
            "(or export.surface=density with export.threshold=<number>)"
        )
    mesh = cleanup.smooth(cleanup.decimate(mesh, int(cfg.target_faces)), int(cfg.smooth_iterations))
    if mesh.is_watertight and mesh.is_winding_consistent and mesh.volume < 0:
        mesh.invert()
    colour_mesh(field, mesh, cfg)
    mesh.metadata["surface"] = cfg.surface
    mesh.metadata["iso_level"] = level
    return mesh


def colour_mesh(field, mesh: trimesh.Trimesh, cfg: ExportConfig) -> trimesh.Trimesh:
    """Give ``mesh`` (world frame, outward faces) the field's albedo as vertex colours (``cfg.albedo``), in place."""
    rgb = surface_albedo(field, mesh.vertices, mesh.vertex_normals, cfg.albedo, cfg.chunk_size)
    mesh.visual = trimesh.visual.ColorVisuals(mesh, vertex_colors=to_rgba8(rgb))
    return mesh


def surface_albedo(field, points: np.ndarray, normals: np.ndarray, mode: str = "rendered", chunk_size: int = 65536) -> np.ndarray:
    """Albedo of surface points as ``ExportConfig.albedo`` defines it. points, normals: (N, 3). Returns (N, 3) in [0, 1]."""
    if mode not in ALBEDOS:
        raise ExportError(f"export.albedo={mode!r}; use one of {', '.join(ALBEDOS)}")
    if mode == "rendered":
        return rendered_albedo(field, points, normals, chunk_size=chunk_size)
    return np.clip(query_field(field.albedo, points, field_device(field), chunk_size), 0.0, 1.0)


def to_rgba8(rgb: np.ndarray) -> np.ndarray:
    """RGB in [0, 1] (N, 3) -> opaque RGBA uint8 (N, 4)."""
    # The albedo as is: the sRGB-encoded colour the renders show (export.files, "Colour space").
    rgb = np.clip(rgb, 0.0, 1.0)
    return np.concatenate([np.round(rgb * 255.0), np.full((len(rgb), 1), 255.0)], axis=1).astype(np.uint8)


def world_to_file(up_axis: str) -> np.ndarray:
    """4x4 rotation from the world frame (+z up) to the file frame of ``up_axis``.

    ``"y"``: (x, y, z)_world -> (y, z, x): world +z becomes +y (up) and world +x (the front,
    azimuth 0) becomes +z, the direction glTF viewers and Blender's OBJ import call front.
    """
    if up_axis not in UP_AXES:
        raise ExportError(f"up_axis={up_axis!r}; use one of {', '.join(UP_AXES)}")
    T = np.eye(4)
    if up_axis == "y":
        T[:3, :3] = [[0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [1.0, 0.0, 0.0]]
    return T


def texture_mode(cfg: ExportConfig, field) -> str:
    """``uv`` or ``vertex``: what ``cfg.texture`` asks for with this field (``auto``: uv when xatlas imports)."""
    mode = cfg.texture
    if mode == "auto":
        mode = "uv" if (field is not None and texture_mod.xatlas_available()) else "vertex"
    if mode == "uv":
        if not texture_mod.xatlas_available():
            raise ExportError("export.texture=uv needs xatlas: pip install 'sds3d[uv]' (or use export.texture=vertex)")
        if field is None:
            raise ExportError("export.texture=uv bakes the field's albedo; pass the field (or use export.texture=vertex)")
    return mode


def write_mesh(mesh: trimesh.Trimesh, field, out_dir, cfg: ExportConfig | None = None) -> dict:
    """Write the mesh files into ``out_dir`` (a run's ``mesh/`` folder).

    Writes ``mesh.obj`` + ``mesh.mtl`` (+ ``albedo.png`` when textured), ``mesh.glb``, ``mesh.ply``
    as ``cfg.formats`` asks, in the frame of ``cfg.up_axis`` (``files``: colour space, materials,
    seams), and ``mesh.json`` recording the world -> file transform, the iso level, the texture
    mode and the clean-up (``sds3d.eval`` reads it).

    Args:
        mesh: world-frame mesh from ``extract_mesh`` (vertex colours).
        field: the field, to bake the albedo texture (unused for vertex colours; may be None then).
        out_dir: the folder for the files, created if missing (``run_dir / "mesh"``).
        cfg: export settings.

    Returns:
        {"obj": path, "mtl": path, "texture": path, "glb": path, "ply": path, "meta": path}, only
        for the files written.
    """
    cfg = cfg or ExportConfig()
    check_config(cfg)
    mesh_dir = Path(out_dir)
    mesh_dir.mkdir(parents=True, exist_ok=True)
    T = world_to_file(cfg.up_axis)
    mode = texture_mode(cfg, field)
    vertices = trimesh.transform_points(mesh.vertices, T)
    normals = np.asarray(mesh.vertex_normals) @ T[:3, :3].T
    colours = np.asarray(mesh.visual.vertex_colors, np.float64)[:, :3] / 255.0
    if mode == "uv":
        bake = lambda p, n: surface_albedo(field, p, n, cfg.albedo, cfg.chunk_size)  # noqa: E731
        vmapping, uv_faces, uvs, image = texture_mod.bake_atlas(mesh.vertices, mesh.faces, mesh.vertex_normals, bake,
                                                                int(cfg.texture_size))

    paths: dict = {}
    for fmt in cfg.formats:
        path = mesh_dir / f"mesh.{fmt}"
        if fmt == "obj":
            for stale in [mesh_dir / "mesh.mtl", *mesh_dir.glob("albedo*.png")]:  # from an earlier export
                stale.unlink(missing_ok=True)
            if mode == "uv":
                paths.update(files.write_obj(path, vertices, normals, mesh.faces, uvs=uvs, uv_faces=uv_faces, image=image))
            else:
                paths.update(files.write_obj(path, vertices, normals, mesh.faces, colours=colours))
        elif fmt == "glb":
            if mode == "uv":
                paths["glb"] = files.write_glb(path, vertices[vmapping], normals[vmapping], uv_faces, uvs=uvs, image=image)
            else:
                paths["glb"] = files.write_glb(path, vertices, normals, mesh.faces, colours=colours)
        elif fmt == "ply":
            # PLY readers know vertex colours, not textures.
            vertex_mesh = mesh.copy()
            vertex_mesh.apply_transform(T)
            vertex_mesh.export(path, file_type="ply")
            paths["ply"] = path
    meta = {
        "world_to_file": T.tolist(),
        "up_axis": cfg.up_axis,
        "texture": mode,
        "surface": mesh.metadata.get("surface"),
        "iso_level": mesh.metadata.get("iso_level"),
        "resolution": int(cfg.resolution),
        "decimation": mesh.metadata.get("decimation", "none"),
        "smooth_iterations": int(cfg.smooth_iterations),
        "sliver_faces": cleanup.sliver_count(mesh),
        "faces": int(len(mesh.faces)),
        "vertices": int(len(mesh.vertices)),
    }
    paths["meta"] = mesh_dir / "mesh.json"
    paths["meta"].write_text(json.dumps(meta, indent=2))
    return paths
