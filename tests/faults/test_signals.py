"""SIGTERM (timeout, docker stop, Slurm, Kubernetes) and SIGINT (Ctrl-C): finish the step, checkpoint, one
line, exit 143 / 130 -- in runs and in sweeps, which forward the signal to their workers once."""

from __future__ import annotations

import csv
import signal

import pytest
from _support import TOY, TRACEBACK, assert_same_run, fast, kill_at_step, metric_lines, scene_state, start, temporaries, wait_for

from sds3d.cli import main

pytestmark = pytest.mark.faults


@pytest.mark.parametrize("signum, code, name", [(signal.SIGTERM, 143, "SIGTERM"), (signal.SIGINT, 130, "Ctrl-C")])
def test_a_signal_checkpoints_the_run_and_resume_equals_uninterrupted(tmp_path, tiny_pixel_prior, reference, signum, code, name,
                                                                      record_property):
    run_dir = tmp_path / "run"
    stopped = kill_at_step(start("run", TOY, "prompt=a red cube", "name=run", *fast(tmp_path, tiny_pixel_prior)), run_dir, 3, signum)
    record_property("tracebacks", stopped.stderr.count(TRACEBACK))
    assert stopped.returncode == code, stopped.stderr
    last = stopped.stderr.strip().splitlines()[-1]
    step = scene_state(run_dir)["step"]
    assert last == f"sds3d: interrupted ({name}) at step {step}; checkpoint saved. Continue with: sds3d run --resume {run_dir}"
    assert step >= 3 and TRACEBACK not in stopped.stderr and temporaries(run_dir) == []
    assert main(["run", "--resume", str(run_dir)]) == 0
    assert_same_run(reference, run_dir)


def test_a_signal_before_the_first_step_leaves_no_folder(tmp_path, tiny_pixel_prior, record_property):
    proc = start("run", TOY, "prompt=a red cube", "name=run", *fast(tmp_path, tiny_pixel_prior))
    assert proc.stderr.readline().startswith("sds3d: run folder")  # printed at once; the prior loads next
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    record_property("tracebacks", err.count(TRACEBACK))
    assert proc.returncode == 143 and err.strip().endswith("before the first step; nothing was saved"), err
    assert list(tmp_path.iterdir()) == []


# Long enough that neither run can finish between the check for its second step and the signal (with
# 8 steps one sometimes did, and was rightly "done" rather than interrupted); the tiny prior's steps
# are milliseconds, so resuming the rest stays quick.
SWEEP_STEPS = 200


def _sweep(out, prior, *extra):
    return start("sweep", TOY, *fast(out.parent / "unused", prior, SWEEP_STEPS)[1:], "--grid", "guidance.scale=3,5", "--prompts", "a red cube",
                 "--out", str(out), *extra)


@pytest.mark.parametrize("signum, jobs", [(signal.SIGTERM, "2"), (signal.SIGINT, "1")], ids=["sigterm-2-workers", "sigint-in-process"])
def test_a_signal_to_a_sweep_reaches_its_runs_and_the_sweep_resumes(tmp_path, tiny_pixel_prior, signum, jobs, record_property):
    out = tmp_path / "sweep"
    proc = _sweep(out, tiny_pixel_prior, "--jobs", jobs)
    runs = lambda: sorted(p for p in out.glob("a-red-cube__*") if p.is_dir())  # noqa: E731
    wait_for(lambda: len(runs()) >= int(jobs) and all(metric_lines(r) >= 2 for r in runs()), proc, what="the runs' second steps")
    proc.send_signal(signum)  # to the sweep only: it forwards the signal to its workers
    _, err = proc.communicate(timeout=180)
    logs = "".join(p.read_text() for p in (out / "logs").glob("*.log")) if (out / "logs").exists() else ""
    record_property("tracebacks", (err + logs).count(TRACEBACK))
    assert proc.returncode == 128 + signum, err
    assert f"sweep interrupted ({'SIGTERM' if signum == signal.SIGTERM else 'Ctrl-C'})" in err.strip().splitlines()[-1]
    assert TRACEBACK not in err + logs
    started = [r for r in runs() if (r / "ckpt" / "last.pt").is_file()]
    assert len(started) >= int(jobs) and all(not (r / ".complete").exists() for r in started)
    assert all(scene_state(r)["step"] >= 2 for r in started)  # each checkpointed the steps it had done
    rows = list(csv.DictReader((out / "summary.csv").read_text().splitlines()))
    assert {r["status"] for r in rows} == {"interrupted"}
    # Again: the interrupted runs resume, and the sweep finishes.
    assert main(["sweep", TOY, *fast(out.parent / "unused", tiny_pixel_prior, SWEEP_STEPS)[1:], "--grid", "guidance.scale=3,5",
                 "--prompts", "a red cube", "--out", str(out)]) == 0
    assert all((r / ".complete").is_file() for r in runs()) and all(temporaries(r) == [] for r in runs())
