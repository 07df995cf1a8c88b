"""The 3D Gaussian splatting ``.ply``: the layout of the 3DGS reference code, which splat viewers read.

One ``vertex`` element, binary little-endian float32 properties, in this order (3DGS,
``GaussianModel.construct_list_of_attributes`` / ``save_ply``):
``x y z`` (mean), ``nx ny nz`` (zeros), ``f_dc_0..2`` (SH degree-0 coefficients,
(rgb - 0.5) / C0 with C0 = Y_0^0 = 0.28209479177387814), ``f_rest_*`` (the higher SH bands,
channel-major: all of red's, then green's, then blue's; only for SH degree > 0), ``opacity``
(logit), ``scale_0..2`` (log), ``rot_0..3`` (unit quaternion w x y z). Written with numpy (a
header and one structured array), read back the same way.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import UserError

SH_C0 = 0.28209479177387814  # Y_0^0 = 1 / (2 sqrt(pi))
_PLY_TYPES = {"float": "<f4", "float32": "<f4", "double": "<f8", "float64": "<f8", "uchar": "u1", "uint8": "u1",
              "char": "i1", "int8": "i1", "ushort": "<u2", "uint16": "<u2", "short": "<i2", "int16": "<i2",
              "uint": "<u4", "uint32": "<u4", "int": "<i4", "int32": "<i4"}


class SplatPlyError(UserError):
    """A file that is not a 3DGS .ply sds3d can read (the message names what is missing)."""


@dataclass
class Splats:
    """N Gaussians as a viewer sees them: means (N, 3), rgb (N, 3) (the degree-0 colour),
    opacities (N,) in (0, 1), scales (N, 3) (not log), quats (N, 4) wxyz, sh_rest (N, K - 1, 3)
    or None (SH degree 0)."""

    means: np.ndarray
    rgb: np.ndarray
    opacities: np.ndarray
    scales: np.ndarray
    quats: np.ndarray
    sh_rest: np.ndarray | None = None


def transform_splats(splats: Splats, T: np.ndarray) -> Splats:
    """The splats moved by the rotation ``T`` (4x4, e.g. ``export.mesh.world_to_file``): means
    R mu, rotations R R_i (quaternion product q_R q_i), SH bands rotated so that each colour
    seen along R d equals the colour seen along d before."""
    from scipy.spatial.transform import Rotation

    R = np.asarray(T, dtype=np.float64)[:3, :3]
    q = np.asarray(splats.quats, dtype=np.float64)
    rotated = (Rotation.from_matrix(R) * Rotation.from_quat(q[:, [1, 2, 3, 0]])).as_quat()  # xyzw
    sh_rest = None if splats.sh_rest is None else np.einsum("jk,nkc->njc", sh_rotation(R, splats.sh_rest.shape[1] + 1)[1:, 1:],
                                                                  np.asarray(splats.sh_rest, dtype=np.float64))
    return Splats(means=np.asarray(splats.means, dtype=np.float64) @ R.T, rgb=splats.rgb, opacities=splats.opacities,
                  scales=splats.scales, quats=rotated[:, [3, 0, 1, 2]], sh_rest=sh_rest)


def sh_rotation(R: np.ndarray, n_bases: int, n_dirs: int = 64) -> np.ndarray:
    """D (K, K) with Y(R d) D = Y(d) for the first K real SH bases (gsplat's basis): coefficients c
    of a colour become D c. Solved by least squares on random directions (exact: rotations map
    each band onto itself)."""
    import torch
    from gsplat.cuda._torch_impl import _eval_sh_bases_fast

    d = np.random.default_rng(0).normal(size=(n_dirs, 3))
    d /= np.linalg.norm(d, axis=-1, keepdims=True)
    Y = _eval_sh_bases_fast(n_bases, torch.from_numpy(d)).numpy()
    Y_rotated = _eval_sh_bases_fast(n_bases, torch.from_numpy(d @ R.T)).numpy()
    return np.linalg.lstsq(Y_rotated, Y, rcond=None)[0]


def splat_properties(sh_degree: int = 0) -> list[str]:
    """The vertex property names in file order for ``sh_degree``."""
    n_rest = 3 * ((sh_degree + 1) ** 2 - 1)
    return (["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2"] + [f"f_rest_{i}" for i in range(n_rest)]
            + ["opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"])


def write_splat_ply(path: str | Path, splats: Splats) -> Path:
    """Write ``splats`` as a 3DGS .ply at ``path`` (parent folders created)."""
    n = len(splats.means)
    rest = np.zeros((n, 0)) if splats.sh_rest is None else np.asarray(splats.sh_rest, dtype=np.float64)
    k = rest.shape[1] + 1 if rest.ndim == 3 else 1
    sh_degree = math.isqrt(k) - 1
    if (sh_degree + 1) ** 2 != k:
        raise ValueError(f"sh_rest has {k - 1} bands per channel; (degree + 1)^2 - 1 bands are needed")
    opacities = np.clip(np.asarray(splats.opacities, dtype=np.float64), 1e-7, 1 - 1e-7)
    quats = np.asarray(splats.quats, dtype=np.float64)
    columns = [
        np.asarray(splats.means, dtype=np.float64), np.zeros((n, 3)),
        (np.asarray(splats.rgb, dtype=np.float64) - 0.5) / SH_C0,
        rest.transpose(0, 2, 1).reshape(n, -1) if rest.ndim == 3 else rest,
        np.log(opacities / (1.0 - opacities))[:, None], np.log(np.asarray(splats.scales, dtype=np.float64)),
        quats / np.linalg.norm(quats, axis=-1, keepdims=True),
    ]
    names = splat_properties(sh_degree)
    data = np.empty(n, dtype=[(name, "<f4") for name in names])
    for name, column in zip(names, np.concatenate(columns, axis=1).T):
        data[name] = column
    header = "\n".join(["ply", "format binary_little_endian 1.0", f"element vertex {n}"]
                       + [f"property float {name}" for name in names] + ["end_header"]) + "\n"
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        f.write(header.encode("ascii"))
        f.write(data.tobytes())
    return path


def _read_header(f, path: Path) -> tuple[int, list[tuple[str, str]]]:
    if f.readline().strip() != b"ply":
        raise SplatPlyError(f"{path}: not a PLY file")
    count, props, in_vertex = None, [], False
    for raw in iter(f.readline, b""):
        words = raw.decode("ascii", errors="replace").split()
        if not words or words[0] in ("comment", "obj_info"):
            continue
        if words[0] == "end_header":
            if count is None:
                raise SplatPlyError(f"{path}: no vertex element")
            return count, props
        if words[0] == "format" and words[1:2] != ["binary_little_endian"]:
            raise SplatPlyError(f"{path}: format {' '.join(words[1:])}; 3DGS files are binary_little_endian")
        if words[0] == "element":
            if count is not None:
                raise SplatPlyError(f"{path}: elements after 'vertex'; a 3DGS file has the vertex element only")
            in_vertex = words[1] == "vertex"
            if not in_vertex:
                raise SplatPlyError(f"{path}: element {words[1]!r} before 'vertex'; a 3DGS file has the vertex element only")
            count = int(words[2])
        elif words[0] == "property" and in_vertex:
            if words[1] == "list" or words[1] not in _PLY_TYPES:
                raise SplatPlyError(f"{path}: vertex property {' '.join(words[1:])} is not a scalar PLY type")
            props.append((words[2], _PLY_TYPES[words[1]]))
    raise SplatPlyError(f"{path}: the header has no end_header")


def read_splat_ply(path: str | Path) -> Splats:
    """Read a 3DGS .ply (this layout, from sds3d or another 3DGS trainer)."""
    path = Path(path)
    if not path.is_file():
        raise SplatPlyError(f"{path}: no such file")
    with open(path, "rb") as f:
        count, props = _read_header(f, path)
        dtype = np.dtype(props)
        raw = f.read(count * dtype.itemsize)
    if len(raw) < count * dtype.itemsize:
        raise SplatPlyError(f"{path}: {count} vertices announced, the file ends after {len(raw) // dtype.itemsize}")
    data = np.frombuffer(raw, dtype=dtype, count=count)
    names = set(dtype.names)
    missing = [p for p in splat_properties(0) if p not in names and not p.startswith("n")]
    if missing:
        raise SplatPlyError(f"{path}: missing vertex properties {', '.join(missing)}; not a 3DGS splat file")

    def cols(*keys):
        return np.stack([data[k].astype(np.float64) for k in keys], axis=-1)

    rest_names = sorted((p for p in names if p.startswith("f_rest_")), key=lambda p: int(p.split("_")[-1]))
    sh_rest = None
    if rest_names:
        k = len(rest_names) // 3 + 1
        if len(rest_names) % 3 or math.isqrt(k) ** 2 != k:
            raise SplatPlyError(f"{path}: {len(rest_names)} f_rest_* properties; 3 ((degree + 1)^2 - 1) are needed")
        sh_rest = cols(*rest_names).reshape(count, 3, k - 1).transpose(0, 2, 1)
    return Splats(
        means=cols("x", "y", "z"), rgb=cols("f_dc_0", "f_dc_1", "f_dc_2") * SH_C0 + 0.5,
        opacities=1.0 / (1.0 + np.exp(-data["opacity"].astype(np.float64))),
        scales=np.exp(cols("scale_0", "scale_1", "scale_2")), quats=cols("rot_0", "rot_1", "rot_2", "rot_3"),
        sh_rest=sh_rest)
