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
    return [f"out_dir={tmp_path}", f"guidance.pretrained={prior}", "trainer.max_steps=2", "trainer.progress=false",
            "render.resolution=16", "render.num_samples=8", "trainer.val_every=0", "trainer.orbit_frames=2",
            "trainer.orbit_resolution=16", "export.resolution=16", "export.texture=vertex", "trainer.threads=1"]


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
    code, line = _run(capsys, "run", TOY, "prompt=a red cube", f"out_dir={tmp_path}", f"guidance.pretrained={tmp_path / 'nope'}")
    assert code == 2 and "does not exist" in line
    blocker = tmp_path / "file"
    blocker.write_text("x")
    code, line = _run(capsys, "run", TOY, "prompt=a red cube", f"out_dir={blocker / 'sub'}")
    assert code == 2 and "cannot write to out_dir" in line


def test_existing_run_resume_and_corrupt_checkpoint(capsys, tmp_path, tiny_pixel_prior):
    args = ["run", TOY, "prompt=a red cube", *_fast(tmp_path, tiny_pixel_prior)]
    assert main(args) == 0
    run_dir = tmp_path / "a-red-cube"
    assert (run_dir / "mesh" / "mesh.obj").exists() or (run_dir / "orbit.mp4").exists()
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
