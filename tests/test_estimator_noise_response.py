"""scripts/estimator_noise_response.py: the restore coefficient, and SDS removing pixel noise on the shipped prior."""

from __future__ import annotations

from pathlib import Path

import torch
from script_module import load_script

REPO = Path(__file__).resolve().parents[1]
enr = load_script("estimator_noise_response")


def test_restore_is_the_fraction_of_the_noise_a_unit_step_removes():
    h = torch.tensor([[1.0, -2.0], [0.5, 0.0]])
    assert enr.restore(h, h) == 1.0  # x - g = x - h: all of it
    assert enr.restore(-0.5 * h, h) == -0.5  # x + h / 2: the noise grows by half
    orthogonal = torch.tensor([[2.0, 1.0], [0.0, 7.0]])  # <., h> = 0
    assert enr.restore(orthogonal, h) == 0.0


def test_sds_removes_pixel_noise_on_a_true_render(capsys):
    enr.main(["--methods", "sds", "--seeds", "1"])
    header, row = capsys.readouterr().out.strip().splitlines()
    assert header.startswith("method | t=0.1")
    cells = row.split(" | ")
    assert cells[0] == "sds" and len(cells) == 1 + len(enr.T_FRACTIONS)
    restores = [float(c.split(", ")[1]) for c in cells[1:]]
    assert all(r > 0 for r in restores), restores
