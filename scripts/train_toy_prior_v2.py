#!/usr/bin/env python
"""The recipe of toy world v2's two priors, stage by stage (each stage is one `sds3d train-prior --world v2` call).

    python scripts/train_toy_prior_v2.py                      # both priors, every stage not done yet
    python scripts/train_toy_prior_v2.py --prior text --max-stages 1   # one stage of one prior

- the view-suffix prior (``toy-v2-text``, sds3d/assets/toy-v2-text-prior): text only, like Stable
  Diffusion; the shipped v1 prior's weights with its camera embedding folded away
  (``toyworld.camera_free``: it starts as v1's null-camera function);
- the camera-conditioned prior (``toy-v2-camera``, sds3d/assets/toy-v2-camera-prior): the same data
  plus the exact camera of every image (MVDream-style, camera dropped 10% of the time), from the
  shipped v1 prior as it is.

Both start from v1 (``--init scratch``: from random weights) because v1's data set is a part of v2's
(its 24000 renders are 39% of v2's 61500, and the compositions are made of v1's sphere, cube and
cone in v1's colours): v1's weights already denoise that part, the text encoder already
separates its colours and shapes, and only the faced objects, the relations and the new words
are new. Each stage is STAGE_STEPS steps from the previous stage's EMA weights (a fresh AdamW
and cosine schedule, as the v1 recipe's camera stages); a finished stage's weights (fp16
safetensors, ~15 MB) replace the previous stage's in the asset folder, whose training.json names
the stage and nests its parents' recipes. Commit the folder after each stage: a later session
(on any machine) continues from it. An interrupted stage resumes from its checkpoint under
--work-dir when the script is run again; the rendered data set is cached there too.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

from sds3d.toyworld.train_prior import main as train_prior

ROOT = Path(__file__).resolve().parents[1]
#: prior -> (asset folder name, camera conditioning)
PRIORS = {"text": ("toy-v2-text-prior", False), "camera": ("toy-v2-camera-prior", True)}
#: (name, steps, lr): v1's camera stages' length, 4000 steps at batch 64: about 70 min on 2 idle
#: cores (1.0-1.1 s/step measured for the text prior's s1), ~1.5-1.8 s/step on one thread of a busy
#: machine (docs/janus.md). Add a stage here if the grading misses its target.
STAGES = [("s1", 4000, 1e-3), ("s2", 4000, 1e-3), ("s3", 4000, 1e-3), ("s4", 4000, 1e-3)]


class RecipeError(ValueError):
    """An asset folder this recipe did not write (the message says what to do)."""


def finished_stages(asset: Path) -> int:
    """How many of STAGES the asset folder holds (0: none yet)."""
    info = asset / "training.json"
    if not info.is_file():
        return 0
    stage = json.loads(info.read_text()).get("stage")
    names = [name for name, _, _ in STAGES]
    if stage not in names:
        raise RecipeError(f"{asset} holds stage {stage!r}, not one of this recipe's {names}; move it away to re-train")
    return names.index(stage) + 1


def repo_relative(path: str) -> str:
    """A lineage path inside this repository as a path from its root (the asset is committed; an
    absolute path would name the machine it was trained on)."""
    try:
        return Path(path).resolve().relative_to(ROOT).as_posix()
    except ValueError:
        return path


def install(stage_out: Path, asset: Path) -> None:
    """Replace the asset folder by a finished stage's prior (copy first: the asset is never half-written)."""
    tmp = asset.with_name(asset.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    shutil.copytree(stage_out, tmp)
    if asset.exists():
        shutil.rmtree(asset)
    tmp.rename(asset)


def train(prior: str, args) -> None:
    name, camera = PRIORS[prior]
    asset = args.assets / name
    done = finished_stages(asset)
    ran = 0
    for k, (stage, steps, lr) in enumerate(STAGES):
        if k < done:
            continue
        if args.max_stages is not None and ran >= args.max_stages:
            return
        parent = asset if k > 0 else (None if args.init == "scratch" else ROOT / "sds3d" / "assets" / "toy-prior")
        work = args.work_dir / prior / stage
        out = work / "prior"
        argv = ["--world", "v2", "--steps", str(args.stage_steps or steps), "--lr", str(lr), "--out", str(out),
                "--work-dir", str(work), "--dataset-cache", str(args.work_dir / "dataset"), "--threads", str(args.threads),
                "--images-per-pair", str(args.images_per_pair), "--batch-size", str(args.batch_size),
                "--ckpt-every", str(args.ckpt_every)]
        argv += ["--camera-conditioning"] * camera + (["--init-from", str(parent)] if parent is not None else [])
        argv += ["--resume"] if (work / "ckpt.pt").is_file() else []
        print(f"== {name} stage {stage} ({k + 1}/{len(STAGES)}): {' '.join(argv)}", flush=True)
        t0 = time.time()
        train_prior(argv)
        info = json.loads((out / "training.json").read_text())
        if info.get("init_from"):
            info["init_from"] = repo_relative(info["init_from"])
        info.update(recipe="scripts/train_toy_prior_v2.py", prior=name, stage=stage, init=args.init,
                    stage_minutes_last_process=round((time.time() - t0) / 60, 2))
        (out / "training.json").write_text(json.dumps(info, indent=2) + "\n")
        install(out, asset)
        ran += 1
        print(f"== {name} stage {stage} done in {(time.time() - t0) / 60:.1f} min -> {asset} (commit it)", flush=True)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--prior", choices=("text", "camera", "both"), default="both")
    ap.add_argument("--assets", type=Path, default=ROOT / "sds3d" / "assets", help="where the priors' folders go")
    ap.add_argument("--work-dir", type=Path, default=Path("data") / "toy-v2-train", help="checkpoints and the data set cache")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--max-stages", type=int, default=None, help="run at most this many stages per prior, then stop")
    ap.add_argument("--init", choices=("v1", "scratch"), default="v1", help="first stage's weights: the shipped v1 prior, or random")
    # Smaller than the recipe, for smoke runs and tests:
    ap.add_argument("--stage-steps", type=int, default=None, help="steps of every stage (default: STAGES')")
    ap.add_argument("--images-per-pair", type=int, default=1500)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--ckpt-every", type=int, default=250)
    args = ap.parse_args(argv)
    try:
        for prior in (("text", "camera") if args.prior == "both" else (args.prior,)):
            train(prior, args)
    except RecipeError as e:
        raise SystemExit(f"train_toy_prior_v2: error: {e}") from None


if __name__ == "__main__":
    main()
