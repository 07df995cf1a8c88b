"""Seconds per SDS step of latent (Stable-Diffusion-shaped) priors on the CPU, and peak RSS.

Parts (run each in its own process so peak RSS is the part's own):
  tiny  the tiny random-weight SD pipeline of tests/test_sd_prior.py: one full SDS step
        (resize 64 -> 16, VAE encode with grad, one UNet call on [x_t, x_t], backward to the render).
  unet  the Stable Diffusion 2.1-base UNet *shape* (UNet2DConditionModel built from its config
        values, random weights, fp32): one no-grad call on the CFG batch, 2 x 4 x 64 x 64 latents,
        77 x 1024 text embeddings (what one SDS step costs in the UNet per view).
  vae   the SD VAE encoder (AutoencoderKL from its config values, random weights): forward +
        backward of one image at --vae-size pixels (the render's path into latent space).
  toy   the shipped toy prior's UNet (32 x 32 pixels, camera conditioned) on the CFG batch.

``--batches 2,4,8`` times the unet / toy call at each batch size (rows = 2 x runs sharing one call,
as ``sds3d sweep --batch-runs`` makes) and prints seconds per call and per sample for each: how
the per-sample cost falls when runs share the prior.

Prints one JSON line per part (per batch size with --batches), including the seconds per
(parameter x pixel) constants that ``sds3d.priors.diffusers_prior`` uses for its CPU warning.
Check `uptime` first (load < 1.5).

    python scripts/bench_sd_step.py --part tiny
    python scripts/bench_sd_step.py --part unet --repeats 2
    python scripts/bench_sd_step.py --part unet --batches 2,4 --repeats 1 --warmup 0
    python scripts/bench_sd_step.py --part toy --batches 2,4,8,16 --threads 1
    python scripts/bench_sd_step.py --part vae --vae-size 256
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

SD21_BASE_UNET = dict(  # stabilityai/stable-diffusion-2-1-base unet/config.json (values that set the shape)
    sample_size=64, in_channels=4, out_channels=4, layers_per_block=2, block_out_channels=(320, 640, 1280, 1280),
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    cross_attention_dim=1024, attention_head_dim=(5, 10, 20, 20), use_linear_projection=True, norm_num_groups=32,
)
SD_VAE = dict(  # the SD 1.x/2.x vae/config.json
    in_channels=3, out_channels=3, latent_channels=4, layers_per_block=2, block_out_channels=(128, 256, 512, 512),
    down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4, norm_num_groups=32, sample_size=512,
)


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def timed(fn, repeats: int, warmup: int) -> list[float]:
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def bench_tiny(args) -> dict:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from test_sd_prior import build_tiny_sd

    from sds3d.guidance import GuidanceConfig, PromptProcessor, build_guidance
    from sds3d.priors import PriorConfig, load_prior

    with tempfile.TemporaryDirectory() as tmp:
        prior = load_prior(str(build_tiny_sd(Path(tmp) / "tiny")), cfg=PriorConfig(warn_cpu=False))
    processor = PromptProcessor(prior, "a red cube", "blurry")
    guidance = build_guidance(GuidanceConfig(scale=100.0), prior)
    emb = processor(torch.tensor([30.0]), torch.tensor([10.0]))
    gen = torch.Generator().manual_seed(0)
    rgb = torch.rand(1, 3, 64, 64, requires_grad=True)

    def step():
        guidance(rgb, emb, step=0, generator=gen)["loss_sds"].backward()

    times = timed(step, args.repeats, warmup=3)
    n = sum(p.numel() for p in prior.parameters())
    return {"part": "tiny", "params": n, "render": 64, "prior_resolution": prior.resolution, "s_per_step_median": statistics.median(times),
            "s_per_step_min": min(times), "repeats": len(times)}


def per_batch(call, batches: list[int], args, params: int, pixels: int) -> list[dict]:
    """Seconds per call and per sample of ``call(batch)`` at each batch size."""
    out = []
    for batch in batches:
        times = timed(lambda: call(batch), args.repeats, warmup=args.warmup)
        s = statistics.median(times)
        out.append({"batch": batch, "s_per_call_median": s, "s_per_sample": s / batch, "s_all": [round(v, 4) for v in times],
                    "s_per_param_pixel": s / (params * pixels * batch)})
    return out


def bench_unet(args) -> list[dict]:
    from diffusers import UNet2DConditionModel

    t0 = time.perf_counter()
    unet = UNet2DConditionModel(**SD21_BASE_UNET).eval().requires_grad_(False)
    build_s = time.perf_counter() - t0
    n = sum(p.numel() for p in unet.parameters())

    @torch.no_grad()
    def call(batch: int):  # [x_t, x_t] per view: cond + uncond rows
        unet(torch.randn(batch, 4, 64, 64), torch.full((batch,), 500), encoder_hidden_states=torch.randn(batch, 77, 1024))

    rows = per_batch(call, args.batches, args, n, 64 * 64)
    return [{"part": "unet", "shape": "SD 2.1-base", "params": n, "build_s": round(build_s, 1), **row} for row in rows]


def bench_toy(args) -> list[dict]:
    from sds3d.cameras import orbit_cameras
    from sds3d.priors import load_prior

    prior = load_prior("toy")
    n = sum(p.numel() for p in prior.unet.parameters())
    cond = prior.encode_prompts(["a green cone", ""])

    @torch.no_grad()
    def call(batch: int):
        rows = [i % 2 for i in range(batch)]
        prior.predict(torch.randn(batch, 3, 32, 32), torch.full((batch,), 500), cond[rows], orbit_cameras(batch))

    return [{"part": "toy", "params": n, **row} for row in per_batch(call, args.batches, args, n, 32 * 32)]


def bench_vae(args) -> dict:
    from diffusers import AutoencoderKL

    vae = AutoencoderKL(**SD_VAE).eval().requires_grad_(False)
    n = sum(p.numel() for p in vae.encoder.parameters())
    size = args.vae_size
    rgb = torch.rand(1, 3, size, size, requires_grad=True)

    def step():
        z = vae.encode(rgb * 2 - 1).latent_dist.sample() * 0.18215
        z.backward(torch.randn_like(z))

    times = timed(step, args.repeats, warmup=args.warmup)
    s = statistics.median(times)
    return {"part": "vae", "encoder_params": n, "size": size, "s_fwd_bwd_median": s, "s_all": [round(v, 2) for v in times],
            "s_per_param_pixel": s / (n * size * size), "s_at_512_extrapolated": s * (512 / size) ** 2}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--part", choices=["tiny", "unet", "vae", "toy"], required=True)
    ap.add_argument("--batches", type=lambda text: [int(v) for v in text.split(",")], default=[2], metavar="B1,B2,...",
                    help="UNet rows per call for the unet and toy parts (default 2: one view's CFG pair)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--vae-size", type=int, default=256)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    results = {"tiny": bench_tiny, "unet": bench_unet, "vae": bench_vae, "toy": bench_toy}[args.part](args)
    for result in results if isinstance(results, list) else [results]:
        result.update(threads=args.threads, torch=torch.__version__, peak_rss_mib=round(peak_rss_mib()),
                      date=time.strftime("%Y-%m-%d"))
        print(json.dumps(result))


if __name__ == "__main__":
    main()
