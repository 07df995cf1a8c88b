"""`sds3d doctor`: installed pieces, auto backend choices, prior found or not (CPU machine)."""

import json

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


def fake_pipeline(root, latent=True, weights=True, drop=()):
    root.mkdir(parents=True)
    (root / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionPipeline"}))
    for part in ["unet", "text_encoder", "tokenizer", "scheduler"] + (["vae"] if latent else []):
        if part in drop:
            continue
        (root / part).mkdir()
        (root / part / "config.json").write_text("{}")
        if weights and part in ("unet", "text_encoder", "vae"):
            (root / part / "model.safetensors").write_bytes(b"\0" * 2**20)
    return root


def test_check_prior_found_latent_and_pixel(tmp_path):
    found = doctor.check_prior(str(fake_pipeline(tmp_path / "sd")))
    assert found["found"] and found["path"] == str(tmp_path / "sd") and "latent (VAE)" in found["detail"]
    assert "3 MiB" in found["detail"]  # three 1 MiB weight files + small configs
    pixel = doctor.check_prior(str(fake_pipeline(tmp_path / "px", latent=False)))
    assert pixel["found"] and "pixel-space" in pixel["detail"]


def test_check_prior_incomplete_or_missing(tmp_path, monkeypatch):
    r = doctor.check_prior(str(fake_pipeline(tmp_path / "a", drop=("text_encoder",))))
    assert not r["found"] and "missing text_encoder/" in r["detail"]
    r = doctor.check_prior(str(fake_pipeline(tmp_path / "b", weights=False)))
    assert not r["found"] and "no weights in unet/" in r["detail"] and "no weights in vae/" in r["detail"]
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    r = doctor.check_prior("stabilityai/stable-diffusion-2-1-base")
    assert not r["found"] and r["path"] is None and "hf download stabilityai/stable-diffusion-2-1-base" in r["detail"]


def test_collect_on_this_machine(tmp_path):
    from sds3d.fields.encoding import select_backend

    f = doctor.collect(str(fake_pipeline(tmp_path / "sd")))
    assert f["torch"] == torch.__version__
    assert f["cuda_available"] == torch.cuda.is_available()
    assert f["cuda_ext"] == (False, "does not build: disabled for this test")
    assert f["encoding_auto"] == select_backend("auto", f["device"])
    if not torch.cuda.is_available():
        assert f["device"] == "cpu" and f["gpus"] == []
        assert f["encoding_auto"][0] == "torch" and f["render_auto"][0] == "torch"
    assert isinstance(f["tcnn"][0], bool) and f["tcnn"][1]  # reported either way; auto ignores it on CPU
    assert f["prior"]["found"]


def test_report_text_and_cli(tmp_path, capsys):
    from sds3d.cli import main

    folder = fake_pipeline(tmp_path / "sd")
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
