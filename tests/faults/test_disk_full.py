"""A full disk (or a read-only one) while training, exporting or rendering: one line, exit 2, the previous
outputs byte for byte, no temporaries left to keep the disk full; after freeing space the run goes on.

On a real small tmpfs where the suite runs as root; everywhere, a simulated ENOSPC (every write under the
run folder fails once a byte budget is spent)."""

from __future__ import annotations

import builtins
import errno
import io
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
from _support import TOY, TRACEBACK, assert_same_run, bytes_lost, fast, metric_lines, scene_state, snapshot, start, temporaries, wait_for

from sds3d.cli import main

pytestmark = pytest.mark.faults


@pytest.fixture
def small_disk(tmp_path):
    """A 64 MB tmpfs, unmounted afterwards."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root (the simulated-ENOSPC tests below run everywhere)")
    mnt = tmp_path / "disk"
    mnt.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(mnt)], capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], check=False)


def fill(disk, leave: int):
    """Fill ``disk`` up to ``leave`` free bytes; returns the filler to delete.

    A run may be writing to the same disk meanwhile, so the free space can shrink between ``statvfs`` and
    ``posix_fallocate``: on ENOSPC, measure again and retry (a failed fallocate leaves the file as it was)."""
    filler = disk / "filler"
    with open(filler, "wb") as f:
        for _ in range(50):
            st = os.statvfs(disk)
            size = os.fstat(f.fileno()).st_size + max(0, st.f_bavail * st.f_frsize - leave)
            try:
                os.posix_fallocate(f.fileno(), 0, size)
                return filler
            except OSError as e:
                if e.errno != errno.ENOSPC:
                    raise
    raise AssertionError(f"could not fill {disk}: its free space kept shrinking")


def _last_line(capsys) -> str:
    return capsys.readouterr().err.strip().splitlines()[-1]


def test_reexport_and_render_on_a_full_disk_keep_the_previous_files(small_disk, reference, capsys, record_property):
    """Issue 18 case 2: a failed re-export left a truncated mesh.obj, a replaced albedo.png and a stale mesh.json."""
    run_dir = shutil.copytree(reference, small_disk / "run")
    before = snapshot(run_dir)
    filler = fill(small_disk, 8 * 1024)
    for command in (["export", str(run_dir), "--resolution", "48", "--format", "obj", "--format", "ply", "--format", "glb"],
                    ["render", str(run_dir), "--frames", "48", "--resolution", "96"]):
        assert main(command) == 2
        assert "no space left on the device" in _last_line(capsys)
        lost = bytes_lost(before, run_dir)
        record_property("bytes_lost", lost)
        assert lost == 0 and temporaries(run_dir) == []
    filler.unlink()
    assert main(["export", str(run_dir), "--resolution", "24"]) == 0 and (run_dir / "mesh" / "mesh.obj").stat().st_size > 0


def test_a_read_only_disk_is_one_line(small_disk, tiny_pixel_prior, reference, capsys):
    run_dir = shutil.copytree(reference, small_disk / "run")
    before = snapshot(run_dir)
    subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)
    try:
        assert main(["export", str(run_dir)]) == 2
        assert "Read-only file system" in _last_line(capsys)
        assert main(["run", TOY, "prompt=a red cube", "name=other", *fast(small_disk, tiny_pixel_prior)]) == 2
        assert "cannot write to out_dir" in _last_line(capsys)
    finally:
        subprocess.run(["mount", "-o", "remount,rw", str(small_disk)], check=True)
    assert bytes_lost(before, run_dir) == 0


def _frozen(proc: subprocess.Popen) -> None:
    """SIGSTOP ``proc`` and wait until the kernel shows it stopped (state T), so nothing it writes lands later."""
    proc.send_signal(signal.SIGSTOP)
    stat = Path(f"/proc/{proc.pid}/stat")
    for _ in range(500):
        if not stat.exists() or stat.read_text().rsplit(")", 1)[1].split()[0] in "tT":
            return
        time.sleep(0.001)


def _stopped_mid_training(disk, prior, steps: int = 8) -> tuple[subprocess.Popen, Path]:
    """A run frozen between two checkpoints: the one of step 3 or later whole, none being written, at least
    two still to come.

    The next checkpoint must then fail. Frozen while a checkpoint was being written, the run could finish
    that one in the space the test leaves, rename it over the previous one, and so free the space of a
    whole checkpoint for the next (its 8 steps take tens of milliseconds): thaw and freeze again a moment
    later until none is open, and start again in the rare case the run got too far meanwhile."""
    for _ in range(5):
        run_dir = disk / "run"
        shutil.rmtree(run_dir, ignore_errors=True)
        proc = start("run", TOY, "prompt=a red cube", "name=run", *fast(disk, prior, steps))
        wait_for(lambda: metric_lines(run_dir) >= 4, proc, what="step 4")  # step 3's checkpoint precedes step 4's line
        while proc.poll() is None:
            _frozen(proc)
            if metric_lines(run_dir) > steps - 2:
                break
            if not temporaries(run_dir):
                return proc, run_dir
            proc.send_signal(signal.SIGCONT)
            time.sleep(0.002)
        proc.kill()
        proc.communicate()
    raise AssertionError("the run could not be frozen between two checkpoints before its last steps, five times")


def test_training_on_a_full_disk_keeps_the_last_checkpoint(small_disk, tiny_pixel_prior, reference, record_property):
    proc, run_dir = _stopped_mid_training(small_disk, tiny_pixel_prior)
    filler = fill(small_disk, 64 * 1024)  # the next checkpoint (MBs) cannot be written
    proc.send_signal(signal.SIGCONT)
    _, err = proc.communicate(timeout=120)
    record_property("tracebacks", err.count(TRACEBACK))
    assert proc.returncode == 2, err
    last = err.strip().splitlines()[-1]
    assert "no space left on the device" in last and f"continue with: sds3d run --resume {run_dir}" in last
    assert TRACEBACK not in err and temporaries(run_dir) == []  # no last.pt.tmp keeping the disk full
    assert scene_state(run_dir)["step"] >= 3  # the previous checkpoint, whole
    filler.unlink()
    assert main(["run", "--resume", str(run_dir)]) == 0
    assert_same_run(reference, run_dir)


# -- a simulated full disk: writes under a folder fail with ENOSPC once a byte budget is spent ---------------


class FullDisk:
    """Every write under ``root`` (files from ``open``, and ``os.write``) fails with ENOSPC past ``budget`` bytes."""

    def __init__(self, monkeypatch, root, budget: int):
        self.root, self.budget, self.used = os.path.realpath(root), budget, 0
        real_open, real_write = io.open, os.write

        def under_root(path) -> bool:
            return os.path.realpath(path).startswith(self.root + os.sep)

        def spend(n: int) -> int:
            allowed = max(0, min(n, self.budget - self.used))
            self.used += allowed
            return allowed

        def full():
            return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

        class Writer:
            def __init__(self, f):
                self._f = f

            def write(self, data):
                n = spend(len(data))
                if n < len(data):
                    self._f.write(data[:n])
                    raise full()
                return self._f.write(data)

            def __enter__(self):
                return self

            def __exit__(self, *exc):
                self._f.close()

            def __getattr__(self, name):
                return getattr(self._f, name)

        def opening(file, mode="r", *args, **kwargs):
            f = real_open(file, mode, *args, **kwargs)
            if isinstance(file, (str, os.PathLike)) and any(c in mode for c in "wax+") and under_root(file):
                return Writer(f)
            return f

        def writing(fd, data):
            if under_root(f"/proc/self/fd/{fd}"):
                n = spend(len(data))
                if n < len(data):
                    real_write(fd, bytes(data[:n]))
                    raise full()
            return real_write(fd, data)

        monkeypatch.setattr(builtins, "open", opening)
        monkeypatch.setattr(io, "open", opening)
        monkeypatch.setattr(os, "write", writing)


@pytest.mark.parametrize("budget", [0, 300, 30_000])
def test_simulated_enospc_during_a_reexport_keeps_the_mesh(tmp_path, reference, capsys, monkeypatch, budget, record_property):
    run_dir = shutil.copytree(reference, tmp_path / "run")
    before = snapshot(run_dir)
    FullDisk(monkeypatch, run_dir, budget)
    assert main(["export", str(run_dir), "--resolution", "24", "--format", "obj", "--format", "ply"]) == 2
    monkeypatch.undo()
    assert "no space left on the device" in _last_line(capsys)
    lost = bytes_lost(before, run_dir)
    record_property("bytes_lost", lost)
    assert lost == 0 and temporaries(run_dir) == []


@pytest.mark.parametrize("budget", [5_000, 2_000_000])
def test_simulated_enospc_while_training(tmp_path, tiny_pixel_prior, reference, capsys, monkeypatch, budget):
    """Past the budget a metrics line or a checkpoint fails: one line, the log holds whole lines, the last
    checkpoint is whole, and the run resumes to the uninterrupted result."""
    import sds3d.runs as runs

    run_dir = tmp_path / "run"
    args = ["run", TOY, "prompt=a red cube", "name=run", *fast(tmp_path, tiny_pixel_prior)]
    real = runs.write_checkpoint
    state = {}

    def after_the_second(run_dir_, payload):  # the disk fills up once two checkpoints exist
        real(run_dir_, payload)
        if payload["step"] == 2 and not state:
            state["disk"] = FullDisk(monkeypatch, run_dir, budget)

    monkeypatch.setattr(runs, "write_checkpoint", after_the_second)
    assert main(args) == 2
    monkeypatch.undo()
    assert "no space left on the device" in _last_line(capsys)
    assert temporaries(run_dir) == [] and scene_state(run_dir)["step"] >= 2
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        assert line.startswith("{") and line.endswith("}")  # no half line
    assert main(["run", "--resume", str(run_dir)]) == 0
    assert_same_run(reference, run_dir)
