#!/usr/bin/env python
"""Seconds per SDS step and peak RSS of the modern priors' denoisers on the CPU, at their real shapes
with random weights (fp32), and their parameter counts (built on the meta device: no memory).

Parts (run each in its own process so peak RSS is the part's own; check `uptime` first, load < 1.5):
  tiny   one full SDS step (VAE encode with grad, one denoiser call, backward) of each tiny
         test pipeline (tests/tiny_pipelines.py): SDXL, SD3, Flux.
  sdxl   the SDXL base 1.0 UNet (2.6B parameters) on its CFG batch: 2 x 4 x (R/8)^2 latents,
         77 x 2048 text, pooled 1280 + time ids. One no-grad call.
  sd3    the SD3-medium MM-DiT (24 joint blocks, 2.0B): CFG batch 2 x 16 x (R/8)^2, 77 + 256 text
         tokens x 4096, pooled 2048.
  flux   a FLUX.1-dev-shaped transformer (19 double + 38 single blocks, 11.9B: 48 GB in fp32, more
         than this machine's RAM): one row (guidance-distilled), 16-channel latents packed 2 x 2,
         512 T5 tokens, pooled 768, the guidance input.
  vae    the 16-channel SD3/Flux VAE encoder, forward + backward at R px (the render's way in).
With ``--blocks`` the transformers are built with fewer blocks (sd3: N joint blocks; flux: N
double + 2N single blocks, Flux's ratio) at several N, and the time and RSS are extrapolated
linearly per block to the full depth (a least-squares line through the points; printed with the
points, so the fit can be judged). Prints one JSON line per part, with the seconds per
(parameter x token x row) that ``sds3d.priors.diffusers_prior`` uses for its CPU estimate.

    python scripts/bench_prior_step.py --part tiny --threads 1
    python scripts/bench_prior_step.py --part sd3 --resolution 512 --blocks 1 2          # the quick version
    python scripts/bench_prior_step.py --part sd3 --resolution 512                       # the full model (~9 GB)
    python scripts/bench_prior_step.py --part sdxl --resolution 1024 --repeats 1        # ~11 GB
    python scripts/bench_prior_step.py --part flux --resolution 512 --blocks 1 2 3      # extrapolated to 19 + 38 blocks
    python scripts/bench_prior_step.py --part vae --resolution 512
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_sd_step import peak_rss_mib, timed  # noqa: E402 - the sibling script's timing helpers

# The config values that set the shapes (the repos' unet/ and transformer/ config.json).
SDXL_UNET = dict(  # stabilityai/stable-diffusion-xl-base-1.0
    sample_size=128, in_channels=4, out_channels=4, layers_per_block=2, block_out_channels=(320, 640, 1280),
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"), attention_head_dim=(5, 10, 20),
    transformer_layers_per_block=(1, 2, 10), cross_attention_dim=2048, use_linear_projection=True, addition_embed_type="text_time",
    addition_time_embed_dim=256, projection_class_embeddings_input_dim=2816, norm_num_groups=32,
)
SD3_MEDIUM = dict(  # stabilityai/stable-diffusion-3-medium-diffusers
    sample_size=128, patch_size=2, in_channels=16, out_channels=16, num_layers=24, attention_head_dim=64, num_attention_heads=24,
    joint_attention_dim=4096, caption_projection_dim=1536, pooled_projection_dim=2048, pos_embed_max_size=192,
)
FLUX_DEV = dict(  # black-forest-labs/FLUX.1-dev
    patch_size=1, in_channels=64, num_layers=19, num_single_layers=38, attention_head_dim=128, num_attention_heads=24,
    joint_attention_dim=4096, pooled_projection_dim=768, guidance_embeds=True, axes_dims_rope=(16, 56, 56),
)
VAE16 = dict(  # the SD3 / Flux VAE (16 latent channels, no quant convs)
    in_channels=3, out_channels=3, latent_channels=16, layers_per_block=2, block_out_channels=(128, 256, 512, 512),
    down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4, norm_num_groups=32, sample_size=1024,
    use_quant_conv=False, use_post_quant_conv=False, shift_factor=0.0609, scaling_factor=1.5305,
)
SD3_TEXT, FLUX_TEXT = 77 + 256, 512


def count_params(cls, config: dict) -> int:
    from accelerate import init_empty_weights

    with init_empty_weights():
        return sum(p.numel() for p in cls(**config).parameters())


def line_fit(xs: list[float], ys: list[float]) -> tuple[float, float]:
    """(intercept, slope) of the least-squares line through the points (one point: through the origin)."""
    if len(xs) == 1:
        return 0.0, ys[0] / xs[0]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)
    return my - slope * mx, slope


def bench_tiny(args) -> dict:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    import tiny_pipelines as tp

    from sds3d.guidance import GuidanceConfig, PromptProcessor, build_guidance
    from sds3d.priors import PriorConfig, load_prior

    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, build, method in (("sdxl", tp.build_tiny_sdxl, "sds"), ("sd3", tp.build_tiny_sd3, "rfds"), ("flux", tp.build_tiny_flux, "rfds")):
            prior = load_prior(str(build(Path(tmp) / name)), cfg=PriorConfig(warn_cpu=False, resolution=16, max_sequence_length=tp.T5_LEN))
            processor = PromptProcessor(prior, "a red cube", "blurry")
            guidance = build_guidance(GuidanceConfig(method=method, scale=100.0), prior)
            emb = processor(torch.tensor([30.0]), torch.tensor([10.0]))
            gen = torch.Generator().manual_seed(0)
            rgb = torch.rand(1, 3, 64, 64, requires_grad=True)
            times = timed(lambda: guidance(rgb, emb, step=0, generator=gen)["loss_sds"].backward(), args.repeats, warmup=3)
            out[name] = {"params": sum(p.numel() for p in prior.parameters()), "s_per_step_median": statistics.median(times)}
    return {"part": "tiny", "render": 64, "prior_resolution": 16, **out}


def sdxl_call(args):
    from diffusers import UNet2DConditionModel

    c = SDXL_UNET
    unet = UNet2DConditionModel(**c).eval().requires_grad_(False)
    h = args.resolution // 8
    x_t, t = torch.randn(2, c["in_channels"], h, h), torch.tensor([500, 500])
    # The pooled text embedding fills what the 6 time ids' embeddings leave of the added projection's input.
    pooled = c["projection_class_embeddings_input_dim"] - 6 * c["addition_time_embed_dim"]
    time_ids = torch.tensor([[args.resolution] * 2 + [0, 0] + [args.resolution] * 2] * 2, dtype=torch.float32)
    kw = {"encoder_hidden_states": torch.randn(2, 77, c["cross_attention_dim"]),
          "added_cond_kwargs": {"text_embeds": torch.randn(2, pooled), "time_ids": time_ids}}
    return unet, lambda: unet(x_t, t, **kw), 2 * h * h


def sd3_call(args, blocks: int | None):
    from diffusers import SD3Transformer2DModel

    config = SD3_MEDIUM | ({} if blocks is None else {"num_layers": blocks})
    model = SD3Transformer2DModel(**config).eval().requires_grad_(False)
    h = args.resolution // 8
    x_t, t = torch.randn(2, config["in_channels"], h, h), torch.tensor([500.0, 500.0])
    text, pooled = torch.randn(2, SD3_TEXT, config["joint_attention_dim"]), torch.randn(2, config["pooled_projection_dim"])
    tokens = (h // 2) ** 2 + SD3_TEXT
    return model, lambda: model(hidden_states=x_t, timestep=t, encoder_hidden_states=text, pooled_projections=pooled), 2 * tokens


def flux_call(args, blocks: int | None):
    from diffusers import FluxPipeline, FluxTransformer2DModel

    config = FLUX_DEV | ({} if blocks is None else {"num_layers": blocks, "num_single_layers": 2 * blocks})
    model = FluxTransformer2DModel(**config).eval().requires_grad_(False)
    h = args.resolution // 8
    latent = config["in_channels"] // 4  # packed 2 x 2
    packed = FluxPipeline._pack_latents(torch.randn(1, latent, h, h), 1, latent, h, h)
    img_ids = FluxPipeline._prepare_latent_image_ids(1, h // 2, h // 2, "cpu", torch.float32)
    kw = dict(encoder_hidden_states=torch.randn(1, FLUX_TEXT, config["joint_attention_dim"]),
              pooled_projections=torch.randn(1, config["pooled_projection_dim"]), timestep=torch.tensor([0.5]),
              guidance=torch.tensor([3.5]), txt_ids=torch.zeros(FLUX_TEXT, 3), img_ids=img_ids)
    return model, lambda: model(hidden_states=packed, **kw), (h // 2) ** 2 + FLUX_TEXT


def bench_denoiser(args) -> dict:
    """One no-grad denoiser call on the SDS step's batch: the full model, or a fit over ``--blocks``."""
    from diffusers import FluxTransformer2DModel, SD3Transformer2DModel, UNet2DConditionModel

    part = args.part
    full_cls, full_config = {"sdxl": (UNet2DConditionModel, SDXL_UNET), "sd3": (SD3Transformer2DModel, SD3_MEDIUM),
                             "flux": (FluxTransformer2DModel, FLUX_DEV)}[part]
    n_full = count_params(full_cls, full_config)
    full_depth = {"sdxl": None, "sd3": SD3_MEDIUM["num_layers"], "flux": FLUX_DEV["num_layers"]}[part]
    points = []
    for blocks in (args.blocks or [None]):
        if part == "sdxl" and blocks is not None:
            raise SystemExit("--blocks applies to the transformers (sd3, flux); the SDXL UNet is measured whole")
        t0 = time.perf_counter()
        model, call, token_rows = sdxl_call(args) if part == "sdxl" else (sd3_call if part == "sd3" else flux_call)(args, blocks)
        build_s = time.perf_counter() - t0
        n = sum(p.numel() for p in model.parameters())
        with torch.no_grad():
            times = timed(call, args.repeats, warmup=args.warmup)
        points.append({"blocks": blocks, "params": n, "build_s": round(build_s, 1), "s_median": statistics.median(times),
                       "s_all": [round(v, 3) for v in times], "peak_rss_mib": round(peak_rss_mib())})
        del model, call
    result = {"part": part, "resolution": args.resolution, "params_full": n_full, "points": points}
    if args.blocks:
        a, b = line_fit([p["blocks"] for p in points], [p["s_median"] for p in points])
        s_full = a + b * full_depth
        result.update(s_per_call_extrapolated=s_full, s_per_block=b, fixed_s=a,
                      extrapolation=f"linear in the number of {'joint' if part == 'sd3' else 'double (+ 2 single)'} blocks, "
                                    f"to {full_depth}; weights alone: {n_full * 4 / 2**30:.1f} GiB in fp32")
    else:
        s_full = points[0]["s_median"]
        result["s_per_call"] = s_full
    rows = token_rows if part != "sdxl" else None
    if rows is not None:
        result["s_per_param_token_row"] = s_full / (n_full * rows)
    else:
        result["s_per_param_pixel_row"] = s_full / (n_full * token_rows)
    return result


def bench_vae(args) -> dict:
    from diffusers import AutoencoderKL

    vae = AutoencoderKL(**VAE16).eval().requires_grad_(False)
    n = sum(p.numel() for p in vae.encoder.parameters())
    rgb = torch.rand(1, 3, args.resolution, args.resolution, requires_grad=True)

    def step():
        z = (vae.encode(rgb * 2 - 1).latent_dist.sample() - 0.0609) * 1.5305
        z.backward(torch.randn_like(z))

    times = timed(step, args.repeats, warmup=args.warmup)
    s = statistics.median(times)
    return {"part": "vae", "encoder_params": n, "resolution": args.resolution, "s_fwd_bwd_median": s,
            "s_per_param_pixel": s / (n * args.resolution**2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--part", choices=["tiny", "sdxl", "sd3", "flux", "vae"], required=True)
    ap.add_argument("--resolution", type=int, default=512, help="the prior's image side (prior.resolution)")
    ap.add_argument("--blocks", type=int, nargs="+", help="transformer depths to measure and extrapolate from (sd3, flux)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    bench = {"tiny": bench_tiny, "vae": bench_vae}.get(args.part, bench_denoiser)
    result = bench(args)
    result.update(threads=args.threads, torch=torch.__version__, peak_rss_mib=round(peak_rss_mib()), date=time.strftime("%Y-%m-%d"),
                  load_average=round(__import__("os").getloadavg()[0], 2))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
