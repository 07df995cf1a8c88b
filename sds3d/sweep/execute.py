"""Running a sweep's runs: one run in this process, N local subprocesses, or Ray tasks.

Every executor takes the same picklable ``RunJob`` list and a top-level ``run_fn(job) -> dict``
(default ``run_one``), so tests swap in a fake trainer and Ray ships the function by reference.
A failed run comes back as ``{"status": "failed", "error": ...}``; it never stops the sweep.
SIGINT or SIGTERM (``SweepStop``) starts no further run and reaches every running one once:
each checkpoints and comes back ``{"status": "interrupted"}``.
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


def _fn_ref(fn: Callable) -> str:
    return f"{fn.__module__}:{fn.__qualname__}"


def _resolve_fn(ref: str) -> Callable:
    module, _, name = ref.partition(":")
    obj = importlib.import_module(module)
    for part in name.split("."):
        obj = getattr(obj, part)
    return obj


def worker_main(argv: list[str]) -> int:
    """``python -m sds3d.sweep.worker FN_REF JOB_JSON``: run one job, print its result as JSON."""
    from ..checkpoint import Interrupted

    fn = _resolve_fn(argv[0])
    try:
        result, code = fn(RunJob(**json.loads(argv[1]))), 0
    except Interrupted as e:
        result, code = {**INTERRUPTED, "error": str(e)}, e.exit_code
    except KeyboardInterrupt:
        result, code = dict(INTERRUPTED), 130
    print("SDS3D_SWEEP_RESULT " + json.dumps(result), flush=True)
    return code


def run_sequential(jobs: list[RunJob], run_fn: Callable, on_result: Callable[[RunJob, dict], None],
                   stop: SweepStop | None = None) -> None:
    """One run after another in this process; a signal (inside a run: its checkpoint) ends the loop."""
    from ..checkpoint import Interrupted

    stop = stop or SweepStop()
    for job in jobs:
        if stop():
            return
        try:
            result = run_fn(job)
        except Interrupted as e:
            stop.signum = stop.signum or e.signum or signal.SIGINT
            on_result(job, {**INTERRUPTED, "error": str(e)})
            return
        except KeyboardInterrupt:
            stop.signum = stop.signum or signal.SIGINT
            on_result(job, dict(INTERRUPTED))
            return
        except Exception as e:  # noqa: BLE001 - a run_fn that raises still only fails its run
            result = record_failure(Path(job.run_dir), _error_text(e))
        on_result(job, result)


def _run_subprocess(job: RunJob, fn_ref: str, log_path: Path, stop: SweepStop) -> dict:
    env = dict(os.environ)
    # The child imports exactly what this process can (tests pass fakes defined in tests/).
    env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "w") as log:
        proc = stop.popen([sys.executable, "-m", "sds3d.sweep.worker", fn_ref, json.dumps(asdict(job))],
                          stdout=subprocess.PIPE, stderr=log, text=True, env=env)
        if proc is None:  # the sweep is stopping: this run does not start
            return dict(INTERRUPTED)
        try:
            stdout, _ = proc.communicate()
        finally:
            stop.done(proc)
    for line in reversed(stdout.splitlines()):
        if line.startswith("SDS3D_SWEEP_RESULT "):
            return json.loads(line.split(" ", 1)[1])
    if stop():  # killed by the forwarded signal before its own handler was installed
        return dict(INTERRUPTED)
    tail = [line for line in log_path.read_text(errors="replace").splitlines() if line.strip()][-1:]
    error = f"worker exited with status {proc.returncode}" + (f": {tail[0].strip()[:400]}" if tail else "")
    return record_failure(Path(job.run_dir), error)


def run_processes(jobs: list[RunJob], run_fn: Callable, n: int, log_dir: Path,
                  on_result: Callable[[RunJob, dict], None], stop: SweepStop | None = None) -> None:
    """``n`` runs at a time, each in its own ``python -m sds3d.sweep.worker`` process (log in log_dir)."""
    ref, stop = _fn_ref(run_fn), stop or SweepStop()
    with ThreadPoolExecutor(max_workers=max(1, n)) as pool:
        futures = {pool.submit(_run_subprocess, job, ref, Path(log_dir) / f"{job.name}.log", stop): job for job in jobs}
        for fut in as_completed(futures):
            on_result(futures[fut], fut.result())


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


def run_ray(jobs: list[RunJob], run_fn: Callable, address: str | None, cpus_per_run: int, local_cpus: int,
            on_result: Callable[[RunJob, dict], None], stop: SweepStop | None = None) -> None:
    """Every run as a Ray task: ``num_gpus=1`` when the cluster has GPUs, else ``num_cpus=cpus_per_run``.

    On a remote cluster the sweep folder and the config must be on storage every node sees. On a
    stop, every pending task is cancelled (a KeyboardInterrupt in it: a running one checkpoints).
    """
    stop = stop or SweepStop()
    # A local Ray's workers import what this process can (tests pass fakes defined in tests/).
    env = {"PYTHONPATH": os.pathsep.join(p for p in sys.path if p)} if not address else None
    ray, started = connect_ray(address, local_cpus, env)
    try:
        gpu = ray.cluster_resources().get("GPU", 0) >= 1
        task = ray.remote(run_fn).options(num_gpus=1, num_cpus=1) if gpu else ray.remote(run_fn).options(num_cpus=cpus_per_run)
        pending = {task.remote(job): job for job in jobs}
        with stop.installed():  # after ray.init, which may install handlers of its own
            _wait_ray(ray, pending, stop, on_result)
    finally:
        if started:
            ray.shutdown()


def _wait_ray(ray, pending: dict, stop: SweepStop, on_result: Callable[[RunJob, dict], None]) -> None:
    """Report each task as it ends; on a stop, cancel the pending ones and report them interrupted."""
    cancelled = False
    while pending:
        if stop() and not cancelled:
            for ref in pending:
                ray.cancel(ref)
            cancelled = True
        done, _ = ray.wait(list(pending), num_returns=1, timeout=1.0)
        for ref in done:
            job = pending.pop(ref)
            try:
                result = ray.get(ref)
            except Exception as e:  # noqa: BLE001 - RayTaskError, worker crash, OOM kill: the run failed
                result = dict(INTERRUPTED) if cancelled else record_failure(Path(job.run_dir), _error_text(getattr(e, "cause", None) or e))
            on_result(job, result)
