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


def fake_train_v2(job: RunJob) -> dict:
    """A finished run with toy world v2 metrics: under SDS every owl is Janus and every composition right;
    under the other methods no run is Janus, the houses are flooded (no verdict) and "next to" fails."""
    from sds3d.config import load_config

    cfg = load_config(job.config, job.overrides)
    run_dir = Path(job.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    sds, prompt = cfg.guidance.method == "sds", cfg.prompt
    if " on top of " in prompt or " next to " in prompt:
        ev = {"kind": "composition", "composition_ok": sds or " on top of " in prompt, "union_iou": 0.8, "part_colour_ok": [True, True]}
    else:
        flooded = not sds and prompt.endswith("house")
        ev = {"kind": "faced", "janus": None if flooded else int(sds and prompt.endswith("owl")),
              "face_present": int(not prompt.endswith("chair")), "n_faces": 1, "front_ok": True, "iou": 0.7, "colour_err": 0.1}
    (run_dir / "summary.json").write_text(json.dumps({"train_seconds": 3.0, "prior": cfg.prior.name_or_path,
                                                      "eval": {"world": "v2", "prompt": prompt, **ev}}))
    mark_complete(run_dir)
    return {"status": "done"}


def test_the_v2_estimator_sweeps_add_janus_and_composition_columns(tmp_path):
    from sds3d.toyworld.v2.prompts import benchmark_prompts, held_out_prompts

    main = load_sweep_file(SWEEP)
    janus = load_sweep_file(REPO / "configs" / "sweeps" / "estimators-janus.yaml")
    comps = load_sweep_file(REPO / "configs" / "sweeps" / "estimators-compositions.yaml")
    bench, held = benchmark_prompts(), set(held_out_prompts())
    for spec in (janus, comps):  # the same methods and configs as the main sweep, seed 0
        assert spec.grid == main.grid and spec.seeds == [0]
    assert sorted(janus.prompts) == sorted(bench["janus"])
    assert set(comps.prompts) <= set(bench["compositions"]) and len(comps.prompts) == 8
    for relation in (" on top of ", " next to "):  # 2 trained and 2 held out of each relation
        mine = [p for p in comps.prompts if relation in p]
        assert len(mine) == 4 and sum(p in held for p in mine) == 2
    dirs = []
    for spec, prior in ((janus, "toy-v2-text"), (comps, "toy-v2-camera")):
        spec.grid["config"] = [v for v in spec.grid["config"] if Path(v.strip('"')).stem in ("toy", "toy-nfsd")]
        spec.out = str(tmp_path / Path(spec.out).name)
        run_sweep(spec, run_fn=fake_train_v2, log=lambda m: None)
        summaries = [json.loads(p.read_text()) for p in Path(spec.out).glob("*/summary.json")]
        assert len(summaries) == 2 * len(spec.prompts) and {s["prior"] for s in summaries} == {prior}
        dirs += ["--v2", spec.out]
    # The main sweep's rows (fake v1 runs of the same two configs).
    main.prompts, main.seeds, main.out = ["a red cube"], [0], str(tmp_path / "main")
    main.grid["config"] = janus.grid["config"]
    run_sweep(main, run_fn=fake_train, log=lambda m: None)
    out = tmp_path / "estimators.md"
    done = subprocess.run([sys.executable, str(REPO / "scripts" / "estimator_table.py"), main.out, *dirs, "--out", str(out),
                           "--no-diversity", "--no-picture"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    lines = out.read_text().splitlines()
    header = [c.strip() for c in lines[1].strip("|").split("|")]
    rows = {line.split("|")[1].strip(): [c.strip() for c in line.strip("|").split("|")] for line in lines[3:] if line.startswith("| toy")}
    cols = [header.index(h) for h in ("Janus rate (runs)", "face present", "composition acc. (runs)")]
    # sds: 4 of 12 faced runs Janus (the owls), 8 of 12 with a face (not the chairs), 8 of 8 compositions right.
    assert [rows["toy"][i] for i in cols] == ["33% (12)", "67%", "100% (8)"]
    # nfsd: the 4 houses flooded -> 8 judged, none Janus, 4 of 8 with a face; "on top of" only: 4 of 8.
    assert [rows["toy-nfsd"][i] for i in cols] == ["0% (8)", "50%", "50% (8)"]


def fake_train_by_shape(job: RunJob) -> dict:
    """A finished run whose IoU is set by its prompt's shape and seed: cube 0.5 + 0.1 seed, torus 0.9."""
    from sds3d.config import load_config

    cfg = load_config(job.config, job.overrides)
    run_dir = Path(job.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    iou = 0.5 + 0.1 * cfg.seed if cfg.prompt.endswith("cube") else 0.9
    (run_dir / "summary.json").write_text(json.dumps({"train_seconds": 1.0, "eval": {"mesh_iou": iou}}))
    (run_dir / "config.yaml").write_text(Path(job.config).read_text())
    mark_complete(run_dir)
    return {"status": "done"}


def test_the_shape_table_gives_each_shape_its_mean_and_worst_iou_and_keeps_the_rest_of_the_page(tmp_path):
    spec = load_sweep_file(SWEEP)
    spec.prompts, spec.seeds, spec.out = ["a red cube", "a blue cube", "a green torus"], [0, 1], str(tmp_path / "sweep")
    spec.grid["config"] = [v for v in spec.grid["config"] if Path(v.strip('"')).stem == "toy"]
    run_sweep(spec, run_fn=fake_train_by_shape, log=lambda m: None)
    out = tmp_path / "page.md"
    out.write_text("# A page written by hand\n\ntext that must stay\n")
    done = subprocess.run([sys.executable, str(REPO / "scripts" / "estimator_table.py"), spec.out, "--out", str(out),
                           "--no-diversity", "--no-picture", "--by-shape"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    page = out.read_text()
    assert page.startswith("# A page written by hand\n\ntext that must stay\n")
    shapes = page[page.index("<!-- estimator-shapes -->"):page.index("<!-- /estimator-shapes -->")]
    assert "| config | cube: mean (worst) | torus: mean (worst) |" in shapes
    # cube: seeds 0 and 1 of two prompts, (0.5 + 0.6 + 0.5 + 0.6) / 4 = 0.55, worst 0.5; torus 0.9 twice
    assert "| toy | 0.550 (0.500) | 0.900 (0.900) |" in shapes
    # a second run replaces the blocks in place instead of appending them again
    subprocess.run([sys.executable, str(REPO / "scripts" / "estimator_table.py"), spec.out, "--out", str(out),
                    "--no-diversity", "--no-picture", "--by-shape"], check=True, capture_output=True)
    assert out.read_text() == page
