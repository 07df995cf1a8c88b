#!/usr/bin/env python
"""Toy world v2's measurements: dataset render time, the judge's accuracy on noisy ground-truth
renders, and the metrics' calibration margins.

    python scripts/toyworld_v2_report.py [--dataset] [--judge-images 20] [--calibration]

--dataset renders the full training set (61500 images, several minutes); --judge-images N renders
N noisy GT images (N(0, 0.03) pixel noise, each prompt's training camera distribution) of every
training and held-out prompt and reports the judge's accuracy per kind; --calibration prints the
Janus verdicts and margins of GT meshes, the synthetic Janus variants and their noisy and blurred
copies (``toyworld.v2.calibration``), and the composition metrics of the 48 benchmark compositions.
"""

from __future__ import annotations

import argparse
import collections
import time


def dataset_time(threads: int) -> None:
    import torch

    from sds3d.toyworld.dataset import build_dataset as build_v1
    from sds3d.toyworld.v2.dataset import build_dataset

    torch.set_num_threads(threads)
    t = time.time()
    build_v1(1500, 0)
    t_v1 = time.time() - t
    t = time.time()
    images, *_ = build_dataset(0, v1=False)
    t_v2 = time.time() - t
    print(f"dataset ({threads} thread(s)): v1 part 24000 renders {t_v1:.0f} s; v2 part {len(images)} renders {t_v2:.0f} s "
          f"({1000 * t_v2 / len(images):.1f} ms each); total {t_v1 + t_v2:.0f} s")


def judge_accuracy(n: int, seed: int = 0) -> None:
    import torch

    from sds3d.cameras import make_cameras, sample_cameras
    from sds3d.toyworld import world
    from sds3d.toyworld.v2 import judge
    from sds3d.toyworld.v2.dataset import sample_front_biased
    from sds3d.toyworld.v2.objects import from_prompt
    from sds3d.toyworld.v2.prompts import held_out_prompts, make_prompt, training_prompts
    from sds3d.toyworld.v2.render import render

    t = time.time()
    judge._templates()
    print(f"judge templates: {len(judge._templates()[0])} in {time.time() - t:.0f} s")
    g = torch.Generator().manual_seed(seed)
    hits, errors = collections.defaultdict(lambda: [0, 0]), collections.Counter()
    for split, prompts in (("training", training_prompts()), ("held out", held_out_prompts())):
        for prompt in prompts:
            obj = from_prompt(prompt)
            if obj.kind == "v1":
                cams = sample_cameras(world.camera_config(), n, generator=g)
            else:
                az, el = sample_front_biased(n, g)
                cams = make_cameras(az, el, world.CAMERA_DISTANCE, world.FOV_Y_DEG)
            images, _ = render(obj, cams)
            images = (images + 0.03 * torch.randn(images.shape, generator=g)).clamp(0, 1)
            verdicts = judge.judge(images)
            ok = judge.matches(verdicts, [prompt] * n)
            group = obj.parsed.relation or (obj.nouns[0] if obj.kind == "faced" else "v1")
            for key in ((split, group), (split, "all")):
                hits[key][0] += sum(ok)
                hits[key][1] += n
            errors.update((prompt, make_prompt(v)) for v, o in zip(verdicts, ok) if not o)
    print("judge accuracy on noisy GT renders:")
    for (split, group), (h, total) in sorted(hits.items()):
        print(f"  {split:9s} {group:10s} {h:5d}/{total:5d} = {h / total:.3f}")
    print("most frequent errors (prompt -> verdict):")
    for (p, v), c in errors.most_common(10):
        print(f"  {c:3d}  {p} -> {v}")


def calibration() -> None:
    from sds3d.toyworld.v2 import calibration as cal
    from sds3d.toyworld.v2.prompts import benchmark_prompts, parse_prompt

    print("Janus calibration (F_max: main face; F_other: best face >= 90 deg from it; thresholds 0.5 / 0.40):")
    print(f"  {'object':6s} {'variant':20s} {'copy':8s} ok    janus n  front  F_max  F_other")
    for r in cal.janus_table():
        print(f"  {r['object']:6s} {str(r['variant']):20s} {r['perturbation']:8s} {str(r['ok']):5s} {str(r['janus']):5s} "
              f"{r['n_faces']}  {r['front_az']:5.0f}  {r['F_max']:.3f}  {r['F_other']:.3f}")
    args = []
    for p in benchmark_prompts()["compositions"]:
        parsed = parse_prompt(p)
        (c1, s1), (c2, s2) = parsed.parts
        args.append((parsed.relation, c1, s1, c2, s2))
    rows = cal.composition_table(args)
    print("compositions (48 benchmark prompts): min over prompts")
    for kind in cal.PERTURBATIONS:
        mine = [r for r in rows if r["perturbation"] == kind]
        print(f"  {kind:8s} union IoU {min(r['union_iou'] for r in mine):.3f}  part IoU {min(min(r['part_iou']) for r in mine):.3f}  "
              f"max part colour err {max(max(r['part_colour_err']) for r in mine):.3f}  composition_ok {sum(r['composition_ok'] for r in mine)}/{len(mine)}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dataset", action="store_true")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--judge-images", type=int, default=0, help="noisy GT renders per prompt (0: skip)")
    ap.add_argument("--calibration", action="store_true")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    if args.dataset:
        dataset_time(args.threads)
    if args.judge_images:
        judge_accuracy(args.judge_images)
    if args.calibration:
        calibration()


if __name__ == "__main__":
    main()
