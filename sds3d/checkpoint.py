"""Atomic, data-only checkpoints: written under a temporary name, fsynced, then renamed over the old one."""

from __future__ import annotations

from pathlib import Path

import torch

from .atomic import outputs
from .errors import UserError


class CheckpointError(UserError):
    """A checkpoint is missing or unreadable (the message names the file and what to do)."""


def save_checkpoint(state: dict, path: Path) -> None:
    """Write ``state`` so that a crash at any moment leaves either the old or the new file whole.

    Raises:
        sds3d.atomic.WriteError: disk full, no permission (the temporary is removed, the old file kept).
    """
    path = Path(path)
    with outputs(path) as out:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(out.path(path), "wb") as f:
            torch.save(state, f)


def load_checkpoint(path: Path) -> dict:
    """Load a checkpoint as data only (``weights_only=True``: tensors and plain containers)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}; the run has not saved one yet (start it without --resume)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - whatever the unpickler raises, the file is not a checkpoint it can read
        raise CheckpointError(f"checkpoint {path} is corrupt or truncated, or holds more than data ({' '.join(str(e).split())[:120]}); "
                              "delete it to start over, or restore a copy") from None
    if not isinstance(state, dict) or "step" not in state:
        raise CheckpointError(f"checkpoint {path} is not an sds3d checkpoint")
    return state


_SIGNAL_NAMES = {2: "Ctrl-C", 15: "SIGTERM"}


class Interrupted(Exception):
    """Stopped early by a signal or a stop request; what was done is saved (the message says how to go on).

    ``exit_code`` is the shell's for the signal: 130 for SIGINT (and early stops), 143 for SIGTERM.
    """

    def __init__(self, message: str, signum: int | None = None):
        super().__init__(message)
        self.signum = signum
        self.exit_code = 128 + (signum or 2)

    @staticmethod
    def signal_name(signum: int | None) -> str:
        return _SIGNAL_NAMES.get(signum or 0, "stop request")


class TrainingInterrupted(Interrupted):
    """Training stopped early (Ctrl-C, SIGTERM); the checkpoint of the last finished step was saved.

    ``saved=False``: stopped before the first step of a new run (nothing to continue);
    ``during``: stopped after training, while writing the run's outputs (``--resume`` finishes them).
    """

    def __init__(self, step: int, run_dir: Path, signum: int | None = None, saved: bool = True, during: str | None = None):
        name = self.signal_name(signum)
        if not saved:
            message = f"interrupted ({name}) before the first step; nothing was saved"
        elif during:
            message = f"interrupted ({name}) {during}; training is saved. Finish with: sds3d run --resume {run_dir}"
        else:
            message = f"interrupted ({name}) at step {step}; checkpoint saved. Continue with: sds3d run --resume {run_dir}"
        super().__init__(message, signum)
        self.step = step
