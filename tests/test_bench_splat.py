"""scripts/bench_splat.py --runs: the trained Gaussians of a run folder, and one line for a folder without them."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from script_module import load_script

from sds3d.checkpoint import load_checkpoint
from sds3d.config import load_config
from sds3d.pipeline import run
from sds3d.runs import prepare_run_dir

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def _script():
    return load_script("bench_splat")


def _tiny_run(tmp_path, prior, config: str) -> Path:
    cfg = load_config(str(CONFIGS / config), [
        "prompt=a red cube", f"out_dir={tmp_path}", f"prior.name_or_path={prior}", "trainer.max_steps=2",
        "trainer.val_every=0", "trainer.progress=false", "trainer.threads=1", "render.resolution=16",
        *(["scene.gaussians.n_init=50"] if "gaussians" in config else [])])
    run_dir = prepare_run_dir(cfg)
    run(cfg, run_dir, finish_run=False)
    return run_dir


def test_trained_gaussians_are_the_checkpoints_activated_parameters(tmp_path, tiny_pixel_prior):
    run_dir = _tiny_run(tmp_path, tiny_pixel_prior, "toy-gaussians.yaml")
    means, quats, scales, opacities, colours = _script().trained_gaussians(run_dir)
    # Independently from the raw checkpoint: log-scales, logit opacities, the SH band-0 coefficient.
    p = {k.removeprefix("params."): v.float() for k, v in load_checkpoint(run_dir / "ckpt" / "last.pt")["scene"].items()
         if k.startswith("params.")}
    c0 = 1 / (2 * torch.pi**0.5)  # Y_0^0
    assert means.shape == (50, 3) and torch.allclose(means, p["means"])
    assert torch.allclose(scales, p["scales"].exp()) and torch.allclose(opacities, torch.sigmoid(p["opacities"]))
    assert torch.allclose(colours, 0.5 + c0 * p["sh0"][:, 0], atol=1e-6)
    assert torch.allclose(quats, p["quats"] / p["quats"].norm(dim=-1, keepdim=True), atol=1e-6)


def test_a_run_without_gaussians_is_one_line_and_exit_2(tmp_path, tiny_pixel_prior, monkeypatch, capsys):
    bench = _script()
    nerf = _tiny_run(tmp_path, tiny_pixel_prior, "toy.yaml")
    for folder in (nerf, tmp_path / "missing"):
        monkeypatch.setattr("sys.argv", ["bench_splat.py", "--runs", str(folder)])
        with pytest.raises(SystemExit) as exit_info:
            bench.main()
        err = capsys.readouterr().err.strip()
        assert exit_info.value.code == 2 and len(err.splitlines()) == 1 and str(folder) in err
