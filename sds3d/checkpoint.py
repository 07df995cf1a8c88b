"""Atomic, data-only checkpoints: written to a temp file, fsynced, then renamed over the old one."""

from __future__ import annotations

import os
import pickle
import zipfile
from pathlib import Path

import torch

from .errors import UserError


class CheckpointError(UserError):
    """A checkpoint is missing or unreadable (the message names the file and what to do)."""


def save_checkpoint(state: dict, path: Path) -> None:
    """Write ``state`` so that a crash at any moment leaves either the old or the new file whole."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        torch.save(state, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def load_checkpoint(path: Path) -> dict:
    """Load a checkpoint as data only (``weights_only=True``: tensors and plain containers)."""
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}; the run has not saved one yet (start it without --resume)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile, OSError, ValueError) as e:
        raise CheckpointError(f"checkpoint {path} is corrupt or truncated ({str(e).splitlines()[0][:120]}); "
                              "delete it to start over, or restore a copy") from None
    if not isinstance(state, dict) or "step" not in state:
        raise CheckpointError(f"checkpoint {path} is not an sds3d checkpoint")
    return state


class TrainingInterrupted(Exception):
    """Training stopped early (Ctrl-C, SIGTERM); the checkpoint of the last finished step was saved.

    ``exit_code`` is the shell's for the signal: 130 for SIGINT (and early stops), 143 for SIGTERM.
    """

    def __init__(self, step: int, run_dir: Path, signum: int | None = None):
        name = {2: "Ctrl-C", 15: "SIGTERM"}.get(signum or 0, "stop request")
        super().__init__(f"interrupted ({name}) at step {step}; checkpoint saved. Continue with: sds3d run --resume {run_dir}")
        self.step = step
        self.exit_code = 128 + (signum or 2)
