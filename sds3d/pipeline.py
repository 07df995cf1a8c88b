"""A run, in order: prepare -> build prior, prompts, guidance, scene -> train -> finish.

The only module that sequences a run (docs/architecture.md). ``run`` trains (or resumes) and
finishes; ``run_batched`` does the same for several runs sharing one prior (``sds3d sweep
--batch-runs``), both from ``build_run``'s parts; ``finish`` writes the orbit video, the mesh, the toy-world metrics and summary.json,
then report.html and the completion marker; ``render_orbit``, ``export_mesh`` and ``evaluate`` are the steps
``sds3d render / export / eval`` repeat on a finished run. Every file goes through ``sds3d.runs``
and ``sds3d.atomic`` (written whole or not at all).
"""

from __future__ import annotations

import errno
import signal
import time
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm import tqdm

from . import atomic, runs, signals
from .cameras import orbit_cameras
from .checkpoint import TrainingInterrupted
from .config import RunConfig
from .errors import UserError, notice, phase
from .report import write_run_report


class TrainingFailed(UserError):
    """The run did not train (too many skipped steps); no mesh was exported."""


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


class StopRequest:
    """The first Ctrl-C (SIGINT) or SIGTERM asks the run to stop at the next step boundary (so the
    checkpoint is exact); a second one, a second or more later, interrupts at once. (A signal that
    arrives twice at once -- from a terminal or a batch system and from a sweep forwarding it --
    still stops cleanly.)"""

    REPEAT_S = 1.0

    def __init__(self):
        self.signum: int | None = None
        self._at = 0.0

    def __call__(self) -> bool:
        return self.signum is not None

    def _handler(self, signum, frame):
        if self.signum is not None:
            if time.monotonic() - self._at >= self.REPEAT_S:
                raise KeyboardInterrupt
            return
        self.signum, self._at = signum, time.monotonic()

    @contextmanager
    def installed(self):
        with signals.handled(self._handler):
            yield self


def check_prompt(cfg: RunConfig) -> dict | None:
    """With a toy prior, a prompt outside its grammar (toy world v2's for a v2 prior) gets one notice line;
    returns what summary.json records."""
    from .priors import is_toy_prior

    if not is_toy_prior(cfg.prior.name_or_path):
        return None
    from .eval import is_v2_prior

    if is_v2_prior(cfg.prior.name_or_path):
        from .toyworld.v2.prompts import check_vocabulary
    else:
        from .toyworld.prompts import check_vocabulary

    unknown, message = check_vocabulary(cfg.prompt)
    if message is None:
        return None
    notice(message)
    return {"unknown_words": unknown, "notice": message}


@dataclass
class RunParts:
    """A run ready to train (``build_run``): its parts, built and (on resume) restored from its folder,
    with what both ``run`` and ``run_batched`` do around the training loop."""

    cfg: RunConfig
    run_dir: Path
    prompts: object
    guidance: object
    scene: object
    state: object
    timings: dict
    resumed: bool
    first_step: int = 0
    failed: bool = False  # more steps skipped than the run may skip: it cannot train any more
    board: object = field(default=None, repr=False)

    def checkpoint(self, s=None) -> None:
        s = self.state if s is None else s
        runs.write_checkpoint(self.run_dir, {**s.state_dict(), "scene": self.scene.state_dict(), "guidance": self.guidance.state_dict()})

    def trained_any(self, state) -> bool:
        """Whether the folder holds training worth a checkpoint: a step since the start, or a resumed run."""
        return self.resumed or state.step > self.first_step

    @property
    def max_skipped(self) -> float:
        return self.cfg.trainer.max_skipped_fraction * self.cfg.trainer.max_steps

    @contextmanager
    def logging(self):
        """metrics.jsonl (and TensorBoard with ``logger=tensorboard``) for the block; yields ``log(record)``."""
        with runs.MetricsLog(self.run_dir) as metrics:
            board = None
            if self.cfg.logger == "tensorboard":
                from .report.tensorboard import TensorBoardLog

                board = TensorBoardLog(self.run_dir, first_step=self.state.step)

            def log(record: dict) -> None:
                metrics.write(record)
                if board is not None:
                    board.write(record)

            try:
                yield log
            finally:
                if board is not None:
                    board.close()

    def hooks(self, log, stop, progress=None):
        """The trainer's hooks: ``log``, checkpoints, validation renders, and a stop on ``stop()`` or too many skipped steps."""
        from .trainer import TrainHooks

        cfg, scene, run_dir = self.cfg, self.scene, self.run_dir

        def on_progress(s) -> None:
            self.failed = s.skipped_steps > self.max_skipped
            if progress is not None:
                progress(s)

        return TrainHooks(log=log, checkpoint=self.checkpoint, progress=on_progress, should_stop=lambda: stop() or self.failed,
                          validate=lambda step: save_validation_renders(cfg, scene, run_dir / "renders" / f"step_{step:05d}.png"))

    def trained(self, state, signum: int | None) -> None:
        """After the loop: TrainingFailed (too many skipped steps), TrainingInterrupted (short of
        max_steps; checkpoint saved unless no step ran), or the checkpoint and summary.json's training entries."""
        self.state = state
        t = self.cfg.trainer
        if state.skipped_steps > self.max_skipped:
            self.checkpoint(state)
            message = (f"{state.skipped_steps} of {state.step} steps were skipped (a non-finite loss or gradient, or a gradient "
                       f"zeroed entirely), more than trainer.max_skipped_fraction={t.max_skipped_fraction} of {t.max_steps}: "
                       "the run did not train and no mesh was exported; lower guidance.scale or trainer.lr")
            runs.update_summary(self.run_dir, {"prompt": self.cfg.prompt, "steps": state.step, "skipped_steps": state.skipped_steps,
                                               "status": "failed", "error": message})
            raise TrainingFailed(message)
        if not self.trained_any(state) and state.step < t.max_steps:
            raise TrainingInterrupted(state.step, self.run_dir, signum, saved=False)
        self.checkpoint(state)
        if state.step < t.max_steps:
            raise TrainingInterrupted(state.step, self.run_dir, signum)
        self.timings["train"] = state.elapsed_s
        runs.update_summary(self.run_dir, {"prompt": self.cfg.prompt, "steps": t.max_steps, "skipped_steps": state.skipped_steps,
                                           "train_seconds": round(state.elapsed_s, 2), "final_loss_sds": state.final_loss})

    def interrupted(self, state) -> TrainingInterrupted:
        """Ctrl-C inside a step: the checkpoint of the last whole step (none if no step ran), and the exception to raise."""
        if not self.trained_any(state):
            return TrainingInterrupted(state.step, self.run_dir, signal.SIGINT, saved=False)
        self.checkpoint(state)
        return TrainingInterrupted(state.step, self.run_dir, signal.SIGINT)


def build_run(cfg: RunConfig, run_dir: Path, resume: bool = False, prior=None) -> RunParts:
    """The prior (unless given: the runs of a batch share one), prompts, guidance, scene and train
    state of a run, restored from its checkpoint (resume); else its config.yaml is written."""
    from .guidance import PromptProcessor, build_guidance
    from .priors import load_prior
    from .scene import build_scene
    from .trainer import new_state

    run_dir = Path(run_dir)
    prompt_check = check_prompt(cfg)
    if prompt_check is not None:
        runs.update_summary(run_dir, {"prompt_check": prompt_check})
    device = resolve_device(cfg.device)
    t0 = time.perf_counter()
    if prior is None:
        prior = load_prior(cfg.prior.name_or_path, device=device, cfg=cfg.prior)
    prompts = PromptProcessor(prior, cfg.prompt, cfg.guidance.negative_prompt, cfg.guidance.view_dependent_prompts, cfg.camera)
    guidance = build_guidance(cfg.guidance, prior)
    scene = build_scene(cfg, device)
    state = new_state(cfg, scene, guidance)
    timings = {"load_prior": time.perf_counter() - t0}
    if resume:
        runs.restore(run_dir, scene, guidance, state)
        runs.truncate_metrics(run_dir, state.step)
    else:
        runs.write_config(run_dir, cfg)
    r = RunParts(cfg, run_dir, prompts, guidance, scene, state, timings, resumed=resume, first_step=state.step)
    r.failed = state.skipped_steps > r.max_skipped
    return r


def run(cfg: RunConfig, run_dir: Path, resume: bool = False, stop_after: int | None = None, finish_run: bool = True,
        stop: StopRequest | None = None) -> dict:
    """Train ``cfg.prompt`` into the run folder ``run_dir`` (made by ``runs.open_run`` / ``runs.prepare_run_dir``), then finish it.

    Holds the folder's lock throughout; SIGINT and SIGTERM stop at the next step boundary (or
    between the outputs of ``finish``) with a checkpoint.

    Args:
        cfg: a checked RunConfig.
        run_dir: the run folder; resume: continue from its ``ckpt/last.pt``.
        stop_after: stop (with a checkpoint, like Ctrl-C) after this many steps in total (tests).
        finish_run: write the orbit video, mesh and metrics after the last step.
        stop: the stop request to obey (the CLI installs one before the folder exists); default a new one.

    Returns:
        summary.json's content.

    Raises:
        TrainingInterrupted: stopped before the run finished (Ctrl-C, SIGTERM, ``stop_after``); checkpoint saved.
        TrainingFailed: more than ``trainer.max_skipped_fraction`` of the steps were skipped.
    """
    run_dir = Path(run_dir)
    stop = stop or StopRequest()
    with runs.locked(run_dir), stop.installed():
        try:
            return _run(cfg, run_dir, resume, stop_after, finish_run, stop)
        except atomic.WriteError as e:
            if (run_dir / runs.CHECKPOINT).is_file():
                raise atomic.WriteError(f"{e}; then continue with: sds3d run --resume {run_dir}") from None
            raise


def _run(cfg: RunConfig, run_dir: Path, resume: bool, stop_after: int | None, finish_run: bool, stop: StopRequest) -> dict:
    from .trainer import train

    t = cfg.trainer
    if t.threads:
        torch.set_num_threads(t.threads)
    r = build_run(cfg, run_dir, resume)
    state = r.state
    bar = tqdm(total=t.max_steps, initial=state.step, desc=" ".join(cfg.prompt.split())[:40], unit="step", disable=not t.progress, dynamic_ncols=True)

    def progress(s) -> None:
        bar.update(s.step - bar.n)
        bar.set_postfix(loss=f"{s.final_loss:.4g}", skipped=s.skipped_steps)

    try:
        with r.logging() as log:
            state = train(cfg, r.scene, r.guidance, r.prompts, state, r.hooks(log, stop, progress), stop_after=stop_after)
    except KeyboardInterrupt:
        bar.close()
        raise r.interrupted(state) from None
    bar.close()
    r.trained(state, stop.signum)
    if not finish_run:
        return runs.read_summary(run_dir)
    return finish(cfg, run_dir, r.scene, r.timings, stop=stop)


def run_batched(cfgs: list[RunConfig], run_dirs: list[Path], resume: list[bool], finish_run: bool = True,
                stop: StopRequest | None = None) -> list:
    """Train several runs in this process with one prior call per step for all of them (``sds3d.batched``).

    The runs share one prior (the first config's ``prior``, ``device`` and ``trainer.threads``:
    ``sds3d sweep --batch-runs`` groups runs that agree on them). An estimator without the
    prepare/finish split (``guidance.batching``) trains its runs one after another instead, with
    one notice. Each run's folder is locked throughout and ends as ``run`` leaves it.

    Returns:
        Per run, summary.json's content, or the exception that ended it (the others go on).

    Raises:
        TrainingInterrupted: Ctrl-C or SIGTERM; every run's checkpoint is saved first.
    """
    from .batched import BatchRun, train_batched
    from .guidance.batching import supports_batching
    from .priors import load_prior
    from .trainer import train

    first, stop = cfgs[0], stop or StopRequest()
    if first.trainer.threads:
        torch.set_num_threads(first.trainer.threads)
    results: list = [None] * len(cfgs)
    opened: list[tuple[int, RunParts, BatchRun]] = []
    with ExitStack() as held, stop.installed():
        t0 = time.perf_counter()
        prior = load_prior(first.prior.name_or_path, device=resolve_device(first.device), cfg=first.prior)
        shared_s = time.perf_counter() - t0
        for i, (cfg, run_dir, res) in enumerate(zip(cfgs, run_dirs, resume)):
            try:
                held.enter_context(runs.locked(run_dir))
                r = build_run(cfg, run_dir, res, prior=prior)
                r.timings["load_prior"] += shared_s
                opened.append((i, r, BatchRun(cfg, r.scene, r.guidance, r.prompts, r.state)))
            except Exception as e:  # noqa: BLE001 - one run's bad config or checkpoint does not stop the others
                results[i] = e
        solo = [(i, r, b) for i, r, b in opened if not supports_batching(r.guidance)]
        if solo:
            notice(f"guidance.method={solo[0][1].cfg.guidance.method} does not split its step for --batch-runs; "
                   f"its {len(solo)} run(s) train one after another")
        batch = [b for _, r, b in opened if supports_batching(r.guidance)]
        try:
            with ExitStack() as logs:
                for _, r, b in opened:
                    b.hooks = r.hooks(logs.enter_context(r.logging()), stop)
                train_batched(batch)
                for _, r, b in solo:
                    with b.own_rng():
                        try:
                            b.state = train(r.cfg, r.scene, r.guidance, r.prompts, b.state, b.hooks)
                        except Exception as e:  # noqa: BLE001 - as in a batch: the run ends with its error
                            b.error = e
        except KeyboardInterrupt:
            stop.signum = stop.signum or signal.SIGINT
        if stop():  # Ctrl-C or SIGTERM: every run's checkpoint (those that trained a step), then the caller stops
            for _, r, b in opened:
                if r.trained_any(b.state):
                    with b.own_rng():
                        r.checkpoint(b.state)
            raise TrainingInterrupted(min(b.state.step for _, _, b in opened) if opened else 0,
                                      opened[0][1].run_dir if opened else Path(run_dirs[0]), stop.signum)
        for i, r, b in opened:
            if b.error is not None:
                results[i] = b.error
                continue
            try:
                with b.own_rng():
                    r.trained(b.state, stop.signum)
                    results[i] = finish(r.cfg, r.run_dir, r.scene, r.timings, stop=stop) if finish_run else runs.read_summary(r.run_dir)
            except TrainingInterrupted:
                raise
            except Exception as e:  # noqa: BLE001
                results[i] = e
    return results


def finish(cfg: RunConfig, run_dir: Path, scene, timings: dict | None = None, stop=lambda: False) -> dict:
    """After training: orbit video, mesh, toy-world metrics, all recorded in summary.json, then
    report.html (also when a step fails: the page says what is missing) and the completion marker.
    ``stop()`` is asked between the outputs (each is written whole or not at all)."""
    timings = dict(timings or {})
    runs.clear_complete(run_dir)
    scene.eval()

    def check(done: str) -> None:
        if stop():
            raise TrainingInterrupted(cfg.trainer.max_steps, run_dir, getattr(stop, "signum", None), during=f"after {done}")

    try:
        # The video first: if the mesh comes out empty, the run still shows what it learned.
        t0 = time.perf_counter()
        runs.update_summary(run_dir, {"orbit": str(render_orbit(cfg, run_dir, scene))})
        check("the orbit video")
        t1 = time.perf_counter()
        runs.update_summary(run_dir, export_mesh(cfg, run_dir, scene))
        check("the mesh export")
        t2 = time.perf_counter()
        metrics = evaluate(cfg, run_dir, scene)
        if metrics is not None:
            runs.update_summary(run_dir, {"eval": metrics})
        timings.update(orbit=t1 - t0, export=t2 - t1, eval=time.perf_counter() - t2)
        summary = runs.update_summary(run_dir, {"timings": {k: round(v, 3) for k, v in timings.items()}, "status": "done",
                                                "peak_rss_mib": peak_rss_mib()}, drop=("error",))
    finally:
        write_run_report(run_dir)
    runs.mark_complete(run_dir)
    return summary


def peak_rss_mib() -> float | None:
    """This process's peak resident memory so far, MiB (a run's own when it had the process to itself,
    as in ``sds3d run`` or a sweep with ``--jobs`` > 1); None where getrusage is missing (Windows)."""
    try:
        import resource
    except ImportError:
        return None
    import sys

    kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (1024.0 if sys.platform == "darwin" else 1.0)  # macOS: bytes
    return round(kib / 1024.0, 1)


def _orbit_cameras(cfg: RunConfig, n: int):
    return orbit_cameras(n, elevation_deg=cfg.orbit.elevation_deg, distance=sum(cfg.camera.distance) / 2,
                         fov_y_deg=sum(cfg.camera.fov_y_deg) / 2)


@torch.no_grad()
def render_orbit(cfg: RunConfig, run_dir: Path, scene, path: Path | None = None) -> Path:
    """orbit.mp4 (or .gif without ffmpeg): a full turn around the object, Lambertian-shaded.

    Written to ``path`` (default: the run's ``orbit.mp4``), replacing it only once complete.
    """
    from .export import write_orbit_video

    target = Path(path) if path is not None else Path(run_dir) / "orbit.mp4"
    phase(f"rendering {cfg.orbit.frames} orbit frames at {cfg.orbit.resolution}x{cfg.orbit.resolution} -> {target}")
    cams = _orbit_cameras(cfg, cfg.orbit.frames).to(next(scene.parameters()).device)
    frames = torch.cat([scene.render(cams[i : i + 8], shading="lambertian", resolution=cfg.orbit.resolution,
                                     stratified=False)["rgb"].cpu() for i in range(0, len(cams), 8)])
    with atomic.outputs(target) as out:
        written = write_orbit_video(frames, out.temp(target))
        _check_video(written, len(frames), target)
        final = out.add(written, target.with_suffix(written.suffix))
    return final


def _check_video(path: Path, n_frames: int, target: Path) -> None:
    """Read the video back: imageio-ffmpeg does not report ffmpeg's failures (a disk full while it writes the trailer)."""
    try:
        if path.suffix == ".gif":
            from PIL import Image

            with Image.open(path) as im:
                frames = im.n_frames
        else:
            import imageio_ffmpeg

            frames = imageio_ffmpeg.count_frames_and_secs(str(path))[0]
        readable, why = frames == n_frames, f"{frames} of {n_frames} frames"
    except Exception as e:  # noqa: BLE001 - whatever the reader says, the file is not a whole video
        readable, why = False, " ".join(str(e).split())[:120]
    if not readable:
        cause = OSError(errno.EIO, f"the video written is incomplete ({why})")
        raise atomic.environment_error(cause, target) or atomic.WriteError(f"could not write {target}: {cause.strerror}") from None


@torch.no_grad()
def save_validation_renders(cfg: RunConfig, scene, path: Path) -> None:
    """A row of shaded views around the object and a row of their normals (PNG)."""
    import imageio.v3 as iio

    from .export.video import frames_to_uint8

    cams = _orbit_cameras(cfg, cfg.trainer.val_views).to(next(scene.parameters()).device)
    out = scene.render(cams, shading="lambertian", stratified=False)
    rgb = torch.cat(list(out["rgb"]), dim=-1)
    a = out["opacity"]
    normal = torch.cat(list((out["normal"] * 0.5 + 0.5) * a + (1 - a)), dim=-1)  # on white
    grid = torch.cat([rgb, normal], dim=-2).clamp(0, 1)
    with atomic.outputs(path) as out:
        path.parent.mkdir(parents=True, exist_ok=True)
        iio.imwrite(out.path(path), frames_to_uint8(grid[None])[0])


def export_mesh(cfg: RunConfig, run_dir: Path, scene) -> dict:
    """Marching cubes -> cleanup -> colours -> mesh/ files (the folder replaced whole), then the mesh file
    compared with the scene from the validation cameras (``export.fidelity``: renders/fidelity.png). With
    ``scene.freeze_geometry`` the mesh is ``scene.init_from``'s own, coloured by the scene.
    Returns the summary entries."""
    from .export import extract_mesh, write_mesh

    target = Path(run_dir) / "mesh"
    if cfg.scene.freeze_geometry:
        from .export.mesh import colour_mesh
        from .scene.mesh_init import load_init_mesh

        phase(f"colouring the given mesh {cfg.scene.init_from}")
        mesh = load_init_mesh(cfg.scene.init_from, cfg.export.up_axis, cfg.scene.init_scale, cfg.field.bound)
        colour_mesh(scene, mesh, cfg.export)
        mesh.metadata["surface"] = "scene.init_from"
    else:
        phase(f"extracting the mesh ({cfg.export.resolution}^3 grid)")
        mesh = extract_mesh(scene, cfg.export)
    phase(f"writing {', '.join(cfg.export.formats)} ({len(mesh.faces)} faces) -> {target}")
    with atomic.outputs(target) as out:
        written = write_mesh(mesh, scene, out.folder(target), cfg.export)
    paths = {k: target / Path(v).name for k, v in written.items()}
    result = {"mesh": {k: str(v) for k, v in paths.items()}, "mesh_vertices": int(len(mesh.vertices)),
              "mesh_faces": int(len(mesh.faces))}
    if cfg.export.fidelity:
        from .export.fidelity import load_exported_mesh, mesh_fidelity

        phase("comparing the mesh file with the scene's renders")
        mesh_file, linear_colours = load_exported_mesh(paths)
        cams = _orbit_cameras(cfg, cfg.trainer.val_views or 4).to(next(scene.parameters()).device)
        result["fidelity"] = mesh_fidelity(scene, mesh_file, cams, cfg.orbit.resolution,
                                           Path(run_dir) / "renders" / "fidelity.png", linear_colours)
    return result


def evaluate(cfg: RunConfig, run_dir: Path, scene) -> dict | None:
    """Toy-world metrics of the exported mesh, or None when they do not apply (not a toy prompt or prior, eval off)."""
    from .eval import evaluate_run, is_v2_prior, is_v2_prompt, load_mesh_world
    from .priors import is_toy_prior
    from .toyworld.prompts import parse_prompt

    colour, shape, _ = parse_prompt(cfg.prompt)  # exactly the grammar, or no toy-world metrics
    v2 = is_v2_prompt(cfg.prompt) and is_v2_prior(cfg.prior.name_or_path)  # toy world v2's metrics
    if not (cfg.eval.enabled and is_toy_prior(cfg.prior.name_or_path) and ((colour and shape) or v2)):
        return None
    phase(f"evaluating against the toy world ({cfg.eval.iou_resolution}^3 IoU grid, the judge's views)")
    return evaluate_run(cfg, load_mesh_world(Path(run_dir), cfg.export.up_axis), scene)

