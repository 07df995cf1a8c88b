"""Two processes on one run folder (or one sweep folder): the second exits 2 naming the first's pid."""

from __future__ import annotations

import json
import re

import pytest
from _support import TOY, TRACEBACK, fast, metric_lines, start, wait_for

from sds3d.cli import main

pytestmark = pytest.mark.faults


def test_two_runs_started_together_into_one_folder(tmp_path, tiny_pixel_prior, record_property):
    """Issue 18 case 4: both exited 0 into the same folder with interleaved metrics.jsonl."""
    args = ["run", TOY, "prompt=a red cube", "name=conc", *fast(tmp_path, tiny_pixel_prior)]
    procs = [start(*args), start(*args)]
    results = [(p.pid, p.wait(timeout=300), p.stderr.read()) for p in procs]
    record_property("tracebacks", sum(err.count(TRACEBACK) for _, _, err in results))
    (winner,) = [r for r in results if r[1] == 0]
    (loser,) = [r for r in results if r[1] != 0]
    assert loser[1] == 2, loser[2]
    last = loser[2].strip().splitlines()[-1]
    assert re.search(rf"run folder .*conc is in use by another sds3d process \(pid {winner[0]}\)", last), last
    steps = [json.loads(line)["step"] for line in (tmp_path / "conc" / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 9))  # one run's lines, in order


def test_a_second_sweep_on_one_folder_and_an_export_during_a_run(tmp_path, tiny_pixel_prior, capsys):
    out = tmp_path / "sweep"
    sweep = ["sweep", TOY, *fast(tmp_path, tiny_pixel_prior, steps=400)[1:], "--grid", "guidance.scale=3,5", "--prompts", "a red cube",
             "--out", str(out)]
    first = start(*sweep)
    try:
        run_dir = out / "a-red-cube__seed-0__guidance.scale-3"
        wait_for(lambda: metric_lines(run_dir) >= 1, first, what="the first sweep's first step")
        assert main(sweep) == 2
        assert f"sweep folder {out} is in use by another sds3d process (pid {first.pid})" in capsys.readouterr().err
        assert main(["export", str(run_dir)]) == 2  # the run in it is locked too
        assert f"is in use by another sds3d process (pid {first.pid})" in capsys.readouterr().err
    finally:
        first.kill()
        first.wait()
