"""Helpers of the fault suite: the real ``sds3d`` command in a subprocess, kills on cue, folder snapshots."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[2]
TOY = str(REPO / "configs" / "toy.yaml")
TRACEBACK = "Traceback (most recent call last)"


def fast(out_dir: Path, prior: Path, steps: int = 8) -> list[str]:
    """Overrides of a run of a few seconds on the tiny prior: a checkpoint and a metrics line every step."""
    return [f"out_dir={out_dir}", f"prior.name_or_path={prior}", f"trainer.max_steps={steps}", "trainer.progress=false",
            "trainer.log_every=1", "trainer.ckpt_every=1", "trainer.val_every=0", "trainer.threads=1",
            "render.resolution=16", "render.num_samples=8", "orbit.frames=2", "orbit.resolution=16",
            "export.resolution=16", "export.texture=vertex", "eval.iou_resolution=32"]


def env() -> dict:
    """The environment of a child ``sds3d``: it imports exactly what this process does."""
    e = dict(os.environ)
    e["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
    e["OMP_NUM_THREADS"] = "1"
    return e


def start(*args: str, **kwargs) -> subprocess.Popen:
    """``sds3d ARGS`` in a child process (stdout and stderr piped, text)."""
    return subprocess.Popen([sys.executable, "-m", "sds3d.cli", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env(), cwd=REPO, **kwargs)


def sds3d(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """``sds3d ARGS`` to its end."""
    return subprocess.run([sys.executable, "-m", "sds3d.cli", *args], capture_output=True, text=True, env=env(), cwd=REPO,
                          timeout=timeout)


def wait_for(predicate, proc: subprocess.Popen | None = None, timeout: float = 120, what: str = "") -> None:
    """Poll ``predicate()`` until true; fail if ``proc`` ends first or time runs out."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"the process ended (status {proc.returncode}) before {what}: {proc.stderr.read()[-2000:]}")
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


def metric_lines(run_dir: Path) -> int:
    path = Path(run_dir) / "metrics.jsonl"
    try:
        return sum(1 for line in path.read_text().splitlines() if line.endswith("}"))
    except OSError:
        return 0


def kill_at_step(proc: subprocess.Popen, run_dir: Path, step: int, signum: int = signal.SIGKILL) -> subprocess.CompletedProcess:
    """Send ``signum`` once ``step`` metric lines exist (so during step ``step + 1`` or its checkpoint), wait for the end."""
    wait_for(lambda: metric_lines(run_dir) >= step, proc, what=f"step {step}")
    proc.send_signal(signum)
    out, err = proc.communicate(timeout=120)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def snapshot(folder: Path) -> dict[str, tuple[str, int]]:
    """{relative path: (sha256, size)} of every file under ``folder``."""
    folder = Path(folder)
    return {str(p.relative_to(folder)): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_size)
            for p in sorted(folder.rglob("*")) if p.is_file() and not p.is_symlink()}


def bytes_lost(before: dict[str, tuple[str, int]], folder: Path, ignore: tuple[str, ...] = ()) -> int:
    """Bytes of the files in ``before`` that are gone or changed in ``folder`` now."""
    after = snapshot(folder)
    return sum(size for rel, (digest, size) in before.items()
               if not rel.startswith(ignore) and after.get(rel, (None, 0))[0] != digest)


def temporaries(folder: Path) -> list[str]:
    """Leftovers of interrupted writes (``sds3d.atomic``'s temporary names)."""
    return [str(p.relative_to(folder)) for p in Path(folder).rglob("*") if p.name.startswith((".sds3d-tmp-", ".sds3d-old-"))]


def scene_state(run_dir: Path) -> dict:
    return torch.load(Path(run_dir) / "ckpt" / "last.pt", weights_only=True)


def assert_same_run(a: Path, b: Path) -> None:
    """Two runs that must be bit-identical: checkpoint tensors, logged losses, summary loss, mesh bytes."""
    ca, cb = scene_state(a), scene_state(b)
    assert ca["step"] == cb["step"] and ca["recent_losses"] == cb["recent_losses"]
    assert ca["scene"].keys() == cb["scene"].keys()
    for k in ca["scene"]:
        assert torch.equal(ca["scene"][k], cb["scene"][k]), k
    strip = lambda run: [{k: v for k, v in json.loads(line).items() if k != "elapsed_s"}  # noqa: E731
                         for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert strip(a) == strip(b)
    sa, sb = (json.loads((run / "summary.json").read_text()) for run in (a, b))
    assert sa["final_loss_sds"] == sb["final_loss_sds"] and sa["skipped_steps"] == sb["skipped_steps"]
    for name in ("mesh.obj", "mesh.json"):
        assert (a / "mesh" / name).read_bytes() == (b / "mesh" / name).read_bytes(), name
    assert sa.get("eval") == sb.get("eval")
