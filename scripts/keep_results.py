"""Keep a sweep's results in the repository: per finished run, its config, summary and completion marker.

A working session's machine does not outlive it, and a sweep folder (meshes, videos, checkpoints) is far
too big to commit. What the tables (``scripts/janus_table.py``, ``scripts/estimator_table.py``) read,
and what ``sds3d sweep`` needs to skip a finished run, is a few kB per run: this copies exactly that,
plus, with ``--images``, the run's small preview images. A later session restores it with
``cp -r measurements/NAME /work/meas/NAME`` and the same sweep command goes on where it stopped.

    python scripts/keep_results.py /work/meas/janus measurements/janus [--images]
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from sds3d.runs import COMPLETE  # noqa: E402
from sds3d.sweep.execute import run_state  # noqa: E402

KEPT = ("config.yaml", "summary.json", COMPLETE)
IMAGE_LIMIT = 200_000  # bytes per image: previews, not renders


def keep(sweep_dir: Path, dest: Path, images: bool = False) -> int:
    """Copy the kept files of every finished run folder under ``sweep_dir`` (any depth) to ``dest``; the count."""
    count = 0
    for marker in sorted(sweep_dir.rglob(COMPLETE)):
        run = marker.parent
        if run_state(run) != "done":  # the sweep's own test: a run that ended in an error is not kept as finished
            continue
        out = dest / run.relative_to(sweep_dir)
        out.mkdir(parents=True, exist_ok=True)
        for name in KEPT:
            if (run / name).is_file():
                shutil.copy2(run / name, out / name)
        if images:
            for png in run.glob("*.png"):
                if png.stat().st_size <= IMAGE_LIMIT:
                    shutil.copy2(png, out / png.name)
        count += 1
    return count


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("sweep_dir", type=Path)
    ap.add_argument("dest", type=Path)
    ap.add_argument("--images", action="store_true", help="also the run folder's preview PNGs (each ≤ 200 kB)")
    args = ap.parse_args(argv)
    if not args.sweep_dir.is_dir():
        print(f"error: {args.sweep_dir} is not a folder: give a sweep's output folder", file=sys.stderr)
        return 2
    n = keep(args.sweep_dir, args.dest, args.images)
    print(f"kept {n} finished runs of {args.sweep_dir} in {args.dest}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
