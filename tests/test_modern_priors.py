"""SD 2.x v-prediction, SDXL, SD3 and Flux folders through load_prior, on tiny random-weight pipelines
(tests/tiny_pipelines.py): text conditions and denoiser calls against the diffusers pipelines
built from the same modules, one batched denoiser call per step, gradients through the VAE, and
the bad folders users have (one line, naming the path and the fix).
"""

import json
import shutil
import warnings

import pytest
import torch

from sds3d.guidance import GuidanceConfig, PromptProcessor, build_guidance
from sds3d.priors import PriorConfig, PriorError, load_prior
from tiny_pipelines import LATENT, T5_LEN

torch.set_num_threads(1)
SMALL = dict(warn_cpu=False, max_sequence_length=T5_LEN)


def load(folder, **cfg):
    return load_prior(str(folder), cfg=PriorConfig(**(SMALL | cfg)))


@pytest.fixture(scope="module")
def sdxl(tiny_sdxl):
    return load(tiny_sdxl)


@pytest.fixture(scope="module")
def sd3(tiny_sd3):
    return load(tiny_sd3)


@pytest.fixture(scope="module")
def flux(tiny_flux):
    return load(tiny_flux, resolution=2 * LATENT)


# -- what each family loads as ---------------------------------------------------------------------

def test_families_schedules_and_shapes(sdxl, sd3, flux, tiny_sd_v_prediction):
    from sds3d.priors.flux import FluxPrior
    from sds3d.priors.sd import SDPrior
    from sds3d.priors.sd3 import SD3Prior
    from sds3d.priors.sdxl import SDXLPrior

    v = load(tiny_sd_v_prediction)
    assert type(v) is SDPrior and v.schedule.family == "v"
    assert type(sdxl) is SDXLPrior and sdxl.schedule.family == "ε" and sdxl.latent_shape == (4, LATENT, LATENT)
    assert type(sd3) is SD3Prior and sd3.schedule.family == "flow" and sd3.schedule.shift == 3.0 and sd3.patch == 2
    assert type(flux) is FluxPrior and flux.schedule.family == "flow" and flux.guidance_distilled and flux.patch == 2
    assert sd3.resolution == flux.resolution == sdxl.resolution == 2 * LATENT
    for p in (sdxl, sd3, flux):
        assert {q.dtype for q in p.parameters()} == {torch.float32} and not any(q.requires_grad for q in p.parameters())
    # Flux's dynamic shift: mu from its 4 x 4 = 16 packed image tokens.
    from diffusers.pipelines.flux.pipeline_flux import calculate_shift

    assert flux.schedule.mu == pytest.approx(calculate_shift(16))


def test_sdxl_condition_is_the_pipelines(sdxl):
    from diffusers import StableDiffusionXLPipeline

    pipe = StableDiffusionXLPipeline(vae=sdxl.vae, text_encoder=sdxl.text_encoder, text_encoder_2=sdxl.text_encoder_2,
                                     tokenizer=sdxl.tokenizer, tokenizer_2=sdxl.tokenizer_2, unet=sdxl.unet, scheduler=None)
    cond = sdxl.encode_prompts(["a red cube", ""])
    with torch.no_grad():
        tokens, neg_tokens, pooled, neg_pooled = pipe.encode_prompt("a red cube", device="cpu", do_classifier_free_guidance=True)
    torch.testing.assert_close(cond.tokens[:1], tokens)
    torch.testing.assert_close(cond.pooled[:1], pooled)
    # force_zeros_for_empty_prompt: the unconditional row is zeros, as the pipeline without a negative prompt.
    torch.testing.assert_close(cond.tokens[1:], neg_tokens)
    torch.testing.assert_close(cond.pooled[1:], neg_pooled)
    assert not neg_tokens.any()
    R = sdxl.resolution
    time_ids = pipe._get_add_time_ids((R, R), (0, 0), (R, R), torch.float32, sdxl.text_encoder_2.config.projection_dim)
    assert torch.equal(cond.extras["time_ids"], time_ids.expand(2, 6))
    x_t, t = torch.randn(2, 4, LATENT, LATENT, generator=torch.Generator().manual_seed(0)), torch.tensor([10, 700])
    with torch.no_grad():
        ref = sdxl.unet(x_t, t, encoder_hidden_states=cond.tokens, added_cond_kwargs={"text_embeds": cond.pooled, "time_ids": time_ids.expand(2, 6)}).sample
        assert torch.equal(sdxl.predict(x_t, t, cond), ref)


@pytest.mark.parametrize("t5", [True, False])
def test_sd3_condition_is_the_pipelines(tiny_sd3, t5):
    from diffusers import StableDiffusion3Pipeline

    p = load(tiny_sd3, t5=t5)
    assert (p.text_encoder_3 is None) == (not t5)
    pipe = StableDiffusion3Pipeline(transformer=p.transformer, scheduler=None, vae=p.vae, text_encoder=p.text_encoder,
                                    tokenizer=p.tokenizer, text_encoder_2=p.text_encoder_2, tokenizer_2=p.tokenizer_2,
                                    text_encoder_3=p.text_encoder_3, tokenizer_3=p.tokenizer_3)
    cond = p.encode_prompts(["a red cube", ""])
    with torch.no_grad():
        tokens, neg, pooled, neg_pooled = pipe.encode_prompt("a red cube", None, None, device="cpu", max_sequence_length=T5_LEN)
    torch.testing.assert_close(cond.tokens, torch.cat([tokens, neg]))
    torch.testing.assert_close(cond.pooled, torch.cat([pooled, neg_pooled]))
    assert cond.tokens.shape == (2, 16 + T5_LEN, 64)
    assert bool(cond.tokens[:, 16:].any()) == t5  # no T5: its tokens are zeros


def test_flux_condition_is_the_pipelines(flux):
    from diffusers import FluxPipeline

    pipe = FluxPipeline(transformer=flux.transformer, scheduler=None, vae=flux.vae, text_encoder=flux.text_encoder,
                        tokenizer=flux.tokenizer, text_encoder_2=flux.text_encoder_2, tokenizer_2=flux.tokenizer_2)
    cond = flux.encode_prompts(["a red cube"])
    with torch.no_grad():
        tokens, pooled, text_ids = pipe.encode_prompt("a red cube", device="cpu", max_sequence_length=T5_LEN)
    torch.testing.assert_close(cond.tokens, tokens)
    torch.testing.assert_close(cond.pooled, pooled)


def _pipeline_latents(pipe, prior, steps, scale, packed=None, **kw):
    x = torch.randn((1, *prior.latent_shape), generator=torch.Generator().manual_seed(0))
    latents = x if packed is None else packed(x)
    with torch.no_grad():
        return pipe("a red cube", height=prior.resolution, width=prior.resolution, num_inference_steps=steps, guidance_scale=scale,
                    latents=latents, output_type="latent", max_sequence_length=T5_LEN, **kw).images


def test_sd3_samples_like_the_sd3_pipeline(sd3):
    """sample_images (Euler on the flow schedule, CFG batched) == StableDiffusion3Pipeline on the same modules and noise."""
    from diffusers import FlowMatchEulerDiscreteScheduler, StableDiffusion3Pipeline

    from sds3d.priors.sampling import sample_images

    pipe = StableDiffusion3Pipeline(transformer=sd3.transformer, scheduler=FlowMatchEulerDiscreteScheduler.from_pretrained(sd3.path, subfolder="scheduler"),
                                    vae=sd3.vae, text_encoder=sd3.text_encoder, tokenizer=sd3.tokenizer, text_encoder_2=sd3.text_encoder_2,
                                    tokenizer_2=sd3.tokenizer_2, text_encoder_3=sd3.text_encoder_3, tokenizer_3=sd3.tokenizer_3)
    ref = sd3.decode(_pipeline_latents(pipe, sd3, 4, 3.0))
    ours = sample_images(sd3, ["a red cube"], guidance_scale=3.0, num_inference_steps=4, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(ours, ref, rtol=1e-4, atol=1e-4)


def test_flux_samples_like_the_flux_pipeline(flux):
    """Packing, position ids, timestep / 1000, the guidance embedding and the dynamic shift, against FluxPipeline."""
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline

    from sds3d.priors.sampling import sample_images

    pipe = FluxPipeline(transformer=flux.transformer, scheduler=FlowMatchEulerDiscreteScheduler.from_pretrained(flux.path, subfolder="scheduler"),
                        vae=flux.vae, text_encoder=flux.text_encoder, tokenizer=flux.tokenizer, text_encoder_2=flux.text_encoder_2,
                        tokenizer_2=flux.tokenizer_2)
    h = LATENT
    packed = _pipeline_latents(pipe, flux, 4, 3.5, packed=lambda x: FluxPipeline._pack_latents(x, 1, 4, h, h))
    ref = flux.decode(FluxPipeline._unpack_latents(packed, flux.resolution, flux.resolution, flux.vae_scale_factor))
    calls = flux.calls
    ours = sample_images(flux, ["a red cube"], guidance_scale=3.5, num_inference_steps=4, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(ours, ref, rtol=1e-4, atol=1e-4)
    assert flux.calls - calls == 4  # guidance-distilled: one call of one row per step


def test_toy_flow_prior_samples_like_flow_match_euler(tiny_toy_flow):
    from diffusers import FlowMatchEulerDiscreteScheduler

    from sds3d.priors.sampling import sample_images

    p = load(tiny_toy_flow)
    assert not p.latent and p.schedule.family == "flow" and p.camera_conditioned
    ours = sample_images(p, ["a red cube"], guidance_scale=3.0, num_inference_steps=5, generator=torch.Generator().manual_seed(0))
    scheduler = FlowMatchEulerDiscreteScheduler.from_pretrained(tiny_toy_flow, subfolder="scheduler")
    scheduler.set_timesteps(5)
    with torch.no_grad():
        emb = torch.cat([p.encode_prompts(["a red cube"]).tokens, p.encode_prompts([""]).tokens])
        x = torch.randn((1, 3, 32, 32), generator=torch.Generator().manual_seed(0))
        for tau in scheduler.timesteps:
            v_c, v_u = p.unet(torch.cat([x, x]), tau.expand(2), encoder_hidden_states=emb).sample.chunk(2)
            x = scheduler.step(v_u + 3.0 * (v_c - v_u), tau, x).prev_sample
    torch.testing.assert_close(ours, p.decode(x), rtol=1e-5, atol=1e-5)


# -- the distillation step on each family ----------------------------------------------------------

def _count_denoiser_calls(prior):
    calls = []
    handle = prior.denoiser.register_forward_pre_hook(lambda module, args, kwargs: calls.append(
        (args[0] if args else kwargs["hidden_states"]).shape[0]), with_kwargs=True)
    return calls, handle


@pytest.mark.parametrize("family,method", [("sd2v", "sds"), ("sdxl", "sds"), ("sd3", "flow_sds"), ("sd3", "rfds"),
                                           ("flux", "rfds"), ("flux", "sds")])
def test_one_batched_denoiser_call_and_gradient_through_the_vae(request, family, method, monkeypatch):
    """One denoiser forward per step (CFG rows batched; Flux: one row per view); the render's gradient is the
    VAE encoder's vector-Jacobian product with d loss / d x."""
    prior = {"sd2v": lambda: load(request.getfixturevalue("tiny_sd_v_prediction")), "sdxl": lambda: request.getfixturevalue("sdxl"),
             "sd3": lambda: request.getfixturevalue("sd3"), "flux": lambda: request.getfixturevalue("flux")}[family]()
    processor = PromptProcessor(prior, "a red cube", view_dependent=False)
    guidance = build_guidance(GuidanceConfig(method=method, scale=7.5), prior)
    rgb = torch.rand(2, 3, 24, 24, requires_grad=True)
    kept, original = {}, prior.encode_images

    def encode_and_keep(images):
        kept["x"] = x = original(images)
        x.retain_grad()
        return x

    monkeypatch.setattr(prior, "encode_images", encode_and_keep)
    calls, handle = _count_denoiser_calls(prior)
    try:
        torch.manual_seed(5)  # the VAE posterior sample
        out = guidance(rgb, processor(torch.tensor([0.0, 90.0]), torch.zeros(2)), step=0, generator=torch.Generator().manual_seed(1))
        out["loss_sds"].backward()
    finally:
        handle.remove()
    rows = 2 if family == "flux" and method != "sds" else 4
    assert calls == [rows] and out["prior_calls"].item() == 1.0
    assert torch.isfinite(rgb.grad).all() and rgb.grad.abs().sum() > 0
    torch.manual_seed(5)
    leaf = rgb.detach().requires_grad_(True)
    (vjp,) = torch.autograd.grad(original(leaf), leaf, grad_outputs=kept["x"].grad)
    torch.testing.assert_close(rgb.grad, vjp)


def test_x0_prediction_prior_sds_uses_eps_from_x0(tiny_sd_v_prediction, tmp_path, monkeypatch):
    """A sample-prediction UNet: eps_hat = (x_t - sqrt(abar) x0_hat) / sqrt(1 - abar), recomputed here from the recorded call."""
    folder = tmp_path / "x0"
    shutil.copytree(tiny_sd_v_prediction, folder)
    config = folder / "scheduler" / "scheduler_config.json"
    config.write_text(json.dumps(json.loads(config.read_text()) | {"prediction_type": "sample"}))
    p = load(folder)
    assert p.schedule.family == "x0"
    seen = []
    handle = p.unet.register_forward_hook(lambda m, args, kwargs, out: seen.append((args[0], args[1], kwargs["encoder_hidden_states"], out.sample)),
                                          with_kwargs=True)
    rgb, s, B = torch.rand(2, 3, 16, 16, requires_grad=True), 7.5, 2
    kept, original = {}, p.encode_images

    def encode_and_keep(images):
        kept["x"] = x = original(images)
        x.retain_grad()
        return x

    monkeypatch.setattr(p, "encode_images", encode_and_keep)
    processor = PromptProcessor(p, "a red cube", view_dependent=False)
    build_guidance(GuidanceConfig(scale=s), p)(rgb, processor(torch.zeros(B), torch.zeros(B)), step=0,
                                                generator=torch.Generator().manual_seed(2))["loss_sds"].backward()
    handle.remove()
    x_t, t, _, out = seen[0]
    betas = torch.linspace(0.00085**0.5, 0.012**0.5, 1000, dtype=torch.float64) ** 2
    abar = torch.cumprod(1 - betas, 0)[t[:B]].view(B, 1, 1, 1).float()
    x, x_t = kept["x"].detach(), x_t[:B]
    eps = (x_t - abar.sqrt() * x) / (1 - abar).sqrt()
    to_eps = lambda x0: (x_t - abar.sqrt() * x0) / (1 - abar).sqrt()
    x0_c, x0_u = out.chunk(2)
    expected = (1 - abar) * (to_eps(x0_u) + s * (to_eps(x0_c) - to_eps(x0_u)) - eps) / B
    torch.testing.assert_close(kept["x"].grad, expected, rtol=1e-3, atol=1e-5)


# -- `sds3d run` on each family ---------------------------------------------------------------------

TINY_RUN = [
    "prompt=a red cube", "device=cpu", "trainer.max_steps=3", "trainer.val_every=0", "trainer.ckpt_every=0", "trainer.log_every=1",
    "trainer.progress=false", "trainer.threads=1", "orbit.frames=2", "orbit.resolution=16", "render.resolution=16",
    "render.num_samples=12", "field.encoding.n_levels=2", "field.encoding.log2_hashmap_size=10", "field.encoding.max_resolution=16",
    "field.encoding.backend=torch", "export.resolution=24", "export.formats=[obj]", "export.texture=vertex", f"prior.max_sequence_length={T5_LEN}", "prior.warn_cpu=false",
]


def _run(config, folder, tmp_path, *extra):
    from pathlib import Path

    from sds3d.cli import main

    config = Path(__file__).resolve().parents[1] / "configs" / config
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert main(["run", str(config), f"prior.name_or_path={folder}", f"out_dir={tmp_path}", "name=run", *TINY_RUN, *extra]) == 0
    run = tmp_path / "run"
    obj = (run / "mesh" / "mesh.obj").read_text()
    assert obj.count("\nv ") > 10 and obj.count("\nf ") > 10
    metrics = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics] == [1, 2, 3]
    return metrics, json.loads((run / "summary.json").read_text())


def test_sds3d_run_rfds_sd3_reaches_a_mesh(tiny_sd3, tmp_path):
    metrics, summary = _run("rfds-sd3.yaml", tiny_sd3, tmp_path, "prior.resolution=16")
    assert summary["skipped_steps"] == 0 and all(m["prior_calls"] == 1 for m in metrics)
    assert all(19 <= m["t_mean"] <= 699 for m in metrics)  # the reference's index range 300..980, as sds3d's t


@pytest.mark.slow
@pytest.mark.parametrize("config,fixture,extra,calls", [
    ("dreamfusion-sd.yaml", "tiny_sd_v_prediction", (), 1),
    ("dreamfusion-sdxl.yaml", "tiny_sdxl", (), 1),
    ("rfds-sd3.yaml", "tiny_sd3", ("prior.resolution=16", "guidance.method=rfds_rev"), 2),
    ("rfds-sd3.yaml", "tiny_sd3", ("prior.resolution=16", "prior.t5=false", "guidance.method=flow_sds"), 1),
    ("rfds-flux.yaml", "tiny_flux", ("prior.resolution=16",), 1),
])
def test_sds3d_run_each_family_reaches_a_mesh(request, tmp_path, config, fixture, extra, calls):
    metrics, summary = _run(config, request.getfixturevalue(fixture), tmp_path, *extra)
    assert summary["skipped_steps"] == 0 and all(m["prior_calls"] == calls for m in metrics)


# -- bad folders ------------------------------------------------------------------------------------

def _copy(src, tmp_path, name="broken"):
    dst = tmp_path / name
    shutil.copytree(src, dst)
    return dst


def test_missing_t5_names_the_folder_and_both_fixes(tiny_sd3, tmp_path):
    folder = _copy(tiny_sd3, tmp_path)
    shutil.rmtree(folder / "text_encoder_3")
    with pytest.raises(PriorError) as e:
        load(folder)
    msg = str(e.value)
    assert "\n" not in msg and str(folder) in msg and "text_encoder_3/" in msg and "prior.t5=false" in msg
    assert load(folder, t5=False).text_encoder_3 is None


def test_missing_component_and_unknown_class(tiny_flux, tiny_sdxl, tmp_path):
    folder = _copy(tiny_flux, tmp_path, "flux")
    shutil.rmtree(folder / "text_encoder_2")
    with pytest.raises(PriorError, match="missing text_encoder_2/"):
        load(folder, resolution=16)
    folder = _copy(tiny_sdxl, tmp_path, "sdxl")
    config = folder / "unet" / "config.json"
    config.write_text(json.dumps(json.loads(config.read_text()) | {"_class_name": "MyFancyUNet"}))
    with pytest.raises(PriorError, match=r"unet is a 'MyFancyUNet'; sds3d loads UNet2DConditionModel there") as e:
        load(folder)
    assert "\n" not in str(e.value)
    index = folder / "model_index.json"
    index.write_text(json.dumps(json.loads(index.read_text()) | {"_class_name": "KandinskyPipeline"}))
    with pytest.raises(PriorError, match="is a 'KandinskyPipeline' folder; sds3d loads StableDiffusionPipeline"):
        load(folder)


def test_bin_only_weights_are_refused_with_the_fix(tiny_sd3, tmp_path):
    folder = _copy(tiny_sd3, tmp_path)
    weights = folder / "transformer" / "diffusion_pytorch_model.safetensors"
    weights.rename(weights.with_suffix(".bin"))
    with pytest.raises(PriorError) as e:
        load(folder)
    msg = str(e.value)
    assert "\n" not in msg and str(folder / "transformer") in msg and "diffusion_pytorch_model.bin (a pickle" in msg
    assert "safetensors" in msg


def test_bin_only_folder_exits_2_with_one_line(tiny_sd3, tmp_path, capsys):
    from pathlib import Path

    from sds3d.cli import main

    folder = _copy(tiny_sd3, tmp_path)
    for f in folder.glob("text_encoder/*.safetensors"):
        f.rename(f.with_suffix(".bin"))
    config = Path(__file__).resolve().parents[1] / "configs" / "rfds-sd3.yaml"
    assert main(["run", str(config), f"prior.name_or_path={folder}", f"out_dir={tmp_path}", *TINY_RUN]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("sds3d: error:")]
    assert len(errors) == 1 and "model.bin (a pickle" in errors[0] and str(folder / "text_encoder") in errors[0]


def test_hub_id_not_cached_names_the_download(tmp_path, monkeypatch):
    from huggingface_hub import constants

    from sds3d.priors import download_command

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    with pytest.raises(PriorError) as e:
        load_prior("black-forest-labs/FLUX.1-dev")
    assert "\n" not in str(e.value) and str(e.value).endswith(download_command("black-forest-labs/FLUX.1-dev"))


def test_tokenizer_without_model_max_length_uses_the_encoders_positions(tiny_sdxl, tmp_path):
    """Community folders without model_max_length: transformers gives 1e30 (an OverflowError when padding); sds3d takes
    the text encoder's max_position_embeddings."""
    folder = _copy(tiny_sdxl, tmp_path)
    for sub in ("tokenizer", "tokenizer_2"):
        config = folder / sub / "tokenizer_config.json"
        data = json.loads(config.read_text())
        data.pop("model_max_length")
        data.pop("max_length", None)
        config.write_text(json.dumps(data))
    p = load(folder)
    assert p.tokenizer.model_max_length == p.text_encoder.config.max_position_embeddings == 16
    assert p.encode_prompts(["a red cube"]).tokens.shape == (1, 16, 64)


def test_auto_dtype_is_bf16_on_cuda_for_bf16_weights(tiny_sd3, tmp_path, monkeypatch):
    from sds3d.priors.config import resolve_dtype
    from sds3d.priors.loading import PipelineFolder

    folder = _copy(tiny_sd3, tmp_path)
    from diffusers import SD3Transformer2DModel

    SD3Transformer2DModel.from_pretrained(tiny_sd3, subfolder="transformer").to(torch.bfloat16).save_pretrained(folder / "transformer")
    pipeline = PipelineFolder(folder)
    assert pipeline.shipped_dtype("transformer") == torch.bfloat16 and PipelineFolder(tiny_sd3).shipped_dtype("transformer") == torch.float32
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: True)
    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    assert resolve_dtype(PriorConfig(), cuda, torch.bfloat16) == torch.bfloat16
    assert resolve_dtype(PriorConfig(), cuda, torch.float32) == torch.float16
    assert resolve_dtype(PriorConfig(), cpu, torch.bfloat16) == torch.float32
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: False)
    assert resolve_dtype(PriorConfig(), cuda, torch.bfloat16) == torch.float16
    assert load(folder).dtype == torch.float32  # on the CPU: fp32 whatever the files hold


def test_prior_resolution_must_fit_the_patches(tiny_sd3):
    with pytest.raises(PriorError, match=r"prior.resolution=18 must be a multiple of 4"):
        load(tiny_sd3, resolution=18)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_text_encoders_offloaded_after_encoding(tiny_sd3):
    p = load_prior(str(tiny_sd3), device="cuda", cfg=PriorConfig(**SMALL))
    assert all(next(e.parameters()).device.type == "cpu" for e in p.text_encoders)
    cond = p.encode_prompts(["a red cube", ""])
    assert cond.tokens.device.type == "cuda" and all(next(e.parameters()).device.type == "cpu" for e in p.text_encoders)
