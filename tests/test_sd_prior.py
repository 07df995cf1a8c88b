"""Stable-Diffusion-shaped (latent) priors through load_prior, on CPU, with a tiny random-weight pipeline.

The fixture builds a StableDiffusionPipeline from tiny parts (UNet2DConditionModel, AutoencoderKL,
CLIPTextModel, the real CLIP BPE tokenizer, DDPMScheduler) and ``save_pretrained``s it, so the
same folder layout as a downloaded SD 1.x/2.x is loaded by the same code path.
"""

import json
import warnings
from pathlib import Path

import pytest
import torch

from sds3d.guidance import GuidanceConfig, PromptProcessor, SDSGuidance
from sds3d.priors import PriorConfig, PriorError, download_command, load_prior, resolve_prior_path
from sds3d.priors import diffusers_prior as dp

torch.set_num_threads(1)

TEXT_LEN = 16  # tokenizer.model_max_length of the tiny pipeline (SD: 77)
LATENT = 8  # UNet sample_size; the VAE halves once, so renders are resized to 16x16


def build_tiny_sd(folder: Path, seed: int = 0, prediction_type: str = "epsilon") -> Path:
    """A random-weight SD-layout pipeline (~2M parameters) saved into ``folder``."""
    from diffusers import AutoencoderKL, DDPMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    from sds3d.toyworld.train_prior import build_tokenizer

    torch.manual_seed(seed)
    tokenizer = build_tokenizer(TEXT_LEN, folder.parent / f"{folder.name}-tokenizer-src")
    text_encoder = CLIPTextModel(CLIPTextConfig(
        vocab_size=tokenizer.vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
        num_attention_heads=2, max_position_embeddings=TEXT_LEN, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    ))
    unet = UNet2DConditionModel(
        sample_size=LATENT, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(16, 32),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=32, attention_head_dim=8, norm_num_groups=8,
    )
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, layers_per_block=1, block_out_channels=(8, 16),
        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
        norm_num_groups=8, sample_size=2 * LATENT,
    )
    scheduler = DDPMScheduler(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
                              clip_sample=False, steps_offset=1, prediction_type=prediction_type)  # as in SD 1.x/2.x scheduler_config.json
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=scheduler,
                                   safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_sd(tmp_path_factory) -> Path:
    return build_tiny_sd(tmp_path_factory.mktemp("tiny-sd") / "pipeline")


@pytest.fixture(scope="session")
def prior(tiny_sd):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dp.CPUPriorWarning)
        return load_prior(str(tiny_sd), device="cpu")


def test_loads_as_latent_prior_fp32_on_cpu(prior):
    assert prior.latent
    assert prior.vae_scale_factor == 2 and prior.resolution == 2 * LATENT
    assert prior.num_train_timesteps == 1000
    assert {p.dtype for p in prior.parameters()} == {torch.float32}
    assert all(not p.requires_grad for p in prior.parameters())
    assert prior.device == torch.device("cpu")
    # scaled_linear betas: sqrt(beta) linear from sqrt(0.00085) to sqrt(0.012) (SD's schedule)
    betas = torch.linspace(0.00085**0.5, 0.012**0.5, 1000, dtype=torch.float64) ** 2
    torch.testing.assert_close(prior.schedule.alphas_cumprod.double(), torch.cumprod(1 - betas, 0), rtol=1e-5, atol=1e-6)
    assert prior.schedule.prediction_type == "epsilon" and prior.latent_shape == (4, LATENT, LATENT)


def test_sdpa_attention_and_vae_slicing_applied(prior):
    from diffusers.models.attention_processor import AttnProcessor2_0

    procs = prior.unet.attn_processors
    assert procs and all(isinstance(p, AttnProcessor2_0) for p in procs.values())
    assert prior.vae.use_slicing and not prior.vae.use_tiling


def test_prior_options_change_the_runtime(tiny_sd):
    from diffusers.models.attention_processor import AttnProcessor, SlicedAttnProcessor

    cfg = PriorConfig(attention="default", attention_slicing=False, vae_slicing=False, vae_tiling=True, warn_cpu=False)
    p = load_prior(str(tiny_sd), cfg=cfg)
    assert all(isinstance(v, AttnProcessor) for v in p.unet.attn_processors.values())
    assert not p.vae.use_slicing and p.vae.use_tiling
    p = load_prior(str(tiny_sd), cfg=PriorConfig(attention_slicing=True, warn_cpu=False))
    assert all(isinstance(v, SlicedAttnProcessor) for v in p.unet.attn_processors.values())


def test_fp16_on_cpu_is_a_user_error(tiny_sd):
    with pytest.raises(PriorError, match="prior.dtype=float16 needs a CUDA device"):
        load_prior(str(tiny_sd), cfg=PriorConfig(dtype="float16"))
    with pytest.raises(PriorError, match="prior.attention='flash' is unknown"):
        load_prior(str(tiny_sd), cfg=PriorConfig(attention="flash"))


def test_encode_prompts_shape_and_text_dependence(prior):
    emb = prior.encode_prompts(["a red cube", "", "a red cube"]).tokens
    assert emb.shape == (3, TEXT_LEN, 32) and not emb.requires_grad
    torch.testing.assert_close(emb[0], emb[2])
    assert (emb[0] - emb[1]).abs().max() > 1e-3


def test_encode_images_resizes_and_matches_the_vae_posterior(prior):
    """x = scaling_factor * z with z from the VAE posterior of resize(rgb) * 2 - 1 (reference: diffusers directly)."""
    rgb = torch.rand(2, 3, 24, 24, generator=torch.Generator().manual_seed(0))
    torch.manual_seed(1)
    x = prior.encode_images(rgb)
    ref_in = torch.nn.functional.interpolate(rgb, size=(16, 16), mode="bilinear", align_corners=False, antialias=True) * 2 - 1
    with torch.no_grad():
        dist = prior.vae.encode(ref_in).latent_dist
    torch.manual_seed(1)
    ref = dist.sample() * prior.vae.config.scaling_factor
    assert x.shape == (2, 4, LATENT, LATENT)
    torch.testing.assert_close(x.detach(), ref, rtol=1e-4, atol=1e-5)


def test_decode_inverts_to_image_range(prior):
    out = prior.decode(torch.randn(1, 4, LATENT, LATENT))
    assert out.shape == (1, 3, 16, 16) and out.min() >= 0 and out.max() <= 1


class CountingUNet(torch.nn.Module):
    """Wraps the prior's UNet; records each call's batch so tests can count and recompute them."""

    def __init__(self, unet):
        super().__init__()
        self.inner = unet
        self.config = unet.config
        self.calls = []

    def forward(self, x_t, t, encoder_hidden_states):
        self.calls.append((x_t.clone(), t.clone(), encoder_hidden_states.clone()))
        return self.inner(x_t, t, encoder_hidden_states=encoder_hidden_states)


@pytest.fixture
def counting(prior):
    original = prior.unet
    prior.unet = CountingUNet(original)
    yield prior
    prior.unet = original


def _sds(prior, cfg, rgb, processor, azimuth=(10.0, 190.0)):
    guidance = SDSGuidance(cfg, prior)
    emb = processor(torch.tensor(azimuth), torch.tensor([0.0] * len(azimuth)))
    return guidance(rgb, emb, step=0, generator=torch.Generator().manual_seed(3))


@pytest.mark.parametrize("perp_neg", [False, True])
def test_one_batched_unet_call_per_step(counting, perp_neg):
    processor = PromptProcessor(counting, "a red cube", "blurry")
    rgb = torch.rand(2, 3, 16, 16)
    calls, rows = counting.calls, counting.rows
    out = _sds(counting, GuidanceConfig(scale=100.0, perp_neg=perp_neg), rgb, processor)
    assert len(counting.unet.calls) == 1 and counting.calls == calls + 1 and out["prior_calls"].item() == 1.0
    x_t, t, emb = counting.unet.calls[0]
    assert x_t.shape[0] == counting.rows - rows == (2 * 2 if not perp_neg else 4 * 2)  # Perp-Neg: 2 negatives per view


def test_cfg_and_negative_prompt_in_the_latent_gradient(counting, monkeypatch):
    """d loss / d x == w(t) (eps_u + s (eps_c - eps_u) - eps) / B, recomputed from the recorded UNet call."""
    s = 100.0
    processor = PromptProcessor(counting, "a red cube", "blurry", view_dependent=True)
    rgb = torch.rand(2, 3, 16, 16, requires_grad=True)
    x_holder = {}
    original = counting.encode_images

    def encode_and_keep(images):
        x = original(images)
        x.retain_grad()
        x_holder["x"] = x
        return x

    monkeypatch.setattr(counting, "encode_images", encode_and_keep)
    out = _sds(counting, GuidanceConfig(scale=s), rgb, processor)
    out["loss_sds"].backward()
    x = x_holder["x"]
    x_t, t, emb = counting.unet.calls[0]
    B = 2
    # The negative prompt is the unconditional half; the conditional half holds the view prompts.
    torch.testing.assert_close(emb[B:], processor.embedding("blurry").tokens.expand(B, -1, -1))
    torch.testing.assert_close(emb[:1], processor.embedding("a red cube, front view").tokens)
    torch.testing.assert_close(emb[1:2], processor.embedding("a red cube, back view").tokens)
    with torch.no_grad():
        eps_c, eps_u = counting.unet.inner(x_t, t, encoder_hidden_states=emb).sample.chunk(2)
    abar = counting.schedule.alphas_cumprod[t[:B]].view(B, 1, 1, 1)
    eps = (x_t[:B] - abar.sqrt() * x.detach()) / (1 - abar).sqrt()  # invert x_t = sqrt(abar) x + sqrt(1-abar) eps
    expected = (1 - abar) * (eps_u + s * (eps_c - eps_u) - eps) / B
    torch.testing.assert_close(x.grad, expected, rtol=1e-3, atol=1e-5)


def test_gradient_reaches_the_render_through_the_vae_encoder(prior, monkeypatch):
    """The render's gradient is non-zero and equals the VAE encoder's vector-Jacobian product with g / B."""
    processor = PromptProcessor(prior, "a red cube", view_dependent=False)
    rgb = torch.rand(1, 3, 16, 16, requires_grad=True)
    kept = {}
    original = prior.encode_images

    def encode_and_keep(images):
        kept["x"] = x = original(images)
        x.retain_grad()
        return x

    monkeypatch.setattr(prior, "encode_images", encode_and_keep)
    torch.manual_seed(5)  # the posterior sample is the first draw of the global RNG in the step
    _sds(prior, GuidanceConfig(scale=7.5), rgb, processor, azimuth=(0.0,))["loss_sds"].backward()
    assert torch.isfinite(rgb.grad).all() and rgb.grad.abs().sum() > 0
    torch.manual_seed(5)
    leaf = rgb.detach().requires_grad_(True)
    (vjp,) = torch.autograd.grad(original(leaf), leaf, grad_outputs=kept["x"].grad)
    torch.testing.assert_close(rgb.grad, vjp)


def test_nerf_parameters_receive_gradients_through_the_vae(prior):
    from sds3d.cameras import CameraConfig, sample_cameras
    from sds3d.fields.background import Background, BackgroundConfig
    from sds3d.fields.encoding import HashGridConfig
    from sds3d.fields.nerf import FieldConfig, NeRFField
    from sds3d.render import RenderConfig, render

    torch.manual_seed(0)
    field = NeRFField(FieldConfig(encoding=HashGridConfig(n_levels=2, log2_hashmap_size=8, base_resolution=4,
                                                          max_resolution=8, backend="torch"), hidden_dim=16))
    background = Background(BackgroundConfig())
    cams = sample_cameras(CameraConfig(distance=(1.5, 2.0), fov_y_deg=(40.0, 70.0)), generator=torch.Generator().manual_seed(0))
    out = render(field, background, cams, RenderConfig(resolution=12, num_samples=12), shading="lambertian",
                 generator=torch.Generator().manual_seed(0))
    processor = PromptProcessor(prior, "a red cube")
    loss = _sds(prior, GuidanceConfig(scale=100.0), out["rgb"], processor, azimuth=tuple(cams.azimuth_deg.tolist()))["loss_sds"]
    loss.backward()
    grads = {n: p.grad for n, p in field.named_parameters()}
    assert grads["encoding.embeddings"] is not None and grads["encoding.embeddings"].abs().sum() > 0
    assert all(g is not None and torch.isfinite(g).all() for g in grads.values())


def test_cpu_run_warns_once_with_an_estimate(tiny_sd, monkeypatch):
    monkeypatch.setattr(dp, "_cpu_warned", set())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        p = load_prior(str(tiny_sd))
        load_prior(str(tiny_sd))
    msgs = [str(w.message) for w in caught if issubclass(w.category, dp.CPUPriorWarning)]
    assert len(msgs) == 1
    expected = dp.estimate_cpu_step_seconds(p)
    assert f"about {expected:.3g} s per SDS step" in msgs[0]


def test_cpu_estimate_scales_with_views_and_parameters(prior):
    one, four = dp.estimate_cpu_step_seconds(prior, 1), dp.estimate_cpu_step_seconds(prior, 4)
    assert one > 0 and four == pytest.approx(4 * one)
    n_unet = sum(p.numel() for p in prior.unet.parameters())
    n_enc = sum(p.numel() for p in prior.vae.encoder.parameters())
    expected = dp.CPU_UNET_SECONDS_PER_PARAM_PIXEL * n_unet * LATENT**2 * 2 + dp.CPU_VAE_SECONDS_PER_PARAM_PIXEL * n_enc * 16**2
    assert one == pytest.approx(expected)


def test_hub_id_not_cached_is_one_line_with_the_download_command(tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    with pytest.raises(PriorError) as err:
        resolve_prior_path("stabilityai/stable-diffusion-2-1-base")
    msg = str(err.value)
    assert "\n" not in msg
    assert "'stabilityai/stable-diffusion-2-1-base'" in msg and str(tmp_path / "hub") in msg
    assert msg.endswith(download_command("stabilityai/stable-diffusion-2-1-base"))
    assert download_command("a/b").startswith("hf download a/b --include")


def test_hub_id_found_in_the_local_cache(tiny_sd, tmp_path, monkeypatch):
    """A cache laid out like huggingface_hub's (models--org--name/snapshots/<rev>, refs/main) resolves offline."""
    import shutil

    from huggingface_hub import constants

    repo = tmp_path / "hub" / "models--someone--tiny-sd"
    rev = "0" * 40
    shutil.copytree(tiny_sd, repo / "snapshots" / rev)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(rev)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    assert resolve_prior_path("someone/tiny-sd") == repo / "snapshots" / rev
    p = load_prior("someone/tiny-sd", cfg=PriorConfig(warn_cpu=False))
    assert p.latent and p.resolution == 16


def test_incomplete_pipeline_folder_names_the_missing_part(tiny_sd, tmp_path):
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(tiny_sd, broken)
    shutil.rmtree(broken / "text_encoder")
    with pytest.raises(PriorError, match="missing text_encoder/"):
        load_prior(str(broken))
    shutil.copytree(tiny_sd / "text_encoder", broken / "text_encoder")
    (broken / "unet" / "diffusion_pytorch_model.safetensors").write_bytes(b"not weights")
    with pytest.raises(PriorError, match="could not load the UNet"):
        load_prior(str(broken))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_fp16_channels_last_and_text_encoder_offload(tiny_sd):
    p = load_prior(str(tiny_sd), device="cuda")
    assert p.dtype == torch.float16 and p.unet.dtype == torch.float16
    conv = p.unet.conv_in.weight
    assert conv.is_contiguous(memory_format=torch.channels_last)
    assert next(p.text_encoder.parameters()).device.type == "cpu"
    emb = p.encode_prompts(["a red cube", ""])
    assert emb.tokens.device.type == "cuda" and next(p.text_encoder.parameters()).device.type == "cpu"
    x = p.encode_images(torch.rand(1, 3, 16, 16, device="cuda"))
    eps = p.predict(x, torch.tensor([500], device="cuda"), emb[:1])
    assert eps.dtype == x.dtype == torch.float32 and torch.isfinite(eps).all()


SD_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "dreamfusion-sd.yaml"


def test_sds3d_run_dreamfusion_sd_config_end_to_end_on_cpu(tiny_sd, tmp_path, capsys):
    """`sds3d run configs/dreamfusion-sd.yaml prior.name_or_path=<tiny SD>` -> a mesh, on CPU."""
    from sds3d.cli import main

    overrides = [
        f"prior.name_or_path={tiny_sd}", "prompt=a red cube", f"out_dir={tmp_path}", "name=sd", "device=cpu",
        "trainer.max_steps=3", "trainer.val_every=0", "trainer.ckpt_every=0", "trainer.progress=false", "trainer.threads=1",
        "orbit.frames=2", "orbit.resolution=16", "render.resolution=16", "render.num_samples=12",
        "field.encoding.n_levels=2", "field.encoding.log2_hashmap_size=10", "field.encoding.max_resolution=16",
        "field.encoding.backend=torch", "export.resolution=24", "export.formats=[obj]",
        "guidance.negative_prompt=blurry", "guidance.perp_neg=true",
    ]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert main(["run", str(SD_CONFIG), *overrides]) == 0
    run = tmp_path / "sd"
    summary = json.loads((run / "summary.json").read_text())
    assert summary["skipped_steps"] == 0 and summary["final_loss_sds"] > 0
    obj = (run / "mesh" / "mesh.obj").read_text()
    assert obj.count("\nv ") > 10 and obj.count("\nf ") > 10
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert metrics[-1]["step"] == 3 and all(m["t_mean"] >= 20 for m in metrics)  # t >= 0.02 T with T = 1000
    cfg_text = (run / "config.yaml").read_text()
    assert str(tiny_sd) in cfg_text and "scale: 100.0" in cfg_text and "perp_neg: true" in cfg_text


def test_pixel_prior_folder_same_code_path_no_cpu_warning(tiny_sd, tmp_path, monkeypatch):
    """A ToyUNet pixel-space folder (the toy prior's layout) loads through the same loader, without the SD warning."""
    import shutil

    from sds3d.priors.toy_unet import ToyUNet

    folder = tmp_path / "pixel"
    folder.mkdir()
    for part in ("text_encoder", "tokenizer", "scheduler"):
        shutil.copytree(tiny_sd / part, folder / part)
    index = json.loads((tiny_sd / "model_index.json").read_text())
    index = {k: v for k, v in index.items() if k not in ("vae", "safety_checker", "feature_extractor", "image_encoder")}
    index["unet"] = ["sds3d", "ToyUNet"]
    (folder / "model_index.json").write_text(json.dumps(index))
    ToyUNet(sample_size=8, block_out_channels=(8, 16), cross_attention_dim=32, attention_heads=2, norm_num_groups=4).save_pretrained(folder / "unet")
    monkeypatch.setattr(dp, "_cpu_warned", set())
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        p = load_prior(str(folder))
    assert not [w for w in caught if issubclass(w.category, dp.CPUPriorWarning)]
    assert not p.latent and p.resolution == 8
    x = p.encode_images(torch.ones(1, 3, 8, 8))
    torch.testing.assert_close(x, torch.ones(1, 3, 8, 8))  # pixel prior: rgb * 2 - 1
    eps = p.predict(x, torch.tensor([10]), p.encode_prompts(["a red cube"]))
    assert eps.shape == x.shape and torch.isfinite(eps).all()


@pytest.fixture(scope="session")
def tiny_sd_v(tmp_path_factory) -> Path:
    return build_tiny_sd(tmp_path_factory.mktemp("tiny-sd-v") / "pipeline", prediction_type="v_prediction")


@pytest.fixture
def counting_v(tiny_sd_v):
    p = load_prior(str(tiny_sd_v), cfg=PriorConfig(warn_cpu=False))
    p.unet = CountingUNet(p.unet)
    return p


def test_v_prediction_prior_sds_gradient_uses_eps_from_v(counting_v, monkeypatch):
    """A v-prediction UNet: eps_hat = sqrt(abar) v_hat + sqrt(1 - abar) x_t (Salimans & Ho 2022), recomputed here."""
    assert counting_v.schedule.prediction_type == "v_prediction"
    s, B = 7.5, 2
    processor = PromptProcessor(counting_v, "a red cube", "blurry")
    rgb = torch.rand(B, 3, 16, 16, requires_grad=True)
    kept = {}
    original = counting_v.encode_images

    def encode_and_keep(images):
        kept["x"] = x = original(images)
        x.retain_grad()
        return x

    monkeypatch.setattr(counting_v, "encode_images", encode_and_keep)
    _sds(counting_v, GuidanceConfig(scale=s), rgb, processor)["loss_sds"].backward()
    x = kept["x"]
    x_t, t, emb = counting_v.unet.calls[0]
    with torch.no_grad():
        v_c, v_u = counting_v.unet.inner(x_t, t, encoder_hidden_states=emb).sample.chunk(2)
    betas = torch.linspace(0.00085**0.5, 0.012**0.5, 1000, dtype=torch.float64) ** 2
    abar = torch.cumprod(1 - betas, 0)[t[:B]].view(B, 1, 1, 1).float()
    x_t = x_t[:B]
    eps = (x_t - abar.sqrt() * x.detach()) / (1 - abar).sqrt()
    to_eps = lambda v: abar.sqrt() * v + (1 - abar).sqrt() * x_t
    expected = (1 - abar) * (to_eps(v_u) + s * (to_eps(v_c) - to_eps(v_u)) - eps) / B
    torch.testing.assert_close(x.grad, expected, rtol=1e-3, atol=1e-5)


def test_v_prediction_prior_samples_like_diffusers_ddim(tiny_sd_v):
    """sample_images on a v-prediction prior == a DDIMScheduler loop (diffusers' own v handling) on the same UNet."""
    from diffusers import DDIMScheduler

    from sds3d.priors.sampling import sample_images

    p = load_prior(str(tiny_sd_v), cfg=PriorConfig(warn_cpu=False))
    ours = sample_images(p, ["a red cube"], guidance_scale=3.0, num_inference_steps=4, generator=torch.Generator().manual_seed(0))
    scheduler = DDIMScheduler.from_pretrained(tiny_sd_v, subfolder="scheduler")
    scheduler.set_timesteps(4)
    with torch.no_grad():
        emb = torch.cat([p.encode_prompts(["a red cube"]).tokens, p.encode_prompts([""]).tokens])
        x = torch.randn((1, 4, LATENT, LATENT), generator=torch.Generator().manual_seed(0))
        for t in scheduler.timesteps:
            v_c, v_u = p.unet(torch.cat([x, x]), t, encoder_hidden_states=emb).sample.chunk(2)
            x = scheduler.step(v_u + 3.0 * (v_c - v_u), t, x).prev_sample
        ref = p.decode(x)
    torch.testing.assert_close(ours, ref, rtol=1e-4, atol=1e-5)


def test_unknown_prediction_type_is_a_one_line_error(tiny_sd, tmp_path):
    import shutil

    folder = tmp_path / "velocity"
    shutil.copytree(tiny_sd, folder)
    config = folder / "scheduler" / "scheduler_config.json"
    config.write_text(json.dumps(json.loads(config.read_text()) | {"prediction_type": "velocity"}))
    with pytest.raises(PriorError, match="predicts 'velocity'; sds3d supports epsilon, v_prediction, sample models") as e:
        load_prior(str(folder), cfg=PriorConfig(warn_cpu=False))
    assert "\n" not in str(e.value)
