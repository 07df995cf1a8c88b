"""Toy world v2's priors: the training data the recipe reads, the camera-free start from v1, exact
resume, the stage recipe, and the priors loaded by name."""

import json
import os
import signal
from pathlib import Path

import pytest
import torch

from sds3d.priors import PriorError, is_toy_prior, load_prior
from sds3d.priors.toy_unet import ToyUNet
from sds3d.toyworld.camera_free import drop_camera_embedding
from sds3d.toyworld.v2 import dataset, spec
from sds3d.toyworld.v2.prompts import parse_prompt
from script_module import load_script

TINY = ["--world", "v2", "--images-per-pair", "1", "--batch-size", "4", "--threads", "1"]


def _load_script(name: str):
    return load_script(name)


@pytest.fixture(scope="module")
def data_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("v2-data")


def test_recipe_counts_are_the_specs_at_1500_and_keep_its_ratio():
    assert dataset.recipe_counts(1500) == spec.IMAGES_PER_PAIR
    assert dataset.recipe_counts(150) == {"v1_pair": 150, "faced_object": 150, "composition": 20}
    assert dataset.recipe_counts(1)["composition"] == 1  # every trained composition is seen


def test_training_set_is_the_data_set_in_float16_and_its_cache_reads_back_the_same(data_cache):
    images, captions, base, angles = dataset.training_set(1, seed=3, cache_dir=data_cache)
    ref = dataset.build_dataset(3, dataset.recipe_counts(1))
    assert images.dtype == torch.float16 and torch.equal(images, ref[0].half()) and images.is_contiguous()
    assert captions == ref[1] and base == ref[2] and torch.equal(angles, ref[3])
    assert len(images) == 16 + 9 + 120
    assert len(list(data_cache.glob("*.safetensors"))) == 1
    again = dataset.training_set(1, seed=3, cache_dir=data_cache)
    assert torch.equal(again[0], images) and again[0].stride() == images.stride() and again[1] == captions and again[2] == base and torch.equal(again[3], angles)


def test_drop_camera_embedding_keeps_the_null_camera_function():
    torch.manual_seed(0)
    cam = ToyUNet(block_out_channels=(8, 16, 16), cross_attention_dim=16, attention_heads=2, norm_num_groups=4,
                  camera_conditioning=True).eval()
    torch.nn.init.normal_(cam.camera_embedding.linear_2.weight, std=0.5)
    torch.nn.init.normal_(cam.camera_embedding.linear_2.bias, std=0.5)
    plain = ToyUNet(block_out_channels=(8, 16, 16), cross_attention_dim=16, attention_heads=2, norm_num_groups=4).eval()
    plain.load_state_dict(drop_camera_embedding(cam.state_dict()))  # strict: nothing missing or left over
    x, t, ctx = torch.randn(3, 3, 32, 32), torch.tensor([10, 400, 900]), torch.randn(3, 5, 16)
    with torch.no_grad():
        null = cam(x, t, ctx).sample
        assert torch.allclose(plain(x, t, ctx).sample, null, atol=1e-5)
        # The camera term was not zero: dropping it without the fold would change the function.
        cam.camera_embedding.linear_2.bias.zero_()
        cam.camera_embedding.linear_2.weight.zero_()
        assert not torch.allclose(cam(x, t, ctx).sample, null, atol=1e-3)
    camera_free = plain.state_dict()
    assert drop_camera_embedding(camera_free) is camera_free


def test_v2_training_drops_the_view_suffix_of_v1_items_only(tmp_path, data_cache, monkeypatch):
    """The tokenizer sees every caption and, for v1 items only, the bare prompt the dropout uses."""
    from sds3d.toyworld import train_prior

    seen = []

    class Tokenizer:
        vocab_size = 49408

        def __init__(self, real):
            self.real = real

        def __call__(self, texts, **kw):
            seen.extend(texts)
            return self.real(texts, **kw)

        def save_pretrained(self, path):
            self.real.save_pretrained(path)

    real_build = train_prior.build_tokenizer
    monkeypatch.setattr(train_prior, "build_tokenizer", lambda n, w: Tokenizer(real_build(n, w)))
    train_prior.main(TINY + ["--steps", "1", "--seed", "3", "--dataset-cache", str(data_cache), "--out", str(tmp_path / "p"),
                             "--work-dir", str(tmp_path / "w")])
    _, captions, base, _ = dataset.training_set(1, seed=3, cache_dir=data_cache)
    v1_base = {b for b in base if parse_prompt(b).kind == "v1"}
    v2_base_only = {b for b, c in zip(base, captions) if parse_prompt(b).kind != "v1"} - set(captions)
    assert set(seen) == set(captions) | v1_base | {""}
    assert v2_base_only and not v2_base_only & set(seen)  # bare v2 prompts never seen unless captioned so
    info = json.loads((tmp_path / "p" / "training.json").read_text())
    assert info["world"] == "v2" and info["images"] == 145


def test_v2_training_never_writes_over_the_shipped_v1_prior(tmp_path, capsys):
    from sds3d.toyworld import train_prior

    with pytest.raises(SystemExit) as e:
        train_prior.main(TINY + ["--steps", "1", "--work-dir", str(tmp_path / "w")])
    assert e.value.code == 2 and "--world v2 needs --out" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        train_prior.main(["--dataset-cache", str(tmp_path), "--out", str(tmp_path / "p")])
    assert "add --world v2" in capsys.readouterr().err and not (tmp_path / "p").exists()


@pytest.mark.parametrize("stop", ["ctrl-c", "sigterm"])
def test_v2_stage_resumes_exactly(tmp_path, data_cache, monkeypatch, stop):
    """A stage stopped at step 3 (Ctrl-C or SIGTERM) and resumed ends with the weights of an uninterrupted one."""
    from sds3d.toyworld import train_prior

    args = TINY + ["--steps", "5", "--ckpt-every", "0", "--camera-conditioning", "--dataset-cache", str(data_cache)]
    train_prior.main(args + ["--out", str(tmp_path / "a"), "--work-dir", str(tmp_path / "wa")])

    real_tqdm = train_prior.tqdm

    class Interrupting(real_tqdm):
        def update(self, n=1):
            super().update(n)
            if self.n == 3:
                if stop == "sigterm":
                    os.kill(os.getpid(), signal.SIGTERM)
                else:
                    raise KeyboardInterrupt

    monkeypatch.setattr(train_prior, "tqdm", Interrupting)
    with pytest.raises(SystemExit, match="interrupted at step 3"):
        train_prior.main(args + ["--out", str(tmp_path / "b"), "--work-dir", str(tmp_path / "wb")])
    assert torch.load(tmp_path / "wb" / "ckpt.pt", weights_only=True)["step"] == 3
    monkeypatch.setattr(train_prior, "tqdm", real_tqdm)
    train_prior.main(args + ["--resume", "--out", str(tmp_path / "b"), "--work-dir", str(tmp_path / "wb")])
    a, b = (torch.load(tmp_path / w / "ckpt.pt", weights_only=True) for w in ("wa", "wb"))
    assert a["step"] == b["step"] == 5
    for part in ("unet", "text_encoder"):
        assert all(torch.equal(a[part][k], b[part][k]) for k in a[part])
    assert all(torch.equal(x, y) for x, y in zip(a["ema"]["shadow_params"], b["ema"]["shadow_params"]))
    for sub in ("unet/diffusion_pytorch_model.safetensors", "text_encoder/model.safetensors"):
        assert (tmp_path / "a" / sub).read_bytes() == (tmp_path / "b" / sub).read_bytes()


def test_a_checkpoint_of_another_data_set_is_not_resumed(tmp_path, data_cache, capsys):
    """After a spec change the cached renders follow its digest; a stage's checkpoint must too."""
    from sds3d.toyworld import train_prior

    args = TINY + ["--steps", "2", "--dataset-cache", str(data_cache), "--out", str(tmp_path / "p"), "--work-dir", str(tmp_path / "w")]
    train_prior.main(args)
    ckpt = tmp_path / "w" / "ckpt.pt"
    ck = torch.load(ckpt, weights_only=True)
    assert ck["data"] == f"v2-seed0-n1-{dataset.data_digest()}"
    torch.save({**ck, "data": "v2-seed0-n1-0123456789abcdef"}, ckpt)
    with pytest.raises(SystemExit) as e:
        train_prior.main(args + ["--steps", "4", "--resume"])
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert e.value.code == 2 and "was trained on another data set (v2-seed0-n1-0123456789abcdef" in err
    ckpt.write_bytes(b"not a checkpoint")
    with pytest.raises(SystemExit) as e:
        train_prior.main(args + ["--steps", "4", "--resume"])
    assert e.value.code == 2 and "is not a readable checkpoint" in capsys.readouterr().err


def test_recipe_runs_the_stages_of_both_priors_from_v1_and_resumes_stage_by_stage(tmp_path, monkeypatch):
    recipe = _load_script("train_toy_prior_v2")
    calls = []

    def fake_train(argv):
        calls.append(argv)
        out = Path(argv[argv.index("--out") + 1])
        out.mkdir(parents=True)
        init = argv[argv.index("--init-from") + 1]
        (out / "training.json").write_text(json.dumps({"steps": int(argv[argv.index("--steps") + 1]), "init_from": init}))

    monkeypatch.setattr(recipe, "train_prior", fake_train)
    assets, work = tmp_path / "assets", tmp_path / "work"
    common = ["--assets", str(assets), "--work-dir", str(work), "--threads", "1"]
    recipe.main(common + ["--prior", "text", "--max-stages", "1"])
    info = json.loads((assets / "toy-v2-text-prior" / "training.json").read_text())
    assert info["stage"] == "s1" and info["recipe"] == "scripts/train_toy_prior_v2.py"
    assert info["init_from"] == "sds3d/assets/toy-prior"  # in the repository: from its root, not this machine's path
    (work / "text" / "s2").mkdir(parents=True)
    (work / "text" / "s2" / "ckpt.pt").write_bytes(b"")  # an interrupted stage is resumed
    recipe.main(common)
    names = [(Path(c[c.index("--work-dir") + 1]).parent.name, Path(c[c.index("--work-dir") + 1]).name) for c in calls]
    stages = [s for s, _, _ in recipe.STAGES]
    assert names == [("text", s) for s in stages] + [("camera", s) for s in stages]
    init = [Path(c[c.index("--init-from") + 1]) for c in calls]
    v1 = Path(recipe.ROOT) / "sds3d" / "assets" / "toy-prior"
    assert init[0] == v1 and init[len(stages)] == v1  # both priors start from the shipped v1 prior
    assert all(p == assets / "toy-v2-text-prior" for p in init[1:len(stages)])
    assert all(p == assets / "toy-v2-camera-prior" for p in init[len(stages) + 1:])
    assert ["--resume" in c for c in calls] == [False, True] + [False] * (2 * len(stages) - 2)
    assert ["--camera-conditioning" in c for c in calls] == [False] * len(stages) + [True] * len(stages)
    assert all(c[c.index("--world") + 1] == "v2" for c in calls)
    for name in ("toy-v2-text-prior", "toy-v2-camera-prior"):
        assert json.loads((assets / name / "training.json").read_text())["stage"] == stages[-1]
    recipe.main(common)  # everything done: nothing runs
    assert len(calls) == 2 * len(stages)
    (assets / "toy-v2-text-prior" / "training.json").write_text('{"stage": "other"}')
    with pytest.raises(SystemExit, match="not one of this recipe's"):
        recipe.main(common + ["--prior", "text"])


def test_a_trained_v2_prior_loads_by_name(tmp_path, data_cache, monkeypatch):
    """A tiny run of the recipe (one 2-step stage) writes a folder that load_prior('toy-v2-*') reads."""
    from sds3d import priors

    recipe = _load_script("train_toy_prior_v2")
    monkeypatch.setattr(recipe, "STAGES", recipe.STAGES[:1])
    recipe.main(["--assets", str(tmp_path), "--work-dir", str(tmp_path / "work"), "--threads", "1", "--stage-steps", "2",
                 "--images-per-pair", "1", "--batch-size", "4", "--ckpt-every", "0", "--prior", "text"])
    for name, folder in (("toy-v2-text", "toy-v2-text-prior"), ("toy-v2-camera", "toy-v2-camera-prior")):
        monkeypatch.setitem(priors.TOY_PRIORS, name, tmp_path / folder)
    assert is_toy_prior("toy-v2-text") and is_toy_prior("toy-v2-camera") and not is_toy_prior("toy-v3")
    prior = load_prior("toy-v2-text")
    assert not prior.camera_conditioned and prior.resolution == 32
    with pytest.raises(PriorError, match="scripts/train_toy_prior_v2.py --prior camera") as e:
        load_prior("toy-v2-camera")  # not trained yet
    assert "\n" not in str(e.value)
    size = sum(f.stat().st_size for f in (tmp_path / "toy-v2-text-prior").rglob("*") if f.is_file())
    assert size <= 20e6
