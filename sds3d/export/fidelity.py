"""Does the exported mesh look like the scene? Render both from the same cameras and compare.

"The mesh looks worse than the video" is the most repeated complaint about text-to-3D exports
(threestudio's and stable-dreamfusion's trackers): the video shows the volume, the user gets a
surface cut out of it. ``mesh_fidelity`` makes the difference a number. The mesh file, as a viewer
loads it, is ray-cast through the same pixel centres as the scene's renders
(``cameras.get_rays``), coloured by its texture or vertex colours (``mesh_albedo``), and compared
with the scene's albedo render, both on white:

- ``mask_iou``: intersection over union of the mesh's silhouette (the rays that hit it) and the
  scene's (the pixels whose accumulated opacity is >= 1/2, where a render turns from background
  to object);
- ``psnr``: 10 log10(1 / MSE) of the two albedo images over all pixels (silhouette and colour);
- ``psnr_inside``: the same over the pixels both silhouettes cover (colour alone).

Ray casting uses trimesh's Embree intersector (``embreex``): one hit per ray, no rasteriser of our
own.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch
import trimesh

from ..cameras import Cameras, get_rays
from ..errors import UserError
from .colour import linear_to_srgb

#: Opacity at which a scene render counts as covering a pixel.
SILHOUETTE_OPACITY = 0.5


class FidelityError(UserError):
    """The mesh cannot be compared with the scene (the message says why)."""


def _sample_texture(image, uv: np.ndarray) -> np.ndarray:
    """Bilinear lookup of RGB in [0, 1] at UVs (v up, OBJ/trimesh convention), clamped to the edge."""
    tex = np.asarray(image.convert("RGB"), np.float64) / 255.0
    h, w = tex.shape[:2]
    x = np.clip(uv[:, 0] * w - 0.5, 0.0, w - 1.0)
    y = np.clip((1.0 - uv[:, 1]) * h - 0.5, 0.0, h - 1.0)
    x0, y0 = np.minimum(np.floor(x).astype(np.int64), w - 2), np.minimum(np.floor(y).astype(np.int64), h - 2)
    fx, fy = (x - x0)[:, None], (y - y0)[:, None]
    top = tex[y0, x0] * (1 - fx) + tex[y0, x0 + 1] * fx
    bottom = tex[y0 + 1, x0] * (1 - fx) + tex[y0 + 1, x0 + 1] * fx
    return top * (1 - fy) + bottom * fy


def mesh_albedo(mesh: trimesh.Trimesh, face_index: np.ndarray, bary: np.ndarray, linear_vertex_colours: bool = False) -> np.ndarray:
    """The colour a mesh file carries at surface points, in the space of the renders (RGB in [0, 1]).

    Args:
        mesh: a loaded mesh with ``TextureVisuals`` (a base colour texture: the albedo as stored) or
            vertex colours.
        face_index: (K,) faces hit. bary: (K, 3) barycentric coordinates in them.
        linear_vertex_colours: the vertex colours are glTF ``COLOR_0`` (linear): encode them back to sRGB.

    Returns:
        (K, 3).
    """
    corners = mesh.faces[face_index]
    visual = mesh.visual
    colours = None
    if visual.kind == "texture":
        material = visual.material
        image = getattr(material, "baseColorTexture", None) or getattr(material, "image", None)
        if image is not None and visual.uv is not None:
            uv = (np.asarray(visual.uv, np.float64)[corners] * bary[..., None]).sum(axis=1)
            return _sample_texture(image, uv)
        colours = visual.vertex_attributes.get("color")  # a glTF primitive with a material and COLOR_0
    elif visual.kind in ("vertex", "face"):
        colours = visual.vertex_colors
    if colours is None:
        raise FidelityError("the mesh file has neither a texture nor vertex colours to compare with the renders")
    rgb = (np.asarray(colours, np.float64)[:, :3] / 255.0)[corners]
    rgb = (rgb * bary[..., None]).sum(axis=1)
    return linear_to_srgb(rgb) if linear_vertex_colours else rgb


def cast_mesh(mesh: trimesh.Trimesh, cameras: Cameras, resolution: int, linear_vertex_colours: bool = False) -> dict:
    """The mesh seen through the cameras' pixel centres: albedo on white, silhouette, shading normals.

    Args:
        mesh: world-frame mesh (``load_exported_mesh``).
        cameras: B cameras. resolution: pixels per side.

    Returns:
        ``rgb`` (B, 3, H, W) albedo on white, ``mask`` (B, 1, H, W) bool, ``normal`` (B, 3, H, W)
        (interpolated vertex normals, 0 off the mesh); numpy arrays.
    """
    from trimesh.ray.ray_pyembree import RayMeshIntersector

    origins, dirs = get_rays(cameras.to("cpu"), resolution)
    B, H, W = origins.shape[:3]
    o = origins.reshape(-1, 3).double().numpy()
    d = dirs.reshape(-1, 3).double().numpy()
    tri, ray, hit = RayMeshIntersector(mesh).intersects_id(o, d, multiple_hits=False, return_locations=True)
    rgb = np.ones((B * H * W, 3))
    normal = np.zeros((B * H * W, 3))
    mask = np.zeros(B * H * W, bool)
    if len(tri):
        bary = trimesh.triangles.points_to_barycentric(mesh.triangles[tri], hit)
        rgb[ray] = np.clip(mesh_albedo(mesh, tri, bary, linear_vertex_colours), 0.0, 1.0)
        n = (np.asarray(mesh.vertex_normals)[mesh.faces[tri]] * bary[..., None]).sum(axis=1)
        normal[ray] = n / np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-12)
        mask[ray] = True

    def image(a: np.ndarray) -> np.ndarray:
        return a.reshape(B, H, W, -1).transpose(0, 3, 1, 2)

    return {"rgb": image(rgb), "mask": image(mask), "normal": image(normal)}


@torch.no_grad()
def render_scene(scene, cameras: Cameras, resolution: int) -> dict:
    """The scene's albedo on white, silhouette (opacity >= 1/2) and normals, as numpy (B, C, H, W)."""
    device = next(scene.parameters()).device

    def white(dirs):
        return torch.ones_like(dirs)

    # Lambertian shading makes the renderer composite normals too; its albedo image is the one compared.
    out = scene.render(cameras.to(device), shading="lambertian", resolution=resolution, stratified=False, background=white)
    opacity = out["opacity"].float().cpu().numpy()
    return {"rgb": out["albedo"].float().clamp(0, 1).cpu().numpy(), "mask": opacity >= SILHOUETTE_OPACITY,
            "normal": out["normal"].float().cpu().numpy()}


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """10 log10(1 / MSE) of images in [0, 1] (inf when identical)."""
    mse = float(np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2)) if np.size(a) else 0.0
    return math.inf if mse == 0.0 else 10.0 * math.log10(1.0 / mse)


def compare(scene_views: dict, mesh_views: dict) -> dict:
    """``mask_iou``, ``psnr``, ``psnr_inside`` of two sets of views (``render_scene`` / ``cast_mesh``)."""
    s, m = scene_views["mask"][:, 0], mesh_views["mask"][:, 0]
    union = int((s | m).sum())
    both = s & m
    inside = np.broadcast_to(both[:, None], scene_views["rgb"].shape)
    return {"mask_iou": float((s & m).sum() / union) if union else 1.0,
            "psnr": psnr(scene_views["rgb"], mesh_views["rgb"]),
            "psnr_inside": psnr(scene_views["rgb"][inside], mesh_views["rgb"][inside])}


def comparison_image(scene_views: dict, mesh_views: dict) -> np.ndarray:
    """Side by side, one column per view: scene albedo, mesh albedo, scene normals, mesh normals, silhouettes.

    The silhouette row is grey where both cover a pixel, red where only the scene does (the mesh is
    too small there) and blue where only the mesh does (too large). Returns (H', W', 3) uint8.
    """
    s, m = scene_views["mask"][:, 0], mesh_views["mask"][:, 0]
    sil = np.ones(s.shape + (3,))
    sil[s & m] = 0.6
    sil[s & ~m] = (0.9, 0.1, 0.1)
    sil[~s & m] = (0.1, 0.2, 0.9)

    def normals(v: dict) -> np.ndarray:  # on white, as the validation renders show them
        a = v["mask"].astype(np.float64)
        return (v["normal"] * 0.5 + 0.5) * a + (1 - a)

    rows = [scene_views["rgb"], mesh_views["rgb"], normals(scene_views), normals(mesh_views), sil.transpose(0, 3, 1, 2)]
    grid = np.concatenate([np.concatenate(list(r.transpose(0, 2, 3, 1)), axis=1) for r in rows], axis=0)
    return np.round(np.clip(grid, 0.0, 1.0) * 255.0).astype(np.uint8)


def mesh_fidelity(scene, mesh_world: trimesh.Trimesh, cameras: Cameras, resolution: int,
                  image_path: Path | None = None, linear_vertex_colours: bool = False) -> dict:
    """Compare the exported mesh with the scene from ``cameras`` (module docstring).

    Args:
        scene: the trained scene (``sds3d.scene.Scene``; its ``render`` with ``background=``).
        mesh_world: the exported mesh loaded back, in the world frame (``load_exported_mesh``).
        cameras: the views (the run's validation cameras). resolution: pixels per side.
        image_path: where to write the side-by-side PNG (``comparison_image``), if given.

    Returns:
        {"mask_iou", "psnr", "psnr_inside", "views", "resolution"} (+ "image" when written).
    """
    scene_views = render_scene(scene, cameras, resolution)
    mesh_views = cast_mesh(mesh_world, cameras, resolution, linear_vertex_colours)
    result = {**compare(scene_views, mesh_views), "views": len(cameras), "resolution": int(resolution)}
    if image_path is not None:
        import imageio.v3 as iio

        image_path = Path(image_path)
        image_path.parent.mkdir(parents=True, exist_ok=True)
        iio.imwrite(image_path, comparison_image(scene_views, mesh_views))
        result["image"] = str(image_path)
    return result


def load_exported_mesh(paths: dict) -> tuple[trimesh.Trimesh, bool]:
    """The mesh a viewer opens, back in the world frame: the .obj if written, else the .glb, else the .ply.

    Args:
        paths: ``write_mesh``'s result (file paths by format, ``meta``: mesh.json with the transform).

    Returns:
        The mesh and whether its vertex colours are linear (glTF ``COLOR_0``).
    """
    import json

    fmt = next((f for f in ("obj", "glb", "ply") if f in paths), None)
    if fmt is None:
        raise FidelityError("no mesh file was written to compare with the scene")
    mesh = trimesh.load(paths[fmt])
    if isinstance(mesh, trimesh.Scene):  # a .glb: its one geometry under its node's transform
        # (force="mesh" concatenates, which drops a glTF primitive's vertex colours)
        transform, name = mesh.graph[mesh.graph.nodes_geometry[0]]
        mesh = mesh.geometry[name]  # not copy(): it drops vertex_attributes
        mesh.apply_transform(transform)
    T = np.asarray(json.loads(Path(paths["meta"]).read_text())["world_to_file"], np.float64)
    mesh.apply_transform(np.linalg.inv(T))
    return mesh, fmt == "glb"
