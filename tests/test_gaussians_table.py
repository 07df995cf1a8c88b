"""scripts/gaussians_table.py on a fake sweep folder: means, steps to IoU 0.9, the doc section, the picture."""

from __future__ import annotations

import json
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
from script_module import load_script

REPO = Path(__file__).resolve().parents[1]


def _script():
    return load_script("gaussians_table")


def _fake_run(folder: Path, kind: str, prompt: str, seed: int, steps: int, iou: float, seconds: float, colour: int):
    run_dir = folder / kind / f"{prompt.replace(' ', '-')}-s{seed}-{steps}"
    run_dir.mkdir(parents=True)
    (run_dir / "config.yaml").write_text(f"prompt: {prompt}\nseed: {seed}\nscene:\n  kind: {kind}\ntrainer:\n  max_steps: {steps}\n")
    (run_dir / "summary.json").write_text(json.dumps({
        "train_seconds": seconds, "timings": {"load_prior": 1.0, "train": seconds, "orbit": 0.5},
        "peak_rss_mib": 500.0 + steps, "eval": {"mesh_iou": iou, "colour_error": iou / 10, "recognition": 1.0}}))
    (run_dir / "metrics.jsonl").write_text(json.dumps({"step": steps, **({"gaussians": 1000.0 + steps} if kind == "gaussians" else {})}) + "\n")
    iio.imwrite(run_dir / "orbit.gif", np.full((4, 6, 6, 3), colour, dtype=np.uint8))
    return run_dir


def test_tables_and_picture(tmp_path, monkeypatch):
    table = _script()
    sweep = tmp_path / "sweep"
    ious = {  # (kind, prompt, seed) -> IoU at 300 and 600 steps
        ("nerf", "a red sphere", 0): (0.91, 0.95), ("nerf", "a red sphere", 1): (0.85, 0.92),
        ("nerf", "a blue cube", 0): (0.80, 0.88),
        ("gaussians", "a red sphere", 0): (0.93, 0.94), ("gaussians", "a red sphere", 1): (0.89, 0.89),
        ("gaussians", "a blue cube", 0): (0.86, 0.91),
    }
    for (kind, prompt, seed), (a, b) in ious.items():
        colour = 10 if kind == "nerf" else 200
        _fake_run(sweep, kind, prompt, seed, 300, a, 5.0, colour)
        _fake_run(sweep, kind, prompt, seed, 600, b, 10.0 if kind == "nerf" else 4.0, colour)
    runs = table.load_runs(sweep)
    assert len(runs) == 12
    text = table.tables(runs)
    full_nerf = [c.strip() for c in text.splitlines()[4].split("|")[1:-1]]
    assert full_nerf[:5] == ["nerf", "3", f"{(0.95 + 0.92 + 0.88) / 3:.3f}", f"{(0.095 + 0.092 + 0.088) / 3:.3f}", "1.000"]
    assert full_nerf[5:8] == ["10.0", "11.5", "1100"]  # train s, total s (load + train + orbit), peak RSS
    # Steps to 0.9: NeRF 300, 600, never -> 2 of 3, median 450; Gaussians 300, never, 600.
    steps_rows = [line for line in text.splitlines() if "/3 |" in line]
    assert [c.strip() for c in steps_rows[0].split("|")[1:4]] == ["nerf", "2/3", "450"]
    assert [c.strip() for c in steps_rows[1].split("|")[1:4]] == ["gaussians", "2/3", "450"]
    assert [c.strip() for c in steps_rows[0].split("|")[4:6]] == [f"{(0.91 + 0.85 + 0.80) / 3:.3f}, 6.5 s (3)",
                                                                   f"{(0.95 + 0.92 + 0.88) / 3:.3f}, 11.5 s (3)"]
    assert f"IoU {(0.94 + 0.89 + 0.91) / 3:.3f} vs {(0.95 + 0.92 + 0.88) / 3:.3f} (met)" in text
    assert "time 5.5 s vs 11.5 s, ratio 0.48 (met)" in text
    # Gaussians at 300 steps: IoU 0.893, not within 0.02 of 0.917; at 600 (5.5 s) it is.
    assert "fastest budget within 0.02 of it: 600 steps, 5.5 s, ratio 0.48 (met)" in text
    doc = tmp_path / "gaussians.md"
    doc.write_text("intro\n<!-- results -->\nold\n<!-- /results -->\noutro\n")
    picture = tmp_path / "gaussians.png"
    monkeypatch.setattr("sys.argv", ["gaussians_table.py", str(sweep), "--doc", str(doc), "--picture", str(picture)])
    table.main()
    assert doc.read_text() == "intro\n<!-- results -->\n" + text + "<!-- /results -->\noutro\n"
    image = iio.imread(picture)
    # 16 prompt rows of 6 px (colour-major order), 4 frames of NeRF, a gap, 4 of the Gaussians.
    assert image.shape == (16 * 6, 2 * 4 * 6 + 8, 3)
    from sds3d.toyworld.prompts import all_prompts

    row = all_prompts().index("a red sphere")
    assert (image[row * 6 : row * 6 + 6, :24] == 10).all() and (image[row * 6 : row * 6 + 6, 32:] == 200).all()
    missing = all_prompts().index("a green torus")
    assert (image[missing * 6 : missing * 6 + 6] == 255).all()


def test_needs_both_kinds(tmp_path, monkeypatch, capsys):
    table = _script()
    _fake_run(tmp_path, "nerf", "a red sphere", 0, 600, 0.9, 5.0, 10)
    doc = tmp_path / "d.md"
    doc.write_text("kept\n")
    monkeypatch.setattr("sys.argv", ["gaussians_table.py", str(tmp_path), "--doc", str(doc)])
    with pytest.raises(SystemExit) as exit_info:
        table.main()
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "both scene kinds" in err and len(err.strip().splitlines()) == 1
    assert doc.read_text() == "kept\n"


def test_several_folders_count_as_one_and_a_run_twice_is_refused(tmp_path, monkeypatch, capsys):
    table = _script()
    _fake_run(tmp_path / "a", "nerf", "a red sphere", 0, 600, 0.90, 5.0, 10)
    _fake_run(tmp_path / "b", "nerf", "a red sphere", 1, 600, 0.80, 5.0, 10)
    _fake_run(tmp_path / "b", "gaussians", "a red sphere", 0, 600, 0.70, 5.0, 200)
    doc = tmp_path / "d.md"
    doc.write_text("<!-- results -->\n<!-- /results -->\n")
    monkeypatch.setattr("sys.argv", ["gaussians_table.py", str(tmp_path / "a"), str(tmp_path / "b"), "--doc", str(doc),
                                     "--picture", str(tmp_path / "p.png")])
    table.main()
    assert "| nerf | 2 | 0.850 |" in doc.read_text()
    before = doc.read_text()
    # The same NeRF run reached through two folders (b holds a, too) would count twice: refused.
    _fake_run(tmp_path / "b" / "copy", "nerf", "a red sphere", 0, 600, 0.90, 5.0, 10)
    monkeypatch.setattr("sys.argv", ["gaussians_table.py", str(tmp_path / "a"), str(tmp_path / "b"), "--doc", str(doc)])
    with pytest.raises(SystemExit) as exit_info:
        table.main()
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert "twice" in err and "seed 0" in err and len(err.splitlines()) == 1
    assert doc.read_text() == before
