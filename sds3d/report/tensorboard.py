"""``logger=tensorboard``: the scalars of metrics.jsonl, also as TensorBoard events in ``run_dir/tensorboard``.

metrics.jsonl stays the record (resume truncates it, the report plots it); TensorBoard is a view
that threestudio users expect. Needs the optional extra ``sds3d[tensorboard]`` (torch's
``SummaryWriter`` writes through the tensorboard package).
"""

from __future__ import annotations

import math
from pathlib import Path

from ..errors import UserError

LOGGERS = ("jsonl", "tensorboard")
FOLDER = "tensorboard"


class LoggerError(UserError):
    """The configured logger cannot run (the message says what to install or change)."""


class TensorBoardLog:
    """Writes each record's finite numbers as scalars at its ``step`` (strings, None, nan are skipped,
    as TensorBoard has no place for them)."""

    def __init__(self, run_dir: Path, first_step: int = 0):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise LoggerError("logger=tensorboard needs the tensorboard package: pip install 'sds3d[tensorboard]' "
                              "(or use logger=jsonl)") from None
        # purge_step: on resume, TensorBoard drops what was logged after the checkpoint, as
        # runs.truncate_metrics does for metrics.jsonl.
        self.writer = SummaryWriter(str(Path(run_dir) / FOLDER), purge_step=first_step + 1 if first_step else None)

    def write(self, record: dict) -> None:
        step = int(record["step"])
        for key, value in record.items():
            if key != "step" and isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
                self.writer.add_scalar(key, value, step)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


def check_logger(name: str) -> None:
    if name not in LOGGERS:
        raise LoggerError(f"logger={name!r} is unknown; use one of {', '.join(LOGGERS)} (metrics.jsonl is always written)")
