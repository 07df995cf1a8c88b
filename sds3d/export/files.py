"""The mesh files: Wavefront .obj + .mtl with welded vertices, glTF binary (.glb) with a diffuse material.

Colour space. The renderer shades and composites in the space of the prior's images (the renders
are those images: DreamFusion feeds them to the prior as they are), and Stable Diffusion's images
are sRGB-encoded photographs; the toy world renders its albedo to pixels without an encoding, so
its images are in that same space. sds3d therefore treats albedo values as the sRGB-encoded
colour a render shows, and every file stores what a viewer needs to show that colour under white
light, as the orbit video does:

- texture PNGs (``albedo.png``, the .obj's ``map_Kd`` and the .glb's ``baseColorTexture``): the
  albedo as is; glTF defines base colour textures as sRGB, and OBJ importers (Blender, MeshLab)
  read 8-bit diffuse maps as sRGB;
- glTF vertex colours (``COLOR_0``, linear by the glTF specification): sRGB-decoded;
- .ply vertex colours (no standard; viewers show bytes as sRGB): as is.

Materials. glTF's default material is a metal (``metallicFactor`` 1): viewers and Blender render
an albedo-only mesh dark and mirror-like. The .glb's material is a rough dielectric
(``metallicFactor`` 0, ``roughnessFactor`` 1), which is what an albedo field is; the .mtl is
diffuse only (``Kd`` 1, ``Ks`` 0, ``illum 1``). Both carry the smooth vertex normals.

Seams. A UV atlas cuts the surface into charts. glTF (like trimesh) gives each vertex one UV, so
the .glb splits vertices along the cuts; OBJ indexes positions, UVs and normals separately, so
the .obj keeps one vertex per surface point and a DCC tool imports a closed mesh. trimesh still
splits it on load (one UV per trimesh vertex); ``trimesh.load(path, merge_tex=True)`` welds it.
trimesh's OBJ writer has no separate UV indices, hence ``write_obj``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import trimesh

from .colour import srgb_to_linear

#: The .glb's material: a rough dielectric with the albedo as base colour.
GLB_MATERIAL = {"metallicFactor": 0.0, "roughnessFactor": 1.0}
TEXTURE_NAME = "albedo.png"


def write_obj(path: Path, vertices: np.ndarray, normals: np.ndarray, faces: np.ndarray, colours: np.ndarray | None = None,
              uvs: np.ndarray | None = None, uv_faces: np.ndarray | None = None, image=None) -> dict:
    """Write ``path`` (.obj) and, when textured, ``mesh.mtl`` + ``albedo.png`` beside it.

    Args:
        vertices: (V, 3) in the file's frame. normals: (V, 3) unit. faces: (F, 3) counter-clockwise
            seen from outside.
        colours: (V, 3) RGB in [0, 1] written as ``v x y z r g b`` (the common extension), if untextured.
        uvs: (T, 2) atlas coordinates (v up); uv_faces: (F, 3) indices into ``uvs`` per face corner.
        image: the albedo texture (PIL), with ``uvs``.

    Returns:
        {"obj": path, "mtl": path, "texture": path} for the files written.
    """
    path = Path(path)
    lines = [f"# sds3d mesh: {len(vertices)} vertices, {len(faces)} faces"]
    paths = {"obj": path}
    textured = uvs is not None
    if textured:
        mtl = path.with_name("mesh.mtl")
        tex = path.with_name(TEXTURE_NAME)
        image.save(tex)
        mtl.write_text("newmtl albedo\nKa 0 0 0\nKd 1 1 1\nKs 0 0 0\nillum 1\nmap_Kd " + tex.name + "\n")
        paths.update(mtl=mtl, texture=tex)
        lines += [f"mtllib {mtl.name}", "usemtl albedo"]
    if colours is not None and not textured:
        lines += [f"v {x:.7g} {y:.7g} {z:.7g} {r:.4f} {g:.4f} {b:.4f}" for (x, y, z), (r, g, b) in zip(vertices, colours)]
    else:
        lines += [f"v {x:.7g} {y:.7g} {z:.7g}" for x, y, z in vertices]
    lines += [f"vn {x:.6f} {y:.6f} {z:.6f}" for x, y, z in normals]
    f = np.asarray(faces) + 1
    if textured:
        lines += [f"vt {u:.7f} {v:.7f}" for u, v in uvs]
        t = np.asarray(uv_faces) + 1
        lines += [f"f {a}/{ta}/{a} {b}/{tb}/{b} {c}/{tc}/{c}" for (a, b, c), (ta, tb, tc) in zip(f, t)]
    else:
        lines += [f"f {a}//{a} {b}//{b} {c}//{c}" for a, b, c in f]
    path.write_text("\n".join(lines) + "\n")
    return paths


def _diffuse_material(tree: dict) -> None:
    """trimesh's glTF tree -> every primitive uses one rough dielectric material (module docstring)."""
    materials = tree.get("materials") or [{}]
    material = dict(materials[0])
    pbr = dict(material.get("pbrMetallicRoughness", {}))
    pbr.update(GLB_MATERIAL)
    pbr.setdefault("baseColorFactor", [1.0, 1.0, 1.0, 1.0])
    material.update(name="albedo", pbrMetallicRoughness=pbr, doubleSided=False)
    tree["materials"] = [material]
    for mesh in tree.get("meshes", []):
        for primitive in mesh["primitives"]:
            primitive["material"] = 0


def write_glb(path: Path, vertices: np.ndarray, normals: np.ndarray, faces: np.ndarray, colours: np.ndarray | None = None,
              uvs: np.ndarray | None = None, image=None) -> Path:
    """Write a .glb: positions, normals, and either ``COLOR_0`` (from ``colours``) or ``TEXCOORD_0`` + texture.

    Args:
        vertices, normals: (V, 3) in the file's frame (one UV per vertex when textured: split at seams).
        faces: (F, 3). colours: (V, 3) sRGB-encoded albedo in [0, 1]. uvs: (V, 2), v up; image: PIL.
    """
    if uvs is not None:
        material = trimesh.visual.material.PBRMaterial(name="albedo", baseColorTexture=image, **GLB_MATERIAL)
        visual = trimesh.visual.TextureVisuals(uv=uvs, material=material)
    else:
        linear = srgb_to_linear(np.clip(colours, 0.0, 1.0))
        rgba = np.concatenate([np.round(linear * 255.0), np.full((len(linear), 1), 255.0)], axis=1).astype(np.uint8)
        visual = trimesh.visual.ColorVisuals(vertex_colors=rgba)
    mesh = trimesh.Trimesh(vertices=vertices, faces=faces, vertex_normals=normals, visual=visual, process=False)
    data = trimesh.exchange.gltf.export_glb(trimesh.Scene(mesh), include_normals=True, tree_postprocessor=_diffuse_material)
    Path(path).write_bytes(data)
    return Path(path)
