"""The toy flow prior: its training objective, its recipe script, its config, and the shipped folder when present."""

import json
import warnings
from pathlib import Path

import pytest
import torch

from sds3d.priors import TOY_FLOW_PRIOR_PATH, PriorError, is_toy_prior, load_prior, resolve_prior_path
from script_module import load_script

REPO = Path(__file__).resolve().parents[1]
TINY = ["--steps", "2", "--images-per-pair", "1", "--batch-size", "4", "--threads", "1", "--ckpt-every", "0"]


def test_flow_objective_trains_a_flow_prior_with_sigma_timesteps(tmp_path, monkeypatch):
    """--objective flow: the UNet sees sigma T (float; with shift 1, sigma = (t + 1) / T, so t + 1 in [1, 1000]) and learns
    eps - x; the folder loads as a flow prior."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    from sds3d.priors.toy_unet import ToyUNet
    from sds3d.toyworld.train_prior import main

    seen, forward = [], ToyUNet.forward

    def record(self, sample, timestep, *args, **kwargs):
        seen.append(torch.as_tensor(timestep).clone())
        return forward(self, sample, timestep, *args, **kwargs)

    monkeypatch.setattr(ToyUNet, "forward", record)
    main(TINY + ["--objective", "flow", "--out", str(tmp_path / "flow"), "--work-dir", str(tmp_path / "w")])
    t = torch.cat(seen)
    assert t.is_floating_point() and bool(((t >= 1) & (t <= 1000)).all())
    p = load_prior(str(tmp_path / "flow"))
    assert p.schedule.family == "flow" and p.schedule.shift == 1.0 and not p.latent and is_toy_prior(str(tmp_path / "flow"))
    index = json.loads((tmp_path / "flow" / "model_index.json").read_text())
    assert index["scheduler"] == ["diffusers", "FlowMatchEulerDiscreteScheduler"]
    assert FlowMatchEulerDiscreteScheduler.from_pretrained(tmp_path / "flow", subfolder="scheduler").config.shift == 1.0
    assert json.loads((tmp_path / "flow" / "training.json").read_text())["objective"] == "flow"


@pytest.mark.slow
def test_flow_fine_tune_of_an_eps_prior_records_its_lineage_and_refuses_a_mixed_resume(tmp_path, capsys):
    from sds3d.toyworld.train_prior import main

    main(TINY + ["--out", str(tmp_path / "eps"), "--work-dir", str(tmp_path / "w1")])
    main(TINY + ["--objective", "flow", "--init-from", str(tmp_path / "eps"), "--out", str(tmp_path / "flow"), "--work-dir", str(tmp_path / "w2")])
    info = json.loads((tmp_path / "flow" / "training.json").read_text())
    assert info["objective"] == "flow" and info["init_from_training"]["objective"] == "epsilon"
    with pytest.raises(SystemExit) as e:
        main(TINY + ["--resume", "--out", str(tmp_path / "again"), "--work-dir", str(tmp_path / "w2")])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("sds3d: error: ") and "checkpoint of the flow objective; resume it with --objective flow" in err


def _script(name: str):
    return load_script(name)


@pytest.mark.parametrize("scratch", [False, True])
def test_flow_recipe_chains_the_stages_and_skips_finished_ones(tmp_path, monkeypatch, scratch):
    from sds3d.priors import TOY_PRIOR_PATH

    recipe = _script("train_toy_flow_prior")
    calls = []

    def fake_train(argv):
        calls.append(argv)
        out = Path(argv[argv.index("--out") + 1])
        out.mkdir(parents=True)
        (out / "training.json").write_text("{}")

    monkeypatch.setattr(recipe, "train_prior", fake_train)
    (tmp_path / "work" / "flow-1").mkdir(parents=True)
    (tmp_path / "work" / "flow-1" / "ckpt.pt").write_bytes(b"")  # an interrupted stage is resumed
    monkeypatch.setattr("sys.argv", ["train_toy_flow_prior.py", "--out", str(tmp_path), "--threads", "1"] + (["--from-scratch"] if scratch else []))
    recipe.main()
    assert all(c[c.index("--objective") + 1] == "flow" for c in calls)
    outs = [Path(c[c.index("--out") + 1]).name for c in calls]
    init = {Path(c[c.index("--out") + 1]).name: Path(c[c.index("--init-from") + 1]) for c in calls if "--init-from" in c}
    if scratch:
        assert outs == ["base-3000", "base-6000", "cam-1", "cam-2", "cam-3", "cam-4"] and init["cam-1"] == tmp_path / "base-6000"
    else:
        assert outs == ["flow-1"] and init == {"flow-1": TOY_PRIOR_PATH}
        assert "--resume" in calls[0] and all("--camera-conditioning" in c for c in calls)
        # A stage added to the recipe: the finished one is skipped, the new one starts from it.
        monkeypatch.setattr(recipe, "FINE_TUNE_STAGES", [("flow-1", 10, 1e-3), ("flow-2", 10, 1e-3)])
        calls.clear()
        recipe.main()
        assert [Path(c[c.index("--out") + 1]).name for c in calls] == ["flow-2"]
        assert Path(calls[0][calls[0].index("--init-from") + 1]) == tmp_path / "flow-1" and "--resume" not in calls[0]


def test_toy_flow_config_and_name():
    from sds3d.config import load_config

    cfg = load_config(REPO / "configs" / "toy-flow.yaml", ["prompt=a red cube"])
    base = load_config(REPO / "configs" / "toy.yaml", ["prompt=a red cube"])
    assert cfg.prior.name_or_path == "toy-flow" and cfg.guidance.method == "flow_sds" and is_toy_prior("toy-flow")
    assert cfg.guidance.scale == base.guidance.scale and cfg.trainer == base.trainer and cfg.render == base.render


@pytest.mark.slow
def test_sds3d_run_toy_flow_config_reaches_a_mesh(tiny_toy_flow, tmp_path):
    from sds3d.cli import main

    overrides = [f"prior.name_or_path={tiny_toy_flow}", "prompt=a red cube", f"out_dir={tmp_path}", "name=flow", "device=cpu",
                 "trainer.max_steps=3", "trainer.val_every=0", "trainer.ckpt_every=0", "trainer.progress=false", "trainer.threads=1",
                 "trainer.log_every=1", "orbit.frames=2", "orbit.resolution=16", "export.resolution=24", "export.formats=[obj]",
                 "export.texture=vertex", "guidance.method=rfds_rev"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert main(["run", str(REPO / "configs" / "toy-flow.yaml"), *overrides]) == 0
    metrics = [json.loads(line) for line in (tmp_path / "flow" / "metrics.jsonl").read_text().splitlines()]
    assert [m["prior_calls"] for m in metrics] == [2, 2, 2]
    summary = json.loads((tmp_path / "flow" / "summary.json").read_text())
    assert "recognition" in json.dumps(summary) and (tmp_path / "flow" / "mesh" / "mesh.obj").is_file()


@pytest.mark.skipif((TOY_FLOW_PRIOR_PATH / "model_index.json").exists(), reason="the toy flow prior is shipped")
def test_missing_toy_flow_prior_says_how_to_make_it():
    with pytest.raises(PriorError, match="scripts/train_toy_flow_prior.py") as e:
        resolve_prior_path("toy-flow")
    assert "\n" not in str(e.value)


@pytest.mark.skipif(not (TOY_FLOW_PRIOR_PATH / "model_index.json").exists(), reason="the toy flow prior is not trained yet")
def test_shipped_toy_flow_prior_is_small_fp16_and_a_camera_conditioned_flow_prior():
    from safetensors import safe_open

    files = [f for f in TOY_FLOW_PRIOR_PATH.rglob("*") if f.is_file()]
    assert sum(f.stat().st_size for f in files) <= 20 * 2**20 and not any(f.suffix in (".bin", ".pt", ".pkl") for f in files)
    with safe_open(str(TOY_FLOW_PRIOR_PATH / "unet" / "diffusion_pytorch_model.safetensors"), "pt") as f:
        assert {f.get_slice(k).get_dtype() for k in f.keys()} == {"F16"}
    info = json.loads((TOY_FLOW_PRIOR_PATH / "training.json").read_text())
    assert info["objective"] == "flow" and info["init_from_training"] is not None
    p = load_prior("toy-flow")
    assert p.schedule.family == "flow" and p.camera_conditioned and p.resolution == 32
