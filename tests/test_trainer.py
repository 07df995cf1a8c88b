"""The training loop: determinism, bit-for-bit resume, NaN steps skipped and counted, Ctrl-C."""

from pathlib import Path

import pytest
import torch

from sds3d.checkpoint import TrainingInterrupted, load_checkpoint
from sds3d.config import load_config
from sds3d.runs import prepare_run_dir
from sds3d.trainer import train

TOY = Path(__file__).resolve().parents[1] / "configs" / "toy.yaml"


def _cfg(tmp_path, prior, *extra):
    return load_config(TOY, ["prompt=a red cube", f"guidance.pretrained={prior}", f"out_dir={tmp_path}",
                             "trainer.max_steps=6", "trainer.val_every=0", "trainer.ckpt_every=2", "trainer.progress=false",
                             "render.num_samples=16", "render.resolution=16", "trainer.threads=1", *extra])


def _field_state(run_dir):
    return load_checkpoint(run_dir / "ckpt" / "last.pt")["field"]


SCHEDULED = ("trainer.lr_schedule=cosine", "field.density_activation=volsdf", "field.density_bias=sphere_sdf",
             "field.sdf_beta=0.1", "field.sdf_beta_end=0.02", "camera.late_start_step=3", "camera.late_elevation_deg=[-10,0]")


@pytest.mark.parametrize("extra", [(), SCHEDULED], ids=["default", "lr-beta-and-camera-schedules"])
def test_resume_continues_bit_for_bit(tmp_path, tiny_pixel_prior, extra):
    straight = _cfg(tmp_path, tiny_pixel_prior, "name=straight", *extra)
    train(straight, prepare_run_dir(straight), finish=False)

    split = _cfg(tmp_path, tiny_pixel_prior, "name=split", *extra)
    run_dir = prepare_run_dir(split)
    with pytest.raises(TrainingInterrupted):
        train(split, run_dir, stop_after=3, finish=False)
    assert load_checkpoint(run_dir / "ckpt" / "last.pt")["step"] == 3
    train(split, run_dir, resume=True, finish=False)

    a, b = _field_state(tmp_path / "straight"), _field_state(run_dir)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    # Metrics were not duplicated by the resume.
    steps = [__import__("json").loads(l)["step"] for l in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert steps == sorted(set(steps))


def test_non_finite_steps_are_skipped_and_counted(tmp_path, tiny_pixel_prior, monkeypatch):
    from sds3d.guidance import SDSGuidance

    forward = SDSGuidance.forward
    calls = {"n": 0}

    def sometimes_nan(self, rgb, text, step, generator=None, cameras=None):
        out = forward(self, rgb, text, step, generator=generator, cameras=cameras)
        calls["n"] += 1
        if step in (1, 4):
            out["loss_sds"] = out["loss_sds"] * float("nan")
        return out

    monkeypatch.setattr(SDSGuidance, "forward", sometimes_nan)
    cfg = _cfg(tmp_path, tiny_pixel_prior, "trainer.ckpt_every=1")
    run_dir = prepare_run_dir(cfg)
    before = {}

    result = train(cfg, run_dir, finish=False)
    assert result == {"steps": 6, "skipped_steps": 2}
    assert calls["n"] == 6
    for v in _field_state(run_dir).values():
        assert torch.isfinite(v).all()


def test_ctrl_c_stops_at_a_step_boundary_and_resume_is_exact(tmp_path, tiny_pixel_prior, monkeypatch):
    import os
    import signal

    from sds3d.guidance import SDSGuidance

    forward = SDSGuidance.forward

    def ctrl_c_during_step_4(self, rgb, text, step, generator=None, cameras=None):
        if step == 3:  # the 4th step: a real SIGINT in the middle of it
            os.kill(os.getpid(), signal.SIGINT)
        return forward(self, rgb, text, step, generator=generator, cameras=cameras)

    straight = _cfg(tmp_path, tiny_pixel_prior, "name=straight")
    train(straight, prepare_run_dir(straight), finish=False)

    monkeypatch.setattr(SDSGuidance, "forward", ctrl_c_during_step_4)
    cfg = _cfg(tmp_path, tiny_pixel_prior, "name=interrupted", "trainer.ckpt_every=100")
    run_dir = prepare_run_dir(cfg)
    with pytest.raises(TrainingInterrupted, match="interrupted at step 4"):
        train(cfg, run_dir, finish=False)
    assert load_checkpoint(run_dir / "ckpt" / "last.pt")["step"] == 4
    monkeypatch.undo()
    train(cfg, run_dir, resume=True, finish=False)
    a, b = _field_state(tmp_path / "straight"), _field_state(run_dir)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_same_seed_same_result_other_seed_differs(tmp_path, tiny_pixel_prior):
    states = []
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        cfg = _cfg(tmp_path, tiny_pixel_prior, f"name={name}", f"seed={seed}", "trainer.max_steps=3")
        train(cfg, prepare_run_dir(cfg), finish=False)
        states.append(_field_state(tmp_path / name))
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])
    assert not all(torch.equal(states[0][k], states[2][k]) for k in states[0])


def test_learning_rate_follows_the_schedule(tmp_path, tiny_pixel_prior):
    from sds3d.config import lr_factor

    cfg = _cfg(tmp_path, tiny_pixel_prior, "trainer.lr_schedule=cosine", "trainer.lr_end_factor=0.2", "trainer.log_every=1")
    run_dir = prepare_run_dir(cfg)
    train(cfg, run_dir, finish=False)
    logged = [__import__("json").loads(l) for l in (run_dir / "metrics.jsonl").read_text().splitlines()]
    # The record of step k (1-based) was written after the update made with the factor of step k - 1.
    assert [r["lr"] for r in logged] == pytest.approx([cfg.trainer.lr * lr_factor(r["step"] - 1, 6, "cosine", 0.2) for r in logged])
    assert logged[0]["lr"] == pytest.approx(cfg.trainer.lr) and logged[-1]["lr"] < 0.3 * cfg.trainer.lr


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
               "camera.late_start_step=20", "camera.late_elevation_deg=[-10,0]")
    train(cfg, prepare_run_dir(cfg), finish=False)
    assert [s for s, _ in seen] == list(range(40))
    assert all(30 <= e <= 60 for s, els in seen if s < 20 for e in els)
    assert all(-10 <= e <= 0 for s, els in seen if s >= 20 for e in els)
