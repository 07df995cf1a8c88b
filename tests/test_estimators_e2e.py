"""Every estimator through `sds3d run` to a mesh, on the tiny random pixel prior and the tiny SD-shaped
pipeline, and the estimators' bad input: one line, exit 2, nothing written."""

import json
from pathlib import Path

import pytest
from tiny_pipelines import build_tiny_sd

from sds3d.cli import main

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
TOY = str(CONFIGS / "toy.yaml")
METHODS = ["nfsd", "csd", "ism", "sdi", "vsd", "cds"]


def _fast(tmp_path, prior):
    return [f"out_dir={tmp_path}", f"prior.name_or_path={prior}", "trainer.max_steps=2", "trainer.progress=false",
            "render.resolution=16", "render.num_samples=8", "trainer.val_every=0", "orbit.frames=2",
            "orbit.resolution=16", "export.resolution=16", "export.texture=vertex", "trainer.threads=1", "trainer.log_every=1",
            "name=a-red-cube"]


def _run(capsys, *argv):
    code = main(list(argv))
    err = capsys.readouterr().err.strip().splitlines()
    return code, (err[-1] if err else "")


def _check_run(run_dir, calls):
    assert (run_dir / "mesh" / "mesh.obj").exists() and (run_dir / "orbit.mp4").exists()
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert len(records) == 2 and all(calls(r["prior_calls"]) for r in records)
    return records


EXPECTED_CALLS = {"nfsd": lambda n: n == 1, "csd": lambda n: n == 1, "cds": lambda n: n == 2, "vsd": lambda n: n == 2,
                  "ism": lambda n: 2 <= n <= 7, "sdi": lambda n: 2 <= n <= 12}


def test_one_estimator_end_to_end_on_the_pixel_prior(tmp_path, tiny_pixel_prior):
    """The default suite's end-to-end check (the others are slow): ISM, the one with the longest chain."""
    assert main(["run", str(CONFIGS / "toy-ism.yaml"), "prompt=a red cube", *_fast(tmp_path, tiny_pixel_prior)]) == 0
    _check_run(tmp_path / "a-red-cube", EXPECTED_CALLS["ism"])


@pytest.mark.slow
@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("which", ["pixel", "sd"])
def test_every_estimator_end_to_end(tmp_path, tiny_pixel_prior, tiny_sd, method, which):
    prior = tiny_pixel_prior if which == "pixel" else tiny_sd
    extra = ["eval.enabled=false", "prior.warn_cpu=false"] if which == "sd" else []
    assert main(["run", TOY, "prompt=a red cube", f"guidance.method={method}", *_fast(tmp_path, prior), *extra]) == 0
    records = _check_run(tmp_path / "a-red-cube", EXPECTED_CALLS[method])
    if method == "vsd":
        assert all("loss_lora" in r for r in records)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["toy-nfsd", "toy-csd", "toy-sdi", "toy-vsd", "toy-esd", "toy-cds", "toy-dreamtime"])
def test_every_toy_config_runs(tmp_path, tiny_pixel_prior, name):
    assert main(["run", str(CONFIGS / f"{name}.yaml"), "prompt=a red cube", *_fast(tmp_path, tiny_pixel_prior)]) == 0


@pytest.mark.parametrize("overrides, message", [
    (["guidance.method=vds"], "guidance.method='vds' is unknown; did you mean 'vsd'?"),
    (["guidance.method=ism", "guidance.xs_delta_t=0"], "guidance.xs_delta_t=0 must be a positive integer"),
    (["guidance.method=vsd", "guidance.lora_camera_scale=-0.5"], "guidance.lora_camera_scale=-0.5 must be in [0, 1]"),
    (["guidance.method=cds", "guidance.cds_delta_t=[0,10]"], "guidance.cds_delta_t=[0, 10]"),
    (["guidance.t_schedule=dreamtime", "guidance.dreamtime_s1=-1"], "guidance.dreamtime_s1=-1.0 must be positive"),
])
def test_bad_estimator_settings_exit_2_one_line(capsys, tmp_path, overrides, message):
    code, line = _run(capsys, "run", TOY, "prompt=a red cube", f"out_dir={tmp_path}", *overrides)
    assert code == 2 and line.startswith("sds3d: error:") and message in line
    assert not any(tmp_path.iterdir())


def test_vsd_on_a_denoiser_without_lora_targets_exit_2_nothing_written(capsys, tmp_path):
    prior = build_tiny_sd(tmp_path / "no-attention" / "pipeline", attention=False)
    out = tmp_path / "runs"
    code, line = _run(capsys, "run", TOY, "prompt=a red cube", "guidance.method=vsd", "prior.warn_cpu=false", *_fast(out, prior))
    assert code == 2 and "guidance.method=vsd trains a LoRA of the prior's denoiser, but UNet2DConditionModel has no" in line
    assert not any(out.iterdir())  # checked with the prior loaded, before the run folder holds anything


def test_cds_resume_keeps_its_fixed_noise(tmp_path, tiny_pixel_prior):
    """CDS's eps* is drawn once and checkpointed: a resumed run equals an uninterrupted one."""
    from sds3d.checkpoint import TrainingInterrupted, load_checkpoint
    from sds3d.config import load_config
    from sds3d.pipeline import run
    from sds3d.runs import prepare_run_dir

    def cfg(name):
        return load_config(TOY, ["prompt=a red cube", f"prior.name_or_path={tiny_pixel_prior}", f"out_dir={tmp_path}", f"name={name}",
                                 "guidance.method=cds", "trainer.max_steps=4", "trainer.val_every=0", "trainer.ckpt_every=2",
                                 "trainer.progress=false", "render.num_samples=8", "render.resolution=16", "trainer.threads=1"])

    straight = cfg("straight")
    run(straight, prepare_run_dir(straight), finish_run=False)
    split = cfg("split")
    run_dir = prepare_run_dir(split)
    with pytest.raises(TrainingInterrupted):
        run(split, run_dir, finish_run=False, stop_after=2)
    run(split, run_dir, finish_run=False, resume=True)
    a, b = load_checkpoint(tmp_path / "straight" / "ckpt" / "last.pt"), load_checkpoint(run_dir / "ckpt" / "last.pt")
    assert bool(b["guidance"]["eps_star_drawn"]) and b["guidance"]["eps_star"].abs().sum() > 0
    for part in ("scene", "guidance"):
        assert all(a[part][k].equal(b[part][k]) for k in a[part]), part
