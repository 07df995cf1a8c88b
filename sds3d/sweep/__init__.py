"""Sweeps: grids of config overrides x prompts x seeds, run locally or on Ray; comparison image + table.

``grid`` parses and expands, ``execute`` runs (in process, subprocesses, Ray tasks), ``report``
writes summary.csv / summary.md / comparison.png, ``run`` ties them together, ``cli`` parses.
"""

from .cli import add_sweep_parser, run_sweep_cli
from .execute import RunJob, run_batch, run_one, run_state
from .grid import RunSpec, SweepError, SweepSpec, expand, load_sweep_file, parse_grid_arg, run_folder_name, split_values
from .run import SweepResult, plan_sweep, run_sweep

__all__ = ["add_sweep_parser", "run_sweep_cli", "RunJob", "run_batch", "run_one", "run_state", "RunSpec", "SweepError", "SweepSpec",
           "expand", "load_sweep_file", "parse_grid_arg", "run_folder_name", "split_values", "SweepResult", "plan_sweep",
           "run_sweep"]
