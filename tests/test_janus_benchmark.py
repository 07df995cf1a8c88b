"""The v2 benchmark in runs: v2 metrics through the pipeline's evaluate (v1 prompts unchanged), its
configs and sweeps, and the Janus / composition tables."""

import json
from pathlib import Path

import pytest

from sds3d import pipeline
from sds3d.config import load_config
from sds3d.eval import EvalError, colour_error, evaluate_run, is_v2_prompt, load_mesh_world, mesh_iou_yaw
from sds3d.export import write_mesh
from sds3d.export.mesh import ExportConfig
from sds3d.toyworld.v2.metrics import ground_truth_mesh
from sds3d.toyworld.v2.prompts import benchmark_prompts
from script_module import load_script

ROOT = Path(__file__).resolve().parents[1]
V2 = str(ROOT / "configs" / "toy-v2.yaml")


def _load_script(name: str):
    return load_script(name)


def _exported_run(tmp_path: Path, mesh_world, name: str = "run") -> Path:
    """A run folder whose mesh/ holds ``mesh_world`` as sds3d exports it (file frame y-up, vertex colours)."""
    run = tmp_path / name
    write_mesh(mesh_world, None, run / "mesh", ExportConfig(texture="vertex", up_axis="y"))
    return run


def _evaluate(run: Path, prompt: str, *overrides):
    return pipeline.evaluate(load_config(V2, [f"prompt={prompt}", *overrides]), run, scene=None)


def test_v2_prompts_are_told_from_v1_prompts():
    assert is_v2_prompt("a red owl") and is_v2_prompt("a red owl, back view")
    assert is_v2_prompt("a red sphere on top of a blue cube") and is_v2_prompt("a green cone next to a yellow sphere")
    assert not is_v2_prompt("a red cube") and not is_v2_prompt("a red cube, side view") and not is_v2_prompt("a photo of a cat")


def test_pipeline_evaluates_faced_objects_with_the_janus_metrics(tmp_path):
    ev = _evaluate(_exported_run(tmp_path, ground_truth_mesh("a red owl", resolution=96), "gt"), "a red owl")
    assert ev["world"] == "v2" and ev["kind"] == "faced" and ev["colour_source"] == "mesh"
    assert (ev["janus"], ev["n_faces"], ev["face_present"], ev["front_ok"], ev["flooded"]) == (0, 1, 1, True, False)
    # v1's colour error counts the GT's own eyes and beak as error (0.10 on this mesh); the v2 body error does not.
    assert ev["front_az"] == 0.0 and ev["iou"] > 0.95 and ev["colour_err"] < 0.15 and len(ev["F"]) == 24
    assert ev["body_colour_err"] < 0.05
    two = _evaluate(_exported_run(tmp_path, ground_truth_mesh("a red owl", "two_faced", resolution=64), "two"), "a red owl")
    assert two["janus"] == 1 and two["n_faces"] == 2


def test_pipeline_evaluates_compositions_part_by_part(tmp_path):
    prompt = "a red sphere on top of a blue cube"
    run = _exported_run(tmp_path, ground_truth_mesh(prompt, resolution=96), "gt")
    ev = _evaluate(run, prompt)
    assert ev["world"] == "v2" and ev["kind"] == "composition"
    assert ev["union_iou"] >= 0.95 and min(ev["part_iou"]) >= 0.9 and ev["composition_ok"]
    assert ev["part_colour_ok"] == [True, True] and ev["iou"] == ev["union_iou"]
    swapped = _evaluate(run, "a blue sphere on top of a red cube")  # the colours on the wrong parts
    assert swapped["part_colour_ok"] == [False, False] and not swapped["composition_ok"]
    assert swapped["union_iou"] == ev["union_iou"]


def test_v1_prompts_keep_v1_metrics(tmp_path, monkeypatch):
    from sds3d.toyworld.v2.objects import v1_object

    mesh = ground_truth_mesh(v1_object("green", "cone"), resolution=96)
    run = _exported_run(tmp_path, mesh, "cone")
    cfg = load_config(V2, ["prompt=a green cone", "eval.iou_resolution=40", "eval.yaw_step_deg=30"])
    ev = pipeline.evaluate(cfg, run, scene=None)
    world_mesh = load_mesh_world(run, "y")
    assert "world" not in ev and (ev["colour"], ev["shape"]) == ("green", "cone")
    assert (ev["mesh_iou"], ev["yaw_deg"]) == mesh_iou_yaw(world_mesh, "cone", 40, 30.0)
    assert ev["colour_error"] == colour_error(None, world_mesh, "green")
    assert ev == evaluate_run(cfg, world_mesh)


def test_v2_metrics_only_for_v2_priors_and_enabled_eval(tmp_path, tiny_pixel_prior):
    import shutil

    from sds3d.eval import is_v2_prior

    run = _exported_run(tmp_path, ground_truth_mesh("a red owl", resolution=48))
    assert _evaluate(run, "a red owl", "eval.enabled=false") is None
    assert _evaluate(run, "a red owl", f"prior.name_or_path={tmp_path / 'not-a-prior'}") is None
    # A v1 toy prior knows no owl: no metrics, and `sds3d eval` says the prompt is not its.
    assert not is_v2_prior(str(tiny_pixel_prior))
    assert _evaluate(run, "a red owl", f"prior.name_or_path={tiny_pixel_prior}") is None
    with pytest.raises(EvalError, match="not a toy-world prompt"):
        evaluate_run(load_config(V2, ["prompt=a red owl", f"prior.name_or_path={tiny_pixel_prior}"]), load_mesh_world(run, "y"))
    v2 = tmp_path / "v2-folder"
    shutil.copytree(tiny_pixel_prior, v2)
    (v2 / "training.json").write_text(json.dumps({"world": "v2"}))  # as sds3d train-prior --world v2 writes
    assert is_v2_prior(str(v2)) and is_v2_prior("toy-v2-camera")
    assert _evaluate(run, "a red owl", f"prior.name_or_path={v2}")["world"] == "v2"


def test_prompt_notices_follow_the_priors_world(tmp_path, tiny_pixel_prior):
    import shutil

    v2 = tmp_path / "v2-folder"
    shutil.copytree(tiny_pixel_prior, v2)
    (v2 / "training.json").write_text(json.dumps({"world": "v2"}))
    check = lambda prompt, prior: pipeline.check_prompt(load_config(V2, [f"prompt={prompt}", f"prior.name_or_path={prior}"]))  # noqa: E731
    for prompt in ("a red owl", "a red sphere on top of a blue cube", "a blue cube, side view"):
        assert check(prompt, v2) is None
    assert check("a red dragon", v2)["unknown_words"] == ["dragon"] and "toy world v2" in check("a red dragon", v2)["notice"]
    assert check("a red owl", tiny_pixel_prior)["unknown_words"] == ["owl"]  # a v1 prior knows no owl
    assert check("a red cube", tiny_pixel_prior) is None


def test_an_empty_mesh_is_a_one_line_error():
    import trimesh

    with pytest.raises(EvalError, match="the mesh is empty"):
        evaluate_run(load_config(V2, ["prompt=a red owl"]), trimesh.Trimesh())


def test_v2_configs_are_toy_yaml_with_the_v2_priors():
    toy = load_config(str(ROOT / "configs" / "toy.yaml"), ["prompt=a red owl"])
    text = load_config(V2, ["prompt=a red owl"])
    camera = load_config(str(ROOT / "configs" / "toy-v2-camera.yaml"), ["prompt=a red owl"])
    assert text.prior.name_or_path == "toy-v2-text" and camera.prior.name_or_path == "toy-v2-camera"
    assert not text.guidance.view_dependent_prompts and not camera.guidance.view_dependent_prompts
    assert toy.guidance.view_dependent_prompts
    for cfg in (text, camera):
        assert cfg.trainer == toy.trainer and cfg.camera == toy.camera and cfg.field == toy.field
        assert cfg.guidance.scale == toy.guidance.scale and cfg.render == toy.render


def test_benchmark_sweeps_cover_the_conditions_and_prompts():
    from sds3d.sweep.grid import expand, load_sweep_file

    table = _load_script("janus_table")
    bench = benchmark_prompts()
    spec = load_sweep_file(ROOT / "configs" / "sweeps" / "janus.yaml")
    runs = expand(spec)
    assert len(runs) == 12 * 3 * 6 and spec.out == "runs/sweeps/janus"
    conditions = set()
    for point in {r.overrides for r in runs}:  # each grid point's config, as the sweep builds it
        cfg = load_config(spec.config, ["prompt=a red owl", *(f"{k}={v}" for k, v in point)])
        conditions.add((cfg.prior.name_or_path, cfg.guidance.view_dependent_prompts, cfg.guidance.perp_neg))
    assert conditions == set(table.CONDITIONS)
    assert sorted({r.prompt for r in runs}) == sorted(bench["janus"]) and {r.seed for r in runs} == {0, 1, 2}
    spec = load_sweep_file(ROOT / "configs" / "sweeps" / "compositions.yaml")
    runs = expand(spec)
    assert sorted({r.prompt for r in runs}) == sorted(bench["compositions"]) and len(runs) == 48 * 3
    assert load_config(spec.config, ["prompt=a red owl"]).prior.name_or_path == "toy-v2-camera"


def _fake_run(sweep: Path, prompt: str, seed: int, overrides: list[str], ev: dict) -> None:
    from sds3d.runs import update_summary, write_config

    cfg = load_config(V2, [f"prompt={prompt}", f"seed={seed}", *overrides])
    run = sweep / f"{prompt.replace(' ', '-')}-{seed}-{len(list(sweep.glob('*')))}"
    run.mkdir(parents=True)
    write_config(run, cfg)
    update_summary(run, {"eval": {"world": "v2", "prompt": prompt, **ev}})


def test_janus_table_counts_janus_runs_over_unflooded_ones(tmp_path):
    table = _load_script("janus_table")
    faced = {"kind": "faced", "n_faces": 1, "face_present": 1, "front_ok": True, "iou": 0.8, "colour_err": 0.1, "body_colour_err": 0.05}
    a, d = [], ["prior.name_or_path=toy-v2-camera"]
    _fake_run(tmp_path / "j", "a red owl", 0, a, {**faced, "janus": 1, "n_faces": 2, "front_ok": False, "iou": 0.6})
    _fake_run(tmp_path / "j", "a red owl", 1, a, {**faced, "janus": 0})
    _fake_run(tmp_path / "j", "a red owl", 2, a, {**faced, "janus": 0, "n_faces": 0, "face_present": 0})  # faceless
    _fake_run(tmp_path / "j", "a red house", 0, a, {**faced, "janus": None, "n_faces": 3})  # flooded
    _fake_run(tmp_path / "j", "a red chair", 0, a, {**faced, "janus": 1, "n_faces": 2})
    _fake_run(tmp_path / "j", "a red chair", 0, d, {**faced, "janus": 0})
    rows = table.janus_table(table.read_runs(tmp_path / "j"))
    assert [r["condition"] for r in rows] == ["(a) view-suffix prior", "(d) camera-conditioned prior"]
    a_row = rows[0]
    assert (a_row["runs"], a_row["flooded"]) == (5, 1)
    assert a_row["janus_rate"] == 0.5 and a_row["janus_owl"] == pytest.approx(1 / 3) and a_row["janus_house"] is None
    assert a_row["face_present"] == 0.75 and a_row["faces"] == pytest.approx(5 / 4)
    assert a_row["front_ok"] == pytest.approx(2 / 3)  # of the runs with a face
    assert a_row["iou"] == pytest.approx((0.6 + 0.8 * 4) / 5) and a_row["body_colour_err"] == pytest.approx(0.05)
    assert rows[1]["janus_rate"] == 0.0 and rows[1]["runs"] == 1

    comp = {"kind": "composition", "union_iou": 0.7}
    held = "a red sphere on top of a green cube"  # held out (toyworld_v2.json held_out)
    _fake_run(tmp_path / "c", held, 0, d, {**comp, "composition_ok": True, "part_colour_ok": [True, True]})
    _fake_run(tmp_path / "c", "a red sphere on top of a blue cube", 0, d, {**comp, "composition_ok": False, "part_colour_ok": [True, False]})
    _fake_run(tmp_path / "c", "a red cube next to a blue cone", 1, d, {**comp, "composition_ok": True, "part_colour_ok": [True, True], "union_iou": 0.9})
    _fake_run(tmp_path / "c", "a red sphere on top of a yellow cube", 2, d, {**comp, "composition_ok": True, "part_colour_ok": [True, True], "union_iou": 0.8})
    crows = table.composition_table(table.read_runs(tmp_path / "c"))
    assert [(r["prompts"], r["relation"], r["runs"]) for r in crows] == [("training", "on top of", 2), ("training", "next to", 1),
                                                                          ("held out", "on top of", 1)]
    assert crows[0]["composition_acc"] == 0.5 and crows[0]["part_colour_acc"] == 0.75
    assert crows[0]["union_iou"] == pytest.approx(0.75) and crows[1]["union_iou"] == pytest.approx(0.9)
    assert crows[2]["composition_acc"] == 1.0
    assert [r["seeds"] for r in crows] == [[0, 2], [1], [0]]

    readme, doc = tmp_path / "README.md", tmp_path / "docs" / "janus.md"
    readme.write_text("# sds3d\n\ntext\n")
    doc.parent.mkdir()
    doc.write_text(f"# Janus\n\nintro\n\n{table.START}\nold\n{table.END}\n\nafter\n")
    for _ in range(2):  # idempotent: the section is replaced, not repeated
        table.main(["--janus", str(tmp_path / "j"), "--compositions", str(tmp_path / "c"), "--readme", str(readme),
                    "--doc", str(doc), "--no-picture"])
    text = doc.read_text()
    assert text.startswith("# Janus\n\nintro\n") and text.endswith("\nafter\n") and "old" not in text
    assert text.count("| (a) view-suffix prior | 5 | 1 | 50% | 33% | – | 100% | 75% | 1.25 | 67% | 0.76 | 0.100 |") == 1
    assert readme.read_text().startswith("# sds3d\n\ntext\n") and readme.read_text().count(table.START) == 1
    assert "| (d) camera-conditioned prior | held out | on top of | 1 | 0 | 100% | 0.70 | 100% |" in readme.read_text()


def test_janus_table_says_when_there_is_nothing_to_tabulate(tmp_path):
    table = _load_script("janus_table")
    with pytest.raises(SystemExit, match="no finished v2 runs"):
        table.main(["--janus", str(tmp_path / "none"), "--compositions", str(tmp_path / "none"), "--no-picture"])
