#!/usr/bin/env python
"""Time the main job: ``sds3d run configs/toy.yaml prompt=...`` end to end, phase by phase.

    python scripts/bench_run.py --prompt "a green cone" --threads 2

Prints wall seconds for: loading the prior, training (and per SDS step), orbit video, mesh export,
evaluation, and the total (the DESIGN budget: <= 60 s, goal <= 15 s on 2 CPU cores).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", default=str(REPO / "configs" / "toy.yaml"))
    ap.add_argument("--prompt", default="a green cone")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("overrides", nargs="*", help="extra key=value overrides")
    args = ap.parse_args()

    import sds3d.runs as runs
    import sds3d.trainer as trainer
    from sds3d import eval as evaluation
    from sds3d.config import load_config

    torch.set_num_threads(args.threads)
    timings: dict[str, float] = {}

    def timed(name, fn):
        def wrapper(*a, **k):
            t0 = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                timings[name] = timings.get(name, 0.0) + time.perf_counter() - t0
        return wrapper

    trainer.load_prior = timed("load prior", trainer.load_prior)
    runs.render_orbit = timed("orbit video", runs.render_orbit)
    runs.export_mesh = timed("mesh export", runs.export_mesh)
    evaluation.evaluate_run = timed("evaluation", evaluation.evaluate_run)

    with tempfile.TemporaryDirectory() as tmp:
        cfg = load_config(args.config, [f"prompt={args.prompt}", f"out_dir={tmp}", "trainer.progress=false",
                                        f"trainer.threads={args.threads}", *args.overrides])
        run_dir = runs.prepare_run_dir(cfg)
        t0 = time.perf_counter()
        summary = trainer.train(cfg, run_dir)
        total = time.perf_counter() - t0
    steps = cfg.trainer.max_steps
    print(f"prompt: {args.prompt!r}  threads: {args.threads}  steps: {steps}  torch {torch.__version__}")
    for name in ("load prior", "orbit video", "mesh export", "evaluation"):
        print(f"  {name:<12} {timings.get(name, 0.0):7.2f} s")
    train_s = summary.get("train_seconds", float("nan"))
    print(f"  {'training':<12} {train_s:7.2f} s  ({1000 * train_s / max(1, steps):.1f} ms/step)")
    print(f"  {'total':<12} {total:7.2f} s  (budget 60 s, goal 15 s)")
    ev = summary.get("eval", {})
    if ev:
        print(f"  metrics: iou={ev.get('mesh_iou')} colour_error={ev.get('colour_error')} recognition={ev.get('recognition')}")


if __name__ == "__main__":
    main()
