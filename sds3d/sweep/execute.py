"""Running a sweep's runs: one run in this process, N local subprocesses, or Ray tasks.

Every executor takes units of picklable ``RunJob`` s and a top-level function: ``run_fn(job) ->
dict`` (default ``run_one``) for units of one run, or, with ``batched``, ``batch_fn(jobs) ->
[dict]`` (default ``run_batch``: the runs of a unit train together, one prior call per step), so
tests swap in a fake trainer and Ray ships the function by reference. A failed run comes back as
``{"status": "failed", "error": ...}``; it never stops the sweep. SIGINT or SIGTERM
(``SweepStop``) starts no further unit and reaches every running one once: each run checkpoints
and comes back ``{"status": "interrupted"}``.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable
from urllib.parse import urlparse

from .. import signals
from ..errors import UserError
from ..runs import RunInUse, is_complete, locked, read_summary, update_summary
from .grid import SweepError


@dataclass
class RunJob:
    """One run to execute: its base config, every override, its folder, and start or resume."""

    name: str
    config: str
    overrides: list[str]
    run_dir: str
    mode: str  # "start" | "resume"


def available_cores() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def threads_per_run(parallel: int, cores: int | None = None) -> int:
    """Torch threads for each of ``parallel`` concurrent runs, so the cores are not oversubscribed."""
    return max(1, (cores or available_cores()) // max(1, parallel))


class SweepStop:
    """SIGINT/SIGTERM during a sweep: no new run starts, and each running worker process gets the
    signal once (workers run in their own session, so a terminal's Ctrl-C reaches them only so)."""

    def __init__(self):
        self.signum: int | None = None
        self._procs: set = set()
        self._lock = threading.Lock()

    def __call__(self) -> bool:
        return self.signum is not None

    def _handler(self, signum, frame):
        if self.signum is None:
            self.signum = signum
        with self._lock:
            procs = list(self._procs)
        for proc in procs:
            with contextlib.suppress(OSError):
                proc.send_signal(signum)

    def popen(self, *args, **kwargs) -> subprocess.Popen | None:
        """Start a worker (None once stopping); it gets the stop signal even if it came while starting."""
        with self._lock:
            if self.signum is not None:
                return None
            proc = subprocess.Popen(*args, start_new_session=True, **kwargs)
            self._procs.add(proc)
        return proc

    def done(self, proc: subprocess.Popen) -> None:
        with self._lock:
            self._procs.discard(proc)

    @contextlib.contextmanager
    def installed(self):
        with signals.handled(self._handler):
            yield self


INTERRUPTED = {"status": "interrupted"}


def run_state(run_dir: Path) -> str:
    """``"done"`` (the completion marker, no error), ``"resume"`` (ckpt/last.pt) or ``"start"``."""
    run_dir = Path(run_dir)
    if is_complete(run_dir) and not read_summary(run_dir).get("error"):
        return "done"
    if (run_dir / "ckpt" / "last.pt").is_file() and (run_dir / "config.yaml").is_file():
        return "resume"
    return "start"


def _error_text(e: BaseException) -> str:
    text = f"{type(e).__name__}: {e}".strip()
    return " ".join(text.split())[:500]


def record_failure(run_dir: Path, error: str) -> dict:
    """Record the error in the run's summary.json (not in a folder another process holds, nor past a full disk)."""
    try:
        with locked(run_dir):
            update_summary(run_dir, {"status": "failed", "error": error})
    except UserError:
        pass
    return {"status": "failed", "error": error}


def run_one(job: RunJob) -> dict:
    """Train (or resume) one run in this process with the real pipeline.

    Returns:
        ``{"status": "done"}`` or ``{"status": "failed", "error": "<Type>: <message>"}`` (also
        written into the run's summary.json). Ctrl-C still propagates.
    """
    from ..checkpoint import Interrupted
    from ..config import load_config
    from ..pipeline import run
    from ..runs import open_existing, open_run

    try:
        cfg = load_config(job.config, job.overrides)
        # A leftover without a checkpoint starts clean (the sweep named the folder; only its own files go).
        folder = open_existing(job.run_dir) if job.mode == "resume" else open_run(cfg, overwrite=True)
        with folder as run_dir:
            run(cfg, run_dir, resume=job.mode == "resume")
        return {"status": "done"}
    except (KeyboardInterrupt, Interrupted):
        raise
    except RunInUse as e:  # another process runs it: its folder is not this sweep's to write
        return {"status": "failed", "error": _error_text(e)}
    except Exception as e:  # noqa: BLE001 - any failure of one run is recorded, the sweep goes on
        return record_failure(Path(job.run_dir), _error_text(e))


def run_batch(jobs: list[RunJob]) -> list[dict]:
    """Train (or resume) runs together in this process, one prior call per step (``pipeline.run_batched``).

    Returns:
        Per job, what ``run_one`` returns (each run's failure recorded in its summary.json).
        Ctrl-C, SIGTERM (every run checkpointed) still propagate.
    """
    from ..checkpoint import Interrupted
    from ..config import load_config
    from ..pipeline import run_batched
    from ..runs import open_existing, open_run

    results: list[dict | None] = [None] * len(jobs)
    with contextlib.ExitStack() as held:
        opened: list[tuple[int, object, Path]] = []
        for i, job in enumerate(jobs):
            try:
                cfg = load_config(job.config, job.overrides)
                folder = open_existing(job.run_dir) if job.mode == "resume" else open_run(cfg, overwrite=True)
                opened.append((i, cfg, held.enter_context(folder)))
            except RunInUse as e:  # another process runs it: its folder is not this sweep's to write
                results[i] = {"status": "failed", "error": _error_text(e)}
            except Exception as e:  # noqa: BLE001 - a bad run config fails that run only
                results[i] = record_failure(Path(job.run_dir), _error_text(e))
        if opened:
            try:
                outcomes = run_batched([c for _, c, _ in opened], [d for *_, d in opened],
                                       [jobs[i].mode == "resume" for i, _, _ in opened])
            except (KeyboardInterrupt, Interrupted):
                raise
            except Exception as e:  # noqa: BLE001 - e.g. the shared prior did not load: every run of the batch failed
                outcomes = [e] * len(opened)
            for (i, _, run_dir), outcome in zip(opened, outcomes):
                results[i] = record_failure(run_dir, _error_text(outcome)) if isinstance(outcome, BaseException) else {"status": "done"}
    return results


def _fn_ref(fn: Callable) -> str:
    return f"{fn.__module__}:{fn.__qualname__}"


def _resolve_fn(ref: str) -> Callable:
    module, _, name = ref.partition(":")
    obj = importlib.import_module(module)
    for part in name.split("."):
        obj = getattr(obj, part)
    return obj


def worker_main(argv: list[str]) -> int:
    """``python -m sds3d.sweep.worker FN_REF JOB_JSON``: run one job (a JSON object) or a batch (a JSON
    list, given to the function as a list of jobs), print the result (a list for a batch) as JSON."""
    from ..checkpoint import Interrupted

    fn = _resolve_fn(argv[0])
    payload = json.loads(argv[1])
    batch = isinstance(payload, list)
    try:
        result, code = (fn([RunJob(**j) for j in payload]) if batch else fn(RunJob(**payload))), 0
    except Interrupted as e:
        result, code = {**INTERRUPTED, "error": str(e)}, e.exit_code
    except KeyboardInterrupt:
        result, code = dict(INTERRUPTED), 130
    if batch and isinstance(result, dict):  # interrupted: every run of the batch was
        result = [result] * len(payload)
    print("SDS3D_SWEEP_RESULT " + json.dumps(result), flush=True)
    return code


def _call(fn: Callable, unit: list[RunJob], batched: bool) -> list[dict]:
    return fn(unit) if batched else [fn(unit[0])]


def run_sequential(units: list[list[RunJob]], fn: Callable, on_result: Callable[[RunJob, dict], None],
                   stop: SweepStop | None = None, batched: bool = False) -> None:
    """One unit after another in this process; a signal (inside a run: its checkpoint) ends the loop."""
    from ..checkpoint import Interrupted

    stop = stop or SweepStop()
    for unit in units:
        if stop():
            return
        try:
            results = _call(fn, unit, batched)
        except Interrupted as e:
            stop.signum = stop.signum or e.signum or signal.SIGINT
            for job in unit:
                on_result(job, {**INTERRUPTED, "error": str(e)})
            return
        except KeyboardInterrupt:
            stop.signum = stop.signum or signal.SIGINT
            for job in unit:
                on_result(job, dict(INTERRUPTED))
            return
        except Exception as e:  # noqa: BLE001 - a function that raises still only fails its runs
            results = [record_failure(Path(job.run_dir), _error_text(e)) for job in unit]
        for job, result in zip(unit, results):
            on_result(job, result)


def _run_subprocess(unit: list[RunJob], fn_ref: str, batched: bool, log_path: Path, stop: SweepStop) -> list[dict]:
    env = dict(os.environ)
    # The child imports exactly what this process can (tests pass fakes defined in tests/).
    env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    payload = [asdict(job) for job in unit] if batched else asdict(unit[0])
    with open(log_path, "w") as log:
        proc = stop.popen([sys.executable, "-m", "sds3d.sweep.worker", fn_ref, json.dumps(payload)],
                          stdout=subprocess.PIPE, stderr=log, text=True, env=env)
        if proc is None:  # the sweep is stopping: this unit does not start
            return [dict(INTERRUPTED) for _ in unit]
        try:
            stdout, _ = proc.communicate()
        finally:
            stop.done(proc)
    for line in reversed(stdout.splitlines()):
        if line.startswith("SDS3D_SWEEP_RESULT "):
            result = json.loads(line.split(" ", 1)[1])
            return result if batched else [result]
    if stop():  # killed by the forwarded signal before its own handler was installed
        return [dict(INTERRUPTED) for _ in unit]
    tail = [line for line in log_path.read_text(errors="replace").splitlines() if line.strip()][-1:]
    error = f"worker exited with status {proc.returncode}" + (f": {tail[0].strip()[:400]}" if tail else "")
    return [record_failure(Path(job.run_dir), error) for job in unit]


def run_processes(units: list[list[RunJob]], fn: Callable, n: int, log_dir: Path,
                  on_result: Callable[[RunJob, dict], None], stop: SweepStop | None = None, batched: bool = False) -> None:
    """``n`` units at a time, each in its own ``python -m sds3d.sweep.worker`` process (log in log_dir,
    named after the unit's first run)."""
    ref, stop = _fn_ref(fn), stop or SweepStop()
    with ThreadPoolExecutor(max_workers=max(1, n)) as pool:
        futures = {pool.submit(_run_subprocess, unit, ref, batched, Path(log_dir) / f"{unit[0].name}.log", stop): unit
                   for unit in units}
        for fut in as_completed(futures):
            for job, result in zip(futures[fut], fut.result()):
                on_result(job, result)


def check_ray_address(address: str, timeout: float = 5.0) -> None:
    """Fail fast (one line) when a Ray head address does not answer, instead of Ray's long retries."""
    if address in ("auto", "local"):
        return
    url = urlparse(address if "://" in address else f"tcp://{address}")
    try:
        host, port = url.hostname, url.port
    except ValueError:
        host, port = None, None
    if not host or not port:
        raise SweepError(f"Ray address {address!r} is not host:port (e.g. 10.0.0.5:6379 or ray://10.0.0.5:10001)")
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError as e:
        raise SweepError(f"cannot reach Ray at {address} ({e.strerror or e}); start it with `ray start --head` "
                         "or drop the address to use a local Ray") from None


@contextlib.contextmanager
def _stderr_to_file():
    """Send fd 2 to a temp file for the block (Ray's C++ core writes to the fd, not sys.stderr)."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)


def connect_ray(address: str | None, local_cpus: int, env_vars: dict | None = None):
    """``ray.init`` on ``address`` (checked first) or on a new local Ray with ``local_cpus`` CPUs.

    Returns:
        (ray module, started_here: bool).

    Raises:
        SweepError: ray not installed, address unreachable, or ray.init failed.
    """
    try:
        import ray
    except ImportError:
        raise SweepError("--ray needs the ray package: pip install -e \".[distributed]\"") from None
    if address:
        check_ray_address(address)
    if ray.is_initialized():
        return ray, False
    runtime_env = {"env_vars": env_vars} if env_vars else None
    try:
        if address:
            with _stderr_to_file():  # a non-Ray server at the address: Ray retries ~20 s, logging each try
                ray.init(address=address, runtime_env=runtime_env, log_to_driver=False)
        else:
            ray.init(num_cpus=local_cpus, runtime_env=runtime_env, include_dashboard=False, log_to_driver=False)
    except Exception as e:  # noqa: BLE001 - ray raises ConnectionError/RuntimeError/... for the same user problem
        raise SweepError(f"could not start Ray{' at ' + address if address else ''}: {' '.join(str(e).split())[:300]}") from None
    return ray, True


def run_ray(units: list[list[RunJob]], fn: Callable, address: str | None, cpus_per_run: int, local_cpus: int,
            on_result: Callable[[RunJob, dict], None], stop: SweepStop | None = None, batched: bool = False) -> None:
    """Every unit as a Ray task: ``num_gpus=1`` when the cluster has GPUs (a batch of runs shares its
    GPU and its prior), else ``num_cpus=cpus_per_run``.

    On a remote cluster the sweep folder and the config must be on storage every node sees. On a
    stop, every pending task is cancelled (a KeyboardInterrupt in it: a running one checkpoints).
    """
    stop = stop or SweepStop()
    # A local Ray's workers import what this process can (tests pass fakes defined in tests/).
    env = {"PYTHONPATH": os.pathsep.join(p for p in sys.path if p)} if not address else None
    ray, started = connect_ray(address, local_cpus, env)
    try:
        gpu = ray.cluster_resources().get("GPU", 0) >= 1
        task = ray.remote(fn).options(num_gpus=1, num_cpus=1) if gpu else ray.remote(fn).options(num_cpus=cpus_per_run)
        pending = {task.remote(unit if batched else unit[0]): unit for unit in units}
        with stop.installed():  # after ray.init, which may install handlers of its own
            _wait_ray(ray, pending, stop, on_result, batched)
    finally:
        if started:
            ray.shutdown()


def _wait_ray(ray, pending: dict, stop: SweepStop, on_result: Callable[[RunJob, dict], None], batched: bool) -> None:
    """Report each task as it ends; on a stop, cancel the pending ones and report them interrupted."""
    cancelled = False
    while pending:
        if stop() and not cancelled:
            for ref in pending:
                ray.cancel(ref)
            cancelled = True
        done, _ = ray.wait(list(pending), num_returns=1, timeout=1.0)
        for ref in done:
            unit = pending.pop(ref)
            try:
                result = ray.get(ref)
                results = result if batched else [result]
            except Exception as e:  # noqa: BLE001 - RayTaskError, worker crash, OOM kill: the runs failed
                error = _error_text(getattr(e, "cause", None) or e)
                results = [dict(INTERRUPTED) if cancelled else record_failure(Path(job.run_dir), error) for job in unit]
            for job, r in zip(unit, results):
                on_result(job, r)
