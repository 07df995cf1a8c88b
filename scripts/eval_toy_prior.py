#!/usr/bin/env python
"""Sample a toy prior for all 16 prompts and grade the samples with the independent judge.

    python scripts/eval_toy_prior.py --out outputs/prior-eval --cfg 1 3 7.5 --n 16
    python scripts/eval_toy_prior.py --out outputs/prior-eval-cam --cameras   # camera-conditioned prior
    python scripts/eval_toy_prior.py --prior toy-flow --out outputs/prior-eval-flow --cfg 1 3 7.5 --n 16 --cameras

The sampler is the prior's schedule's (``sds3d.priors.sampling.sample_images``): DDIM for the ε
prior, Euler on FlowMatchEulerDiscreteScheduler's sigmas for a flow prior (toy-flow or any folder
``sds3d train-prior --objective flow`` wrote); the grading is the same.

Writes one PNG per sample (the name holds the prompt) and a grid per guidance scale, and prints
the recognition rate of colour, shape and both, per prompt and overall.

Toy world v2's priors (``grade_v2``: the 145 training prompts and, separately, the 27 held-out ones,
judged by the v2 judge; the best guidance scale is the one with the best training-prompt rate):

    python scripts/eval_toy_prior.py --world v2 --prior toy-v2-text --cameras --cfg 1.5 3 5 7.5 --n 8 --out outputs/eval-v2-text
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import imageio.v3 as iio
import torch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--prior", default="toy", help="toy, toy-flow, or a toy prior folder")
    ap.add_argument("--cfg", type=float, nargs="+", default=[3.0], help="guidance scales")
    ap.add_argument("--n", type=int, default=16, help="samples per prompt")
    ap.add_argument("--steps", type=int, default=50, help="sampler steps (DDIM; Euler for a flow prior)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--cameras", action="store_true",
                    help="sample each image at a random toy camera: its view word in the prompt and, for a "
                         "camera-conditioned prior, the exact camera")
    ap.add_argument("--world", choices=("v1", "v2"), default="v1", help="v2: grade a toy world v2 prior (grade_v2)")
    ap.add_argument("--batch", type=int, default=64, help="v2: samples per DDIM batch")
    args = ap.parse_args()
    if args.world == "v2":
        grade_v2(args)
        return

    from sds3d.cameras import sample_cameras, view_labels
    from sds3d.export.video import frames_to_uint8 as to_uint8
    from sds3d.paths import slugify
    from sds3d.priors import load_prior
    from sds3d.priors.sampling import sample_images
    from sds3d.toyworld import world
    from sds3d.toyworld.judge import judge
    from sds3d.toyworld.prompts import all_prompts, make_prompt, parse_prompt

    torch.set_num_threads(args.threads)
    prior = load_prior(args.prior)
    sampler = "Euler" if prior.schedule.family == "flow" else "DDIM"
    prompts = all_prompts()
    results = {}
    for scale in args.cfg:
        t0 = time.time()
        g = torch.Generator().manual_seed(args.seed)
        folder = args.out / f"cfg{scale:g}"
        folder.mkdir(parents=True, exist_ok=True)
        rows, table = [], {}
        for prompt in prompts:
            colour, shape, _ = parse_prompt(prompt)
            texts, cameras = [prompt] * args.n, None
            if args.cameras:
                cams = sample_cameras(world.camera_config(), args.n, generator=g)
                texts = [make_prompt(colour, shape, v) for v in view_labels(cams.azimuth_deg, cams.elevation_deg)]
                cameras = cams if prior.camera_conditioned else None
            images = sample_images(prior, texts, guidance_scale=scale, num_inference_steps=args.steps, generator=g,
                                   cameras=cameras)
            verdicts = judge(images)
            c_ok = sum(v[0] == colour for v in verdicts) / args.n
            s_ok = sum(v[1] == shape for v in verdicts) / args.n
            both = sum(v == (colour, shape) for v in verdicts) / args.n
            table[prompt] = {"colour": c_ok, "shape": s_ok, "both": both}
            for i, img in enumerate(to_uint8(images)):
                iio.imwrite(folder / f"{slugify(prompt)}_{i:02d}.png", img)
            rows.append(torch.cat(list(images), dim=-1))
        grid = torch.cat(rows, dim=-2)[None]
        iio.imwrite(folder / "grid.png", to_uint8(grid)[0])
        overall = {k: sum(v[k] for v in table.values()) / len(table) for k in ("colour", "shape", "both")}
        results[f"{scale:g}"] = {"overall": overall, "per_prompt": table, "seconds": round(time.time() - t0, 1), "sampler": sampler}
        print(f"\nCFG {scale:g}: {args.n} samples per prompt, {sampler} {args.steps} steps ({time.time() - t0:.0f} s)")
        print(f"{'prompt':<20} {'colour':>7} {'shape':>7} {'both':>7}")
        for prompt, v in table.items():
            print(f"{prompt:<20} {v['colour']:>7.0%} {v['shape']:>7.0%} {v['both']:>7.0%}")
        print(f"{'overall':<20} {overall['colour']:>7.1%} {overall['shape']:>7.1%} {overall['both']:>7.1%}")
    (args.out / "results.json").write_text(json.dumps(results, indent=2) + "\n")


def grade_v2(args) -> None:
    """Recognition rates of a v2 prior per guidance scale: training prompts (by kind and overall)
    and held-out prompts; a grid PNG per scale (one row per prompt) and results.json."""
    from sds3d.export.video import frames_to_uint8 as to_uint8
    from sds3d.priors import load_prior
    from sds3d.toyworld.v2.grading import grade
    from sds3d.toyworld.v2.prompts import held_out_prompts, training_prompts

    torch.set_num_threads(args.threads)
    prior = load_prior(args.prior)
    sets = {"train": training_prompts(), "held_out": held_out_prompts()}
    results = {}
    for scale in args.cfg:
        t0 = time.time()
        entry = {}
        for name, prompts in sets.items():
            grades = grade(prior, prompts, scale, n=args.n, steps=args.steps, seed=args.seed, cameras=args.cameras,
                           batch=args.batch)
            rows = grades.images.reshape(len(prompts), args.n, *grades.images.shape[1:])
            grid = torch.cat([torch.cat(list(r), dim=-1) for r in rows], dim=-2)
            args.out.mkdir(parents=True, exist_ok=True)
            iio.imwrite(args.out / f"cfg{scale:g}-{name}.png", to_uint8(grid[None])[0])
            entry[name] = {"rate": grades.rate(), "by_kind": grades.rate_by_kind(),
                           "per_prompt": {p: grades.rate(p) for p in prompts},
                           "verdicts": {p: grades.verdicts[i * args.n:(i + 1) * args.n] for i, p in enumerate(prompts)}}
        entry["seconds"] = round(time.time() - t0, 1)
        results[f"{scale:g}"] = entry
        kinds = "  ".join(f"{k} {v:.0%}" for k, v in entry["train"]["by_kind"].items())
        print(f"CFG {scale:g}: training prompts {entry['train']['rate']:.1%} ({kinds}); held out {entry['held_out']['rate']:.1%} "
              f"({entry['seconds']:.0f} s)", flush=True)
    best = max(results, key=lambda k: results[k]["train"]["rate"])
    summary = {"prior": args.prior, "cameras": args.cameras, "n": args.n, "ddim_steps": args.steps, "best_cfg": float(best),
               "best_train_rate": results[best]["train"]["rate"], "best_held_out_rate": results[best]["held_out"]["rate"],
               "target_met": results[best]["train"]["rate"] >= 0.9, "per_cfg": results}
    (args.out / "results.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(f"best CFG {best}: training prompts {summary['best_train_rate']:.1%} (target 90%: "
          f"{'met' if summary['target_met'] else 'NOT met'}), held out {summary['best_held_out_rate']:.1%}")


if __name__ == "__main__":
    main()
