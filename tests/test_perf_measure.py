"""scripts/perf_measure.py: the quality summary and its targets, scaled schedules, and filling the
TO MEASURE blocks of docs/performance.md (markers kept, other text untouched)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from script_module import load_script

REPO = Path(__file__).resolve().parents[1]
pm = load_script("perf_measure")


def _row(prompt, iou, colour=0.1, status="done"):
    return {"prompt": prompt, "iou": str(iou), "colour_error": str(colour), "train_seconds": "10", "status": status}


def test_summary_and_targets():
    rows = [_row("a red cone", 0.95), _row("a blue cone", 0.91), _row("a red cube", 0.88), _row("a red torus", 0.8, 0.15),
            _row("a red sphere", 0.97)]
    s = pm.summarise(rows)
    assert s["mean_iou"] == pytest.approx((0.95 + 0.91 + 0.88 + 0.8 + 0.97) / 5) and s["min_iou"]["cone"] == 0.91
    assert s["max_colour"] == 0.15 and s["failed"] == 0
    assert pm.check_targets(s) == [f"mean IoU {s['mean_iou']} < 0.925"]
    worse = pm.summarise(rows + [_row("a blue cube", 0.80, 0.3), _row("a blue torus", "", status="failed")])
    missed = pm.check_targets(worse)
    assert any("min cube IoU 0.8 < 0.85" in m for m in missed) and any("max colour error 0.3" in m for m in missed)
    assert any("1 runs failed" in m for m in missed)


def test_fill_replaces_only_the_named_blocks(tmp_path):
    doc = tmp_path / "perf.md"
    doc.write_text("intro\n<!-- fill:a -->\nTO MEASURE\n<!-- /fill:a -->\nmiddle\n<!-- fill:b -->\nTO MEASURE\n<!-- /fill:b -->\nend\n")
    ab = {"prompt": "a green cone", "threads": 2, "configs": {"A": "configs/toy.yaml", "B": "configs/toy.yaml"},
          "runs": {n: [{k: v * f for k, v in dict(startup=1.0, load_prior=2.0, train=10.0, orbit=1.0, export=1.0, eval=1.0,
                                                  total=16.0, cpu=20.0).items()} for f in (1.0, 3.0, 2.0)] for n in ("A", "B")}}
    ab["runs"]["B"] = [{k: 2 * v for k, v in r.items()} for r in ab["runs"]["B"]]
    (tmp_path / "ab.json").write_text(json.dumps(ab))
    pm.cmd_fill(type("Args", (), {"blocks": [f"a={tmp_path / 'ab.json'}"], "doc": str(doc)}))
    text = doc.read_text()
    assert text.startswith("intro\n<!-- fill:a -->\n3 runs each") and text.endswith("middle\n<!-- fill:b -->\nTO MEASURE\n<!-- /fill:b -->\nend\n")
    assert "| total | 32.00 | 64.00 | 0.50 |" in text  # medians 2 x 16 and 2 x 2 x 16
    with pytest.raises(SystemExit, match="no block"):
        pm.fill(text, {"c": "x"})


def test_the_performance_doc_has_every_block_the_commands_fill():
    text = (REPO / "docs" / "performance.md").read_text()
    for name in ("ab-toy", "ab-fast", "ttq", "quality", "quality-toy", "throughput", "sd-batch", "gpu"):
        assert f"<!-- fill:{name} -->" in text and f"<!-- /fill:{name} -->" in text, name
        assert f"{name}=" in text, f"no fill command for {name}"
