#!/usr/bin/env python
"""Does a toy v2 prior put a face on a faceless render at SDS's noise levels? (docs/janus.md)

SDS pulls a render x towards the prior's one-step denoised image x̂₀(x_t) averaged over the noise
(its gradient is w(t) (ε̂ − ε) = w(t) α_t/σ_t (x − x̂₀(x_t))). So a face can only grow on a faceless
object if E[x̂₀(x_t)] of a faceless view shows one. For the owl (eye whites) and the house (door,
windows), rendered with and without their face (the ``faceless`` Janus variant) from the front
(azimuth 0) and the back (180), this prints, per t, the white-class area inside the object's
silhouette of the noise-averaged x̂₀ and the mean over single x̂₀, relative to the ground-truth
front view's (1.00 = a whole face's white area, 0 = none):

    python scripts/janus_face_probe.py --prior toy-v2-text [--cfg 3] [--draws 16] [--elevation 15]

White class: the spec's (min(rgb) >= 0.55 and max - min <= 0.25). One thread, about 20 s.
"""

from __future__ import annotations

import argparse

import torch

from sds3d.cameras import make_cameras
from sds3d.priors import load_prior
from sds3d.toyworld.v2.metrics import colour_classes
from sds3d.toyworld.v2.objects import faced_object
from sds3d.toyworld.v2.render import render

TIMESTEPS = (50, 100, 200, 300, 500, 700, 900)


def white_area(images: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Pixels of the spec's white class (``metrics.colour_classes``) inside the silhouette, per image.
    images (B, 3, H, W) in [0, 1]."""
    white, _ = colour_classes(images.permute(0, 2, 3, 1).numpy())
    return (torch.from_numpy(white) & (mask[:, 0] > 0.5)).flatten(1).sum(1).float()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--prior", default="toy-v2-text")
    ap.add_argument("--colour", default="red")
    ap.add_argument("--cfg", type=float, default=3.0)
    ap.add_argument("--draws", type=int, default=16, help="noise draws per view and t")
    ap.add_argument("--elevation", type=float, default=15.0)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    prior = load_prior(args.prior)
    g = torch.Generator().manual_seed(0)
    print(f"{args.prior}, CFG {args.cfg}, {args.draws} draws, elevation {args.elevation}: white area of "
          f"E[x̂₀] (mean of single x̂₀) / the ground-truth front view's")
    print(f"{'object':>6} {'render':>9} {'view':>5} " + " ".join(f"{f't={t}':>13}" for t in TIMESTEPS))
    cams = make_cameras(torch.tensor([0.0, 180.0]), torch.tensor([args.elevation] * 2), 2.5, 40.0)  # front, back
    for name in ("owl", "house"):
        images, masks = {}, {}
        for variant in (None, "faceless"):
            images[variant], masks[variant] = render(faced_object(name, args.colour, variant), cams)
        reference = white_area(images[None][:1], masks[None][:1])[0].clamp_min(1.0)
        cond = prior.encode_prompts([f"a {args.colour} {name}"] * args.draws)
        uncond = prior.encode_prompts([""] * args.draws)
        for variant in (None, "faceless"):
            for v, view in enumerate(("front", "back")):
                x = prior.encode_images(images[variant][v : v + 1]).expand(args.draws, -1, -1, -1)
                cam = None if not prior.camera_conditioned else cams[torch.tensor([v] * args.draws)]
                cells = []
                for t_int in TIMESTEPS:
                    t = torch.full((args.draws,), t_int, dtype=torch.long)
                    eps = torch.randn(x.shape, generator=g)
                    x_t = prior.schedule.add_noise(x, eps, t)
                    with torch.no_grad():
                        out = prior.predict_guided(x_t, t, cond, uncond, args.cfg, cam)
                        x0 = prior.decode(prior.schedule.to_x0(out, x_t, t)).clamp(0, 1)
                    m = masks[variant][v : v + 1].expand(args.draws, -1, -1, -1)
                    mean_img = white_area(x0.mean(0, keepdim=True), m[:1])[0] / reference
                    singles = white_area(x0, m).mean() / reference
                    cells.append(f"{mean_img:.2f} ({singles:.2f})")
                label = "with face" if variant is None else "faceless"
                print(f"{name:>6} {label:>9} {view:>5} " + " ".join(f"{c:>13}" for c in cells), flush=True)


if __name__ == "__main__":
    main()
