"""scripts/bench_run.py: A/B runs alternate, the table shows medians and A / B, --json keeps every run;
one real (tiny) run measures its phases from a fresh process."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from script_module import load_script

REPO = Path(__file__).resolve().parents[1]
br = load_script("bench_run")


def _fake(total, tree):
    phases = {"load_prior": 1.0, "train": total - 4.0, "orbit": 1.0, "export": 0.5, "eval": 0.5}
    return {**phases, "startup": 1.0, "total": total, "cpu": total * 1.5, "steps": 600, "mesh_iou": 0.9, "colour_error": 0.1,
            "recognition": 1.0, "tree": str(tree)}


def test_ab_alternates_and_prints_medians_and_the_ratio(tmp_path, monkeypatch, capsys):
    other = tmp_path / "base"
    (other / "sds3d").mkdir(parents=True)
    (other / "sds3d" / "__init__.py").write_text("")
    order, totals = [], {"A": iter([10.0, 30.0, 12.0]), "B": iter([20.0, 21.0, 40.0])}

    def fake_run(tree, config, prompt, threads, overrides):
        name = "A" if tree == br.REPO else "B"
        order.append((name, config, tuple(overrides)))
        return _fake(next(totals[name]), tree)

    monkeypatch.setattr(br, "run_once", fake_run)
    out = tmp_path / "ab.json"
    br.main(["--against", str(other), "--against-config", "configs/old.yaml", "--repeats", "3", "--json", str(out), "trainer.max_steps=9"])
    assert [o[0] for o in order] == ["A", "B"] * 3
    assert {o[1] for o in order if o[0] == "B"} == {"configs/old.yaml"} and {o[2] for o in order} == {("trainer.max_steps=9",)}
    rows = {line.split()[0]: line.split() for line in capsys.readouterr().out.splitlines() if line.startswith("  ")}
    assert rows["total"][1:] == ["12.00", "s", "21.00", "s", f"{12 / 21:.2f}"]  # medians 12 and 21
    data = json.loads(out.read_text())
    assert [r["total"] for r in data["runs"]["A"]] == [10.0, 30.0, 12.0] and data["configs"]["B"] == "configs/old.yaml"


def test_against_must_be_a_checkout(tmp_path):
    with pytest.raises(SystemExit):
        br.main(["--against", str(tmp_path)])


def test_one_tiny_run_in_a_fresh_process_has_every_phase(tiny_pixel_prior):
    r = br.run_once(REPO, "configs/toy.yaml", "a red cube", 1,
                    [f"prior.name_or_path={tiny_pixel_prior}", "trainer.max_steps=2", "trainer.val_every=0", "orbit.frames=2",
                     "orbit.resolution=16", "export.resolution=16", "export.texture=vertex", "eval.enabled=false"])
    assert r["steps"] == 2 and r["total"] > r["train"] > 0 and r["startup"] > 0 and r["cpu"] > 0
    assert r["total"] == pytest.approx(r["startup"] + sum(r[k] for k in ("load_prior", "train", "orbit", "export", "eval")))
