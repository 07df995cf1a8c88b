"""`sds3d` command: user mistakes end in one line on stderr and exit status 2, nothing lost."""

from pathlib import Path

import pytest

from sds3d.cli import main

TOY = str(Path(__file__).resolve().parents[1] / "configs" / "toy.yaml")


def _run(capsys, *argv):
    code = main(list(argv))
    err = capsys.readouterr().err.strip().splitlines()
    return code, (err[-1] if err else "")


def _fast(tmp_path, prior):
    return [f"out_dir={tmp_path}", f"prior.name_or_path={prior}", "trainer.max_steps=2", "trainer.progress=false",
            "render.resolution=16", "render.num_samples=8", "trainer.val_every=0", "orbit.frames=2",
            "orbit.resolution=16", "export.resolution=16", "export.texture=vertex", "trainer.threads=1"]


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["prompt=a red cube", "guidance.scal=3"], "did you mean 'guidance.scale'"),
        ([], "the prompt is empty"),
        (["prompt="], "the prompt is empty"),
        (["prompt=a red cube", "guidance.t_min=0.9", "guidance.t_max=0.5"], "exceeds t_max"),
        (["prompt=a red cube", "trainer.lr=-0.1"], "trainer.lr=-0.1 must be positive"),
        (["prompt=a red cube", "render.resolution=0"], "render.resolution=0"),
    ],
)
def test_bad_config_is_exit_2_one_line(capsys, tmp_path, overrides, message):
    code, line = _run(capsys, "run", TOY, f"out_dir={tmp_path}", *overrides)
    assert code == 2
    assert line.startswith("sds3d: error:") and message in line
    assert not any(tmp_path.iterdir())  # nothing was written


def test_missing_prior_and_unwritable_out_dir(capsys, tmp_path):
    code, line = _run(capsys, "run", TOY, "prompt=a red cube", f"out_dir={tmp_path}", f"prior.name_or_path={tmp_path / 'nope'}")
    assert code == 2 and "does not exist" in line
    blocker = tmp_path / "file"
    blocker.write_text("x")
    code, line = _run(capsys, "run", TOY, "prompt=a red cube", f"out_dir={blocker / 'sub'}")
    assert code == 2 and "cannot write to out_dir" in line


def test_existing_run_resume_and_corrupt_checkpoint(capsys, tmp_path, tiny_pixel_prior):
    args = ["run", TOY, "prompt=a red cube", *_fast(tmp_path, tiny_pixel_prior)]
    assert main(args) == 0
    run_dir = tmp_path / "a-red-cube"
    assert (run_dir / "mesh" / "mesh.obj").exists() and (run_dir / "orbit.mp4").exists()
    before = (run_dir / "config.yaml").read_text()

    code, line = _run(capsys, *args)
    assert code == 2 and "already exists" in line and "--resume" in line
    assert (run_dir / "config.yaml").read_text() == before  # untouched

    ckpt = run_dir / "ckpt" / "last.pt"
    ckpt.write_bytes(ckpt.read_bytes()[:100])  # truncated
    code, line = _run(capsys, "run", "--resume", str(run_dir))
    assert code == 2 and "corrupt or truncated" in line
    code, line = _run(capsys, "run", "--resume", str(tmp_path / "nothing-here"))
    assert code == 2 and "not an sds3d run folder" in line


def test_overwrite_replaces_the_run(capsys, tmp_path, tiny_pixel_prior):
    args = ["run", TOY, "prompt=a blue cone", *_fast(tmp_path, tiny_pixel_prior)]
    assert main(args) == 0
    marker = tmp_path / "a-blue-cone" / "marker"
    marker.write_text("old")
    assert main(args + ["--overwrite"]) == 0
    assert not marker.exists() and (tmp_path / "a-blue-cone" / "config.yaml").exists()


def test_renamed_keys_still_work_with_one_notice(capsys, tmp_path, tiny_pixel_prior):
    from sds3d.config import load_config

    cfg = load_config(TOY, ["prompt=a red cube", f"guidance.pretrained={tiny_pixel_prior}", "trainer.orbit_frames=7"])
    assert cfg.prior.name_or_path == str(tiny_pixel_prior) and cfg.orbit.frames == 7
    err = capsys.readouterr().err
    assert "guidance.pretrained is deprecated; use prior.name_or_path" in err and "use orbit.frames" in err
    old = tmp_path / "old.yaml"  # a run folder's config.yaml from before the rename
    old.write_text("prompt: a red cube\ntrainer:\n  orbit_resolution: 33\n  evaluate: false\n")
    cfg = load_config(old)
    assert cfg.orbit.resolution == 33 and cfg.eval.enabled is False
    notices = [line for line in capsys.readouterr().err.splitlines() if "old.yaml" in line]
    assert len(notices) == 1 and "trainer.orbit_resolution -> orbit.resolution, trainer.evaluate -> eval.enabled" in notices[0]


def test_a_config_file_builds_on_its_defaults(tmp_path):
    from sds3d.config import ConfigError, load_config

    (tmp_path / "base.yaml").write_text("prompt: a red cube\nguidance:\n  scale: 5.0\ntrainer:\n  max_steps: 17\n")
    (tmp_path / "child.yaml").write_text("defaults: [base.yaml]\nguidance:\n  scale: 9.0\n")
    cfg = load_config(tmp_path / "child.yaml")
    assert (cfg.prompt, cfg.guidance.scale, cfg.trainer.max_steps) == ("a red cube", 9.0, 17)
    (tmp_path / "loop.yaml").write_text("defaults: [loop.yaml]\n")
    with pytest.raises(ConfigError, match="among its own defaults"):
        load_config(tmp_path / "loop.yaml")
