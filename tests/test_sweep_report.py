"""A sweep's report: which runs the means leave out and why; the comparison image's legend."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from sds3d.sweep.grid import RunSpec
from sds3d.sweep.report import LEGEND, collect_rows, write_comparison, write_markdown


def _run(prompt: str) -> RunSpec:
    return RunSpec(prompt=prompt, seed=0, overrides=(("guidance.scale", "3"),))


def _write(folder: Path, summary: dict) -> None:
    folder.mkdir(parents=True)
    (folder / "summary.json").write_text(json.dumps(summary))


def _sweep(tmp_path: Path) -> tuple[list[RunSpec], list[dict]]:
    runs = [_run("a red cube"), _run("a hamburger"), _run("a fail cone"), _run("a blue cube")]
    _write(tmp_path / runs[0].name, {"train_seconds": 10.0, "final_loss_sds": 0.5,
                                     "eval": {"mesh_iou": 0.9, "colour_error": 0.1, "recognition": 1.0, "skipped": {}}})
    _write(tmp_path / runs[1].name, {"train_seconds": 20.0, "final_loss_sds": 0.7})  # no toy metrics
    _write(tmp_path / runs[2].name, {"status": "failed", "error": "RuntimeError: boom"})
    # runs[3] never ran: no folder
    return runs, collect_rows(runs, tmp_path)


def test_means_say_how_many_runs_they_cover_and_name_the_others(tmp_path):
    runs, rows = _sweep(tmp_path)
    text = write_markdown(rows, tmp_path / "summary.md", ["guidance.scale"]).read_text()
    table = [line for line in text.splitlines() if line.startswith("| 3 |")][0].split(" | ")
    # runs 4, failed 1; iou over 1 of 4 runs; train_seconds over 2 of 4: (10 + 20) / 2.
    assert table[1:3] == ["4", "1"] and table[3] == "0.9 (1 of 4)" and table[6] == "15 (2 of 4)"
    left = text.split("## Left out of the means")[1].split("## Runs")[0]
    assert "`a-hamburger__seed-0__guidance.scale-3` left out of iou, colour_error, recognition: no toy-world eval" in left
    assert "`a-fail-cone__seed-0__guidance.scale-3` left out of iou, colour_error, recognition, train_seconds, final_loss_sds: failed (RuntimeError: boom)" in left
    assert "`a-blue-cube__seed-0__guidance.scale-3` left out of iou, colour_error, recognition, train_seconds, final_loss_sds: not run yet" in left
    assert "a-red-cube__seed-0" not in left


def test_a_full_sweep_says_nothing_was_left_out(tmp_path):
    run = _run("a red cube")
    _write(tmp_path / run.name, {"train_seconds": 10.0, "final_loss_sds": 0.5, "eval": {"mesh_iou": 0.9, "colour_error": 0.1, "recognition": 1.0}})
    text = write_markdown(collect_rows([run], tmp_path), tmp_path / "summary.md", ["guidance.scale"]).read_text()
    assert "None: every run has every metric." in text and "(1 of" not in text


def test_a_skipped_metric_carries_the_evals_reason(tmp_path):
    run = _run("a red cube")
    _write(tmp_path / run.name, {"train_seconds": 1.0, "final_loss_sds": 0.5, "eval": {
        "mesh_iou": 0.9, "colour_error": 0.1, "recognition": None, "skipped": {"recognition": "no scene"}}})
    (row,) = collect_rows([run], tmp_path)
    assert row["note"] == "no recognition: no scene"


def test_comparison_image_explains_its_abbreviations(tmp_path):
    runs, rows = _sweep(tmp_path)
    path = write_comparison(rows, runs, tmp_path, tmp_path / "comparison.png")
    image = np.asarray(Image.open(path).convert("L"))
    line_h, pad, cell, text_h = 12, 4, 128, 3 * 12 + 4
    grid_h = 2 * line_h + 2 * pad + 4 * (cell + text_h + pad)
    legend = image[grid_h:]
    assert legend.shape[0] >= line_h and (legend < 200).any()  # text under the grid
    assert {item.split(":")[0] for item in LEGEND} >= {"IoU", "col", "rec", "s", "loss"}
