#!/usr/bin/env python
"""The recipe of the shipped toy prior, stage by stage (each stage is one `sds3d train-prior` call).

    python scripts/train_toy_prior.py --out outputs/toy-prior-recipe      # about 2.5 h on 2 idle cores

1. the camera-free model: 3000 steps, then resumed to 6000 (the shipped weights were made this
   way, so the cosine schedule restarts at step 3000);
2. camera conditioning added (zero-initialised, so it starts as stage 1's model) and fine-tuned:
   2000 steps at lr 5e-4, then 2000 + 4000 + 4000 steps at lr 1e-3, each stage starting from the
   previous one's weights (--init-from). At lr 5e-4 the model ignored the camera; at 1e-3 it
   learns to use it, and SDS cubes and cones improve with every stage (README, "The toy world and
   its prior").

Every stage writes a prior folder under --out (training.json nests the recipe of its parent) and
can be stopped and resumed like `sds3d train-prior` (run this script again: finished stages are
skipped, the interrupted one continues from its checkpoint). For one stage, use `sds3d train-prior`.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from sds3d.toyworld.train_prior import main as train_prior

CAMERA_STAGES = [("cam-1", 2000, 5e-4), ("cam-2", 2000, 1e-3), ("cam-3", 4000, 1e-3), ("cam-4", 4000, 1e-3)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, required=True, help="folder for every stage's prior and checkpoints")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    common = ["--threads", str(args.threads)]

    def done(name: str) -> bool:
        return (args.out / name / "training.json").is_file()

    def resume_flag(name: str) -> list[str]:
        return ["--resume"] if (args.out / "work" / name / "ckpt.pt").is_file() else []

    if not done("base-3000"):
        train_prior(common + ["--steps", "3000", "--out", str(args.out / "base-3000"),
                              "--work-dir", str(args.out / "work" / "base")] + resume_flag("base"))
    if not done("base-6000"):
        train_prior(common + ["--steps", "6000", "--resume", "--out", str(args.out / "base-6000"),
                              "--work-dir", str(args.out / "work" / "base")])
    parent = "base-6000"
    for name, steps, lr in CAMERA_STAGES:
        if not done(name):
            train_prior(common + ["--camera-conditioning", "--steps", str(steps), "--lr", str(lr),
                                  "--init-from", str(args.out / parent), "--out", str(args.out / name),
                                  "--work-dir", str(args.out / "work" / name)] + resume_flag(name))
        parent = name
    print(f"the shipped recipe's prior: {args.out / parent}")


if __name__ == "__main__":
    main()
