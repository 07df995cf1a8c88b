"""kill -9 at any moment loses at most the step in flight: a resumed run equals an uninterrupted one."""

from __future__ import annotations

import random
import signal

import pytest
from _support import TOY, assert_same_run, fast, kill_at_step, start, temporaries, wait_for

from sds3d.cli import main
from sds3d.sweep import run_state

pytestmark = pytest.mark.faults


def test_kill9_at_random_steps_then_resume_equals_uninterrupted(tmp_path, tiny_pixel_prior, reference):
    rng = random.Random(0)
    args = ["prompt=a red cube", "name=run", *fast(tmp_path, tiny_pixel_prior)]
    run_dir = tmp_path / "run"
    first, second = sorted(rng.sample(range(1, 8), 2))
    killed = kill_at_step(start("run", TOY, *args), run_dir, first)
    assert killed.returncode == -signal.SIGKILL
    killed = kill_at_step(start("run", "--resume", str(run_dir)), run_dir, second)
    assert killed.returncode == -signal.SIGKILL
    assert main(["run", "--resume", str(run_dir)]) == 0  # (a traceback would fail the test)
    assert_same_run(reference, run_dir)
    assert temporaries(run_dir) == [] and (run_dir / ".complete").is_file()


def test_kill9_during_export_is_not_done_and_resume_finishes_it(tmp_path, tiny_pixel_prior, reference):
    """Issue 18 case 5: a sweep called a run done (and skipped it) after a kill during its export."""
    run_dir = tmp_path / "run"
    proc = start("run", TOY, "prompt=a red cube", "name=run", *fast(tmp_path, tiny_pixel_prior))
    lines = []

    def exporting() -> bool:
        lines.append(proc.stderr.readline())
        return "extracting the mesh" in lines[-1]

    wait_for(exporting, proc, what="the mesh export")
    proc.kill()
    proc.communicate()
    assert not (run_dir / ".complete").exists() and run_state(run_dir) == "resume"  # not "done"
    assert main(["run", "--resume", str(run_dir)]) == 0
    assert run_state(run_dir) == "done" and temporaries(run_dir) == []
    assert_same_run(reference, run_dir)
