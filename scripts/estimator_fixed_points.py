"""Where each estimator drives an image under an exact Gaussian prior (docs/estimators.md, CDS and DreamTime notes).

Data ~ N(mu, s^2 I) has the exact denoiser eps(x_t, t) = sigma_t (x_t - alpha_t mu) / (alpha_t^2 s^2 + sigma_t^2).
An 8x8x3 image is optimised directly (Adam, lr 0.02) with each unconditional estimator; the script
prints the final image's mean and std (the mode is mu with std 0) and, for CDS, its correlation with
the fixed noise eps*.

    python scripts/estimator_fixed_points.py --steps 1500
"""

from __future__ import annotations

import argparse

import torch

from sds3d.guidance import GuidanceConfig, PromptEmbeddings, build_guidance
from sds3d.priors.base import Prior
from sds3d.priors.condition import Condition
from sds3d.priors.schedule import NoiseSchedule

MU, S = 0.0, 0.5
LINEAR = {"num_train_timesteps": 1000, "beta_schedule": "linear", "beta_start": 1e-4, "beta_end": 0.02}


class GaussianPrior(Prior):
    """The exact denoiser of N(MU, S^2 I) in pixel space, every text alike."""

    resolution, latent, latent_shape = 8, False, (3, 8, 8)

    def __init__(self):
        super().__init__()
        self.schedule = NoiseSchedule(LINEAR)
        self.unused = torch.nn.Parameter(torch.zeros(1))

    def encode_prompts(self, prompts):
        return Condition(torch.zeros(len(prompts), 1, 1))

    def _predict(self, x_t, t, cond, cameras):
        a, s = self.schedule.alpha(t, x_t), self.schedule.sigma(t, x_t)
        return s * (x_t - a * MU) / (a**2 * S**2 + s**2)

    def encode_images(self, rgb):
        return rgb

    def decode(self, x):
        return x


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=1500)
    args = ap.parse_args()
    torch.set_num_threads(1)
    emb = PromptEmbeddings(Condition(torch.zeros(1, 1, 1)), Condition(torch.zeros(1, 1, 1)), torch.zeros(1), torch.zeros(1), ["front"])
    for method in ("sds", "ism", "sdi", "cds"):
        guidance = build_guidance(GuidanceConfig(method=method, scale=0.0, inversion_eta=0.0, weighting="uniform"), GaussianPrior())
        x = (2.0 * torch.randn(1, 3, 8, 8, generator=torch.Generator().manual_seed(0))).requires_grad_(True)
        opt = torch.optim.Adam([x], lr=0.02)
        generator = torch.Generator().manual_seed(0)
        for step in range(args.steps):
            loss = guidance(x, emb, step, generator=generator)["loss_sds"]
            opt.zero_grad()
            loss.backward()
            opt.step()
        line = f"{method}: mean {x.detach().mean().item():+.4f}  std {x.detach().std().item():.4f}"
        if method == "cds":
            corr = torch.corrcoef(torch.stack([x.detach().flatten(), guidance.eps_star.flatten()]))[0, 1].item()
            line += f"  corr(x, eps*) {corr:+.3f}"
        print(line)


if __name__ == "__main__":
    main()
