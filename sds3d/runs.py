"""Run folders: create and lock them, reload a run's config and scene, and write everything in them.

Layout (docs/architecture.md): config.yaml, metrics.jsonl, ckpt/last.pt, renders/, mesh/,
orbit.mp4 (or .gif), summary.json; ``.lock`` (the exclusive lock of the process writing the
folder) and ``.complete`` (written last, once every output exists: the run is done).
Every file is replaced atomically (``sds3d.atomic``); metrics.jsonl is appended line by line.
This module is the only writer of summary.json and metrics.jsonl; it imports no pipeline or trainer.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from . import atomic
from .checkpoint import CheckpointError, load_checkpoint
from .config import ConfigError, RunConfig, load_config, run_name, to_yaml
from .errors import UserError

CHECKPOINT = Path("ckpt") / "last.pt"
LOCK = ".lock"
COMPLETE = ".complete"
#: The entries of a run folder sds3d writes: the only ones --overwrite removes.
OWN_ENTRIES = ("config.yaml", "metrics.jsonl", "ckpt", "renders", "mesh", "orbit.mp4", "orbit.gif", "summary.json", COMPLETE)
#: Keys a resume keeps from the run's config.yaml: they size (or pick) what the checkpoint holds.
RESUME_FIXED = ("scene", "field", "background", "render.backend", "render.nerfacc", "guidance.method", "name", "out_dir")


class RunDirError(UserError):
    """The run folder cannot be used as asked (exists, unwritable, not a run)."""


class RunInUse(RunDirError):
    """Another process holds the folder's lock (the message names its pid)."""


def is_run_dir(path: Path) -> bool:
    """Whether ``path`` is recognisably an sds3d run folder (its config.yaml or ckpt/)."""
    path = Path(path)
    return (path / "config.yaml").is_file() or (path / "ckpt").is_dir()


# -- locks ------------------------------------------------------------------------------------

_held: dict[str, list] = {}  # real path -> [fd, depth]: re-entrant within a process


def _acquire(folder: Path, what: str) -> int | None:
    try:
        import fcntl
    except ImportError:  # not POSIX: no lock
        return None
    for _ in range(10):
        try:
            fd = os.open(folder / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise RunDirError(f"cannot use {what} {folder} ({e.strerror}); choose another") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip()
            os.close(fd)
            raise RunInUse(f"{what} {folder} is in use by another sds3d process (pid {holder or 'unknown'}); "
                           "wait for it to end, or choose another folder") from None
        try:
            current = os.stat(folder / LOCK).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            current = False
        if current:
            try:
                os.ftruncate(fd, 0)
                os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
            except OSError:  # a full disk: the lock holds without the pid
                pass
            return fd
        os.close(fd)  # the holder removed the folder (a failed start) while this process waited: lock anew
        folder.mkdir(parents=True, exist_ok=True)
    raise RunInUse(f"{what} {folder} keeps being removed by another process; try again")


@contextmanager
def locked(folder: Path | str, what: str = "run folder") -> Iterator[Path]:
    """Hold the exclusive lock of ``folder`` (created if missing) for the block.

    ``fcntl.flock`` on ``folder/.lock``: the OS releases it when the process ends, however it
    ends. Re-entrant within a process.

    Raises:
        RunInUse: another process holds it.
    """
    folder = Path(folder)
    key = os.path.realpath(folder)
    if key in _held:
        _held[key][1] += 1
        try:
            yield folder
        finally:
            _held[key][1] -= 1
        return
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise RunDirError(f"cannot create {what} {folder} ({e.strerror or e}); choose another") from None
    fd = _acquire(folder, what)
    _held[key] = [fd, 1]
    try:
        yield folder
    finally:
        del _held[key]
        if fd is not None:
            os.close(fd)


# -- creating, replacing and opening run folders -----------------------------------------------


def _new_run_path(cfg: RunConfig, config_path: str | Path | None) -> Path:
    out_dir = Path(cfg.out_dir).expanduser()
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        probe = out_dir / f".sds3d-write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise RunDirError(f"cannot write to out_dir {out_dir} ({e.strerror or e}); choose another with out_dir=PATH") from None
    run_dir = out_dir / run_name(cfg, config_path)
    if run_dir.exists() and not run_dir.is_dir():
        raise RunDirError(f"{run_dir} is a file, not a run folder; pick another name=... or out_dir=...")
    _refuse_foreign(run_dir)  # before its lock file is made in it
    return run_dir


def _is_failure_record(run_dir: Path) -> bool:
    """A folder holding only the summary.json a sweep wrote for a run that failed before it started."""
    entries = {e.name for e in run_dir.iterdir()} - {LOCK}
    return entries == {"summary.json"} and "status" in read_summary(run_dir)


def _remove_own(run_dir: Path) -> None:
    for name in OWN_ENTRIES:
        entry = run_dir / name
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        elif entry.exists() or entry.is_symlink():
            entry.unlink()


def _refuse_foreign(run_dir: Path) -> None:
    if run_dir.is_dir() and any(e.name != LOCK for e in run_dir.iterdir()) and not (is_run_dir(run_dir) or _is_failure_record(run_dir)):
        raise RunDirError(f"{run_dir} exists and is not an sds3d run folder (no config.yaml or ckpt/); sds3d leaves it "
                          "alone: pick another name=... or out_dir=...")


def _claim(run_dir: Path, overwrite: bool) -> None:
    """Make ``run_dir`` (locked) ready for a new run: refuse an existing one unless ``overwrite``."""
    atomic.remove_stale(run_dir)
    if not any(e.name != LOCK for e in run_dir.iterdir()):
        return
    _refuse_foreign(run_dir)
    if not overwrite:
        raise RunDirError(f"run folder {run_dir} already exists; continue it with `sds3d run --resume {run_dir}`, "
                          "replace it with --overwrite, or pick another name=...")
    _remove_own(run_dir)  # files that are not sds3d's stay


def prepare_run_dir(cfg: RunConfig, overwrite: bool = False, config_path: str | Path | None = None) -> Path:
    """Create ``out_dir/<name>`` for a new run (``overwrite``: clear an earlier run there first).

    Only a recognisable run folder is ever cleared, and only of sds3d's own entries. The lock is
    held while the folder is checked; ``open_run`` holds it for a whole run.

    Raises:
        RunDirError: out_dir unwritable, the path is a file, a run exists (without ``overwrite``),
            the folder is not a run folder; RunInUse: another process writes it.
    """
    run_dir = _new_run_path(cfg, config_path)
    with locked(run_dir):
        _claim(run_dir, overwrite)
    return run_dir


@contextmanager
def open_run(cfg: RunConfig, overwrite: bool = False, config_path: str | Path | None = None) -> Iterator[Path]:
    """The folder of a new run (``prepare_run_dir``), locked for the block.

    A run that fails before its first checkpoint leaves no trace: its files are removed again,
    and the folder too when this call created it.
    """
    run_dir = _new_run_path(cfg, config_path)
    created = not run_dir.exists()
    with locked(run_dir):
        _claim(run_dir, overwrite)
        try:
            yield run_dir
        except BaseException:
            if not (run_dir / CHECKPOINT).is_file():
                _remove_own(run_dir)
                atomic.remove_stale(run_dir)
                if created and [e.name for e in run_dir.iterdir()] == [LOCK]:
                    (run_dir / LOCK).unlink()
                    run_dir.rmdir()
            raise


@contextmanager
def open_existing(run_dir: Path | str) -> Iterator[Path]:
    """An existing run folder, locked for the block, with a killed writer's temporaries cleaned up.

    Raises:
        RunDirError: not a run folder (no config.yaml); RunInUse: another process writes it.
    """
    run_dir = Path(run_dir)
    if not (run_dir / "config.yaml").is_file():
        raise RunDirError(f"{run_dir} is not an sds3d run folder (no config.yaml)")
    with locked(run_dir):
        atomic.remove_stale(run_dir)
        yield run_dir


def check_resume_overrides(overrides: list[str]) -> None:
    """Refuse overrides a resume cannot honour (RESUME_FIXED): one line naming the key."""
    for item in overrides:
        key = item.split("=", 1)[0].strip()
        fixed = next((p for p in RESUME_FIXED if key == p or key.startswith(p + ".")), None)
        if fixed:
            raise RunDirError(f"--resume keeps the run's {fixed} settings (the checkpoint is built from them); "
                              f"{item!r} needs a new run: sds3d run CONFIG ... {item}")


def load_run_config(run_dir: Path, overrides: list[str] | None = None) -> RunConfig:
    path = Path(run_dir) / "config.yaml"
    if not path.is_file():
        raise RunDirError(f"{run_dir} is not an sds3d run folder (no config.yaml)")
    try:
        return load_config(path, overrides)
    except ConfigError as e:
        raise RunDirError(f"{path}: {e}") from None


def write_config(run_dir: Path, cfg: RunConfig) -> None:
    atomic.write_text(Path(run_dir) / "config.yaml", to_yaml(cfg))


# -- completion --------------------------------------------------------------------------------


def mark_complete(run_dir: Path) -> None:
    """Written last, after every output of the run exists: the run is done."""
    atomic.write_text(Path(run_dir) / COMPLETE, json.dumps({"finished": time.strftime("%Y-%m-%dT%H:%M:%S")}) + "\n")


def clear_complete(run_dir: Path) -> None:
    """Before outputs are written again (a resume finishing the run anew)."""
    (Path(run_dir) / COMPLETE).unlink(missing_ok=True)


def is_complete(run_dir: Path) -> bool:
    return (Path(run_dir) / COMPLETE).is_file()


# -- checkpoints ------------------------------------------------------------------------------


def read_checkpoint(run_dir: Path) -> dict:
    """``ckpt/last.pt`` as data, in the current layout (``scene``, ``guidance`` and the trainer state)."""
    path = Path(run_dir) / CHECKPOINT
    ck = load_checkpoint(path)
    if "scene" not in ck and "field" in ck:  # written before the Scene protocol: field + background (+ packed grid)
        try:
            scene = {f"field.{k}": v for k, v in ck.pop("field").items()}
            scene.update({f"background.{k}": v for k, v in ck.pop("background", {}).items()})
            scene.update({f"sampler.{k}": v for k, v in ck.pop("packed", {}).items()})
        except AttributeError:
            raise CheckpointError(f"checkpoint {path} is not an sds3d checkpoint (its field state is not a mapping)") from None
        ck["scene"] = scene
    if not isinstance(ck.get("scene"), dict):
        raise CheckpointError(f"checkpoint {path} is not an sds3d checkpoint (no scene state)")
    return ck


def write_checkpoint(run_dir: Path, payload: dict) -> None:
    from .checkpoint import save_checkpoint

    save_checkpoint(payload, Path(run_dir) / CHECKPOINT)


def _mismatch(run_dir: Path, e: BaseException) -> CheckpointError:
    first = (str(e).splitlines() or [type(e).__name__])[0][:120]
    return CheckpointError(f"checkpoint of {run_dir} does not match its config.yaml ({type(e).__name__}: {first}); "
                           "it was written by another config: start a new run instead")


def load_scene_state(scene, state: dict, run_dir: Path) -> None:
    """Load a checkpoint's scene state; a mismatch with the config is the user's (one line)."""
    try:
        scene.load_state_dict(state)
    except (KeyError, RuntimeError, ValueError, TypeError, AttributeError) as e:
        raise _mismatch(run_dir, e) from None


def restore(run_dir: Path, scene, guidance, state) -> None:
    """Load ``ckpt/last.pt`` into the scene, the guidance and the trainer state of a resumed run.

    Raises:
        CheckpointError: missing, corrupt, or written for another config (one line).
    """
    ck = read_checkpoint(run_dir)
    load_scene_state(scene, ck["scene"], run_dir)
    try:
        guidance.load_state_dict(ck.get("guidance", {}))
        state.load_state_dict(ck)
    except (KeyError, RuntimeError, ValueError, TypeError, AttributeError, IndexError) as e:
        raise _mismatch(run_dir, e) from None


def load_scene(cfg: RunConfig, run_dir: Path, device="cpu"):
    """The trained scene of a run, from ``ckpt/last.pt``, in eval mode."""
    from .scene import build_scene

    scene = build_scene(cfg, device)
    load_scene_state(scene, read_checkpoint(run_dir)["scene"], run_dir)
    return scene.eval()


# -- metrics.jsonl ----------------------------------------------------------------------------


def _finite(value):
    """JSON-valid data: non-finite floats become null (json.dumps would write NaN, which is not JSON)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def truncate_metrics(run_dir: Path, last_step: int) -> None:
    """On resume, drop metric lines logged after the checkpoint (they will be logged again), and a
    line a kill or a full disk cut short."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.exists():
        return
    keep = []
    for line in path.read_text(errors="replace").splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if isinstance(record, dict) and isinstance(record.get("step"), int) and record["step"] <= last_step:
            keep.append(line)
    atomic.write_text(path, "".join(line + "\n" for line in keep))


class MetricsLog:
    """Appends one JSON record per line to ``metrics.jsonl``, each written whole or not at all."""

    def __init__(self, run_dir: Path):
        self.path = Path(run_dir) / "metrics.jsonl"
        self._fd: int | None = None

    def __enter__(self) -> "MetricsLog":
        try:
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        except OSError as e:
            raise atomic.environment_error(e, self.path) or e from None
        return self

    def __exit__(self, *exc) -> None:
        os.close(self._fd)

    def write(self, record: dict) -> None:
        data = (json.dumps(_finite(record), allow_nan=False) + "\n").encode()
        start = os.fstat(self._fd).st_size
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(self._fd, view):]
        except OSError as e:
            try:
                os.ftruncate(self._fd, start)  # no half line in the log
            except OSError:
                pass
            raise atomic.environment_error(e, self.path) or e from None


# -- summary.json -----------------------------------------------------------------------------


def read_summary(run_dir: Path) -> dict:
    path = Path(run_dir) / "summary.json"
    try:
        summary = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return summary if isinstance(summary, dict) else {}


def update_summary(run_dir: Path, values: dict, drop: tuple[str, ...] = ()) -> dict:
    """Set the top-level keys of ``values`` in summary.json (and remove those in ``drop``), keeping the others."""
    summary = read_summary(run_dir)
    summary.update(values)
    for key in drop:
        summary.pop(key, None)
    atomic.write_text(Path(run_dir) / "summary.json", json.dumps(_finite(summary), indent=2, allow_nan=False) + "\n")
    return summary
