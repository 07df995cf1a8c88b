from pathlib import Path

import pytest

from sds3d.config import ConfigError, load_config, run_name, to_yaml

TOY = Path(__file__).resolve().parents[1] / "configs" / "toy.yaml"


def test_overrides_and_yaml_merge():
    cfg = load_config(TOY, ['prompt=a red cube', "guidance.scale=3", "trainer.max_steps=5", "camera.elevation_deg=[0,30]"])
    assert cfg.prompt == "a red cube" and cfg.guidance.scale == 3.0 and cfg.trainer.max_steps == 5
    assert tuple(cfg.camera.elevation_deg) == (0.0, 30.0)
    again = load_config(None, [f"{k}" for k in []] + ["prompt=x"])
    assert again.prior.name_or_path == "toy"


def test_resolved_config_round_trips(tmp_path):
    cfg = load_config(TOY, ["prompt=a blue torus", "seed=3"])
    (tmp_path / "config.yaml").write_text(to_yaml(cfg))
    assert load_config(tmp_path / "config.yaml") == cfg


@pytest.mark.parametrize(
    "override, message",
    [
        ("guidance.scal=3", "unknown config key 'guidance.scal'; did you mean 'guidance.scale'"),
        ("trainer.max_step=3", "did you mean 'trainer.max_steps'"),
        ("promt=a cube", "did you mean 'prompt'"),
        ("trainer.lr=-1", "trainer.lr=-1.0 must be positive"),
        ("render.resolution=0", "render.resolution=0 must be a positive"),
        ("guidance.t_min=0.99", "t_min=0.99 exceeds t_max"),
        ("guidance.scale=abc", "invalid value for 'guidance.scale'"),
        ("name=../../etc", "name='../../etc' may hold only"),
        ("trainer.lr_schedule=linear", "trainer.lr_schedule='linear' is unknown; use one of constant, cosine, exponential"),
        ("trainer.lr_end_factor=0", "trainer.lr_end_factor=0.0 must be in (0, 1]"),
        ("camera.late_elevation_deg=null", "camera.late_start_fraction and camera.late_elevation_deg go together"),
        ("camera.late_elevation_deg=[20,10]", "camera.late_elevation_deg=[20.0, 10.0]: the first value must not exceed"),
        ("camera.late_start_fraction=-0.5", "camera.late_start_fraction=-0.5 must be >= 0"),
        ("trainer.lr=nan", "trainer.lr=nan is not a finite number"),
        ("guidance.scale=inf", "guidance.scale=inf is not a finite number"),
        ("guidance.scale=1e309", "guidance.scale=inf is not a finite number"),
        ("camera.distance=[2.5, .inf]", "camera.distance=inf is not a finite number"),
        ("seed=1e23", "invalid value for 'seed'"),
        ("seed=100000000000000000000000", "seed=100000000000000000000000 is out of range"),
        ("seed=-1", "seed=-1 must be an integer in [0, 2^63)"),
        ("name=" + "n" * 256, "name is 256 characters long"),
        ("render.resolution=100000", "a training step's ray samples needs at least"),
        ("export.resolution=100000", "the export density grid needs at least"),
        ("prompt=a red\x00cube", "prompt holds a control character ('\\x00')"),
        ("trainer.max_skipped_fraction=2", "trainer.max_skipped_fraction=2.0 must be in [0, 1]"),
        ("guidance.scale=[1", "the value is not valid YAML"),
        ("trainer.lr...x=1", "is not a config key"),
        ("=3", "is not a config key"),
        ("field.encoding.n_levels=0", "field.encoding.n_levels=0 must be at least 1"),
        ("field.encoding.max_resolution=0", "field.encoding.max_resolution=0 is below field.encoding.base_resolution=8"),
    ],
)
def test_bad_values_are_one_line_errors(override, message):
    with pytest.raises(ConfigError) as e:
        load_config(TOY, ["prompt=a red cube", override])
    assert message in str(e.value) and "\n" not in str(e.value)


def test_empty_prompt_and_missing_or_empty_file(tmp_path):
    for text in ("", "# only a comment\n", "{}\n"):
        (tmp_path / "empty.yaml").write_text(text)
        with pytest.raises(ConfigError, match="empty.yaml is empty; a config maps keys to values"):
            load_config(tmp_path / "empty.yaml", ["prompt=x"])
    with pytest.raises(ConfigError, match="is a folder"):
        load_config(tmp_path, ["prompt=x"])
    with pytest.raises(ConfigError, match="prompt is empty"):
        load_config(TOY, ["prompt=  "])
    with pytest.raises(ConfigError, match="not found"):
        load_config("no/such.yaml", ["prompt=x"])


def test_run_names_are_sanitised():
    cfg = load_config(TOY, ["prompt=A Red/../Cube; rm -rf ~"])
    assert run_name(cfg).startswith("a-red-cube-rm-rf-") and "/" not in run_name(cfg, "../x/../toy.yaml")


def test_lr_factor_schedules():
    from sds3d.config import lr_factor

    assert lr_factor(50, 100, "constant", 0.1) == 1.0
    assert lr_factor(0, 100, "cosine", 0.1) == pytest.approx(1.0)
    assert lr_factor(50, 100, "cosine", 0.1) == pytest.approx(0.55)
    assert lr_factor(100, 100, "cosine", 0.1) == pytest.approx(0.1)
    assert lr_factor(50, 100, "exponential", 0.01) == pytest.approx(0.1)
    assert lr_factor(500, 100, "exponential", 0.01) == pytest.approx(0.01)  # clamped past the end


@pytest.mark.parametrize("prompt", [
    "${oc.env:HOME}",  # was expanded into the prompt, config.yaml, summary.json and the folder name
    "a red cube ${", "[a red cube", "a red cube # not a comment", "a red cube\nsecond line\ttab",
    "a: b", "- x", "null", "~", "'half quoted", r"a \${x} \\${y}", "...", "&anchor", "*alias", "!!python/object x",
])
def test_command_line_values_are_literal_and_round_trip(tmp_path, prompt):
    cfg = load_config(TOY, [f"prompt={prompt}", f"guidance.negative_prompt={prompt}"])
    assert cfg.prompt == prompt and cfg.guidance.negative_prompt == prompt
    (tmp_path / "config.yaml").write_text(to_yaml(cfg))
    assert load_config(tmp_path / "config.yaml") == cfg  # a run folder's config.yaml reloads as given


def test_quoted_values_and_interpolation_inside_files(tmp_path):
    # One quoted YAML scalar is read as YAML (sweeps quote prompts this way).
    cfg = load_config(TOY, ['prompt="a red, cube"', "guidance.negative_prompt='it''s'", 'name=""'])
    assert (cfg.prompt, cfg.guidance.negative_prompt, cfg.name) == ("a red, cube", "it's", "")
    (tmp_path / "c.yaml").write_text("prompt: a blue cone\nguidance:\n  negative_prompt: ${prompt} blurry\n")
    assert load_config(tmp_path / "c.yaml").guidance.negative_prompt == "a blue cone blurry"


def test_schedule_points_are_fractions_of_the_run(capsys, tmp_path):
    from sds3d.cameras import elevation_range, schedule_step

    cfg = load_config(TOY, ["prompt=a red cube"])
    assert (cfg.camera.late_start_fraction, cfg.guidance.anneal_start_fraction, cfg.guidance.anneal_end_fraction) == (0.75, 0.0, 1.0)
    # 600 steps: today's step counts exactly; 200 steps: the same recipe over a third of the steps.
    assert schedule_step(0.75, 600) == 450 and schedule_step(0.75, 200) == 150
    assert elevation_range(cfg.camera, 449, 600) == (-10.0, 60.0) and elevation_range(cfg.camera, 450, 600) == (-10.0, 5.0)
    assert elevation_range(cfg.camera, 149, 200) == (-10.0, 60.0) and elevation_range(cfg.camera, 150, 200) == (-10.0, 5.0)
    # Old files and run folders (step counts) load, read as fractions of their own max_steps, with one notice.
    (tmp_path / "old.yaml").write_text("prompt: a red cube\ntrainer:\n  max_steps: 400\ncamera:\n  late_start_step: 300\n"
                                       "  late_elevation_deg: [-10, 5]\nguidance:\n  t_schedule: linear\n  anneal_start: 100\n"
                                       "  anneal_end: 1000\n")
    old = load_config(tmp_path / "old.yaml")
    assert old.camera.late_start_fraction == 0.75 and (old.guidance.anneal_start_fraction, old.guidance.anneal_end_fraction) == (0.25, 2.5)
    assert schedule_step(old.guidance.anneal_end_fraction, 400) == 1000
    notices = [line for line in capsys.readouterr().err.splitlines() if "old.yaml" in line]
    assert len(notices) == 1 and "camera.late_start_step=300 as camera.late_start_fraction=0.75" in notices[0]
    # On the command line an old key is a step count of this run.
    cfg = load_config(TOY, ["prompt=a red cube", "camera.late_start_step=50", "trainer.max_steps=100"])
    assert cfg.camera.late_start_fraction == 0.5


def test_default_run_names_are_distinct_and_stable():
    a = load_config(TOY, ["prompt=a red cube"])
    same_slug = load_config(TOY, ["prompt=A Red Cube"])
    other_recipe = load_config(TOY, ["prompt=a red cube", "guidance.scale=7.5"])
    names = {run_name(c, TOY) for c in (a, same_slug, other_recipe)}
    assert len(names) == 3 and all(n.startswith("a-red-cube-toy-") for n in names)
    assert run_name(a, TOY) == run_name(load_config(TOY, ["prompt=a red cube", "out_dir=elsewhere", "trainer.progress=false"]), TOY)
    assert run_name(a, "configs/dreamfusion-sd.yaml") != run_name(a, TOY)
    assert run_name(load_config(TOY, ["prompt=a red cube", "name=mine"]), TOY) == "mine"
