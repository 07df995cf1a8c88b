"""scripts/keep_results.py: what it keeps lets a later sweep skip the finished runs and a table read them."""

from __future__ import annotations

import json

from script_module import load_script

from sds3d.runs import COMPLETE
from sds3d.sweep.execute import run_state

keep_results = load_script("keep_results")


def _run(folder, complete: bool, big_png: bool = False):
    (folder / "ckpt").mkdir(parents=True)
    (folder / "ckpt" / "last.pt").write_bytes(b"x" * 1000)
    (folder / "config.yaml").write_text("prompt: a red owl\n")
    (folder / "summary.json").write_text(json.dumps({"eval": {"iou": 0.5}}))
    (folder / "front.png").write_bytes(b"p" * (300_000 if big_png else 100))
    if complete:
        (folder / COMPLETE).write_text("")


def test_only_finished_runs_and_only_their_small_files_are_kept(tmp_path):
    sweep, dest = tmp_path / "sweep", tmp_path / "kept"
    _run(sweep / "a-red-owl-s0", complete=True)
    _run(sweep / "a-red-owl-s1", complete=False)
    _run(sweep / "sub" / "a-big-s0", complete=True, big_png=True)
    assert keep_results.main([str(sweep), str(dest), "--images"]) == 0
    kept = sorted(p.relative_to(dest).as_posix() for p in dest.rglob("*") if p.is_file())
    assert kept == ["a-red-owl-s0/.complete", "a-red-owl-s0/config.yaml", "a-red-owl-s0/front.png",
                    "a-red-owl-s0/summary.json", "sub/a-big-s0/.complete", "sub/a-big-s0/config.yaml",
                    "sub/a-big-s0/summary.json"]
    assert run_state(dest / "a-red-owl-s0") == "done"  # a sweep restored from it skips the run
    assert json.loads((dest / "a-red-owl-s0" / "summary.json").read_text()) == {"eval": {"iou": 0.5}}


def test_a_missing_sweep_folder_is_one_line_and_exit_2(tmp_path, capsys):
    assert keep_results.main([str(tmp_path / "nope"), str(tmp_path / "kept")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "is not a folder" in err[0]
    assert not (tmp_path / "kept").exists()
