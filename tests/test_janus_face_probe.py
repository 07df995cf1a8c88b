"""scripts/janus_face_probe.py: the white-class area it counts, and a run on a tiny prior."""

from __future__ import annotations

import torch
from script_module import load_script


def test_white_area_counts_the_specs_white_class_inside_the_silhouette():
    probe = load_script("janus_face_probe")
    img = torch.zeros(1, 3, 2, 3)
    img[0, :, 0, 0] = torch.tensor([0.95, 0.95, 0.95])  # white, inside
    img[0, :, 0, 1] = torch.tensor([0.95, 0.60, 0.95])  # too coloured (max - min 0.35 > 0.25)
    img[0, :, 0, 2] = torch.tensor([0.56, 0.56, 0.80])  # white (min 0.56 >= 0.55, spread 0.24)
    img[0, :, 1, 0] = torch.tensor([0.50, 0.50, 0.50])  # too dark
    img[0, :, 1, 1] = torch.tensor([1.00, 1.00, 1.00])  # white, but outside the silhouette
    mask = torch.ones(1, 1, 2, 3)
    mask[0, 0, 1, 1] = 0.0
    assert probe.white_area(img, mask).tolist() == [2.0]


def test_probe_prints_a_row_per_object_render_and_view(tiny_pixel_prior, monkeypatch, capsys):
    probe = load_script("janus_face_probe")
    monkeypatch.setattr(probe, "TIMESTEPS", (100, 900))
    monkeypatch.setattr("sys.argv", ["janus_face_probe.py", "--prior", str(tiny_pixel_prior), "--draws", "2"])
    probe.main()
    rows = capsys.readouterr().out.strip().splitlines()[2:]
    assert len(rows) == 8 and all(len(r.split()) == 3 + (r.split()[1] == "with") + 2 * 2 for r in rows)
