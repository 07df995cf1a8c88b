"""scripts/bench_prior_step.py's arithmetic (the per-block extrapolation, meta-device parameter counts) and the
CPU estimate of transformer priors."""

import warnings
from pathlib import Path

import pytest
from script_module import load_script

REPO = Path(__file__).resolve().parents[1]


def _bench():
    return load_script("bench_prior_step")


def test_line_fit_by_hand():
    bench = _bench()
    assert bench.line_fit([1, 2, 3], [5.0, 7.0, 9.0]) == pytest.approx((3.0, 2.0))
    assert bench.line_fit([2], [8.0]) == (0.0, 4.0)  # one point: through the origin
    a, b = bench.line_fit([1, 2, 3, 4], [1.0, 3.0, 2.0, 4.0])
    assert (a, b) == pytest.approx((0.5, 0.8))  # least squares, by hand: slope = 4 / 5


def test_meta_parameter_count_is_the_built_models():
    from diffusers import SD3Transformer2DModel

    bench = _bench()
    config = bench.SD3_MEDIUM | {"num_layers": 1, "attention_head_dim": 8, "num_attention_heads": 2, "caption_projection_dim": 16,
                                 "joint_attention_dim": 32, "pooled_projection_dim": 8, "in_channels": 4, "out_channels": 4}
    assert bench.count_params(SD3Transformer2DModel, config) == sum(p.numel() for p in SD3Transformer2DModel(**config).parameters())
    assert bench.count_params(SD3Transformer2DModel, bench.SD3_MEDIUM) == 2_028_328_000  # SD3-medium's 2B


def test_transformer_cpu_estimate_counts_image_and_text_tokens(tiny_sd3, tiny_flux):
    from sds3d.priors import PriorConfig, load_prior
    from sds3d.priors import diffusers_prior as dp

    for folder, rows in ((tiny_sd3, 2), (tiny_flux, 1)):
        p = load_prior(str(folder), cfg=PriorConfig(warn_cpu=False, resolution=16, max_sequence_length=12))
        tokens = (16 // 2 // 2) ** 2 + p.text_tokens  # 4 x 4 patches + CLIP (16) and T5 (12) tokens, or T5 alone
        assert p.text_tokens == (16 + 12 if rows == 2 else 12)
        n, n_vae = sum(q.numel() for q in p.transformer.parameters()), sum(q.numel() for q in p.vae.encoder.parameters())
        expected = dp.CPU_TRANSFORMER_SECONDS_PER_PARAM_TOKEN * n * tokens * rows + dp.CPU_VAE_SECONDS_PER_PARAM_PIXEL * n_vae * 16**2
        assert dp.estimate_cpu_step_seconds(p) == pytest.approx(expected)


@pytest.mark.slow
def test_bench_tiny_part_runs(capsys, monkeypatch):
    import json

    bench = _bench()
    monkeypatch.setattr("sys.argv", ["bench_prior_step.py", "--part", "tiny", "--threads", "1", "--repeats", "1"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        bench.main()
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert {"sdxl", "sd3", "flux"} <= set(result) and all(result[k]["s_per_step_median"] > 0 for k in ("sdxl", "sd3", "flux"))


TINY_SHAPES = {
    "SDXL_UNET": dict(sample_size=8, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(32, 64),
                      down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
                      attention_head_dim=(2, 4), transformer_layers_per_block=(1, 1), cross_attention_dim=32,
                      use_linear_projection=True, addition_embed_type="text_time", addition_time_embed_dim=8,
                      projection_class_embeddings_input_dim=16 + 6 * 8, norm_num_groups=32),
    "SD3_MEDIUM": dict(sample_size=8, patch_size=2, in_channels=4, out_channels=4, num_layers=2, attention_head_dim=8,
                       num_attention_heads=2, joint_attention_dim=32, caption_projection_dim=16, pooled_projection_dim=8,
                       pos_embed_max_size=16),
    "FLUX_DEV": dict(patch_size=1, in_channels=16, num_layers=2, num_single_layers=4, attention_head_dim=16, num_attention_heads=2,
                     joint_attention_dim=32, pooled_projection_dim=8, guidance_embeds=True, axes_dims_rope=(4, 6, 6)),
    "VAE16": dict(in_channels=3, out_channels=3, latent_channels=16, layers_per_block=1, block_out_channels=(32, 32),
                  down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2, norm_num_groups=32,
                  sample_size=64, use_quant_conv=False, use_post_quant_conv=False),
}


@pytest.mark.parametrize("part, extra", [("sdxl", []), ("sd3", []), ("sd3", ["--blocks", "1", "2"]), ("flux", ["--blocks", "1", "2"]),
                                         ("vae", [])])
def test_every_part_runs_its_call_on_shrunken_shapes(part, extra, capsys, monkeypatch):
    """Each part's model call, with the real configs' keys at toy sizes (the shapes are read from the config,
    so a mismatch between the call and the config fails here rather than after building a 10 GB model)."""
    import json

    bench = _bench()
    for name, config in TINY_SHAPES.items():
        monkeypatch.setattr(bench, name, config)
    monkeypatch.setattr("sys.argv", ["bench_prior_step.py", "--part", part, "--resolution", "64", "--threads", "1",
                                     "--repeats", "1", "--warmup", "0", *extra])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        bench.main()
    r = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert r["part"] == part and r["threads"] == 1 and r["peak_rss_mib"] > 0
    h = 64 // 8
    if part == "vae":
        assert r["s_per_param_pixel"] == pytest.approx(r["s_fwd_bwd_median"] / (r["encoder_params"] * 64 * 64))
    elif part == "sdxl":
        assert r["s_per_param_pixel_row"] == pytest.approx(r["s_per_call"] / (r["params_full"] * 2 * h * h))
    elif extra:  # two depths measured, the line through them taken to the config's depth
        (p1, p2), depth = r["points"], TINY_SHAPES["SD3_MEDIUM" if part == "sd3" else "FLUX_DEV"]["num_layers"]
        slope = p2["s_median"] - p1["s_median"]
        assert r["s_per_call_extrapolated"] == pytest.approx(p1["s_median"] + slope * (depth - 1))
    else:
        rows = 2 * ((h // 2) ** 2 + bench.SD3_TEXT)
        assert r["s_per_param_token_row"] == pytest.approx(r["s_per_call"] / (r["params_full"] * rows))
