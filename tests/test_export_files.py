"""The mesh files: welded .obj, the .glb's material, normals and colour spaces, mesh clean-up."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest
import torch
import trimesh
from scipy.spatial import cKDTree

from sds3d.export import ExportConfig, ExportError, extract_mesh, write_mesh
from sds3d.export.cleanup import decimate, remove_fins, sliver_count, smooth
from sds3d.export.colour import linear_to_srgb, srgb_to_linear
from sds3d.export.mesh import world_to_file
from sds3d.export.texture import xatlas_available
from test_export import SphereField

torch.set_num_threads(1)
needs_xatlas = pytest.mark.skipif(not xatlas_available(), reason="xatlas not installed (extra sds3d[uv])")


def glb_json(path) -> dict:
    """The JSON chunk of a .glb (glTF 2.0 binary: 12-byte header, then chunk length, type, data)."""
    data = path.read_bytes()
    assert data[:4] == b"glTF" and struct.unpack("<I", data[4:8])[0] == 2
    length, kind = struct.unpack("<II", data[12:20])
    assert kind == 0x4E4F534A  # "JSON"
    return json.loads(data[20 : 20 + length])


def srgb_decode_by_hand(c: float) -> float:
    # IEC 61966-2-1, written out independently of sds3d.
    return c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4


def test_srgb_transfer_functions_match_the_standard():
    xs = np.linspace(0.0, 1.0, 101)
    np.testing.assert_allclose(srgb_to_linear(xs), [srgb_decode_by_hand(x) for x in xs], rtol=1e-12)
    np.testing.assert_allclose(linear_to_srgb(srgb_to_linear(xs)), xs, atol=1e-12)
    assert srgb_to_linear(0.5) == pytest.approx(0.21404, abs=1e-5)  # the textbook value


@pytest.fixture(scope="module")
def sphere():
    field = SphereField()
    return field, extract_mesh(field, ExportConfig(resolution=24))


@pytest.mark.parametrize("texture", [pytest.param("uv", marks=needs_xatlas), "vertex"])
def test_glb_is_a_rough_dielectric_with_smooth_normals(tmp_path, sphere, texture):
    field, mesh = sphere
    paths = write_mesh(mesh, field, tmp_path, ExportConfig(resolution=24, texture=texture, texture_size=64, formats=["glb"]))
    tree = glb_json(paths["glb"])
    (material,) = tree["materials"]
    pbr = material["pbrMetallicRoughness"]
    assert pbr["metallicFactor"] == 0.0 and pbr["roughnessFactor"] == 1.0
    (primitive,) = tree["meshes"][0]["primitives"]
    assert primitive["material"] == 0 and "NORMAL" in primitive["attributes"]
    assert ("baseColorTexture" in pbr) == (texture == "uv") and ("COLOR_0" in primitive["attributes"]) == (texture == "vertex")
    # The normals are the welded surface's vertex normals, also where UV seams split vertices.
    (loaded,) = trimesh.load(paths["glb"], process=False).geometry.values()  # force="mesh" recomputes normals
    world = trimesh.transform_points(loaded.vertices, np.linalg.inv(world_to_file("y")))
    _, nearest = cKDTree(mesh.vertices).query(world)
    normals = np.asarray(loaded.vertex_normals) @ world_to_file("y")[:3, :3]  # file -> world (a rotation)
    np.testing.assert_allclose(normals, mesh.vertex_normals[nearest], atol=1e-5)


def test_glb_vertex_colours_are_linear_and_the_obj_ones_srgb(tmp_path, sphere):
    field, mesh = sphere
    paths = write_mesh(mesh, field, tmp_path, ExportConfig(resolution=24, texture="vertex", formats=["glb", "obj"]))
    albedo = mesh.visual.vertex_colors[:, :3] / 255.0
    scene = trimesh.load(paths["glb"])
    (geometry,) = scene.geometry.values()
    colour_0 = np.asarray(geometry.visual.vertex_attributes["color"], np.float64)[:, :3] / 255.0
    expected = np.vectorize(srgb_decode_by_hand)(albedo)
    np.testing.assert_allclose(colour_0, expected, atol=0.5 / 255.0 + 1e-9)
    obj = trimesh.load(paths["obj"], force="mesh", process=False)
    np.testing.assert_allclose(obj.visual.vertex_colors[:, :3] / 255.0, albedo, atol=0.5 / 255.0 + 1e-6)


@needs_xatlas
def test_obj_welds_vertices_across_uv_seams(tmp_path, sphere):
    field, mesh = sphere
    paths = write_mesh(mesh, field, tmp_path, ExportConfig(resolution=24, texture="uv", texture_size=64, formats=["obj", "glb"]))
    lines = paths["obj"].read_text().splitlines()
    n_v = sum(line.startswith("v ") for line in lines)
    n_vt = sum(line.startswith("vt ") for line in lines)
    assert n_v == len(mesh.vertices) < n_vt  # one position per surface point; seams duplicate UVs only
    welded = trimesh.load(paths["obj"], force="mesh", merge_tex=True)
    assert welded.is_watertight and welded.is_winding_consistent and welded.volume > 0
    assert len(trimesh.load(paths["glb"], force="mesh").vertices) == n_vt  # glTF: one UV per vertex
    mtl = paths["mtl"].read_text()
    assert "Ks 0 0 0" in mtl and "map_Kd albedo.png" in mtl


@needs_xatlas
def test_texture_holds_the_albedo_as_rendered(tmp_path, sphere):
    # The PNG stores the albedo as is (sRGB-encoded, like the renders): the texel at each vertex's
    # UV gives back the vertex colour, in the .obj and in the .glb.
    field, mesh = sphere
    paths = write_mesh(mesh, field, tmp_path, ExportConfig(resolution=24, texture="uv", texture_size=128, formats=["obj", "glb"]))
    for fmt in ("obj", "glb"):
        loaded = trimesh.load(paths[fmt], force="mesh")
        colours = loaded.visual.to_color().vertex_colors[:, :3] / 255.0
        world = trimesh.transform_points(loaded.vertices, np.linalg.inv(world_to_file("y")))
        expected = field.albedo(torch.as_tensor(world, dtype=torch.float32)).numpy()
        assert np.median(np.abs(colours - expected)) < 0.02, fmt


def min_angles_by_hand(vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    tri = vertices[faces]
    angles = []
    for k in range(3):
        a, b, c = tri[:, k], tri[:, (k + 1) % 3], tri[:, (k + 2) % 3]
        u, v = b - a, c - a
        cos = (u * v).sum(1) / (np.linalg.norm(u, axis=1) * np.linalg.norm(v, axis=1))
        angles.append(np.degrees(np.arccos(np.clip(cos, -1, 1))))
    return np.min(angles, axis=0)


def test_sliver_count_counts_faces_with_a_small_angle():
    vertices = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [2, 0.05, 0], [0, 0, 1.0]])
    faces = np.array([[0, 1, 2], [1, 3, 2], [0, 2, 4]])
    mesh = trimesh.Trimesh(vertices, faces, process=False)
    assert sliver_count(mesh, 5.0) == int((min_angles_by_hand(vertices, faces) < 5.0).sum())
    assert sliver_count(mesh, 0.1) == int((min_angles_by_hand(vertices, faces) < 0.1).sum())


def test_taubin_smoothing_removes_marching_cubes_slivers_without_shrinking():
    raw = extract_mesh(SphereField(), ExportConfig(resolution=40, smooth_iterations=0))
    smoothed = smooth(raw.copy(), 10)
    before = min_angles_by_hand(np.asarray(raw.vertices), np.asarray(raw.faces))
    after = min_angles_by_hand(np.asarray(smoothed.vertices), np.asarray(smoothed.faces))
    assert (before < 5).sum() > 20 and (after < 5).sum() == 0
    assert smoothed.volume == pytest.approx(raw.volume, rel=0.01) and smoothed.is_watertight
    r = np.linalg.norm(smoothed.vertices, axis=1)
    assert np.abs(r - 0.5).max() < 2.0 / 39  # still the sphere, within a voxel


def test_decimation_reaches_the_target_and_keeps_the_solid():
    mesh = extract_mesh(SphereField(), ExportConfig(resolution=40, smooth_iterations=0))
    small = decimate(mesh.copy(), 600)
    assert abs(len(small.faces) - 600) <= 4 and small.is_watertight
    assert small.volume == pytest.approx(mesh.volume, rel=0.02)
    assert small.metadata["decimation"] == f"{len(mesh.faces)} -> {len(small.faces)} faces"
    assert decimate(mesh, 10 * len(mesh.faces)) is mesh  # nothing to do
    exported = extract_mesh(SphereField(), ExportConfig(resolution=40, target_faces=600))
    assert abs(len(exported.faces) - 600) <= 4 and sliver_count(exported) == 0


def test_fins_left_by_a_collapse_are_removed():
    sphere = trimesh.creation.icosphere(subdivisions=2)
    n = len(sphere.faces)
    # A flap folded onto itself on a surface edge (a, b): two triangles on the same three vertices,
    # so (a, b) is shared by 4 faces.
    a, b = sphere.faces[0][:2]
    c = int(np.argmin(sphere.vertices @ sphere.vertices[a]))  # the far side
    fin = np.array([[a, b, c], [b, a, c]])
    folded = trimesh.Trimesh(sphere.vertices, np.concatenate([sphere.faces, fin]), process=False)
    assert not folded.is_watertight
    repaired = remove_fins(folded)
    assert repaired.is_watertight and len(repaired.faces) == n
    np.testing.assert_array_equal(np.sort(repaired.faces, axis=1), np.sort(sphere.faces, axis=1))
    assert len(remove_fins(sphere.copy()).faces) == n  # nothing to remove


def test_clean_up_settings_are_checked():
    with pytest.raises(ExportError, match="target_faces"):
        ExportConfig(target_faces=-1)
    with pytest.raises(ExportError, match="smooth_iterations"):
        ExportConfig(smooth_iterations=-2)


def test_mesh_json_records_the_clean_up(tmp_path, sphere):
    field, mesh = sphere
    meta = json.loads(write_mesh(mesh, field, tmp_path, ExportConfig(resolution=24, texture="vertex"))["meta"].read_text())
    assert meta["sliver_faces"] == sliver_count(mesh) and meta["smooth_iterations"] == 10
    assert meta["decimation"] == "none" and meta["faces"] == len(mesh.faces)
