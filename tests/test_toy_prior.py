"""The shipped toy prior: loads offline through load_prior, interface shapes, seeded sampling, errors."""

import math
import shutil

import pytest
import torch

from sds3d.priors import PriorError, TOY_PRIOR_PATH, load_prior
from sds3d.priors.sampling import sample_images
from sds3d.priors.toy_unet import ToyUNet


@pytest.fixture(scope="module")
def toy():
    return load_prior("toy")


def test_shipped_prior_is_small_and_in_diffusers_layout():
    files = [f for f in TOY_PRIOR_PATH.rglob("*") if f.is_file()]
    assert sum(f.stat().st_size for f in files) <= 20 * 2**20
    for part in ("unet/config.json", "unet/diffusion_pytorch_model.safetensors", "text_encoder/model.safetensors",
                 "scheduler/scheduler_config.json", "model_index.json"):
        assert (TOY_PRIOR_PATH / part).is_file(), part
    assert not any(f.suffix in (".bin", ".pt", ".pkl") for f in files)  # weights are data, never pickles


def test_interface_shapes(toy):
    assert not toy.latent and toy.resolution == 32 and toy.num_train_timesteps == 1000
    assert toy.schedule.prediction_type == "epsilon" and toy.latent_shape == (3, 32, 32) and toy.camera_conditioned
    abar = toy.schedule.alphas_cumprod
    assert abar.shape == (1000,) and abar.dtype == torch.float32 and bool((abar[1:] < abar[:-1]).all())
    emb = toy.encode_prompts(["a red cube", ""])
    assert len(emb) == 2 and emb.tokens.ndim == 3 and emb.pooled is None and not emb.tokens.requires_grad
    assert not torch.allclose(emb.tokens[0], emb.tokens[1])
    rgb = torch.rand(2, 3, 64, 64, requires_grad=True)
    x = toy.encode_images(rgb)
    assert x.shape == (2, 3, 32, 32) and x.min() >= -1 and x.max() <= 1
    x.sum().backward()
    assert rgb.grad is not None and rgb.grad.abs().sum() > 0
    calls, rows = toy.calls, toy.rows
    eps = toy.predict(x.detach(), torch.tensor([10, 900]), emb)
    assert eps.shape == x.shape and torch.isfinite(eps).all()
    assert (toy.calls, toy.rows) == (calls + 1, rows + 2)
    assert all(not p.requires_grad for p in toy.parameters())


def test_predict_embeds_the_cameras_view_angles(toy):
    """The toy UNet's camera input is (elevation, azimuth) in degrees of each Cameras row; None is the null camera."""
    from sds3d.cameras import make_cameras

    cams = make_cameras(torch.tensor([30.0, 200.0]), torch.tensor([10.0, 50.0]), 2.5, 40.0)
    x_t = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    t, cond = torch.tensor([300, 600]), toy.encode_prompts(["a red cube, front view", "a red cube, back view"])
    with torch.no_grad():
        out = toy.predict(x_t, t, cond, cameras=cams)
        angles = torch.tensor([[10.0, 30.0], [50.0, 200.0]])
        assert torch.equal(out, toy.unet(x_t, t, encoder_hidden_states=cond.tokens, camera=angles).sample)
        assert torch.equal(toy.predict(x_t, t, cond), toy.unet(x_t, t, encoder_hidden_states=cond.tokens).sample)
        assert not torch.allclose(out, toy.predict(x_t, t, cond, cameras=cams[[1, 0]]), atol=1e-4)


def test_predict_rejects_mismatched_rows(toy):
    with pytest.raises(ValueError, match="x_t has 2 rows but t 2, cond 1"):
        toy.predict(torch.zeros(2, 3, 32, 32), torch.tensor([1, 2]), toy.encode_prompts(["a red cube"]))


def test_toy_dataset_captions_cameras_and_renders_agree():
    from sds3d.cameras import view_labels
    from sds3d.toyworld import world
    from sds3d.toyworld.dataset import build_dataset
    from sds3d.toyworld.render import render

    data = build_dataset(images_per_pair=2, seed=0)
    n = 2 * len(world.SHAPES) * len(world.COLOURS)
    assert len(data) == len(data.prompts) == len(data.base_prompts) == len(data.cameras) == n
    views = view_labels(data.cameras.azimuth_deg, data.cameras.elevation_deg)
    assert all(p == f"{b}, {v} view" for p, b, v in zip(data.prompts, data.base_prompts, views))
    assert data.base_prompts[0] == f"a {world.COLOURS[0]} {world.SHAPES[0]}"
    rgb, _ = render(world.SHAPES[0], world.colour_rgb(world.COLOURS[0]), data.cameras[:2])
    torch.testing.assert_close(data.images[:2], rgb * 2 - 1)  # each render is of its own caption and camera


def test_sampling_is_deterministic_with_a_seed(toy):
    a = sample_images(toy, ["a blue cone"], 3.0, 5, torch.Generator().manual_seed(1))
    b = sample_images(toy, ["a blue cone"], 3.0, 5, torch.Generator().manual_seed(1))
    c = sample_images(toy, ["a blue cone"], 3.0, 5, torch.Generator().manual_seed(2))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.shape == (1, 3, 32, 32)


def test_toy_unet_save_load_round_trip(tmp_path):
    torch.manual_seed(0)
    unet = ToyUNet(block_out_channels=(8, 16, 16), cross_attention_dim=16, attention_heads=2, norm_num_groups=4).eval()
    unet.save_pretrained(tmp_path / "unet")
    assert (tmp_path / "unet" / "diffusion_pytorch_model.safetensors").exists()
    again = ToyUNet.from_pretrained(tmp_path / "unet").eval()
    x, t, ctx = torch.randn(2, 3, 32, 32), torch.tensor([3, 700]), torch.randn(2, 5, 16)
    with torch.no_grad():
        assert torch.equal(unet(x, t, ctx).sample, again(x, t, ctx).sample)


def test_missing_and_corrupt_priors_are_one_line_errors(tmp_path):
    with pytest.raises(PriorError, match="does not exist"):
        load_prior(str(tmp_path / "missing"))
    broken = tmp_path / "broken"
    shutil.copytree(TOY_PRIOR_PATH, broken)
    weights = broken / "unet" / "diffusion_pytorch_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(PriorError, match="could not load the UNet") as e:
        load_prior(str(broken))
    assert "\n" not in str(e.value)
    (broken / "model_index.json").unlink()
    with pytest.raises(PriorError, match="model_index.json is missing"):
        load_prior(str(broken))


def _small_unet(**kw) -> ToyUNet:
    torch.manual_seed(0)
    return ToyUNet(block_out_channels=(8, 16, 16), cross_attention_dim=16, attention_heads=2, norm_num_groups=4, **kw).eval()


def test_camera_features_values_and_null_camera():
    from sds3d.priors.toy_unet import camera_features

    f = camera_features(torch.tensor([[30.0, 90.0], [float("nan"), float("nan")]]), 2, "cpu", torch.float32)
    s30, c30 = 0.5, math.sqrt(3) / 2
    # [known, sin el, sin az, sin 2el, sin 2az, cos el, cos az, cos 2el, cos 2az]
    assert torch.allclose(f[0], torch.tensor([1.0, s30, 1.0, math.sqrt(3) / 2, 0.0, c30, 0.0, 0.5, -1.0]), atol=1e-6)
    assert torch.equal(f[1], torch.zeros(9))
    assert torch.equal(camera_features(None, 3, "cpu", torch.float32), torch.zeros(3, 9))


def test_camera_conditioning_starts_as_the_camera_free_model_and_can_use_the_camera(tmp_path):
    plain, cam = _small_unet(), _small_unet(camera_conditioning=True)
    missing, unexpected = cam.load_state_dict(plain.state_dict(), strict=False)
    assert not unexpected and missing and all(k.startswith("camera_embedding.") for k in missing)
    x, t, ctx = torch.randn(2, 3, 32, 32), torch.tensor([100, 700]), torch.randn(2, 5, 16)
    views = torch.tensor([[0.0, 10.0], [45.0, 200.0]])
    with torch.no_grad():
        # Zero-initialised camera embedding: exactly the old function, with or without cameras.
        assert torch.allclose(cam(x, t, ctx, camera=views).sample, plain(x, t, ctx).sample, atol=1e-6)
        torch.nn.init.normal_(cam.camera_embedding.linear_2.weight, std=0.5)
        a = cam(x, t, ctx, camera=views).sample
        b = cam(x, t, ctx, camera=views.flip(0)).sample
        null = cam(x, t, ctx).sample
    assert not torch.allclose(a, b, atol=1e-4) and not torch.allclose(a, null, atol=1e-4)
    cam.save_pretrained(tmp_path / "unet")  # the flag is part of the saved config
    again = ToyUNet.from_pretrained(tmp_path / "unet").eval()
    assert again.config.camera_conditioning
    with torch.no_grad():
        assert torch.allclose(again(x, t, ctx, camera=views).sample, a, atol=1e-5)


def test_toy_priors_are_recognised_by_their_pipeline_class(tmp_path):
    from sds3d.priors import is_toy_prior

    assert is_toy_prior("toy") and is_toy_prior(str(TOY_PRIOR_PATH))
    copy = tmp_path / "retrained"
    shutil.copytree(TOY_PRIOR_PATH, copy)
    assert is_toy_prior(str(copy))  # a retrained toy prior folder still gets toy-world metrics
    (copy / "model_index.json").write_text('{"_class_name": "StableDiffusionPipeline"}')
    assert not is_toy_prior(str(copy))
    (copy / "model_index.json").write_text("not json")
    assert not is_toy_prior(str(copy)) and not is_toy_prior(str(tmp_path / "missing"))


def test_train_prior_init_from_a_folder_without_weights_is_a_one_line_error(tmp_path, capsys):
    from sds3d.toyworld.train_prior import main

    with pytest.raises(SystemExit) as e:
        main(["--init-from", str(tmp_path / "nope"), "--out", str(tmp_path / "out"), "--work-dir", str(tmp_path / "w")])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("sds3d: error: --init-from") and "missing" in err and "\n" not in err
    assert not (tmp_path / "out").exists()


def test_train_prior_fine_tune_records_its_lineage(tmp_path):
    """A two-step training, then a camera fine-tune of it: training.json nests the parent's recipe."""
    import json

    from sds3d.toyworld.train_prior import main

    tiny = ["--steps", "2", "--images-per-pair", "1", "--batch-size", "4", "--threads", "1", "--ckpt-every", "0"]
    main(tiny + ["--out", str(tmp_path / "base"), "--work-dir", str(tmp_path / "w1")])
    main(tiny + ["--camera-conditioning", "--lr", "5e-4", "--init-from", str(tmp_path / "base"),
                 "--out", str(tmp_path / "cam"), "--work-dir", str(tmp_path / "w2")])
    info = json.loads((tmp_path / "cam" / "training.json").read_text())
    assert info["camera_conditioning"] and info["lr"] == 5e-4 and info["init_from"] == str(tmp_path / "base")
    parent = info["init_from_training"]
    assert parent["camera_conditioning"] is False and parent["init_from"] is None and parent["init_from_training"] is None
    assert load_prior(str(tmp_path / "cam")).camera_conditioned


@pytest.mark.parametrize("args, says", [(["--lr", "0"], "--lr"), (["--ckpt-every", "-1"], "--ckpt-every"),
                                        (["--camera-dropout", "1.5"], "--camera-dropout"), (["--steps", "0"], "--steps")])
def test_train_prior_bad_numbers_are_one_line_errors(tmp_path, capsys, args, says):
    from sds3d.toyworld.train_prior import main

    with pytest.raises(SystemExit) as e:
        main(args + ["--out", str(tmp_path / "out"), "--work-dir", str(tmp_path / "w")])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"sds3d: error: {says}") and "\n" not in err
    assert not (tmp_path / "out").exists()


_TEXTS = ["a green cone", "A  RED cube, seen from the side!", "a yellow torus from above", "ünïcödé café 東京 🚀",
          "it's a don't-you're <|endoftext|> x", "", "cone " * 30]


def _slow_clip_tokenizer(path):
    from transformers import CLIPTokenizer

    return CLIPTokenizer.from_pretrained(path, subfolder="tokenizer", local_files_only=True)


def test_the_toy_priors_tokenizer_is_read_from_its_file_and_is_from_pretrained_s():
    import json

    from sds3d.priors.loading import PipelineFolder
    from sds3d.toyworld import world
    from sds3d.toyworld.prompts import make_prompt

    fast, slow = PipelineFolder(TOY_PRIOR_PATH).load_tokenizer("tokenizer", ("clip",), 77), _slow_clip_tokenizer(TOY_PRIOR_PATH)
    assert type(fast).__name__ == "TokenizersBackend"
    assert json.loads(fast.backend_tokenizer.to_str()) == json.loads(slow.backend_tokenizer.to_str())
    assert fast.model_max_length == slow.model_max_length
    # The grammar's 80 texts (16 prompts with and without the 4 view suffixes), the empty one, and others.
    texts = [make_prompt(c, s, v) for c in world.COLOURS for s in world.SHAPES for v in (None, *world.VIEWS)] + _TEXTS
    for kw in ({"padding": "max_length", "max_length": fast.model_max_length, "truncation": True}, {}):
        assert fast(texts, **kw).input_ids == slow(texts, **kw).input_ids


@pytest.mark.parametrize("change", ["normalizer", "post_processor", "added_token", "config_key"])
def test_a_tokenizer_file_clip_tokenizer_would_rebuild_differently_takes_from_pretrained(tmp_path, change):
    import json

    from sds3d.priors.loading import PipelineFolder

    folder = tmp_path / "prior"
    shutil.copytree(TOY_PRIOR_PATH, folder, ignore=shutil.ignore_patterns("*.safetensors"))
    tok_file, cfg_file = folder / "tokenizer" / "tokenizer.json", folder / "tokenizer" / "tokenizer_config.json"
    tok, cfg = json.loads(tok_file.read_text()), json.loads(cfg_file.read_text())
    if change == "normalizer":
        tok["normalizer"]["normalizers"] = tok["normalizer"]["normalizers"][:-1]  # no Lowercase
    elif change == "post_processor":
        tok["post_processor"] = None
    elif change == "added_token":
        tok["added_tokens"].append({**tok["added_tokens"][-1], "id": 7, "content": "<|extra|>"})
    else:
        cfg["added_tokens_decoder"] = {}
    tok_file.write_text(json.dumps(tok))
    cfg_file.write_text(json.dumps(cfg))
    tokenizer = PipelineFolder(folder).load_tokenizer("tokenizer", ("clip",), 77)
    assert type(tokenizer).__name__ == "CLIPTokenizer"
