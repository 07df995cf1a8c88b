"""scripts/bench_prior_step.py's arithmetic (the per-block extrapolation, meta-device parameter counts) and the
CPU estimate of transformer priors."""

import importlib.util
import warnings
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _bench():
    spec = importlib.util.spec_from_file_location("bench_prior_step", REPO / "scripts" / "bench_prior_step.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


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
