"""scripts/bench_splat.py --runs: the trained Gaussians of a run's checkpoint, and one line for a folder without them."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from script_module import load_script

REPO = Path(__file__).resolve().parents[1]


def _script():
    return load_script("bench_splat")


def test_trained_gaussians_are_the_checkpoints_activated_parameters(tmp_path):
    bench = _script()
    (tmp_path / "ckpt").mkdir()
    scene = {"params.means": torch.tensor([[0.1, 0.2, 0.3]]), "params.quats": torch.tensor([[1.0, 0.0, 0.0, 0.0]]),
             "params.scales": torch.log(torch.tensor([[0.01, 0.02, 0.04]])), "params.opacities": torch.tensor([0.0]),
             "params.sh0": torch.tensor([[[1.0, 0.0, -1.0]]])}
    torch.save({"step": 3, "scene": scene}, tmp_path / "ckpt" / "last.pt")
    means, quats, scales, opacities, colours = bench.trained_gaussians(tmp_path)
    assert torch.allclose(scales, torch.tensor([[0.01, 0.02, 0.04]])) and opacities.tolist() == [0.5]
    c0 = 1 / (2 * torch.pi**0.5)  # Y_0^0
    assert torch.allclose(colours, torch.tensor([[0.5 + c0, 0.5, 0.5 - c0]]))
    assert torch.equal(means, scene["params.means"]) and torch.equal(quats, scene["params.quats"])


def test_a_run_without_gaussians_is_one_line_and_exit_2(tmp_path, monkeypatch, capsys):
    bench = _script()
    (tmp_path / "ckpt").mkdir()
    torch.save({"step": 3, "scene": {"field.weight": torch.zeros(2)}}, tmp_path / "ckpt" / "last.pt")
    for run in (tmp_path, tmp_path / "missing"):
        monkeypatch.setattr("sys.argv", ["bench_splat.py", "--runs", str(run)])
        with pytest.raises(SystemExit) as exit_info:
            bench.main()
        err = capsys.readouterr().err.strip()
        assert exit_info.value.code == 2 and len(err.splitlines()) == 1 and str(run) in err
