"""Run folders and atomic outputs: temporaries renamed in only when complete, locks, the metrics log,
summaries that stay JSON, and the memory estimate."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from sds3d import atomic, runs
from sds3d.config import load_config

TOY = Path(__file__).resolve().parents[1] / "configs" / "toy.yaml"


def test_outputs_are_renamed_in_only_when_the_block_succeeds(tmp_path):
    (tmp_path / "a.txt").write_text("old a")
    (tmp_path / "mesh").mkdir()
    (tmp_path / "mesh" / "mesh.obj").write_text("old mesh")
    with pytest.raises(RuntimeError):
        with atomic.outputs() as out:
            out.path(tmp_path / "a.txt").write_text("new a")
            (out.folder(tmp_path / "mesh") / "mesh.obj").write_text("new mesh")
            raise RuntimeError("the writer failed half way")
    assert (tmp_path / "a.txt").read_text() == "old a" and (tmp_path / "mesh" / "mesh.obj").read_text() == "old mesh"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt", "mesh"]  # no temporaries
    with atomic.outputs() as out:
        out.path(tmp_path / "a.txt").write_text("new a")
        (out.folder(tmp_path / "mesh") / "mesh.ply").write_text("new mesh")
    assert (tmp_path / "a.txt").read_text() == "new a"
    assert [p.name for p in (tmp_path / "mesh").iterdir()] == ["mesh.ply"]  # the folder is replaced whole
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt", "mesh"]


def test_a_writer_that_changes_format_is_committed_under_its_suffix(tmp_path):
    target = tmp_path / "orbit.mp4"
    with atomic.outputs() as out:
        tmp = out.temp(target)
        written = tmp.with_suffix(".gif")  # what write_orbit_video does without ffmpeg
        written.write_bytes(b"GIF89a")
        out.add(written, target.with_suffix(".gif"))
    assert [p.name for p in tmp_path.iterdir()] == ["orbit.gif"]
    with pytest.raises(ValueError):
        with atomic.outputs() as out:
            out.temp(target).with_suffix(".gif").write_bytes(b"half")
            raise ValueError
    assert [p.name for p in tmp_path.iterdir()] == ["orbit.gif"]  # the fallback's temporary is gone too


def test_stale_temporaries_are_removed_and_an_interrupted_swap_is_undone(tmp_path):
    (tmp_path / "ckpt").mkdir()
    (atomic.temp_name(tmp_path / "ckpt" / "last.pt")).write_bytes(b"half")  # kill -9 during a checkpoint
    old = atomic.temp_name(tmp_path / "mesh", atomic.OLD_PREFIX)  # kill -9 between the two renames of a swap
    old.mkdir()
    (old / "mesh.obj").write_text("the previous mesh")
    atomic.temp_name(tmp_path / "mesh").mkdir()
    atomic.remove_stale(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt", "mesh"] and list((tmp_path / "ckpt").iterdir()) == []
    assert (tmp_path / "mesh" / "mesh.obj").read_text() == "the previous mesh"


def test_environment_errors_become_one_line(tmp_path):
    full = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    try:
        try:
            raise full
        except OSError:
            raise RuntimeError("[enforce fail at inline_container.cc] unexpected pos")  # torch.save's report
    except RuntimeError as wrapped:
        e = atomic.environment_error(wrapped, tmp_path / "last.pt")
    assert isinstance(e, atomic.WriteError) and "no space left on the device of" in str(e) and "last.pt" in str(e)
    e = atomic.environment_error(OSError(errno.EROFS, "Read-only file system"), tmp_path / "x")
    assert "cannot write" in str(e) and "Read-only file system" in str(e)
    assert atomic.environment_error(KeyError("bug"), tmp_path / "x") is None  # a bug stays a bug


def test_a_second_process_on_a_locked_folder_is_refused_with_its_pid(tmp_path):
    folder = tmp_path / "run"
    folder.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", (
        "import fcntl, os, sys, time; fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT); fcntl.flock(fd, fcntl.LOCK_EX); "
        "os.write(fd, b'%d' % os.getpid()); print('locked', flush=True); time.sleep(60)"), str(folder / runs.LOCK)],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(runs.RunInUse, match=f"in use by another sds3d process \\(pid {holder.pid}\\)"):
            with runs.locked(folder):
                pass
    finally:
        holder.kill()
        holder.wait()
    with runs.locked(folder), runs.locked(folder):  # free now; re-entrant within a process
        assert (folder / runs.LOCK).read_text().strip() == str(os.getpid())


def test_metrics_log_writes_json_and_never_half_a_line(tmp_path, monkeypatch):
    real_write = os.write

    def disk_fills_mid_line(fd, data):
        real_write(fd, bytes(data[:5]))
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    with runs.MetricsLog(tmp_path) as log:
        log.write({"step": 1, "lr": float("nan"), "loss": float("inf")})
        monkeypatch.setattr(os, "write", disk_fills_mid_line)
        with pytest.raises(atomic.WriteError, match="no space left"):
            log.write({"step": 2, "loss": 1.0})
        monkeypatch.undo()
        log.write({"step": 3, "loss": 2.0})
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line) for line in lines] == [{"step": 1, "lr": None, "loss": None}, {"step": 3, "loss": 2.0}]


def test_resume_drops_later_and_cut_lines_and_summaries_stay_json(tmp_path):
    (tmp_path / "metrics.jsonl").write_text('{"step": 1}\n{"step": 2}\n{"step": 3}\n{"step": 4, "lo')
    runs.truncate_metrics(tmp_path, 2)
    assert (tmp_path / "metrics.jsonl").read_text() == '{"step": 1}\n{"step": 2}\n'
    runs.update_summary(tmp_path, {"final_loss_sds": float("nan"), "error": "x"})
    runs.update_summary(tmp_path, {"status": "done"}, drop=("error",))
    assert json.loads((tmp_path / "summary.json").read_text()) == {"final_loss_sds": None, "status": "done"}


def test_memory_estimate_of_a_training_step():
    cfg = load_config(TOY, ["prompt=a red cube"])
    e, f = cfg.field.encoding, cfg.field
    floats = 3 + e.n_levels * e.n_features_per_level + f.hidden_dim * f.n_hidden_layers + 4
    expected = cfg.camera.batch_size * cfg.render.resolution**2 * cfg.render.num_samples * floats * 4
    from sds3d.memory import estimates

    assert estimates(cfg)["a training step's ray samples"][0] == expected
    assert estimates(cfg)["the export density grid"][0] == cfg.export.resolution**3 * 4 * 2
