#!/usr/bin/env python
"""The recipe of the toy flow prior, stage by stage (each stage is one `sds3d train-prior --objective flow` call).

    python scripts/train_toy_flow_prior.py --out outputs/toy-flow-prior             # 4000 steps, ~60 min on 2 idle cores
    python scripts/eval_toy_prior.py --prior outputs/toy-flow-prior/flow-1 --out outputs/prior-eval-flow --cfg 1 3 7.5 --n 16 --cameras
    cp -r outputs/toy-flow-prior/flow-1 sds3d/assets/toy-flow-prior                  # then prior.name_or_path=toy-flow

Default: fine-tuned from the shipped ε prior (sds3d/assets/toy-prior, camera-conditioned), the
way InstaFlow's rectified flows start from Stable Diffusion 1.5's ε-UNet (Liu et al. 2024; the
"2_rectified_flow_from_sd_1_5" prior RFDS distils from). The model, the text encoder and the
camera embedding already tell the shapes, colours and views apart; what has to change is the
meaning of the output (ε -> v = ε - x) and of the timestep input (t of the DDPM schedule -> σT of
the flow), which the stage re-learns from a warm start. The flow prior then has seen more
training steps than the ε prior (its 18k plus these 4k); ``--from-scratch`` instead runs the ε
prior's own recipe with the flow objective (scripts/train_toy_prior.py's stages: 3000 -> 6000
camera-free steps, then 2000 + 2000 + 4000 + 4000 camera steps, ~2.3 h), for a comparison at
equal training.

Every stage writes a prior folder under --out (its training.json nests its parent's, back to the
ε prior's recipe) and can be stopped and resumed: run this script again, finished stages are
skipped and the interrupted one continues from its checkpoint. Grade each stage with
scripts/eval_toy_prior.py; the target is >= 95% "both" at its best CFG scale.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from sds3d.priors import TOY_PRIOR_PATH
from sds3d.toyworld.train_prior import main as train_prior

# One stage: its samples already scored 100% "both" at CFG 1, 3 and 7.5 (docs/flow-priors.md), so the
# two further 4000-step stages planned at first were not run; add entries here to train on.
FINE_TUNE_STAGES = [("flow-1", 4000, 1e-3)]
# scripts/train_toy_prior.py's camera stages, after its camera-free base.
SCRATCH_CAMERA_STAGES = [("cam-1", 2000, 5e-4), ("cam-2", 2000, 1e-3), ("cam-3", 4000, 1e-3), ("cam-4", 4000, 1e-3)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, required=True, help="folder for every stage's prior and checkpoints")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--from-scratch", action="store_true", help="the ε prior's recipe with the flow objective instead of fine-tuning")
    args = ap.parse_args()
    common = ["--objective", "flow", "--threads", str(args.threads)]

    def done(name: str) -> bool:
        return (args.out / name / "training.json").is_file()

    def resume_flag(name: str) -> list[str]:
        return ["--resume"] if (args.out / "work" / name / "ckpt.pt").is_file() else []

    def stage(name: str, steps: int, lr: float, parent: Path) -> None:
        if not done(name):
            train_prior(common + ["--camera-conditioning", "--steps", str(steps), "--lr", str(lr), "--init-from", str(parent),
                                  "--out", str(args.out / name), "--work-dir", str(args.out / "work" / name)] + resume_flag(name))

    if args.from_scratch:
        if not done("base-3000"):
            train_prior(common + ["--steps", "3000", "--out", str(args.out / "base-3000"),
                                  "--work-dir", str(args.out / "work" / "base")] + resume_flag("base"))
        if not done("base-6000"):
            train_prior(common + ["--steps", "6000", "--resume", "--out", str(args.out / "base-6000"),
                                  "--work-dir", str(args.out / "work" / "base")])
        parent, stages = args.out / "base-6000", SCRATCH_CAMERA_STAGES
    else:
        parent, stages = TOY_PRIOR_PATH, FINE_TUNE_STAGES
    for name, steps, lr in stages:
        stage(name, steps, lr, parent)
        parent = args.out / name
    print(f"the toy flow prior: {parent}")


if __name__ == "__main__":
    main()
