#!/usr/bin/env python
"""Where does a run's mesh differ from the toy shape? False positives and negatives per z slice.

    python scripts/iou_slices.py runs/a-red-cone [--resolution 160]

Uses exactly what ``sds3d eval`` uses: the exported mesh in the world frame, its occupancy at the
voxel centres of a resolution^3 grid over [-1, 1]^3, and the ground truth turned by the yaw that
``sds3d eval`` found (summary.json). Prints the IoU, both bounding boxes, and one line per slice
that holds either shape: false positives (mesh only), false negatives (truth only), truth, mesh.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("--resolution", type=int, default=160)
    args = ap.parse_args()

    from sds3d.eval import _rotate_z, grid_centres, grid_points, load_mesh_world, mesh_occupancy
    from sds3d.runs import load_run_config
    from sds3d.toyworld.prompts import parse_prompt
    from sds3d.toyworld.shapes import occupancy

    cfg = load_run_config(args.run_dir)
    _, shape, _ = parse_prompt(cfg.prompt)
    if shape is None:
        raise SystemExit(f"{cfg.prompt!r} names no toy shape")
    R = args.resolution
    pred = mesh_occupancy(load_mesh_world(args.run_dir, None), R).reshape(R, R, R)
    summary = json.loads((args.run_dir / "summary.json").read_text()) if (args.run_dir / "summary.json").is_file() else {}
    yaw = float(summary.get("eval", {}).get("yaw_deg", 0.0))
    c = grid_centres(R)
    gt = occupancy(shape, _rotate_z(grid_points(R), yaw)).reshape(R, R, R).numpy()
    fp, fn = pred & ~gt, ~pred & gt
    print(f"{args.run_dir}: {shape}, yaw {yaw:.0f} deg, IoU {(pred & gt).sum() / max(1, (pred | gt).sum()):.3f}, "
          f"voxels: mesh {pred.sum()}, truth {gt.sum()}, false positive {fp.sum()}, false negative {fn.sum()}")
    for name, occ in (("mesh", pred), ("truth", gt)):
        if occ.any():
            box = [c[np.where(occ.any(axis=tuple(j for j in range(3) if j != i)))[0][[0, -1]]] for i in range(3)]
            print(f"{name:>5} box: " + "  ".join(f"{a}: [{lo:+.3f}, {hi:+.3f}]" for a, (lo, hi) in zip("xyz", box)))
    print("    z   false+  false-   truth    mesh")
    for k in range(R):
        if gt[:, :, k].any() or pred[:, :, k].any():
            print(f"{c[k]:+.3f} {fp[:, :, k].sum():7d} {fn[:, :, k].sum():7d} {gt[:, :, k].sum():7d} {pred[:, :, k].sum():7d}")


if __name__ == "__main__":
    main()
