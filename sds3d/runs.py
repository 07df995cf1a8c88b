"""Run folders: create them safely, reload a run's config and scene, and write everything in them.

Layout (docs/architecture.md): config.yaml, metrics.jsonl, ckpt/last.pt, renders/, mesh/,
orbit.mp4 (or .gif), summary.json. This module is the only writer of summary.json (atomic
replace) and of metrics.jsonl; it imports no pipeline or trainer.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from .checkpoint import CheckpointError, load_checkpoint
from .config import ConfigError, RunConfig, load_config, run_name, to_yaml
from .errors import UserError

CHECKPOINT = Path("ckpt") / "last.pt"


class RunDirError(UserError):
    """The run folder cannot be used as asked (exists, unwritable, not a run)."""


def prepare_run_dir(cfg: RunConfig, overwrite: bool = False) -> Path:
    """Create ``out_dir/<name>``; refuse to touch an existing run unless ``overwrite``."""
    out_dir = Path(cfg.out_dir).expanduser()
    run_dir = out_dir / run_name(cfg)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        probe = out_dir / f".sds3d-write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise RunDirError(f"cannot write to out_dir {out_dir} ({e.strerror or e}); choose another with out_dir=PATH") from None
    if run_dir.exists() and any(run_dir.iterdir()):
        if not overwrite:
            raise RunDirError(f"run folder {run_dir} already exists; continue it with `sds3d run --resume {run_dir}`, "
                              "replace it with --overwrite, or pick another name=...")
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    return run_dir


def load_run_config(run_dir: Path, overrides: list[str] | None = None) -> RunConfig:
    path = Path(run_dir) / "config.yaml"
    if not path.is_file():
        raise RunDirError(f"{run_dir} is not an sds3d run folder (no config.yaml)")
    try:
        return load_config(path, overrides)
    except ConfigError as e:
        raise RunDirError(f"{path}: {e}") from None


def write_config(run_dir: Path, cfg: RunConfig) -> None:
    (Path(run_dir) / "config.yaml").write_text(to_yaml(cfg))


# -- checkpoints ------------------------------------------------------------------------------


def read_checkpoint(run_dir: Path) -> dict:
    """``ckpt/last.pt`` as data, in the current layout (``scene``, ``guidance`` and the trainer state)."""
    ck = load_checkpoint(Path(run_dir) / CHECKPOINT)
    if "scene" not in ck and "field" in ck:  # written before the Scene protocol: field + background (+ packed grid)
        scene = {f"field.{k}": v for k, v in ck.pop("field").items()}
        scene.update({f"background.{k}": v for k, v in ck.pop("background", {}).items()})
        scene.update({f"sampler.{k}": v for k, v in ck.pop("packed", {}).items()})
        ck["scene"] = scene
    return ck


def write_checkpoint(run_dir: Path, payload: dict) -> None:
    from .checkpoint import save_checkpoint

    save_checkpoint(payload, Path(run_dir) / CHECKPOINT)


def load_scene_state(scene, state: dict, run_dir: Path) -> None:
    """Load a checkpoint's scene state; a mismatch with the config is the user's (one line)."""
    try:
        scene.load_state_dict(state)
    except (KeyError, RuntimeError) as e:
        raise CheckpointError(f"checkpoint of {run_dir} does not match its config.yaml ({str(e).splitlines()[0][:120]})") from None


def load_scene(cfg: RunConfig, run_dir: Path, device="cpu"):
    """The trained scene of a run, from ``ckpt/last.pt``, in eval mode."""
    from .scene import build_scene

    scene = build_scene(cfg, device)
    load_scene_state(scene, read_checkpoint(run_dir)["scene"], run_dir)
    return scene.eval()


# -- metrics.jsonl ----------------------------------------------------------------------------


def truncate_metrics(run_dir: Path, last_step: int) -> None:
    """On resume, drop metric lines logged after the checkpoint (they will be logged again)."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.exists():
        return
    keep = [line for line in path.read_text().splitlines() if line.strip() and json.loads(line)["step"] <= last_step]
    path.write_text("".join(line + "\n" for line in keep))


class MetricsLog:
    """Appends one JSON record per line to ``metrics.jsonl`` (flushed, so a kill loses at most a line)."""

    def __init__(self, run_dir: Path):
        self.path = Path(run_dir) / "metrics.jsonl"
        self._file = None

    def __enter__(self) -> "MetricsLog":
        self._file = open(self.path, "a")
        return self

    def __exit__(self, *exc) -> None:
        self._file.close()

    def write(self, record: dict) -> None:
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()


# -- summary.json -----------------------------------------------------------------------------


def read_summary(run_dir: Path) -> dict:
    path = Path(run_dir) / "summary.json"
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def update_summary(run_dir: Path, values: dict) -> dict:
    """Set the top-level keys of ``values`` in summary.json, keeping the others."""
    path = Path(run_dir) / "summary.json"
    summary = read_summary(run_dir)
    summary.update(values)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(summary, indent=2) + "\n")
    os.replace(tmp, path)
    return summary
