#!/usr/bin/env python
"""Time the main job, ``sds3d run CONFIG prompt=...``, from the command to summary.json, phase by phase.

    python scripts/bench_run.py --prompt "a green cone" --threads 2
    python scripts/bench_run.py --against /work/ab-base --repeats 5        # A/B against another checkout
    python scripts/bench_run.py --config configs/toy-fast.yaml --against /work/ab-base --against-config configs/toy.yaml

Each run is a fresh ``python -m sds3d.cli run`` process (start-up and imports count, as for a
user) with the checkout first on PYTHONPATH. Phases: start-up (the rest of the wall time: Python,
imports, config), and the pipeline's own timings from summary.json: loading the prior, training,
orbit video, mesh export, evaluation. CPU seconds (user + system of the process) are printed too:
on a shared machine they move less than wall seconds. ``--against`` alternates A (this checkout)
and B (the other) ``--repeats`` times and prints the median of every phase and the ratio A / B.
``--json`` writes every run's numbers (``scripts/perf_measure.py fill`` makes docs/performance.md's table of them).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PHASES = (("startup", "start-up"), ("load_prior", "load prior"), ("train", "training"), ("orbit", "orbit video"),
          ("export", "mesh export"), ("eval", "evaluation"), ("total", "total"), ("cpu", "CPU seconds"))


def run_once(tree: Path, config: str, prompt: str, threads: int, overrides: list[str]) -> dict:
    """One ``sds3d run`` of checkout ``tree`` in a fresh process: wall and CPU seconds, phases, metrics."""
    with tempfile.TemporaryDirectory() as tmp:
        env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(tree), os.environ.get("PYTHONPATH", "")]), OMP_NUM_THREADS=str(threads))
        argv = [sys.executable, "-m", "sds3d.cli", "run", str(tree / config), f"prompt={prompt}", f"out_dir={tmp}", "name=bench",
                "trainer.progress=false", f"trainer.threads={threads}", *overrides]
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        proc = subprocess.run(argv, cwd=tree, env=env, capture_output=True, text=True)
        wall = time.perf_counter() - t0
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        if proc.returncode != 0:
            tail = [line for line in proc.stderr.splitlines() if line.strip()][-3:]
            sys.exit(f"bench_run: the run of {tree} failed (exit {proc.returncode}): {' | '.join(tail)}")
        summary = json.loads((Path(tmp) / "bench" / "summary.json").read_text())
    timings = summary.get("timings", {})
    out = {k: float(timings.get(k, float("nan"))) for k, _ in PHASES[1:6]}
    # A checkout that records no phase timings (before issue 14) has its whole time in "total" only.
    startup = wall - sum(v for v in out.values() if v == v) if timings else float("nan")
    out.update(total=wall, startup=startup,
               cpu=(after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime), steps=summary.get("steps"))
    ev = summary.get("eval") or {}
    out.update({k: ev.get(k) for k in ("mesh_iou", "colour_error", "recognition")})
    return out


def medians(runs: list[dict]) -> dict:
    return {k: statistics.median(r[k] for r in runs) for k, _ in PHASES}


def print_table(columns: dict[str, dict], steps: int | None) -> None:
    """Phases as rows, one column per checkout (medians), and A / B when there are two."""
    names = list(columns)
    header = f"  {'phase':<12}" + "".join(f"{n:>14}" for n in names) + ("    A / B" if len(names) == 2 else "")
    print(header)
    for key, label in PHASES:
        cells = "".join(f"{columns[n][key]:>12.2f} s" for n in names)
        ratio = f"{columns[names[0]][key] / columns[names[1]][key]:>9.2f}" if len(names) == 2 and columns[names[1]][key] else ""
        extra = f"  ({1000 * columns[names[0]][key] / steps:.1f} ms/step)" if key == "train" and steps and len(names) == 1 else ""
        print(f"  {label:<12}{cells}{ratio}{extra}")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", default="configs/toy.yaml", help="run config, relative to the checkout")
    ap.add_argument("--prompt", default="a green cone")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--against", type=Path, metavar="TREE", help="another checkout (B), e.g. `git worktree add /work/ab-base <commit>`")
    ap.add_argument("--against-config", metavar="CONFIG", help="B's run config (default: --config)")
    ap.add_argument("--repeats", type=int, default=1, help="runs of each checkout (alternating A, B, A, B, ...)")
    ap.add_argument("--json", type=Path, metavar="FILE", help="write every run's numbers here")
    ap.add_argument("overrides", nargs="*", help="extra key=value overrides for every run")
    args = ap.parse_args(argv)
    if args.repeats < 1:
        ap.error(f"--repeats {args.repeats} must be at least 1")
    if args.against is not None and not (args.against / "sds3d" / "__init__.py").is_file():
        ap.error(f"--against {args.against} is not an sds3d checkout (no sds3d/__init__.py); create one with git worktree add")
    sides = {"A": (REPO, args.config)}
    if args.against is not None:
        sides["B"] = (args.against.resolve(), args.against_config or args.config)
    runs: dict[str, list[dict]] = {name: [] for name in sides}
    for i in range(args.repeats):
        for name, (tree, config) in sides.items():
            r = run_once(tree, config, args.prompt, args.threads, args.overrides)
            runs[name].append(r)
            print(f"  [{i + 1}/{args.repeats}] {name} {tree}: total {r['total']:.2f} s, cpu {r['cpu']:.2f} s, iou {r['mesh_iou']}", file=sys.stderr)
    steps = runs["A"][0]["steps"]
    print(f"prompt: {args.prompt!r}  threads: {args.threads}  repeats: {args.repeats}  (medians; load {os.getloadavg()[0]:.2f} now)")
    for name, (tree, config) in sides.items():
        print(f"  {name}: {tree} {config}  steps {runs[name][0]['steps']}")
    print_table({name: medians(rs) for name, rs in runs.items()}, steps)
    for name, rs in runs.items():
        print(f"  {name} metrics: " + "; ".join(f"iou={r['mesh_iou']} colour={r['colour_error']}" for r in rs))
    if args.json:
        args.json.write_text(json.dumps({"prompt": args.prompt, "threads": args.threads, "sides": {n: str(t) for n, (t, _) in sides.items()},
                                         "configs": {n: c for n, (_, c) in sides.items()}, "runs": runs}, indent=2))


if __name__ == "__main__":
    main()
