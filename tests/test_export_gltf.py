"""Every kind of .glb sds3d writes passes the Khronos glTF validator with no error and no warning."""

from __future__ import annotations

import torch

from node_tools import validate_gltf
from sds3d.export import ExportConfig, extract_mesh, write_mesh
from sds3d.export.texture import xatlas_available
from test_export import SphereField

torch.set_num_threads(1)


def test_every_exported_glb_is_valid(tmp_path):
    field = SphereField(centres=((0.0, 0.0, 0.2),), radii=(0.4,))
    variants = {"vertex-y": dict(texture="vertex"), "vertex-z": dict(texture="vertex", up_axis="z"),
                "decimated": dict(texture="vertex", target_faces=300)}
    if xatlas_available():
        variants.update({"uv-y": dict(texture="uv", texture_size=64), "uv-z": dict(texture="uv", texture_size=64, up_axis="z")})
    paths = []
    for name, kw in variants.items():
        cfg = ExportConfig(resolution=24, formats=["glb"], **kw)
        paths.append(write_mesh(extract_mesh(field, cfg), field, tmp_path / name, cfg)["glb"])
    for report in validate_gltf(paths):
        assert (report["errors"], report["warnings"]) == (0, 0), report


def test_validator_catches_a_broken_file(tmp_path):
    # The check can fail: a .glb whose JSON claims more bytes than the buffer holds is an error.
    field = SphereField()
    cfg = ExportConfig(resolution=16, formats=["glb"], texture="vertex")
    path = write_mesh(extract_mesh(field, cfg), field, tmp_path, cfg)["glb"]
    data = bytearray(path.read_bytes())
    path.write_bytes(bytes(data[: len(data) - 64]))
    (report,) = validate_gltf([path])
    assert report["errors"] > 0
