"""The CPU rasteriser's cost law: seconds per forward+backward vs Gaussian count and resolution.

The rasteriser as runs use it (``render.splat.rasterize_gaussians``: the twin composites per 8x8
tile, or densely when that is fewer pairs; ``_splat_torch.rasterization(..., tile_size=0)`` is
the dense composite alone).

Gaussians as a run starts them (``scene.gaussians_init``: a ball of radius 0.5, neighbour-distance
scales, opacity 0.1), one view from the training camera distribution, the loss on every output
(rgb, alpha, depth, normals), on one thread unless told otherwise. Prints medians of the process
CPU time (robust to other load on a shared machine; with one thread it is the compute time) and
of the wall time.

With ``--runs RUN_DIR ...`` it times the trained Gaussians of finished runs instead (their
``ckpt/last.pt``: small, mostly opaque Gaussians on a surface, what most of a run renders).

Usage: python scripts/bench_splat.py [--counts 1000 5000 20000] [--resolutions 32 64] [--iters 5]
       python scripts/bench_splat.py --runs runs/a-green-cone ... [--resolutions 32 64]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

from sds3d.cameras import CameraConfig, sample_cameras
from sds3d.render.splat import cameras_to_gsplat, rasterize_gaussians
from sds3d.runs import load_run_config, load_scene
from sds3d.scene.gaussians_init import initial_gaussians, random_ball


def trained_gaussians(run_dir: Path) -> tuple[torch.Tensor, ...]:
    """(means, quats, scales, opacities, colours) of a finished Gaussian run, as its scene activates them."""
    cfg = load_run_config(run_dir)  # RunDirError (a UserError, so a ValueError) names a folder that is no run
    if cfg.scene.kind != "gaussians":
        raise ValueError(f"{run_dir} is a scene.kind={cfg.scene.kind} run; --runs takes scene.kind=gaussians runs")
    s = load_scene(cfg, run_dir).splats()
    return tuple(torch.from_numpy(x).float() for x in (s.means, s.quats, s.scales, s.opacities, s.rgb))


def seconds_per_step(n: int, res: int, iters: int, generator: torch.Generator,
                     gaussians: tuple[torch.Tensor, ...] | None = None) -> tuple[float, float]:
    """Median (process CPU seconds, wall seconds) of one forward+backward."""
    if gaussians is None:
        init = initial_gaussians(random_ball(n, generator=generator))
        gaussians = (init.means, init.quats, init.scales, init.opacities, init.colors)
    params = [t.clone().requires_grad_() for t in gaussians]
    cpu, wall = [], []
    for i in range(iters + 1):
        viewmats, Ks = cameras_to_gsplat(sample_cameras(CameraConfig(), generator=generator), res)
        t0, c0 = time.perf_counter(), time.process_time()
        out = rasterize_gaussians(*params, viewmats, Ks, res, res, backgrounds=torch.ones(1, 3))
        sum(out[k].mean() for k in ("rgb", "alpha", "depth", "normal")).backward()
        if i > 0:  # the first step warms up
            cpu.append(time.process_time() - c0)
            wall.append(time.perf_counter() - t0)
    return sorted(cpu)[len(cpu) // 2], sorted(wall)[len(wall) // 2]


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--counts", type=int, nargs="+", default=[1000, 5000, 20000])
    p.add_argument("--resolutions", type=int, nargs="+", default=[32, 64])
    p.add_argument("--iters", type=int, default=5)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--runs", type=Path, nargs="+", help="finished Gaussian run folders: time their trained Gaussians")
    a = p.parse_args()
    try:
        trained = [(run, trained_gaussians(run)) for run in a.runs or []]
    except ValueError as e:
        print(f"bench_splat: {e}", file=sys.stderr)
        raise SystemExit(2) from None
    torch.set_num_threads(a.threads)
    g = torch.Generator().manual_seed(0)
    print(f"torch rasteriser, forward+backward, {a.threads} thread(s), median of {a.iters}: "
          f"CPU seconds per step (wall seconds); ns per pixel x Gaussian pair (CPU)")
    print("gaussians " + "".join(f"{f'{r}x{r}':>18}" for r in a.resolutions) + "   ns/pair")
    cases = [(str(run), len(gs[0]), gs) for run, gs in trained] or [(str(n), n, None) for n in a.counts]
    for name, n, gs in cases:
        row = [seconds_per_step(n, r, a.iters, g, gs) for r in a.resolutions]
        per = [1e9 * c / (r * r * n) for (c, _), r in zip(row, a.resolutions)]
        label = name if gs is None else f"{Path(name).name} ({n})"
        print(f"{label:>9} " + "".join(f"{f'{c:.3f} ({w:.3f})':>18}" for c, w in row) + "   " + " ".join(f"{x:.0f}" for x in per))


if __name__ == "__main__":
    main()
