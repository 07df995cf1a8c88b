"""`sds3d doctor`: installed pieces, auto backend choices, prior found or not (CPU machine)."""

import shutil

import pytest
import torch

from sds3d import doctor


@pytest.fixture(autouse=True)
def no_cuda_ext_build(monkeypatch):
    """Pretend sds3d.cuda_ext does not build (no compiler run in these tests); fresh backend choices."""
    from sds3d import cuda_ext
    from sds3d.fields import encoding

    monkeypatch.setattr(cuda_ext, "_module", None)
    monkeypatch.setattr(cuda_ext, "_error", "disabled for this test")
    monkeypatch.setattr(encoding, "_chosen", {})


def _copy(src, tmp_path, name="copy"):
    dst = tmp_path / name
    shutil.copytree(src, dst)
    return dst


def _count(module):
    return sum(p.numel() for p in module.parameters())


def test_check_prior_found_latent_and_pixel(tiny_sd3, tiny_pixel_prior):
    found = doctor.check_prior(str(tiny_sd3))
    assert found["found"] and found["path"] == str(tiny_sd3) and "latent (VAE)" in found["detail"]
    size = sum(f.stat().st_size for f in tiny_sd3.rglob("*") if f.is_file())
    assert f"{size / 2**20:.0f} MiB" in found["detail"]
    pixel = doctor.check_prior(str(tiny_pixel_prior))
    assert pixel["found"] and "pixel-space" in pixel["detail"] and pixel["facts"].prediction == "ε" and pixel["facts"].vae is None


def test_facts_match_the_loaded_prior_without_loading_it(tiny_sd3, tiny_flux):
    """Family, classes and parameter counts from the configs alone equal what load_prior builds; CPU memory is fp32 weights."""
    from sds3d.priors import PriorConfig, load_prior

    for folder, cfg in ((tiny_sd3, {}), (tiny_flux, {"resolution": 16})):
        facts = doctor.check_prior(str(folder))["facts"]
        prior = load_prior(str(folder), cfg=PriorConfig(warn_cpu=False, **cfg))
        assert facts.prediction == "flow" and facts.dtype == torch.float32 and facts.denoiser.cls == type(prior.denoiser).__name__
        assert facts.denoiser.params == _count(prior.denoiser) and facts.vae.params == _count(prior.vae)
        assert [(c.slot, c.cls, c.params) for c in facts.text_encoders] == [
            (n, type(getattr(prior, n)).__name__, _count(getattr(prior, n))) for n in prior.text_encoder_names]
        assert facts.device_bytes == 4 * _count(prior) and facts.host_bytes == 0
        assert facts.guidance_distilled == prior.guidance_distilled
    assert doctor.check_prior(str(tiny_flux))["facts"].guidance_distilled


def test_cuda_memory_with_offloaded_text_encoders_and_bf16_weights(tiny_sd3, tmp_path, monkeypatch):
    from diffusers import SD3Transformer2DModel

    from sds3d.priors.describe import describe_prior
    from sds3d.priors.loading import PipelineFolder

    folder = _copy(tiny_sd3, tmp_path)
    SD3Transformer2DModel.from_pretrained(tiny_sd3, subfolder="transformer").to(torch.bfloat16).save_pretrained(folder / "transformer")
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: True)
    facts = describe_prior(PipelineFolder(folder), device="cuda")
    assert facts.dtype == facts.shipped == torch.bfloat16
    encoders = [2 * c.params for c in facts.text_encoders]
    assert facts.device_bytes == 2 * (facts.denoiser.params + facts.vae.params) + max(encoders)
    assert facts.host_bytes == sum(encoders)
    lines = doctor.prior_lines(facts)
    assert lines[2] == "  dtype         bf16 on cuda (the transformer's weights are stored in bf16)"
    assert "in CPU RAM (text encoders, offloaded after encoding)" in lines[3]
    from sds3d.priors import PriorConfig

    no_t5 = describe_prior(PipelineFolder(folder), PriorConfig(t5=False), device="cuda")
    assert [c.slot for c in no_t5.text_encoders] == ["text_encoder", "text_encoder_2"] and no_t5.dropped == ["text_encoder_3"]


def test_check_prior_incomplete_pickled_or_missing(tiny_sd3, tmp_path, monkeypatch):
    folder = _copy(tiny_sd3, tmp_path, "a")
    shutil.rmtree(folder / "text_encoder_2")
    r = doctor.check_prior(str(folder))
    assert not r["found"] and "missing text_encoder_2/" in r["detail"] and r["path"] == str(folder)
    folder = _copy(tiny_sd3, tmp_path, "b")
    for f in (folder / "vae").glob("*.safetensors"):
        f.rename(f.with_suffix(".bin"))
    r = doctor.check_prior(str(folder))
    assert not r["found"] and "diffusion_pytorch_model.bin (a pickle" in r["detail"]
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    r = doctor.check_prior("stabilityai/stable-diffusion-2-1-base")
    assert not r["found"] and r["path"] is None and "hf download stabilityai/stable-diffusion-2-1-base" in r["detail"]


def test_collect_on_this_machine(tiny_sd3):
    from sds3d.fields.encoding import select_backend

    f = doctor.collect(str(tiny_sd3))
    assert f["torch"] == torch.__version__
    assert f["cuda_available"] == torch.cuda.is_available()
    assert f["cuda_ext"] == (False, "does not build: disabled for this test")
    assert f["encoding_auto"] == select_backend("auto", f["device"])
    if not torch.cuda.is_available():
        assert f["device"] == "cpu" and f["gpus"] == []
        assert f["encoding_auto"][0] == "torch" and f["render_auto"][0] == "torch"
    assert isinstance(f["tcnn"][0], bool) and f["tcnn"][1]  # reported either way; auto ignores it on CPU
    assert f["prior"]["found"]


def test_report_text_and_cli(tiny_sd3, capsys):
    from sds3d.cli import main

    folder = tiny_sd3
    assert main(["doctor", "--prior", str(folder)]) == 0
    text = capsys.readouterr().out
    assert text == doctor.report(str(folder)) + "\n"
    lines = text.splitlines()
    assert lines[0] == "sds3d doctor"
    assert any(l.startswith("  torch         " + torch.__version__) for l in lines)
    assert any(l.startswith("  cuda_ext      no: does not build: disabled for this test") for l in lines)
    assert any(l.startswith("  nerfacc CUDA  ") for l in lines) and any(l.startswith("  tinycudann    ") for l in lines)
    if not torch.cuda.is_available():
        assert "auto picks on cpu:" in lines
        assert any(l.startswith("  rendering     torch (auto: device is cpu") for l in lines)
        assert any(l.startswith("  encoding      torch (auto: sds3d.cuda_ext not available") for l in lines)
    assert f"prior {str(folder)!r}: found" in lines
    at = lines.index(f"prior {str(folder)!r}: found")
    assert lines[at + 2].startswith("  family        flow (StableDiffusion3Pipeline: SD3Transformer2DModel, ")
    assert lines[at + 3].startswith("  text encoders text_encoder CLIPTextModelWithProjection ") and "text_encoder_3 T5EncoderModel" in lines[at + 3]
    if not torch.cuda.is_available():
        assert lines[at + 4] == "  dtype         fp32 on cpu" and lines[at + 5].endswith("of weights in RAM; activations come on top")
