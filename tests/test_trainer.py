"""The training loop: determinism, bit-for-bit resume (scene, optimiser and guidance state), NaN steps
skipped and counted, Ctrl-C and SIGTERM at a step boundary, schedules, and a loop without a run folder."""

import json
from pathlib import Path

import pytest
import torch

from sds3d.checkpoint import TrainingInterrupted, load_checkpoint
from sds3d.config import load_config
from sds3d.pipeline import run
from sds3d.runs import prepare_run_dir

TOY = Path(__file__).resolve().parents[1] / "configs" / "toy.yaml"


def _cfg(tmp_path, prior, *extra):
    return load_config(TOY, ["prompt=a red cube", f"prior.name_or_path={prior}", f"out_dir={tmp_path}",
                             "trainer.max_steps=6", "trainer.val_every=0", "trainer.ckpt_every=2", "trainer.progress=false",
                             "render.num_samples=16", "render.resolution=16", "trainer.threads=1", *extra])


def _train(cfg, run_dir, **kwargs):
    return run(cfg, run_dir, finish_run=False, **kwargs)


def _scene_state(run_dir):
    return load_checkpoint(run_dir / "ckpt" / "last.pt")["scene"]


def _logged(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


SCHEDULED = ("trainer.lr_schedule=cosine", "field.density_activation=volsdf", "field.density_bias=sphere_sdf",
             "field.sdf_beta=0.1", "field.sdf_beta_end=0.02", "camera.late_start_fraction=0.5", "camera.late_elevation_deg=[-10,0]")


@pytest.mark.parametrize("extra", [(), SCHEDULED], ids=["default", "lr-beta-and-camera-schedules"])
def test_resume_continues_bit_for_bit(tmp_path, tiny_pixel_prior, extra):
    straight = _cfg(tmp_path, tiny_pixel_prior, "name=straight", "trainer.log_every=1", *extra)
    full = _train(straight, prepare_run_dir(straight))

    split = _cfg(tmp_path, tiny_pixel_prior, "name=split", "trainer.log_every=1", *extra)
    run_dir = prepare_run_dir(split)
    with pytest.raises(TrainingInterrupted):
        _train(split, run_dir, stop_after=3)
    assert load_checkpoint(run_dir / "ckpt" / "last.pt")["step"] == 3
    resumed = _train(split, run_dir, resume=True)

    a, b = _scene_state(tmp_path / "straight"), _scene_state(run_dir)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    # Metrics were not duplicated by the resume, and the losses are the uninterrupted run's.
    assert [r["step"] for r in _logged(run_dir)] == sorted({r["step"] for r in _logged(run_dir)})
    assert _logged(run_dir) == [{**r, "elapsed_s": s["elapsed_s"]} for r, s in zip(_logged(tmp_path / "straight"), _logged(run_dir))]
    assert resumed["final_loss_sds"] == full["final_loss_sds"]


def test_non_finite_steps_are_skipped_and_counted(tmp_path, tiny_pixel_prior, monkeypatch):
    from sds3d.guidance import SDSGuidance

    forward = SDSGuidance.forward
    calls = {"n": 0}

    def sometimes_nan(self, rgb, prompts, step, cameras=None, generator=None):
        out = forward(self, rgb, prompts, step, cameras=cameras, generator=generator)
        calls["n"] += 1
        if step in (1, 4):
            out["loss_sds"] = out["loss_sds"] * float("nan")
        return out

    monkeypatch.setattr(SDSGuidance, "forward", sometimes_nan)
    cfg = _cfg(tmp_path, tiny_pixel_prior, "trainer.ckpt_every=1")
    run_dir = prepare_run_dir(cfg)
    summary = _train(cfg, run_dir)
    assert summary["steps"] == 6 and summary["skipped_steps"] == 2
    assert calls["n"] == 6
    for v in _scene_state(run_dir).values():
        assert torch.isfinite(v).all()


@pytest.mark.parametrize("signame, code", [("SIGINT", 130), ("SIGTERM", 143)])
def test_a_signal_stops_at_a_step_boundary_and_resume_is_exact(tmp_path, tiny_pixel_prior, monkeypatch, signame, code):
    import os
    import signal

    from sds3d.guidance import SDSGuidance

    forward = SDSGuidance.forward

    def signal_during_step_4(self, rgb, prompts, step, cameras=None, generator=None):
        if step == 3:  # the 4th step: a real signal in the middle of it
            os.kill(os.getpid(), getattr(signal, signame))
        return forward(self, rgb, prompts, step, cameras=cameras, generator=generator)

    straight = _cfg(tmp_path, tiny_pixel_prior, "name=straight")
    _train(straight, prepare_run_dir(straight))

    monkeypatch.setattr(SDSGuidance, "forward", signal_during_step_4)
    cfg = _cfg(tmp_path, tiny_pixel_prior, "name=interrupted", "trainer.ckpt_every=100")
    run_dir = prepare_run_dir(cfg)
    with pytest.raises(TrainingInterrupted, match="at step 4") as stopped:
        _train(cfg, run_dir)
    assert stopped.value.exit_code == code
    assert load_checkpoint(run_dir / "ckpt" / "last.pt")["step"] == 4
    monkeypatch.undo()
    _train(cfg, run_dir, resume=True)
    a, b = _scene_state(tmp_path / "straight"), _scene_state(run_dir)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_same_seed_same_result_other_seed_differs(tmp_path, tiny_pixel_prior):
    states = []
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        cfg = _cfg(tmp_path, tiny_pixel_prior, f"name={name}", f"seed={seed}", "trainer.max_steps=3")
        _train(cfg, prepare_run_dir(cfg))
        states.append(_scene_state(tmp_path / name))
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])
    assert not all(torch.equal(states[0][k], states[2][k]) for k in states[0])


def test_learning_rate_follows_the_schedule(tmp_path, tiny_pixel_prior):
    from sds3d.config import lr_factor

    cfg = _cfg(tmp_path, tiny_pixel_prior, "trainer.lr_schedule=cosine", "trainer.lr_end_factor=0.2", "trainer.log_every=1")
    run_dir = prepare_run_dir(cfg)
    _train(cfg, run_dir)
    logged = _logged(run_dir)
    # The record of step k (1-based) was written after the update made with the factor of step k - 1.
    assert [r["lr"] for r in logged] == pytest.approx([cfg.trainer.lr * lr_factor(r["step"] - 1, 6, "cosine", 0.2) for r in logged])
    assert logged[0]["lr"] == pytest.approx(cfg.trainer.lr) and logged[-1]["lr"] < 0.3 * cfg.trainer.lr
    assert all(r["prior_calls"] == 1 for r in logged)  # SDS: one batched call per step


def test_late_camera_phase_draws_from_its_elevation_range(tmp_path, tiny_pixel_prior, monkeypatch):
    import sds3d.trainer as trainer_mod

    seen = []
    original = trainer_mod.sample_cameras

    def recording(*args, **kwargs):
        cams = original(*args, **kwargs)
        seen.append((kwargs.get("step"), cams.elevation_deg.tolist()))
        return cams

    monkeypatch.setattr(trainer_mod, "sample_cameras", recording)
    cfg = _cfg(tmp_path, tiny_pixel_prior, "trainer.max_steps=40", "camera.elevation_deg=[30,60]",
               "camera.late_start_fraction=0.5", "camera.late_elevation_deg=[-10,0]")
    _train(cfg, prepare_run_dir(cfg))
    assert [s for s, _ in seen] == list(range(40))
    assert all(30 <= e <= 60 for s, els in seen if s < 20 for e in els)
    assert all(-10 <= e <= 0 for s, els in seen if s >= 20 for e in els)


# -- the loop alone: no run folder, a guidance with trainable state --------------------------


class _DriftGuidance(torch.nn.Module):
    """A guidance stub with a trainable parameter and a buffer: loss_sds pulls the render to grey,
    loss_aux trains ``theta`` towards 1, and ``count`` counts the steps seen."""

    def __init__(self):
        super().__init__()
        self.theta = torch.nn.Parameter(torch.zeros(()))
        self.register_buffer("count", torch.zeros(()))

    def param_groups(self):
        return [{"params": [self.theta], "lr": 0.1, "name": "guidance", "scheduled": False}]

    def update_step(self, step, max_steps):
        self.max_steps = max_steps

    def forward(self, rgb, prompts, step, cameras=None, generator=None):
        self.count += 1
        return {"loss_sds": ((rgb - 0.5) ** 2).sum(), "loss_aux": (self.theta - 1.0) ** 2,
                "prior_calls": torch.tensor(0.0)}


def _loop(cfg, steps_done=None, state_dict=None):
    from sds3d.scene import build_scene
    from sds3d.trainer import TrainHooks, new_state, train

    scene, guidance = build_scene(cfg), _DriftGuidance()
    state = new_state(cfg, scene, guidance)
    if state_dict is not None:
        scene.load_state_dict(state_dict["scene"])
        guidance.load_state_dict(state_dict["guidance"])
        state.load_state_dict(state_dict)
    records = []
    state = train(cfg, scene, guidance, lambda az, el: None, state, TrainHooks(log=records.append), stop_after=steps_done)
    return scene, guidance, state, records


def test_the_loop_needs_no_run_folder_and_resumes_guidance_state_exactly(tmp_path):
    cfg = load_config(TOY, ["prompt=a red cube", "trainer.max_steps=4", "trainer.log_every=1", "render.resolution=8",
                            "render.num_samples=8", "trainer.threads=1", f"out_dir={tmp_path / 'never'}"])
    scene, guidance, state, records = _loop(cfg)
    assert [r["step"] for r in records] == [1, 2, 3, 4] and "loss_aux" in records[0]
    assert float(guidance.count) == 4 and 0 < float(guidance.theta.detach()) < 1  # trained by the trainer's optimiser
    assert guidance.max_steps == 4  # told the run's length, for schedules in fractions of it
    assert state.optimizer.param_groups[-1]["lr"] == 0.1  # "scheduled": False keeps its lr under cosine decay
    assert not (tmp_path / "never").exists()

    first_scene, first_guidance, first_state, _ = _loop(cfg, steps_done=2)
    saved = {**first_state.state_dict(), "scene": first_scene.state_dict(), "guidance": first_guidance.state_dict()}
    scene3, guidance3, _, _ = _loop(cfg, state_dict=saved)
    assert float(guidance3.count) == 4 and torch.equal(guidance3.theta, guidance.theta)
    a, b = scene.state_dict(), scene3.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
