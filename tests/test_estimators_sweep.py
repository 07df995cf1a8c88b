"""The estimator sweep: a grid over run config files (each method with its own tuned config), checked with
the real config loader and run with a fake trainer; the table script on fake run folders."""

import json
import subprocess
import sys
from pathlib import Path

from sds3d.runs import mark_complete
from sds3d.sweep import RunJob, expand, load_sweep_file, plan_sweep, run_sweep

REPO = Path(__file__).resolve().parents[1]
SWEEP = REPO / "configs" / "sweeps" / "estimators.yaml"


def fake_train(job: RunJob) -> dict:
    """Records which config file the run got; writes a summary.json and a metrics.jsonl like a finished run."""
    from sds3d.config import load_config

    cfg = load_config(job.config, job.overrides)
    run_dir = Path(job.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    iou = 0.9 if cfg.guidance.method == "sds" else 0.8 + 0.01 * cfg.seed
    (run_dir / "summary.json").write_text(json.dumps({"train_seconds": 3.0, "final_loss_sds": 0.5,
                                                      "eval": {"mesh_iou": iou, "colour_error": 0.1, "recognition": 1.0}}))
    (run_dir / "metrics.jsonl").write_text(json.dumps({"step": 1, "prior_calls": 2.0}) + "\n")
    (run_dir / "config.yaml").write_text(Path(job.config).read_text())
    with open(run_dir.parent / "calls.jsonl", "a") as f:
        f.write(json.dumps({"config": Path(job.config).name, "method": cfg.guidance.method, "overrides": job.overrides}) + "\n")
    mark_complete(run_dir)
    return {"status": "done"}


def test_the_sweep_file_runs_every_method_with_its_own_config(tmp_path):
    spec = load_sweep_file(SWEEP)
    assert len(spec.prompts) == 16 and spec.seeds == [0, 1, 2] and len(spec.grid["config"]) == 10
    assert len(expand(spec)) == 480
    spec.prompts, spec.seeds, spec.out = ["a green torus"], [0], str(tmp_path / "sweep")
    sweep_dir, planned = plan_sweep(spec)  # every config of the grid through the real loader
    assert len(planned) == 10 and all(not any(o.startswith("config=") for o in overrides) for _, overrides in planned)
    spec.seeds = [0, 1]
    spec.grid["config"] = [v for v in spec.grid["config"] if Path(v.strip('"')).stem in ("toy", "toy-nfsd", "toy-ism")]
    result = run_sweep(spec, run_fn=fake_train, log=lambda m: None)
    calls = [json.loads(line) for line in (sweep_dir / "calls.jsonl").read_text().splitlines()]
    assert {c["config"]: c["method"] for c in calls} == {"toy.yaml": "sds", "toy-nfsd.yaml": "nfsd", "toy-ism.yaml": "ism"}
    assert all(r["status"] == "done" for r in result.rows) and "../toy-ism.yaml" in (sweep_dir / "summary.md").read_text()
    # The copy in the sweep folder finds the same runs (all finished: nothing runs again).
    again = load_sweep_file(sweep_dir / "sweep.yaml")
    assert [r.name for r in expand(again)] == [r.name for r in expand(spec)]
    run_sweep(again, run_fn=fake_train, log=lambda m: None)
    assert len((sweep_dir / "calls.jsonl").read_text().splitlines()) == len(calls)

    # The table script reads the folder: one row per config, diversity from pairwise mesh IoU (no meshes here: empty).
    out = tmp_path / "estimators.md"
    done = subprocess.run([sys.executable, str(REPO / "scripts" / "estimator_table.py"), str(sweep_dir), "--out", str(out),
                           "--no-diversity", "--no-picture"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    table = out.read_text()
    assert "| toy-ism |" in table and "| toy |" in table
    row = next(line for line in table.splitlines() if line.startswith("| toy-nfsd |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[1:5] == ["2", "0.805", "0.800", "0.100"]  # runs, mean IoU, worst IoU, colour error


def test_the_table_script_compares_the_eps_and_flow_sweeps_row_by_grid_point(tmp_path):
    """Two sweep folders (the ε prior + SDS, the flow prior's three estimators): one row per config and method."""
    dirs = []
    for name in ("toy-eps-sds.yaml", "toy-flow-estimators.yaml"):
        spec = load_sweep_file(REPO / "configs" / "sweeps" / name)
        assert len(spec.prompts) == 16 and spec.seeds == [0, 1, 2]
        spec.prompts, spec.seeds, spec.out = ["a green torus", "a red cube"], [0, 1], str(tmp_path / Path(name).stem)
        run_sweep(spec, run_fn=fake_train, log=lambda m: None)
        dirs.append(spec.out)
    out = tmp_path / "flow.md"
    done = subprocess.run([sys.executable, str(REPO / "scripts" / "estimator_table.py"), *dirs, "--out", str(out),
                           "--no-diversity", "--no-picture", "--baseline", "toy sds"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    rows = {line.split("|")[1].strip(): [c.strip() for c in line.strip("|").split("|")]
            for line in out.read_text().splitlines() if line.startswith("| toy")}
    assert sorted(rows) == ["toy sds", "toy-flow flow_sds", "toy-flow rfds", "toy-flow rfds_rev"]
    # fake_train: IoU 0.9 for sds, 0.8 + 0.01 seed otherwise -> seeds 0 and 1 average to 0.805.
    assert rows["toy sds"][1:4] == ["4", "0.900", "0.900"]
    assert rows["toy-flow rfds"][1:4] == ["4", "0.805", "0.800"]
    # Paired with sds by prompt and seed: -0.1, -0.09, -0.1, -0.09 -> mean -0.095, s.e. 0.0058 / 2.
    assert rows["toy-flow rfds"][9] == "-0.095 ± 0.003 (4)" and rows["toy sds"][9] == "+0.000 ± 0.000 (4)"
    bad = subprocess.run([sys.executable, str(REPO / "scripts" / "estimator_table.py"), *dirs, "--out", str(out),
                          "--no-diversity", "--no-picture", "--baseline", "sds"], capture_output=True, text=True)
    assert bad.returncode == 2 and "--baseline 'sds' is no row" in bad.stderr
