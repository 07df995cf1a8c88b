"""``run_sweep``: validate every run's config, skip finished runs, execute the rest, write the report."""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from .. import atomic
from ..checkpoint import Interrupted
from ..config import literal
from ..paths import slugify
from ..runs import locked
from .execute import (RunJob, SweepStop, available_cores, check_ray_address, run_batch, run_one, run_processes, run_ray,
                      run_sequential, run_state, threads_per_run)
from .grid import CONFIG_KEY, RunSpec, SweepError, SweepSpec, expand
from .report import collect_rows, write_comparison, write_csv, write_index, write_markdown


@dataclass
class SweepResult:
    """What a sweep produced: its folder, one row per run, and the report files."""

    sweep_dir: Path
    rows: list[dict]
    files: dict[str, Path] = field(default_factory=dict)

    @property
    def failed(self) -> list[dict]:
        return [r for r in self.rows if r["status"] == "failed"]


def _quote(text: str) -> str:
    return json.dumps(text)  # a JSON string is a YAML double-quoted scalar: commas, colons, '#' survive


def default_sweep_dir(spec: SweepSpec, out_dir: str) -> Path:
    stem = Path(spec.config).stem
    return Path(out_dir) / "sweeps" / slugify("-".join([stem, *spec.grid]), max_len=80)


def plan_sweep(spec: SweepSpec, load: Callable | None = None, extra: list[str] | None = None):
    """Expand the sweep and build (so check) every run's config before anything runs.

    Args:
        spec: the sweep.
        load: ``(config_path, overrides) -> RunConfig``; default ``sds3d.config.load_config``.
        extra: overrides appended to every run (the executor's thread budget).

    Returns:
        (sweep_dir, [(RunSpec, overrides)]).

    Raises:
        SweepError: unknown grid key (with the closest key), bad value, empty value list, no prompt.
    """
    if load is None:
        from ..config import load_config as load

    base_overrides = list(spec.overrides) + ([f"prompt={_quote(spec.prompts[0])}"] if spec.prompts else [])
    try:
        base = load(spec.config, base_overrides)
    except ValueError as e:  # sds3d.config.ConfigError
        raise SweepError(f"base config: {e}") from None
    for key, values in spec.grid.items():  # one key at a time, so the message names the --grid item
        for value in values:
            try:
                if key == CONFIG_KEY:
                    load(spec.run_config(RunSpec("", 0, ((key, value),))), base_overrides)
                else:
                    load(spec.config, base_overrides + [f"{key}={value}"])
            except ValueError as e:  # sds3d.config.ConfigError
                raise SweepError(f"--grid {key}: {e}") from None
    runs = expand(spec, default_prompt=base.prompt, default_seed=base.seed)
    sweep_dir = Path(spec.out) if spec.out else default_sweep_dir(spec, base.out_dir)
    planned = []
    for run in runs:
        overrides = (list(spec.overrides) + run.override_list() + list(extra or [])
                     + [f"prompt={_quote(run.prompt)}", f"seed={run.seed}", f"out_dir={_quote(str(sweep_dir))}", f"name={run.name}"])
        try:
            load(spec.run_config(run), overrides)
        except ValueError as e:  # sds3d.config.ConfigError
            raise SweepError(f"run {run.name}: {e}") from None
        planned.append((run, overrides))
    return sweep_dir, planned


def _write_sweep_file(spec: SweepSpec, sweep_dir: Path) -> None:
    """sweep.yaml in the sweep folder: ``sds3d sweep SWEEP_DIR/sweep.yaml`` re-runs (and completes) it."""
    from omegaconf import OmegaConf

    def relative(path: str) -> str:
        return os.path.relpath(Path(path).resolve(), sweep_dir.resolve())

    grid = {k: ",".join(v) for k, v in spec.grid.items()}
    if CONFIG_KEY in spec.grid:  # config files relative to the copy's folder, as its config
        grid[CONFIG_KEY] = ",".join(relative(spec.run_config(RunSpec("", 0, ((CONFIG_KEY, v),)))) for v in spec.grid[CONFIG_KEY])
    data = {"config": relative(spec.config),
            "grid": grid, "prompts": list(spec.prompts),
            "seeds": list(spec.seeds), "out": str(sweep_dir), "overrides": list(spec.overrides)}
    atomic.write_text(sweep_dir / "sweep.yaml", OmegaConf.to_yaml(OmegaConf.create(literal(data))))


def batch_key(cfg) -> str:
    """What runs must share to train in one batch: the prior (its folder and settings) and the device."""
    return repr((getattr(cfg, "prior", None), getattr(cfg, "device", None)))


def group_batches(todo: list[RunJob], k: int, load: Callable) -> list[list[RunJob]]:
    """``todo`` in units of at most ``k`` runs that share a prior (``batch_key``), in sweep order."""
    groups: dict[str, list[RunJob]] = {}
    for job in todo:
        groups.setdefault(batch_key(load(job.config, job.overrides)), []).append(job)
    return [jobs[i : i + k] for jobs in groups.values() for i in range(0, len(jobs), k)]


def _log(msg: str) -> None:
    print(f"sds3d sweep: {msg}", file=sys.stderr, flush=True)


def run_sweep(spec: SweepSpec, jobs: int = 1, ray: bool = False, ray_address: str | None = None,
              run_fn: Callable[[RunJob], dict] = run_one, load: Callable | None = None,
              log: Callable[[str], None] = _log, batch_runs: int = 1,
              batch_fn: Callable[[list[RunJob]], list[dict]] = run_batch) -> SweepResult:
    """Run every point of ``spec`` as an ordinary run folder under the sweep folder, then report.

    Finished runs (their completion marker) are skipped, runs with ``ckpt/last.pt`` resume, the
    others start. A failed run is recorded and the sweep goes on. The sweep folder is locked
    (a second sweep on it exits 2 naming this one's pid). SIGINT/SIGTERM: no new run starts, the
    running ones checkpoint, the report is written, and ``Interrupted`` is raised (exit 130/143).

    Args:
        spec: base config, grid, prompts, seeds, out folder, fixed overrides.
        jobs: concurrent runs (local processes; with ``ray``, sets each task's CPU share).
        ray: submit each run as a Ray task (local Ray unless ``ray_address``).
        ray_address: a Ray head (``host:port``, ``ray://host:port`` or ``auto``).
        run_fn: a top-level ``RunJob -> {"status", "error"?}`` (tests pass a fake).
        load: config loader (default ``sds3d.config.load_config``).
        log: progress lines.
        batch_runs: train up to this many runs that share a prior in one process (one Ray task),
            one prior call per step for all of them (``pipeline.run_batched``); 1: one run each.
        batch_fn: a top-level ``[RunJob] -> [{"status", "error"?}]`` for those units (tests pass a fake).

    Returns:
        SweepResult with the rows of summary.csv and the paths of the report files.

    Raises:
        SweepError: a bad spec (before anything runs); RunInUse: another sweep holds the folder;
        Interrupted: stopped by a signal (the report of what finished is written).
    """
    if jobs < 1:
        raise SweepError(f"--jobs {jobs} must be at least 1")
    if batch_runs < 1:
        raise SweepError(f"--batch-runs {batch_runs} must be at least 1")
    cores = available_cores()
    if ray and ray_address:
        check_ray_address(ray_address)  # before anything is validated or written
    if ray:
        parallel = jobs if jobs > 1 else cores
        extra = [f"trainer.threads={threads_per_run(parallel, cores)}", "trainer.progress=false"]
    elif jobs > 1:
        extra = [f"trainer.threads={threads_per_run(jobs, cores)}", "trainer.progress=false"]
    else:
        extra = []
    sweep_dir, planned = plan_sweep(spec, load=load, extra=extra)
    try:
        sweep_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise SweepError(f"cannot create the sweep folder {sweep_dir} ({e.strerror or e}); choose another with --out") from None
    with locked(sweep_dir, "sweep folder"):
        return _run_locked(spec, sweep_dir, planned, jobs, ray, ray_address, run_fn, log, cores, extra, batch_runs, batch_fn, load)


def _run_locked(spec: SweepSpec, sweep_dir: Path, planned: list, jobs: int, ray: bool, ray_address: str | None,
                run_fn: Callable, log: Callable[[str], None], cores: int, extra: list[str], batch_runs: int = 1,
                batch_fn: Callable = run_batch, load: Callable | None = None) -> SweepResult:
    _write_sweep_file(spec, sweep_dir)
    statuses: dict[str, str] = {}
    todo: list[RunJob] = []
    for run, overrides in planned:
        state = run_state(sweep_dir / run.name)
        if state == "done":
            statuses[run.name] = "done"
        else:
            todo.append(RunJob(run.name, spec.run_config(run), overrides, str(sweep_dir / run.name), state))
    n_resume = sum(j.mode == "resume" for j in todo)
    log(f"{sweep_dir}: {len(planned)} runs; {len(planned) - len(todo)} finished, {n_resume} to resume, "
        f"{len(todo) - n_resume} to start" + (f" ({'ray' if ray else f'{jobs} processes'}, {extra[0]})" if extra else ""))

    done_count = [0]

    def on_result(job: RunJob, result: dict) -> None:
        done_count[0] += 1
        statuses[job.name] = result.get("status", "failed")
        err = f": {result.get('error')}" if statuses[job.name] == "failed" else ""
        log(f"[{done_count[0]}/{len(todo)}] {statuses[job.name]} {job.name}{err}")

    stop = SweepStop()
    if todo:
        batched = batch_runs > 1
        if batched:
            from ..config import load_config

            units = group_batches(todo, batch_runs, load or load_config)
            log(f"{len(todo)} runs in {len(units)} batches of up to {batch_runs} (one prior call per step per batch)")
        else:
            units = [[job] for job in todo]
        fn = batch_fn if batched else run_fn
        with stop.installed():
            if ray:
                run_ray(units, fn, ray_address or None, threads_per_run(jobs if jobs > 1 else cores, cores), cores, on_result, stop,
                        batched)
            elif jobs > 1:
                run_processes(units, fn, jobs, sweep_dir / "logs", on_result, stop, batched)
            else:
                run_sequential(units, fn, on_result, stop, batched)

    runs: list[RunSpec] = [r for r, _ in planned]
    for run in runs:
        if stop() and run.name not in statuses:
            statuses[run.name] = "interrupted"
    rows = collect_rows(runs, sweep_dir, statuses)
    files = {"summary.csv": write_csv(rows, sweep_dir / "summary.csv"),
             "summary.md": write_markdown(rows, sweep_dir / "summary.md", list(spec.grid), title=f"sds3d sweep {sweep_dir.name}"),
             "comparison.png": write_comparison(rows, runs, sweep_dir, sweep_dir / "comparison.png")}
    files["index.html"] = write_index(rows, runs, sweep_dir, sweep_dir / "index.html", list(spec.grid),
                                      title=f"sds3d sweep {sweep_dir.name}")
    if stop():
        finished = sum(statuses.get(r.name) == "done" for r in runs)
        raise Interrupted(f"sweep interrupted ({Interrupted.signal_name(stop.signum)}): {finished} of {len(runs)} runs done, "
                          f"the running ones checkpointed; re-run the same command to go on ({sweep_dir / 'summary.md'})",
                          stop.signum)
    return SweepResult(sweep_dir, rows, files)
