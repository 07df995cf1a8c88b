"""``sds3d sweep``: argument parsing only; everything else is ``run_sweep``."""

from __future__ import annotations

import argparse
import sys

from .grid import SweepError, SweepSpec, load_sweep_file, parse_grid_arg

EPILOG = """examples:
  sds3d sweep configs/toy.yaml --grid guidance.scale=1,3,7.5,30,100 --prompts "a red cube" "a green cone" --seeds 0 1
  sds3d sweep configs/toy.yaml trainer.max_steps=300 --grid 'guidance.negative_prompt="blurry, low quality",""'
  sds3d sweep configs/sweeps/guidance-scale.yaml --jobs 2
  sds3d sweep configs/sweeps/guidance-scale.yaml --batch-runs 4   (4 runs per process, one prior call per step)
  sds3d sweep configs/sweeps/guidance-scale.yaml --ray 10.0.0.5:6379   (sweep folder on shared storage)
Re-running the same command skips finished runs, resumes unfinished ones and starts missing ones."""


def add_sweep_parser(sub, func) -> argparse.ArgumentParser:
    s = sub.add_parser("sweep", help="runs over a grid of config values x prompts x seeds; comparison.png + summary table",
                       description="sds3d sweep CONFIG|SWEEP.yaml [key=value ...] [--grid key=v1,v2 ...] [--prompts ...]",
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    s.add_argument("config", metavar="CONFIG|SWEEP.yaml", help="a run config, or a sweep file (config, grid, prompts, seeds, out)")
    s.add_argument("overrides", nargs="*", metavar="key=value", help="fixed overrides for every run (before the options)")
    s.add_argument("--grid", action="append", default=[], metavar="KEY=V1,V2",
                   help="a config key and its values (commas inside quotes or brackets are kept); repeat for a product")
    s.add_argument("--prompts", nargs="+", metavar="PROMPT", help="prompts to run (default: the config's prompt)")
    s.add_argument("--seeds", nargs="+", type=int, metavar="SEED", help="seeds to run (default: the config's seed)")
    s.add_argument("--out", metavar="DIR", help="sweep folder (default: OUT_DIR/sweeps/<config>-<keys>)")
    s.add_argument("--jobs", type=int, default=1, metavar="N",
                   help="runs at a time, each in its own process with cores/N threads (default 1: sequential, in process)")
    s.add_argument("--batch-runs", type=int, default=1, metavar="K",
                   help="train up to K runs that share a prior in one process (or Ray task), one batched prior call per step "
                        "for all of them (default 1)")
    s.add_argument("--ray", nargs="?", const="", default=None, metavar="ADDRESS",
                   help="submit each run as a Ray task (local Ray without ADDRESS); needs pip install -e '.[distributed]'")
    s.set_defaults(func=func)
    return s


def spec_from_args(args) -> SweepSpec:
    """The SweepSpec of ``sds3d sweep`` arguments; a sweep file's entries are replaced by given options."""
    spec = load_sweep_file(args.config) or SweepSpec(config=args.config)
    for item in args.overrides:
        if "=" not in item:
            raise SweepError(f"{item!r} is not key=value; fixed overrides follow CONFIG, e.g. trainer.max_steps=300")
    spec.overrides = list(spec.overrides) + list(args.overrides)
    for item in args.grid:
        key, values = parse_grid_arg(item)
        spec.grid[key] = values
    if args.prompts:
        spec.prompts = list(args.prompts)
    if args.seeds:
        spec.seeds = list(args.seeds)
    if args.out:
        spec.out = args.out
    if not spec.grid:
        raise SweepError("nothing to sweep: add --grid key=v1,v2 (e.g. --grid guidance.scale=1,3,7.5) or use a sweep file")
    return spec


def run_sweep_cli(args) -> int:
    """Exit 0 when every run finished, 1 when some failed (all recorded in summary.md)."""
    from .run import run_sweep

    spec = spec_from_args(args)
    result = run_sweep(spec, jobs=args.jobs, ray=args.ray is not None, ray_address=args.ray or None, batch_runs=args.batch_runs)
    for name, path in result.files.items():
        print(path)
    if result.failed:
        print(f"sds3d sweep: {len(result.failed)} of {len(result.rows)} runs failed; errors in {result.files['summary.md']}",
              file=sys.stderr)
        return 1
    return 0
