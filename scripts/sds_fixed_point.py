#!/usr/bin/env python
"""Does SDS keep the right answer? Start the NeRF *at* the ground-truth shape, then run SDS.

    python scripts/sds_fixed_point.py --prompt "a blue cube" --out outputs/fixed-point [key=value ...]

A perfect prior and a perfect distillation leave the ground truth (nearly) where it is; whatever
drifts away measures what the prior and the SDS objective prefer over the truth, independently
of how optimisation from the blob init behaves. Steps:
1. fit the run's field to the toy shape (raw density or signed distance) and colour, supervised;
2. print how its NeRF render differs from the toy world's own render (same cameras) and save both
   (``render_vs_gt.png``);
3. show what the prior makes of the *exact* toy-world render: the mean over noise draws of its
   one-step estimate x0_hat = (x_t - sqrt(1 - abar) eps_hat) / sqrt(abar) (CFG as configured) at
   t = 0.1 ... 0.9 T (``posterior_means.png``; the SDS gradient pulls renders towards these images);
4. evaluate the fit (mesh IoU, colour error, recognition), run the configured SDS training from it
   (as a resume from step 0), and evaluate again.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]


def fit_to_ground_truth(field, shape: str, albedo: torch.Tensor, volsdf: bool, steps: int = 1500) -> float:
    """Supervised fit: output 0 -> -SDF (volsdf) or +-6 (density), albedo inside the shape."""
    from sds3d.toyworld.shapes import occupancy, sdf

    opt = torch.optim.Adam(field.parameters(), lr=0.01)
    g = torch.Generator().manual_seed(0)
    for _ in range(steps):
        x = torch.rand(8192, 3, generator=g) * 2 - 1
        inside = occupancy(shape, x)
        target = -sdf(shape, x) if volsdf else 12.0 * inside.float() - 6.0
        raw = field._raw(x)
        loss = ((raw[:, 0] - target) ** 2).mean() + ((torch.sigmoid(raw[inside, 1:]) - albedo) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return float(loss)


def posterior_means(prior, images: torch.Tensor, texts: list[str], cameras, scale: float,
                    fractions=(0.1, 0.3, 0.5, 0.7, 0.9), n: int = 32, seed: int = 0) -> list[torch.Tensor]:
    """Mean over n noise draws of the CFG estimate x0_hat at t = f T, per image, as images in [0, 1]."""
    from sds3d.priors.sampling import mean_denoised

    means = mean_denoised(prior, prior.encode_images(images), texts, cameras, scale, fractions, n, seed)
    return [prior.decode(m).clamp(0, 1) for m in means]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", default=str(REPO / "configs" / "toy.yaml"))
    ap.add_argument("--prompt", default="a blue cube")
    ap.add_argument("--out", default="outputs/fixed-point")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("overrides", nargs="*", help="extra key=value overrides of the run config")
    args = ap.parse_args()

    import imageio.v3 as iio

    from sds3d.cameras import make_cameras, view_labels
    from sds3d.checkpoint import save_checkpoint
    from sds3d.config import load_config, to_yaml
    from sds3d.export.video import frames_to_uint8
    from sds3d.render import render
    from sds3d.runs import finish_run
    from sds3d.toyworld import render as toy_render
    from sds3d.toyworld import world
    from sds3d.toyworld.prompts import make_prompt, parse_prompt
    from sds3d.trainer import build_scene, make_optimizer, train

    torch.set_num_threads(args.threads)
    colour, shape, _ = parse_prompt(args.prompt)
    if colour is None or shape is None:
        raise SystemExit(f"{args.prompt!r} is not a toy prompt ('a <colour> <shape>')")
    cfg = load_config(args.config, [f"prompt={args.prompt}", f"out_dir={args.out}", "trainer.progress=false"] + args.overrides)
    run_dir = Path(args.out) / "run"
    (run_dir / "ckpt").mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(to_yaml(cfg))

    field, background = build_scene(cfg, torch.device("cpu"))
    albedo = world.colour_rgb(colour)
    loss = fit_to_ground_truth(field, shape, albedo, cfg.field.density_activation == "volsdf")
    print(f"fit loss {loss:.4f}")

    cams = make_cameras(torch.tensor([0.0, 60, 120, 180, 240, 300]), torch.tensor([-10.0, 0, 15, 30, 45, 60]),
                        world.CAMERA_DISTANCE, world.FOV_Y_DEG)
    with torch.no_grad():
        nerf = render(field, background, cams, cfg.render, shading="lambertian", stratified=False)["rgb"]
    truth, _ = toy_render.render(shape, albedo, cams)
    print(f"NeRF render vs toy-world render: mean |diff| {(nerf - truth).abs().mean():.4f}")
    grid = torch.cat([torch.cat(list(truth), -1), torch.cat(list(nerf), -1)], -2)
    iio.imwrite(Path(args.out) / "render_vs_gt.png", frames_to_uint8(grid[None])[0])

    from sds3d.priors import load_prior

    prior = load_prior(cfg.prior.name_or_path, device="cpu", cfg=cfg.prior)
    fractions = (0.1, 0.3, 0.5, 0.7, 0.9)
    texts = [make_prompt(colour, shape, v) for v in view_labels(cams.azimuth_deg, cams.elevation_deg)]
    means = posterior_means(prior, truth, texts, cams, cfg.guidance.scale, fractions)
    for f, m in zip(fractions, means):
        print(f"t = {f:.1f} T: mean |x0_hat - ground truth| = {(m - truth).abs().mean():.4f}")
    rows = [torch.cat(list(truth), -1)] + [torch.cat(list(m), -1) for m in means]
    iio.imwrite(Path(args.out) / "posterior_means.png", frames_to_uint8(torch.cat(rows, -2)[None])[0])
    del prior

    # Start training at the fitted field: a step-0 checkpoint in the trainer's format, then resume.
    optimizer = make_optimizer(cfg, field, background)
    generator = torch.Generator().manual_seed(cfg.seed)
    save_checkpoint({"step": 0, "skipped_steps": 0, "elapsed_s": 0.0, "field": field.state_dict(),
                     "background": background.state_dict(), "optimizer": optimizer.state_dict(),
                     "rng": {"generator": generator.get_state(), "torch_cpu": torch.get_rng_state()}},
                    run_dir / "ckpt" / "last.pt")
    keys = ("mesh_iou", "colour_error", "recognition")
    before = finish_run(cfg, run_dir, field, background, 0.0, 0, 0.0)["eval"]
    print("ground truth fit:", {k: round(before[k], 3) for k in keys})
    after = train(cfg, run_dir, resume=True)["eval"]
    print(f"after {cfg.trainer.max_steps} SDS steps:", {k: round(after[k], 3) for k in keys})


if __name__ == "__main__":
    main()
