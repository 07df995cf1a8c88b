"""Mesh export (marching cubes, clean-up, UV texture, .obj/.glb/.ply, the fidelity check) and orbit videos."""

from .mesh import (
    EmptyMeshError,
    ExportConfig,
    ExportError,
    auto_threshold,
    colour_mesh,
    density_grid,
    extract_mesh,
    remove_floaters,
    world_to_file,
    write_mesh,
)
from .video import OrbitConfig, check_orbit_config, write_orbit_video

__all__ = [
    "EmptyMeshError",
    "ExportConfig",
    "ExportError",
    "auto_threshold",
    "colour_mesh",
    "density_grid",
    "extract_mesh",
    "remove_floaters",
    "world_to_file",
    "write_mesh",
    "write_orbit_video",
    "OrbitConfig",
    "check_orbit_config",
]
