"""Files from disk are data: a pickle planted in a checkpoint or a prior folder, or a YAML tag in a config,
never runs (its marker file never appears); each ends in one line, exit 2."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from _support import TOY, fast

from sds3d.cli import main

pytestmark = pytest.mark.faults


class Payload:
    """Unpickling it creates ``path`` (if anything ever unpickles it with code allowed)."""

    def __init__(self, path: Path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


@pytest.mark.parametrize("command", ["resume", "export", "render", "eval"])
def test_a_pickle_planted_in_a_checkpoint_never_runs(tmp_path, reference, capsys, command):
    run_dir = shutil.copytree(reference, tmp_path / "run")
    marker = tmp_path / "pwned"
    torch.save({"step": 1, "scene": {"field.x": Payload(marker)}}, run_dir / "ckpt" / "last.pt")
    argv = ["run", "--resume", str(run_dir), "trainer.max_steps=9"] if command == "resume" else [command, str(run_dir)]
    assert main(argv) == 2
    assert "corrupt or truncated, or holds more than data" in capsys.readouterr().err.strip().splitlines()[-1]
    assert not marker.exists()


@pytest.mark.parametrize("part, weights", [("unet", "diffusion_pytorch_model"), ("text_encoder", "model")])
def test_a_pickle_planted_in_a_prior_folder_never_runs(tmp_path, tiny_pixel_prior, capsys, part, weights):
    prior = shutil.copytree(tiny_pixel_prior, tmp_path / "prior")
    marker = tmp_path / "pwned"
    (prior / part / f"{weights}.safetensors").unlink()
    name = "diffusion_pytorch_model.bin" if part == "unet" else "pytorch_model.bin"
    torch.save({"weight": Payload(marker)}, prior / part / name)
    assert main(["run", TOY, "prompt=a red cube", "name=run", *fast(tmp_path / "out", tiny_pixel_prior), f"prior.name_or_path={prior}"]) == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    # The pickle is refused before anything opens it: the folder has no safetensors weights for that part.
    assert f"prior/{part} holds only {name}" in last and "safetensors" in last, last
    assert not marker.exists() and not (tmp_path / "out" / "run").exists()


def test_a_yaml_tag_in_a_config_never_runs(tmp_path, capsys):
    marker = tmp_path / "pwned"
    config = tmp_path / "evil.yaml"
    config.write_text(f"prompt: !!python/object/apply:builtins.open ['{marker}', 'w']\n")
    assert main(["run", str(config), f"out_dir={tmp_path}"]) == 2
    assert "could not parse" in capsys.readouterr().err
    assert main(["run", TOY, f"out_dir={tmp_path}", f"prompt=!!python/object/apply:builtins.open ['{marker}', 'w']",
                 "trainer.max_steps=x"]) == 2
    assert not marker.exists()
