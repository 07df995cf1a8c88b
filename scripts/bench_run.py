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

    from sds3d.config import load_config
    from sds3d.pipeline import run
    from sds3d.runs import prepare_run_dir

    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        cfg = load_config(args.config, [f"prompt={args.prompt}", f"out_dir={tmp}", "trainer.progress=false",
                                        f"trainer.threads={args.threads}", *args.overrides])
        t0 = time.perf_counter()
        summary = run(cfg, prepare_run_dir(cfg))
        total = time.perf_counter() - t0
    steps = cfg.trainer.max_steps
    timings = summary.get("timings", {})  # phases as the pipeline measured them
    print(f"prompt: {args.prompt!r}  threads: {args.threads}  steps: {steps}  torch {torch.__version__}")
    for key, name in (("load_prior", "load prior"), ("orbit", "orbit video"), ("export", "mesh export"), ("eval", "evaluation")):
        print(f"  {name:<12} {timings.get(key, float('nan')):7.2f} s")
    train_s = timings.get("train", float("nan"))
    print(f"  {'training':<12} {train_s:7.2f} s  ({1000 * train_s / max(1, steps):.1f} ms/step)")
    print(f"  {'total':<12} {total:7.2f} s  (budget 60 s, goal 15 s)")
    ev = summary.get("eval", {})
    if ev:
        print(f"  metrics: iou={ev.get('mesh_iou')} colour_error={ev.get('colour_error')} recognition={ev.get('recognition')}")


if __name__ == "__main__":
    main()
