#!/usr/bin/env python
"""How hard does the prior pull a run's renders back towards the ground truth?

    python scripts/restoring_force.py outputs/gs2/a-red-cone__seed-0__guidance.scale-3 [--prior toy] [--elevation -10 -8]

SDS moves a render x towards the denoiser's estimate x0_hat = (x_t - sqrt(1 - abar) eps_hat) / sqrt(abar):
eps_hat - eps = sqrt(abar / (1 - abar)) (x - x0_hat), so the SDS gradient (DreamFusion Eq. 3) is
w(t) sqrt(abar / (1 - abar)) (x - x0_hat), and its mean over eps points from x to mean x0_hat.
For renders x of a trained run and the toy world's exact renders x_gt from the same cameras
(the ground truth turned by the yaw ``sds3d eval`` found), this prints, per t = f T,

    r = <mean x0_hat - x, x_gt - x> / ||x_gt - x||^2,

the fraction of the way to the truth that one step's target moves (1: all the way, 0: the prior
is content with x, < 0: it pushes further away). ``out`` restricts the sums to pixels the run
covers and the truth leaves empty (a skirt, an oversized silhouette); ``in`` to the truth's
object pixels. For comparison it prints r for the same truth perturbed by hand: the shape
inflated by 0.07 (``inflated``), which the prior should pull back strongly.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

FRACTIONS = (0.1, 0.2, 0.3, 0.5, 0.7, 0.9)


@torch.no_grad()
def restoring_force(prior, x_img, gt_img, texts, cameras, scale, n=16, seed=0, masks=None):
    """r per t fraction (and per mask) of renders x_img towards gt_img. Images (B, 3, H, W) in [0, 1]; B cameras."""
    from sds3d.priors.sampling import mean_denoised

    x, x_gt = prior.encode_images(x_img), prior.encode_images(gt_img)
    d = x_gt - x
    masks = {"all": torch.ones_like(x[:, :1])} | (masks or {})
    means = mean_denoised(prior, x, texts, cameras, scale, FRACTIONS, n, seed)
    return {k: [float(((m - x) * d * mask).sum() / (d * d * mask).sum().clamp_min(1e-12)) for m in means]
            for k, mask in masks.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("--prior", default=None, help="prior to ask (default: the run's prior.name_or_path)")
    ap.add_argument("--views", type=int, default=16)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--elevation", type=float, nargs=2, metavar=("LO", "HI"), default=None,
                    help="draw the views' elevations from [LO, HI] degrees (default: the toy world's lowest to 45)")
    args = ap.parse_args()

    from sds3d.cameras import make_cameras, view_labels
    from sds3d.priors import load_prior
    from sds3d.render import render
    from sds3d.runs import load_run_config, load_scene
    from sds3d.toyworld import render as toy_render
    from sds3d.toyworld import world
    from sds3d.toyworld.prompts import make_prompt, parse_prompt

    torch.set_num_threads(args.threads)
    cfg = load_run_config(args.run_dir)
    colour, shape, _ = parse_prompt(cfg.prompt)
    if colour is None or shape is None:
        raise SystemExit(f"{cfg.prompt!r} is not a toy prompt; this diagnostic needs the toy world's truth")
    summary = json.loads((args.run_dir / "summary.json").read_text())
    yaw = float(summary.get("eval", {}).get("yaw_deg", 0.0))
    field, background = load_scene(cfg, args.run_dir)
    g = torch.Generator().manual_seed(0)
    B = args.views
    lo, hi = world.camera_config().elevation_deg
    lo, hi = (lo, min(hi, 45.0)) if args.elevation is None else args.elevation  # default: views a view word leaves ambiguous
    elevation = torch.rand(B, generator=g) * (hi - lo) + lo
    azimuth = torch.rand(B, generator=g) * 360.0
    cams = make_cameras(azimuth, elevation, world.CAMERA_DISTANCE, world.FOV_Y_DEG)
    # The truth turned by +yaw about +z, seen from a camera at azimuth a == the truth seen from a - yaw.
    cams_gt = make_cameras(azimuth - yaw, elevation, world.CAMERA_DISTANCE, world.FOV_Y_DEG)
    with torch.no_grad():
        x_img = render(field, background, cams, cfg.render, shading="lambertian", stratified=False)["rgb"]
    albedo = world.colour_rgb(colour)
    gt_img, gt_mask = toy_render.render(shape, albedo, cams_gt)
    run_mask = (x_img.min(1, keepdim=True).values < 0.98).float()
    masks = {"out": run_mask * (gt_mask < 0.5).float(), "in": (gt_mask >= 0.5).float()}
    print(f"{args.run_dir}: mean |render - truth| {(x_img - gt_img).abs().mean():.4f}; "
          f"pixels outside the truth per view {float(masks['out'].sum()) / B:.1f}")

    prior = load_prior(args.prior or cfg.prior.name_or_path, device="cpu", cfg=cfg.prior)
    texts = [make_prompt(colour, shape, v) for v in view_labels(azimuth, elevation)]
    header = "t / T      " + " ".join(f"{f:>6.1f}" for f in FRACTIONS)
    print(header)
    for k, r in restoring_force(prior, x_img, gt_img, texts, cams, cfg.guidance.scale, masks=masks).items():
        print(f"run {k:<6} " + " ".join(f"{v:6.2f}" for v in r))

    # Reference: the same truth inflated by 0.07 (a clean, oversized render of the right shape).
    sdf, bounding_radius = toy_render.sdf, toy_render.bounding_radius
    try:
        toy_render.sdf = lambda s, p: sdf(s, p) - 0.07
        toy_render.bounding_radius = lambda s: bounding_radius(s) + 0.07
        inflated, _ = toy_render.render(shape, albedo, cams_gt)
    finally:
        toy_render.sdf, toy_render.bounding_radius = sdf, bounding_radius
    r = restoring_force(prior, inflated, gt_img, texts, cams, cfg.guidance.scale)["all"]
    print("inflated   " + " ".join(f"{v:6.2f}" for v in r))


if __name__ == "__main__":
    main()
