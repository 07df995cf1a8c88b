#!/usr/bin/env python
"""A picture of results: a few orbit frames of every run in a folder of runs (e.g. a sweep).

    python scripts/results_grid.py runs/sweeps/guidance-scale --match guidance.scale-3 --out docs/results.png

Rows are runs (sorted by name), columns are evenly spaced frames of each run's orbit video.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import imageio.v3 as iio
import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("folder", type=Path)
    ap.add_argument("--match", default="", help="only run folders whose name contains this")
    ap.add_argument("--frames", type=int, default=4)
    ap.add_argument("--columns", type=int, default=2, help="runs side by side")
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()

    runs = sorted(p for p in args.folder.iterdir() if (p / "orbit.mp4").exists() and args.match in p.name
                  and (not args.match or p.name.endswith(args.match)))
    if not runs:
        raise SystemExit(f"no runs with orbit.mp4 matching {args.match!r} in {args.folder}")
    strips = []
    for run in runs:
        video = iio.imread(run / "orbit.mp4")
        idx = np.linspace(0, len(video), args.frames, endpoint=False).astype(int)
        strips.append(np.concatenate([video[i] for i in idx], axis=1))
    while len(strips) % args.columns:
        strips.append(np.full_like(strips[0], 255))
    rows = [np.concatenate(strips[i : i + args.columns], axis=1) for i in range(0, len(strips), args.columns)]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    iio.imwrite(args.out, np.concatenate(rows, axis=0))
    print(f"{args.out}: {len(runs)} runs")


if __name__ == "__main__":
    main()
