"""Runs trained in lockstep with one prior call per step (``pipeline.run_batched``, ``batched.train_batched``).

One run in a batch is bit for bit a solo run; two runs equal their two solo runs up to the prior's
float reassociation on a larger batch; the prior is called once per step for all; each run keeps
its own RNG streams (including torch's global one, which the occupancy grid draws from); an
estimator without the prepare/finish split falls back to solo runs; one failing run leaves the
others training.
"""

import json
from pathlib import Path

import pytest
import torch

from sds3d.checkpoint import TrainingInterrupted, load_checkpoint
from sds3d.config import load_config
from sds3d.guidance.batching import PriorRequest, predict_together
from sds3d.pipeline import run, run_batched
from sds3d.runs import prepare_run_dir

TOY = Path(__file__).resolve().parents[1] / "configs" / "toy.yaml"


def _cfg(tmp_path, prior, name, *extra):
    return load_config(TOY, [f"prior.name_or_path={prior}", f"out_dir={tmp_path}", f"name={name}", "trainer.max_steps=5",
                             "trainer.val_every=0", "trainer.ckpt_every=2", "trainer.progress=false", "trainer.log_every=1",
                             "render.num_samples=16", "render.resolution=16", "trainer.threads=1", *extra])


def _scene(run_dir):
    return load_checkpoint(Path(run_dir) / "ckpt" / "last.pt")["scene"]


def _logged(run_dir):
    return [{k: v for k, v in json.loads(line).items() if k != "elapsed_s"}
            for line in (Path(run_dir) / "metrics.jsonl").read_text().splitlines()]


RUNS = (("prompt=a red cube", "seed=0"), ("prompt=a blue sphere", "seed=3", "guidance.scale=7.5"))
# Adam divides by sqrt(v) + eps (1e-15 in toy.yaml): a rounding difference in a near-zero gradient is
# a full lr-sized step of either sign, so runs that differ by float rounding drift apart by ~lr per
# step in such entries (their losses agree to ~1e-7). With eps 1e-3, gradients below it make steps
# in proportion, and the prior's rounding on a larger batch stays at rounding size in the parameters.
ROUNDING_STAYS_SMALL = "trainer.eps=1e-3"
GRID = ("render.backend=grid", "render.nerfacc.grid_resolution=16", "render.nerfacc.update_every=2", "render.nerfacc.warmup_steps=3")


def _solo(tmp_path, prior, i, extra=()):
    cfg = _cfg(tmp_path, prior, f"solo{i}", *RUNS[i], *extra)
    run(cfg, prepare_run_dir(cfg), finish_run=False)
    return tmp_path / f"solo{i}"


@pytest.mark.parametrize("extra", [(), GRID], ids=["stratified", "occupancy-grid"])
def test_a_batch_of_one_is_the_solo_run_bit_for_bit(tmp_path, tiny_pixel_prior, extra):
    solo = _solo(tmp_path, tiny_pixel_prior, 0, extra)
    cfg = _cfg(tmp_path, tiny_pixel_prior, "batched0", *RUNS[0], *extra)
    (summary,) = run_batched([cfg], [prepare_run_dir(cfg)], [False], finish_run=False)
    assert summary["steps"] == 5
    a, b = _scene(solo), _scene(tmp_path / "batched0")
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert _logged(solo) == _logged(tmp_path / "batched0")


@pytest.mark.parametrize("extra", [(), GRID], ids=["stratified", "occupancy-grid"])
def test_two_runs_in_a_batch_equal_their_solo_runs(tmp_path, tiny_pixel_prior, extra, monkeypatch):
    extra = (*extra, ROUNDING_STAYS_SMALL)
    solos = [_solo(tmp_path, tiny_pixel_prior, i, extra) for i in range(2)]
    cfgs = [_cfg(tmp_path, tiny_pixel_prior, f"batched{i}", *RUNS[i], *extra) for i in range(2)]
    from sds3d.priors.base import Prior

    rows = []
    predict = Prior.predict

    def counted(self, x_t, t, cond, cameras=None):
        rows.append(x_t.shape[0])
        return predict(self, x_t, t, cond, cameras)

    monkeypatch.setattr(Prior, "predict", counted)
    summaries = run_batched(cfgs, [prepare_run_dir(c) for c in cfgs], [False, False], finish_run=False)
    assert [s["steps"] for s in summaries] == [5, 5]
    assert rows == [4] * 5  # one call per step: 2 CFG rows of each run
    for i, solo in enumerate(solos):
        a, b = _scene(solo), _scene(tmp_path / f"batched{i}")
        for k in a:
            torch.testing.assert_close(b[k], a[k], rtol=1e-4, atol=1e-5, msg=k)
        rng_a, rng_b = (load_checkpoint(Path(d) / "ckpt" / "last.pt")["rng"] for d in (solo, tmp_path / f"batched{i}"))
        assert torch.equal(rng_a["generator"], rng_b["generator"]) and torch.equal(rng_a["torch_cpu"], rng_b["torch_cpu"])
        for ra, rb in zip(_logged(solo), _logged(tmp_path / f"batched{i}")):
            assert ra.keys() == rb.keys() and ra["shading"] == rb["shading"] and ra["t_mean"] == rb["t_mean"]
            assert rb["loss_sds"] == pytest.approx(ra["loss_sds"], rel=1e-3)


def test_runs_of_different_lengths_and_a_resume_share_the_batch(tmp_path, tiny_pixel_prior):
    short = _cfg(tmp_path, tiny_pixel_prior, "short", *RUNS[1], "trainer.max_steps=3", ROUNDING_STAYS_SMALL)
    run(short, prepare_run_dir(short), finish_run=False)
    resumed_solo = _cfg(tmp_path, tiny_pixel_prior, "resumed-solo", *RUNS[0], ROUNDING_STAYS_SMALL)
    run(resumed_solo, prepare_run_dir(resumed_solo), finish_run=False)

    interrupted = _cfg(tmp_path, tiny_pixel_prior, "resumed", *RUNS[0], ROUNDING_STAYS_SMALL)
    interrupted_dir = prepare_run_dir(interrupted)
    with pytest.raises(TrainingInterrupted):
        run(interrupted, interrupted_dir, finish_run=False, stop_after=2)
    fresh = _cfg(tmp_path, tiny_pixel_prior, "short-batched", *RUNS[1], "trainer.max_steps=3", ROUNDING_STAYS_SMALL)
    out = run_batched([interrupted, fresh], [interrupted_dir, prepare_run_dir(fresh)], [True, False], finish_run=False)
    assert [s["steps"] for s in out] == [5, 3]
    for solo, batched in (("resumed-solo", "resumed"), ("short", "short-batched")):
        a, b = _scene(tmp_path / solo), _scene(tmp_path / batched)
        for k in a:
            torch.testing.assert_close(b[k], a[k], rtol=1e-4, atol=1e-5, msg=k)


def test_a_failing_run_leaves_the_others_training(tmp_path, tiny_pixel_prior, monkeypatch):
    from sds3d.guidance import SDSGuidance

    finish = SDSGuidance.finish

    def fails_for_spheres(self, request, out):
        if self.cfg.scale == 7.5:
            raise RuntimeError("estimator broke")
        return finish(self, request, out)

    monkeypatch.setattr(SDSGuidance, "finish", fails_for_spheres)
    cfgs = [_cfg(tmp_path, tiny_pixel_prior, f"r{i}", *RUNS[i]) for i in range(2)]
    ok, failed = run_batched(cfgs, [prepare_run_dir(c) for c in cfgs], [False, False], finish_run=False)
    assert ok["steps"] == 5 and isinstance(failed, RuntimeError) and "estimator broke" in str(failed)


def test_an_estimator_without_the_split_trains_alone_with_one_notice(tmp_path, tiny_pixel_prior, monkeypatch, capsys):
    from sds3d.guidance import GUIDANCE, Guidance, SDSGuidance

    class Unsplit(Guidance):  # an estimator with forward only: SDS without prepare/finish
        def __init__(self, cfg, prior):
            super().__init__(prior)
            self.inner = SDSGuidance(cfg, prior)

        def update_step(self, step, max_steps):
            super().update_step(step, max_steps)
            self.inner.update_step(step, max_steps)

        def forward(self, rgb, prompts, step, cameras=None, generator=None):
            return self.inner(rgb, prompts, step, cameras=cameras, generator=generator)

    solos = [_solo(tmp_path, tiny_pixel_prior, i) for i in range(2)]
    monkeypatch.setitem(GUIDANCE, "sds", Unsplit)
    cfgs = [_cfg(tmp_path, tiny_pixel_prior, f"alone{i}", *RUNS[i]) for i in range(2)]
    out = run_batched(cfgs, [prepare_run_dir(c) for c in cfgs], [False, False], finish_run=False)
    assert [s["steps"] for s in out] == [5, 5]
    assert capsys.readouterr().err.count("does not split its step") == 1
    for i, solo in enumerate(solos):  # alone, one after another: exactly the solo runs
        a, b = _scene(solo), _scene(tmp_path / f"alone{i}")
        assert all(torch.equal(a[k], b[k]) for k in a)


def test_predict_together_splits_one_call_back_per_request(tiny_pixel_prior):
    from sds3d.cameras import orbit_cameras
    from sds3d.priors import load_prior

    prior = load_prior(str(tiny_pixel_prior))
    cond = prior.encode_prompts(["a red cube", "", "a blue sphere"])
    g = torch.Generator().manual_seed(0)
    cams = orbit_cameras(3)
    requests = [PriorRequest(torch.randn(2, 3, 32, 32, generator=g), torch.tensor([10, 900]), cond[[0, 1]], cams[[0, 1]]),
                PriorRequest(torch.randn(1, 3, 32, 32, generator=g), torch.tensor([400]), cond[[2]], cams[[2]])]
    calls = prior.calls
    together = predict_together(prior, requests)
    assert prior.calls == calls + 1 and [o.shape[0] for o in together] == [2, 1]
    with torch.no_grad():
        for r, o in zip(requests, together):
            torch.testing.assert_close(o, prior.predict(r.x_t, r.t, r.cond, r.cameras), rtol=1e-4, atol=1e-5)


def test_batched_training_knows_no_run_folder():
    import ast

    tree = ast.parse((Path(__file__).resolve().parents[1] / "sds3d" / "batched.py").read_text())
    imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    assert not imported & {"runs", "pipeline", "cli", "sweep"} and not any(m.startswith(("sweep", "pipeline")) for m in imported)


def test_a_stopped_batch_checkpoints_every_run_and_resumes_bit_for_bit(tmp_path, tiny_pixel_prior, monkeypatch):
    from sds3d import pipeline

    straight = [_cfg(tmp_path, tiny_pixel_prior, f"straight{i}", *RUNS[i], *GRID) for i in range(2)]
    run_batched(straight, [prepare_run_dir(c) for c in straight], [False, False], finish_run=False)

    cfgs = [_cfg(tmp_path, tiny_pixel_prior, f"stopped{i}", *RUNS[i], *GRID) for i in range(2)]
    dirs = [prepare_run_dir(c) for c in cfgs]
    asked = {"n": 0}

    def stop_after_two_steps(self):  # checked once per run and step: runs 0 and 1 finish steps 1 and 2
        asked["n"] += 1
        if asked["n"] > 4:
            self.signum = 15
        return self.signum is not None

    monkeypatch.setattr(pipeline.StopRequest, "__call__", stop_after_two_steps)
    with pytest.raises(TrainingInterrupted) as stopped:
        run_batched(cfgs, dirs, [False, False], finish_run=False)
    assert stopped.value.exit_code == 143
    assert [load_checkpoint(d / "ckpt" / "last.pt")["step"] for d in dirs] == [2, 2]
    monkeypatch.undo()
    run_batched(cfgs, dirs, [True, True], finish_run=False)
    for i in range(2):
        a, b = _scene(tmp_path / f"straight{i}"), _scene(dirs[i])
        for k in a:
            assert torch.equal(a[k], b[k]), k
