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
        ("camera.late_elevation_deg=null", "camera.late_start_step and camera.late_elevation_deg go together"),
        ("camera.late_elevation_deg=[20,10]", "camera.late_elevation_deg=[20.0, 10.0]: the first value must not exceed"),
        ("camera.late_start_step=-1", "camera.late_start_step=-1 must be a step >= 0"),
        ("field.encoding.n_levels=0", "field.encoding.n_levels=0 must be at least 1"),
        ("field.encoding.max_resolution=0", "field.encoding.max_resolution=0 is below field.encoding.base_resolution=8"),
    ],
)
def test_bad_values_are_one_line_errors(override, message):
    with pytest.raises(ConfigError) as e:
        load_config(TOY, ["prompt=a red cube", override])
    assert message in str(e.value) and "\n" not in str(e.value)


def test_empty_prompt_and_missing_file():
    with pytest.raises(ConfigError, match="prompt is empty"):
        load_config(TOY, ["prompt=  "])
    with pytest.raises(ConfigError, match="not found"):
        load_config("no/such.yaml", ["prompt=x"])


def test_run_names_are_sanitised():
    cfg = load_config(TOY, ["prompt=A Red/../Cube; rm -rf ~"])
    assert run_name(cfg) == "a-red-cube-rm-rf"


def test_lr_factor_schedules():
    from sds3d.config import lr_factor

    assert lr_factor(50, 100, "constant", 0.1) == 1.0
    assert lr_factor(0, 100, "cosine", 0.1) == pytest.approx(1.0)
    assert lr_factor(50, 100, "cosine", 0.1) == pytest.approx(0.55)
    assert lr_factor(100, 100, "cosine", 0.1) == pytest.approx(0.1)
    assert lr_factor(50, 100, "exponential", 0.01) == pytest.approx(0.1)
    assert lr_factor(500, 100, "exponential", 0.01) == pytest.approx(0.01)  # clamped past the end
