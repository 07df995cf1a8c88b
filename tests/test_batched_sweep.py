"""``sds3d sweep --batch-runs K``: runs that share a prior are grouped K at a time into one process
(or Ray task); every executor hands a batch to one function; failures stay per run; the real
pipeline trains a batch end to end."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from sds3d.runs import mark_complete
from sds3d.sweep import RunJob, SweepSpec, run_sweep
from sds3d.sweep.run import batch_key, group_batches

REPO = Path(__file__).resolve().parents[1]
KEYS = {"prompt", "seed", "out_dir", "name", "guidance.scale", "prior.name_or_path", "trainer.threads", "trainer.progress"}


def fake_load(path, overrides):
    from omegaconf import OmegaConf

    values = {"prompt": "a red cube", "seed": 0, "out_dir": "runs", "prior": "toy", "device": "cpu"}
    for item in overrides:
        key = item.split("=", 1)[0]
        if key not in KEYS:
            raise ValueError(f"unknown config key '{key}'")
        value = OmegaConf.select(OmegaConf.from_dotlist([item]), key)
        values["prior" if key == "prior.name_or_path" else key] = value
    return SimpleNamespace(**values)


def fake_batch(jobs: list[RunJob]) -> list[dict]:
    """Records each batch (names) in batches.jsonl; fails the runs whose prompt says 'fail'."""
    sweep = Path(jobs[0].run_dir).parent
    with open(sweep / "batches.jsonl", "a") as f:
        f.write(json.dumps([job.name for job in jobs]) + "\n")
    results = []
    for job in jobs:
        run_dir = Path(job.run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        if "fail" in fake_load(None, job.overrides).prompt:
            (run_dir / "summary.json").write_text(json.dumps({"status": "failed", "error": "boom"}))
            results.append({"status": "failed", "error": "boom"})
            continue
        (run_dir / "summary.json").write_text(json.dumps({"train_seconds": 1.0, "final_loss_sds": 0.5}))
        mark_complete(run_dir)  # "done" is the completion marker, as the real pipeline writes it last
        results.append({"status": "done"})
    return results


def _batches(sweep_dir: Path) -> list[list[str]]:
    return [json.loads(line) for line in (sweep_dir / "batches.jsonl").read_text().splitlines()]


def _spec(tmp_path, prompts, scales=("1", "3", "7.5")):
    return SweepSpec(str(tmp_path / "base.yaml"), grid={"guidance.scale": list(scales)}, prompts=list(prompts), seeds=[0],
                     out=str(tmp_path / "sweep"))


def test_runs_are_grouped_k_at_a_time_in_sweep_order_and_by_prior():
    def job(name, prior):
        return RunJob(name, "c.yaml", [f"prior.name_or_path={prior}"], f"/s/{name}", "start")

    todo = [job("a", "toy"), job("b", "sd"), job("c", "toy"), job("d", "toy"), job("e", "sd")]
    units = group_batches(todo, 2, fake_load)
    assert [[j.name for j in u] for u in units] == [["a", "c"], ["d"], ["b", "e"]]
    assert batch_key(fake_load(None, ["prior.name_or_path=toy"])) != batch_key(fake_load(None, ["prior.name_or_path=sd"]))


@pytest.mark.parametrize("jobs", [1, 2], ids=["in-process", "subprocesses"])
def test_a_sweep_trains_its_runs_in_batches_and_records_each_run(tmp_path, jobs, monkeypatch):
    monkeypatch.setattr("sds3d.sweep.run.available_cores", lambda: 2)
    spec = _spec(tmp_path, ["a red cube", "a fail cone"])
    result = run_sweep(spec, jobs=jobs, batch_runs=4, batch_fn=fake_batch, load=fake_load, log=lambda m: None)
    batches = _batches(Path(spec.out))
    assert sorted(len(b) for b in batches) == [2, 4] and sorted(sum(batches, [])) == sorted(r["run"] for r in result.rows)
    status = {(r["prompt"], r["guidance.scale"]): r["status"] for r in result.rows}
    assert all(s == ("failed" if p == "a fail cone" else "done") for (p, _), s in status.items())
    if jobs > 1:  # the re-run below is the same either way
        return
    # Finished runs are skipped next time; only the failed ones are batched again.
    run_sweep(spec, jobs=jobs, batch_runs=4, batch_fn=fake_batch, load=fake_load, log=lambda m: None)
    assert sorted(_batches(Path(spec.out))[len(batches):], key=len) == [sorted(r["run"] for r in result.rows if r["status"] == "failed")]


def test_a_batch_function_that_raises_fails_its_runs_only(tmp_path):
    spec = _spec(tmp_path, ["a red cube", "a blue cube"], scales=("1",))
    with pytest.raises(ValueError, match="--batch-runs 0"):
        run_sweep(spec, batch_runs=0, batch_fn=fake_batch, load=fake_load, log=lambda m: None)
    result = run_sweep(spec, batch_runs=2, batch_fn=crashing_batch, load=fake_load, log=lambda m: None)
    assert [(r["status"], r["error"]) for r in result.rows] == [("failed", "RuntimeError: prior exploded")] * 2


def crashing_batch(jobs):
    raise RuntimeError("prior exploded")


def test_cli_rejects_a_batch_size_below_one(tmp_path, capsys):
    from sds3d.cli import main

    code = main(["sweep", str(REPO / "configs/toy.yaml"), "--grid", "guidance.scale=1,3", "--prompts", "a red cube",
                 "--out", str(tmp_path / "s"), "--batch-runs", "0"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "--batch-runs 0 must be at least 1" in err[0]


def test_a_real_batch_trains_and_finishes_every_run(tmp_path, tiny_pixel_prior):
    spec = SweepSpec(str(REPO / "configs/toy.yaml"), grid={"guidance.scale": ["3", "30"]}, prompts=["a red cube"], seeds=[0],
                     out=str(tmp_path / "sweep"),
                     overrides=[f"prior.name_or_path={tiny_pixel_prior}", "trainer.max_steps=3", "trainer.val_every=0", "trainer.threads=1",
                                "trainer.progress=false", "render.resolution=16", "render.num_samples=16", "orbit.frames=2",
                                "orbit.resolution=16", "export.resolution=16", "export.texture=vertex", "eval.enabled=false"])
    result = run_sweep(spec, batch_runs=2, log=lambda m: None)
    assert [r["status"] for r in result.rows] == ["done", "done"]
    rows = list(csv.DictReader((Path(spec.out) / "summary.csv").read_text().splitlines()))
    for row in rows:
        run_dir = Path(spec.out) / row["run"]
        summary = json.loads((run_dir / "summary.json").read_text())
        assert summary["steps"] == 3 and (run_dir / "mesh" / "mesh.obj").is_file() and set(summary["timings"]) >= {"train", "export"}
        logged = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
        assert logged[-1]["step"] == 3 and logged[-1]["prior_calls"] == 1.0
