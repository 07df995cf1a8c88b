"""sds3d sweep: grid parsing and expansion, run names, resume, failures, executors, report, CLI errors."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path
from types import SimpleNamespace

import pytest

from sds3d.sweep import (RunJob, SweepError, SweepSpec, expand, load_sweep_file, parse_grid_arg, run_folder_name,
                         run_state, run_sweep, split_values)
from sds3d.runs import mark_complete
from sds3d.sweep.report import metrics_of

REPO = Path(__file__).resolve().parents[1]

# --- fakes: a config loader that knows a few keys, and a trainer that writes a summary.json -----------

FAKE_KEYS = {"prompt", "seed", "out_dir", "name", "guidance.scale", "guidance.negative_prompt", "trainer.threads",
             "trainer.progress", "trainer.max_steps"}


def fake_load(path, overrides):
    from omegaconf import OmegaConf

    values = {"prompt": "a red cube", "seed": 0, "out_dir": "runs"}
    for item in overrides:
        key = item.split("=", 1)[0]
        if key not in FAKE_KEYS:
            raise ValueError(f"unknown config key '{key}'")
        node = OmegaConf.from_dotlist([item])
        values[key] = OmegaConf.select(node, key)
    return SimpleNamespace(**values)


def fake_train(job: RunJob) -> dict:
    """Appends the call to calls.jsonl beside the runs; fails for prompts containing 'fail'."""
    run_dir = Path(job.run_dir)
    ov = fake_load(None, job.overrides)
    with open(run_dir.parent / "calls.jsonl", "a") as f:
        f.write(json.dumps({"name": job.name, "mode": job.mode, "overrides": job.overrides}) + "\n")
    if "fail" in ov.prompt:
        raise RuntimeError("boom: fake failure")
    run_dir.mkdir(parents=True, exist_ok=True)
    scale = float(getattr(ov, "guidance.scale", 0))
    (run_dir / "summary.json").write_text(json.dumps({"train_seconds": 2.0, "final_loss_sds": 0.25,
                                                      "eval": {"mesh_iou": scale / 100, "colour_error": 0.1, "recognition": 1.0}}))
    mark_complete(run_dir)
    return {"status": "done"}


def calls(sweep_dir: Path) -> list[dict]:
    path = sweep_dir / "calls.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


# --- grid parsing -------------------------------------------------------------------------------------


def test_split_values_commas_quotes_brackets():
    assert split_values("1,3,7.5, 30") == ["1", "3", "7.5", "30"]
    assert split_values('"blurry, low quality",""') == ['"blurry, low quality"', '""']
    assert split_values("'a, b',c") == ["'a, b'", "c"]
    assert split_values("[1,2],[3,4]") == ["[1,2]", "[3,4]"]
    assert split_values("") == []
    with pytest.raises(SweepError, match="unclosed"):
        split_values('"open, 1')
    with pytest.raises(SweepError, match="empty value"):
        split_values("1,,3")


def test_parse_grid_arg_errors():
    assert parse_grid_arg("guidance.scale=1,3") == ("guidance.scale", ["1", "3"])
    with pytest.raises(SweepError, match="has no values"):
        parse_grid_arg("guidance.scale=")
    with pytest.raises(SweepError, match="not key=v1,v2"):
        parse_grid_arg("guidance.scale")
    with pytest.raises(SweepError, match="--prompts"):
        parse_grid_arg("prompt=a,b")


def test_expand_is_the_cartesian_product_in_order():
    spec = SweepSpec("c.yaml", grid={"guidance.scale": ["1", "7.5"], "guidance.negative_prompt": ['"blurry, low"', '""']},
                     prompts=["a red cube", "a green cone"], seeds=[0, 1])
    runs = expand(spec)
    assert len(runs) == 2 * 2 * 2 * 2
    assert [(r.prompt, r.seed) for r in runs[:4]] == [("a red cube", 0)] * 4
    assert [r.overrides for r in runs[:4]] == [
        (("guidance.scale", "1"), ("guidance.negative_prompt", '"blurry, low"')),
        (("guidance.scale", "1"), ("guidance.negative_prompt", '""')),
        (("guidance.scale", "7.5"), ("guidance.negative_prompt", '"blurry, low"')),
        (("guidance.scale", "7.5"), ("guidance.negative_prompt", '""')),
    ]
    names = [r.name for r in runs]
    assert len(set(names)) == len(names)
    assert all(re.fullmatch(r"[A-Za-z0-9._-]+", n) for n in names)  # valid RunConfig.name
    assert runs[2].column == "guidance.scale=7.5 guidance.negative_prompt=blurry, low"


def test_run_names_are_deterministic_and_readable():
    a = run_folder_name("a red cube", 0, (("guidance.scale", "7.5"),))
    assert a == "a-red-cube__seed-0__guidance.scale-7.5"
    assert run_folder_name("a red cube", 0, (("guidance.scale", "7.5"),)) == a
    # lossy values get a hash of their text, so distinct values never share a folder
    x = run_folder_name("p", 0, (("guidance.negative_prompt", '"blurry, low"'),))
    y = run_folder_name("p", 0, (("guidance.negative_prompt", '"blurry low"'),))
    assert x != y and x.startswith("p__seed-0__guidance.negative_prompt-blurry-low-")
    empty = run_folder_name("p", 0, (("guidance.negative_prompt", '""'),))
    assert re.fullmatch(r"p__seed-0__guidance\.negative_prompt-v-[0-9a-f]{6}", empty)
    assert len(run_folder_name("p" * 300, 0, (("k", "v" * 300),))) <= 150


def test_shipped_guidance_scale_sweep_file():
    from sds3d.toyworld.prompts import all_prompts

    spec = load_sweep_file(REPO / "configs/sweeps/guidance-scale.yaml")
    assert spec.prompts == all_prompts() and len(spec.prompts) == 16
    assert spec.grid == {"guidance.scale": ["0", "1", "3", "7.5", "30", "100"]}
    assert Path(spec.config).resolve() == (REPO / "configs/toy.yaml").resolve()
    assert len(expand(spec)) == 96


def test_sweep_file_values_keep_their_types(tmp_path):
    f = tmp_path / "s.yaml"
    f.write_text('config: base.yaml\ngrid:\n  guidance.negative_prompt: ["blurry, low quality", ""]\n  guidance.scale: "1,3"\n'
                 'prompts: a red cube\nseeds: 3\n')
    spec = load_sweep_file(f)
    assert spec.grid["guidance.negative_prompt"] == ['"blurry, low quality"', '""']
    assert spec.grid["guidance.scale"] == ["1", "3"]
    assert spec.prompts == ["a red cube"] and spec.seeds == [3] and spec.config == str(tmp_path / "base.yaml")
    assert fake_load(None, ['guidance.negative_prompt="blurry, low quality"']).__dict__["guidance.negative_prompt"] == "blurry, low quality"
    (tmp_path / "run.yaml").write_text("prompt: a red cube\n")
    assert load_sweep_file(tmp_path / "run.yaml") is None  # an ordinary run config


# --- resume, failures, executors, report ----------------------------------------------------------------


def _spec(tmp_path, prompts=("a red cube", "a green cone"), scales=("1", "7.5")):
    return SweepSpec(str(tmp_path / "base.yaml"), grid={"guidance.scale": list(scales)}, prompts=list(prompts), seeds=[0],
                     out=str(tmp_path / "sweep"))


def test_resume_skips_finished_resumes_unfinished_starts_missing(tmp_path):
    spec = _spec(tmp_path)
    sweep = Path(spec.out)
    done, unfinished = (sweep / run_folder_name("a red cube", 0, (("guidance.scale", s),)) for s in ("1", "7.5"))
    done.mkdir(parents=True)
    (done / "summary.json").write_text(json.dumps({"train_seconds": 9.0, "final_loss_sds": 0.1}))
    mark_complete(done)
    (unfinished / "ckpt").mkdir(parents=True)
    (unfinished / "ckpt" / "last.pt").write_bytes(b"x")
    (unfinished / "config.yaml").write_text("prompt: a red cube\n")
    assert [run_state(d) for d in (done, unfinished, sweep / "nope")] == ["done", "resume", "start"]

    result = run_sweep(spec, run_fn=fake_train, load=fake_load, log=lambda m: None)
    modes = {c["name"]: c["mode"] for c in calls(sweep)}
    assert done.name not in modes
    assert modes[unfinished.name] == "resume"
    assert sorted(v for k, v in modes.items() if k != unfinished.name) == ["start", "start"]
    assert [r["status"] for r in result.rows] == ["done"] * 4
    # the finished run keeps its own metrics; the job carries the run's name, folder and overrides
    assert result.rows[0]["train_seconds"] == 9.0
    job = next(c for c in calls(sweep) if c["name"].startswith("a-green-cone") and c["name"].endswith("7.5"))
    assert {"guidance.scale=7.5", 'prompt="a green cone"', "seed=0", f"name={job['name']}"} <= set(job["overrides"])

    (sweep / "calls.jsonl").unlink()
    run_sweep(spec, run_fn=fake_train, load=fake_load, log=lambda m: None)
    assert calls(sweep) == []  # everything finished: nothing runs again


def test_failed_run_is_recorded_and_the_sweep_goes_on(tmp_path):
    spec = _spec(tmp_path, prompts=("a red cube", "a fail cone"))
    result = run_sweep(spec, run_fn=fake_train, load=fake_load, log=lambda m: None)
    status = {r["prompt"]: r["status"] for r in result.rows}
    assert status == {"a red cube": "done", "a fail cone": "failed"}
    failed = [r for r in result.rows if r["status"] == "failed"]
    assert len(failed) == 2 and all(r["error"] == "RuntimeError: boom: fake failure" for r in failed)
    summary = json.loads((Path(spec.out) / failed[0]["run"] / "summary.json").read_text())
    assert summary["status"] == "failed" and "boom" in summary["error"]
    rows = list(csv.DictReader(result.files["summary.csv"].read_text().splitlines()))
    assert [r["status"] for r in rows] == ["done", "done", "failed", "failed"]
    assert rows[1]["guidance.scale"] == "7.5" and float(rows[1]["iou"]) == pytest.approx(0.075)
    assert "boom: fake failure" in result.files["summary.md"].read_text()
    # a failed run is tried again on the next sweep
    n = len(calls(Path(spec.out)))
    run_sweep(spec, run_fn=fake_train, load=fake_load, log=lambda m: None)
    assert [c["prompt" if False else "name"] for c in calls(Path(spec.out))[n:]] == [r["run"] for r in failed]


def test_jobs_run_in_subprocesses_with_a_thread_budget(tmp_path, monkeypatch):
    monkeypatch.setattr("sds3d.sweep.run.available_cores", lambda: 2)
    spec = _spec(tmp_path, prompts=("a red cube", "a fail cone"), scales=("3",))
    result = run_sweep(spec, jobs=2, run_fn=fake_train, load=fake_load, log=lambda m: None)
    seen = calls(Path(spec.out))
    assert len(seen) == 2 and all("trainer.threads=1" in c["overrides"] and "trainer.progress=false" in c["overrides"] for c in seen)
    status = {r["prompt"]: (r["status"], r["error"]) for r in result.rows}
    assert status["a red cube"] == ("done", "")
    assert status["a fail cone"][0] == "failed" and "boom: fake failure" in status["a fail cone"][1]


def test_unknown_key_and_empty_values_fail_before_any_run(tmp_path):
    spec = _spec(tmp_path)
    spec.grid["guidance.scal"] = ["1"]
    with pytest.raises(SweepError, match=r"--grid guidance.scal: unknown config key"):
        run_sweep(spec, run_fn=fake_train, load=fake_load, log=lambda m: None)
    spec.grid = {"guidance.scale": []}
    with pytest.raises(SweepError, match="no values"):
        run_sweep(spec, run_fn=fake_train, load=fake_load, log=lambda m: None)
    assert not Path(spec.out).exists()


def test_metrics_are_read_defensively():
    assert metrics_of({}) == dict.fromkeys(["iou", "colour_error", "recognition", "train_seconds", "final_loss_sds"])
    m = metrics_of({"train_seconds": 3, "final_loss_sds": "nan", "eval": {"mesh_iou": 0.9, "recognition": None}, "colour_error": 0.2})
    assert m == {"iou": 0.9, "colour_error": 0.2, "recognition": None, "train_seconds": 3.0, "final_loss_sds": None}


def test_comparison_image_grid_and_cells(tmp_path):
    from PIL import Image

    spec = _spec(tmp_path)
    sweep = Path(spec.out)
    red = sweep / run_folder_name("a red cube", 0, (("guidance.scale", "1"),))
    (red / "renders").mkdir(parents=True)
    img = Image.new("RGB", (4 * 32, 2 * 32), (0, 0, 255))  # validation render: 4 views x (shaded, normals)
    img.paste((255, 0, 0), (0, 0, 32, 32))  # first shaded view is red
    img.save(red / "renders" / "step_00200.png")
    result = run_sweep(spec, run_fn=fake_train, load=fake_load, log=lambda m: None)
    png = Image.open(result.files["comparison.png"]).convert("RGB")
    label_w, pad, cell, head_h, text_h = 150, 4, 128, 2 * 12 + 8, 3 * 12 + 4
    grid_h = head_h + 2 * (cell + text_h + pad)
    assert png.size[0] == label_w + 2 * (cell + pad) + pad and png.size[1] > grid_h  # + the legend (test_sweep_report)
    assert png.getpixel((label_w + pad + cell // 2, head_h + cell // 2)) == (255, 0, 0)  # row 0, column scale=1
    assert png.getpixel((label_w + 2 * pad + cell + cell // 2, head_h + cell // 2)) == (230, 230, 230)  # no render


# --- the CLI: bad input -> exit 2 with one line ------------------------------------------------------------


def _cli(argv, capsys):
    from sds3d.cli import main

    code = main(argv)
    return code, capsys.readouterr().err.strip().splitlines()


def test_cli_bad_input_exits_2_with_one_line(tmp_path, capsys):
    base = str(REPO / "configs/toy.yaml")
    code, err = _cli(["sweep", base, "--grid", "guidance.scale=", "--prompts", "a red cube", "--out", str(tmp_path / "s")], capsys)
    assert code == 2 and len(err) == 1 and "has no values" in err[0]
    code, err = _cli(["sweep", base, "--grid", "guidance.scal=1,3", "--prompts", "a red cube", "--out", str(tmp_path / "s")], capsys)
    assert code == 2 and len(err) == 1 and "did you mean 'guidance.scale'" in err[0]
    code, err = _cli(["sweep", base, "--grid", "guidance.scale=1", "--prompts", "a red cube", "--out", str(tmp_path / "s"),
                      "--ray", "127.0.0.1:1"], capsys)
    assert code == 2 and len(err) == 1 and "cannot reach Ray at 127.0.0.1:1" in err[0]
    assert not (tmp_path / "s").exists()


# --- end to end: the real trainer on a local Ray ----------------------------------------------------------


@pytest.mark.slow
def test_tiny_sweep_end_to_end_on_local_ray(tmp_path, monkeypatch, capsys):
    pytest.importorskip("ray")
    monkeypatch.setattr("sds3d.sweep.run.available_cores", lambda: 2)  # ray.init(num_cpus=2)
    out = tmp_path / "sweep"
    argv = ["sweep", str(REPO / "configs/toy.yaml"), "trainer.max_steps=2", "trainer.val_every=0", "orbit.frames=2",
            "orbit.resolution=32", "export.resolution=16", "--grid", "guidance.scale=3,30", "--prompts", "a red cube",
            "--out", str(out), "--ray"]
    code, err = _cli(argv, capsys)
    assert code == 0, err
    rows = list(csv.DictReader((out / "summary.csv").read_text().splitlines()))
    assert [(r["guidance.scale"], r["status"]) for r in rows] == [("3", "done"), ("30", "done")]
    assert all(float(r["train_seconds"]) > 0 and r["final_loss_sds"] for r in rows)
    assert all(0 <= float(r["iou"]) <= 1 and 0 <= float(r["recognition"]) <= 1 for r in rows)  # eval ran on the toy prompt
    assert (out / "comparison.png").stat().st_size > 0 and (out / rows[0]["run"] / "mesh").is_dir()
    code, err = _cli(argv, capsys)  # again: both finished, nothing to run
    assert code == 0 and any("2 finished, 0 to resume, 0 to start" in line for line in err)
