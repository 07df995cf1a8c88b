"""`sds3d` command: user mistakes end in one line on stderr and exit status 2, nothing lost."""

import json
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
    (run_dir,) = tmp_path.glob("a-red-cube-toy-*")
    assert capsys.readouterr().err.splitlines()[0] == f"sds3d: run folder {run_dir}"  # said before anything runs
    assert (run_dir / "mesh" / "mesh.obj").exists() and (run_dir / "orbit.mp4").exists() and (run_dir / ".complete").exists()
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


def test_overwrite_replaces_the_run_and_only_its_own_files(capsys, tmp_path, tiny_pixel_prior):
    args = ["run", TOY, "prompt=a blue cone", "name=cone", *_fast(tmp_path, tiny_pixel_prior)]
    assert main(args) == 0
    run_dir = tmp_path / "cone"
    notes = run_dir / "notes.txt"  # the user's, not sds3d's
    notes.write_text("mine")
    old_render = run_dir / "renders" / "old.png"
    old_render.parent.mkdir(exist_ok=True)
    old_render.write_bytes(b"x")
    assert main(args + ["--overwrite"]) == 0
    assert notes.read_text() == "mine" and not old_render.exists() and (run_dir / "config.yaml").exists()


def test_overwrite_never_touches_a_folder_that_is_not_a_run(capsys, tmp_path, tiny_pixel_prior):
    thesis = tmp_path / "important" / "thesis.txt"  # issue 18, case 1: --overwrite deleted it
    thesis.parent.mkdir()
    thesis.write_text("precious")
    for extra in ([], ["--overwrite"]):
        code, line = _run(capsys, "run", TOY, "prompt=a red cube", "name=important", *_fast(tmp_path, tiny_pixel_prior), *extra)
        assert code == 2 and "is not an sds3d run folder" in line and "leaves it alone" in line
    assert thesis.read_text() == "precious" and sorted(p.name for p in thesis.parent.iterdir()) == ["thesis.txt"]


def test_a_run_path_that_is_a_file_and_a_failed_start_leave_nothing(capsys, tmp_path, tiny_pixel_prior):
    (tmp_path / "taken").write_text("a file")
    code, line = _run(capsys, "run", TOY, "prompt=a red cube", "name=taken", *_fast(tmp_path, tiny_pixel_prior))
    assert code == 2 and "is a file, not a run folder" in line
    code, line = _run(capsys, "run", TOY, "prompt=a red cube", "name=start", f"out_dir={tmp_path}",
                      f"prior.name_or_path={tmp_path / 'no-prior'}")
    assert code == 2 and "does not exist" in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken"]  # no empty run folder left behind


def test_resume_refuses_shape_changes_and_foreign_checkpoints(capsys, tmp_path, tiny_pixel_prior):
    base = ["run", TOY, "prompt=a red cube", *_fast(tmp_path, tiny_pixel_prior), "trainer.max_steps=1"]
    assert main(base + ["name=a"]) == 0
    assert main(base + ["name=b", "field.hidden_dim=8"]) == 0
    run_a, run_b = tmp_path / "a", tmp_path / "b"
    code, line = _run(capsys, "run", "--resume", str(run_a), "field.hidden_dim=64")
    assert code == 2 and "--resume keeps the run's field settings" in line
    (run_a / "ckpt" / "last.pt").write_bytes((run_b / "ckpt" / "last.pt").read_bytes())  # another config's checkpoint
    code, line = _run(capsys, "run", "--resume", str(run_a), "trainer.max_steps=2")
    assert code == 2 and "does not match its config.yaml" in line
    import torch

    torch.save({"step": 1}, run_a / "ckpt" / "last.pt")  # no scene, no trainer state
    code, line = _run(capsys, "run", "--resume", str(run_a), "trainer.max_steps=2")
    assert code == 2 and "not an sds3d checkpoint" in line


def test_a_run_that_skips_too_many_steps_fails_without_a_mesh(capsys, tmp_path, tiny_pixel_prior):
    # guidance.scale=1e30: every loss overflows (issue 18 case 6: 20/20 skipped, exit 0 and a mesh).
    code, line = _run(capsys, "run", TOY, "prompt=a red cube", "name=inf", *_fast(tmp_path, tiny_pixel_prior),
                      "trainer.max_steps=20", "guidance.scale=1e30")
    assert code == 2 and "steps were skipped" in line and "trainer.max_skipped_fraction=0.5" in line
    summary = json.loads((tmp_path / "inf" / "summary.json").read_text())
    assert summary["status"] == "failed" and summary["skipped_steps"] == 11  # stopped once more than half were skipped
    assert not (tmp_path / "inf" / "mesh").exists() and not (tmp_path / "inf" / ".complete").exists()
    for line in (tmp_path / "inf" / "metrics.jsonl").read_text().splitlines():
        json.loads(line, parse_constant=lambda c: pytest.fail(f"{c} in metrics.jsonl"))


def test_out_of_vocabulary_prompt_notice_and_no_toy_metrics(capsys, tmp_path, tiny_pixel_prior):
    code = main(["run", TOY, "prompt=a red cube next to a blue sphere", "name=two", *_fast(tmp_path, tiny_pixel_prior)])
    assert code == 0
    err = capsys.readouterr().err.splitlines()
    notices = [i for i, line in enumerate(err) if line.startswith("sds3d: notice:")]
    assert len(notices) == 1 and "next, to" in err[notices[0]] and "sphere" in err[notices[0]]
    assert notices[0] < next(i for i, line in enumerate(err) if "orbit frames" in line)  # before the run, not lost in it
    assert not any("UserWarning" in line for line in err)
    summary = json.loads((tmp_path / "two" / "summary.json").read_text())
    assert summary["prompt_check"]["unknown_words"] == ["next", "to"] and "eval" not in summary  # not graded as a red cube
    code, line = _run(capsys, "eval", str(tmp_path / "two"))
    assert code == 2 and "is not a toy-world prompt" in line


def test_export_render_eval_phase_lines_and_render_out(capsys, tmp_path, tiny_pixel_prior):
    assert main(["run", TOY, "prompt=a red cube", "name=r", *_fast(tmp_path, tiny_pixel_prior)]) == 0
    run_dir = tmp_path / "r"
    capsys.readouterr()
    before = (run_dir / "orbit.mp4").read_bytes()
    assert main(["render", str(run_dir), "--frames", "3", "--out", str(tmp_path / "turn.gif")]) == 0
    err = capsys.readouterr().err
    assert "loading the scene" in err and "rendering 3 orbit frames" in err
    assert (tmp_path / "turn.gif").stat().st_size > 0 and (run_dir / "orbit.mp4").read_bytes() == before  # kept
    assert main(["render", str(run_dir), "--frames", "3"]) == 0
    assert "replacing the run's orbit video (give --out PATH to keep it)" in capsys.readouterr().err
    code, line = _run(capsys, "render", str(run_dir), "--out", str(tmp_path / "turn.txt"))
    assert code == 2 and "give a .mp4 or .gif file" in line
    assert main(["export", str(run_dir), "--resolution", "12", "--format", "ply"]) == 0
    err = capsys.readouterr().err
    assert "extracting the mesh (12^3 grid)" in err and "writing ply" in err
    assert sorted(p.name for p in (run_dir / "mesh").iterdir()) == ["mesh.json", "mesh.ply"]  # replaced whole
    assert main(["export", str(run_dir)]) == 0 and (run_dir / "mesh" / "mesh.obj").exists()  # the run's formats
    assert main(["eval", str(run_dir)]) == 0 and "evaluating against the toy world" in capsys.readouterr().err


def test_version_doctor_and_help_defaults(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0 and capsys.readouterr().out.startswith("sds3d ")
    assert main(["doctor"]) == 0
    assert main(["doctor", "--prior", "/no/such/prior"]) == 1 and "NOT FOUND" in capsys.readouterr().out
    for command in ("export", "render", "eval", "doctor", "train-prior"):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        out = capsys.readouterr().out
        options = [line.split()[0] for line in out.splitlines() if line.strip().startswith("--") and line.split()[0] != "--help"]
        lines = out.split("options:")[1]
        for option in options:  # every option has a help text that ends with its default
            text = lines.split(option, 1)[1].split("\n  -", 1)[0]
            assert "default" in text, (command, option)


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
