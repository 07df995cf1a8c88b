"""A run, in order: prepare -> build prior, prompts, guidance, scene -> train -> finish.

The only module that sequences a run (docs/architecture.md). ``run`` trains (or resumes) and
finishes; ``finish`` writes the orbit video, the mesh, the toy-world metrics and summary.json;
``render_orbit``, ``export_mesh`` and ``evaluate`` are the steps ``sds3d render / export / eval``
repeat on a finished run. Every file goes through ``sds3d.runs``.
"""

from __future__ import annotations

import signal
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from . import runs
from .cameras import orbit_cameras
from .checkpoint import TrainingInterrupted
from .config import RunConfig


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


class StopRequest:
    """The first Ctrl-C (SIGINT) or SIGTERM asks the loop to stop at the next step boundary (so the
    checkpoint is exact); a second one interrupts at once."""

    def __init__(self):
        self.signum: int | None = None

    def __call__(self) -> bool:
        return self.signum is not None

    def _handler(self, signum, frame):
        if self.signum is not None:
            raise KeyboardInterrupt
        self.signum = signum

    @contextmanager
    def installed(self):
        if threading.current_thread() is not threading.main_thread():  # signals only work there
            yield self
            return
        previous = {s: signal.signal(s, self._handler) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield self
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)


@dataclass
class OpenRun:
    """A run ready to train: its parts, built and (on resume) restored from its folder."""

    cfg: RunConfig
    run_dir: Path
    prompts: object
    guidance: object
    scene: object
    state: object
    timings: dict

    def checkpoint(self, s=None) -> None:
        s = self.state if s is None else s
        runs.write_checkpoint(self.run_dir, {**s.state_dict(), "scene": self.scene.state_dict(), "guidance": self.guidance.state_dict()})

    def hooks(self, metrics, stop, progress=lambda s: None):
        from .trainer import TrainHooks

        cfg, scene, run_dir = self.cfg, self.scene, self.run_dir
        return TrainHooks(log=metrics.write, checkpoint=self.checkpoint, progress=progress, should_stop=stop,
                          validate=lambda step: save_validation_renders(cfg, scene, run_dir / "renders" / f"step_{step:05d}.png"))

    def trained(self, state, signum: int | None) -> None:
        """After the loop: the checkpoint, then summary.json's training entries (or TrainingInterrupted if short)."""
        self.state = state
        self.checkpoint(state)
        if state.step < self.cfg.trainer.max_steps:
            raise TrainingInterrupted(state.step, self.run_dir, signum)
        self.timings["train"] = state.elapsed_s
        runs.update_summary(self.run_dir, {"prompt": self.cfg.prompt, "steps": self.cfg.trainer.max_steps, "skipped_steps": state.skipped_steps,
                                           "train_seconds": round(state.elapsed_s, 2), "final_loss_sds": state.final_loss})


def open_run(cfg: RunConfig, run_dir: Path, resume: bool = False, prior=None) -> OpenRun:
    """Build the prior (unless given: runs of a batch share one), prompts, guidance, scene and train
    state of a run; restore them from its checkpoint (resume) or write its config."""
    from .guidance import PromptProcessor, build_guidance
    from .priors import is_toy_prior, load_prior
    from .scene import build_scene
    from .trainer import new_state

    run_dir = Path(run_dir)
    device = resolve_device(cfg.device)
    t0 = time.perf_counter()
    if prior is None:
        prior = load_prior(cfg.prior.name_or_path, device=device, cfg=cfg.prior)
    if is_toy_prior(cfg.prior.name_or_path):
        from .toyworld.prompts import check_vocabulary

        check_vocabulary(cfg.prompt)
    prompts = PromptProcessor(prior, cfg.prompt, cfg.guidance.negative_prompt, cfg.guidance.view_dependent_prompts, cfg.camera)
    guidance = build_guidance(cfg.guidance, prior)
    scene = build_scene(cfg, device)
    state = new_state(cfg, scene, guidance)
    timings = {"load_prior": time.perf_counter() - t0}
    if resume:
        ck = runs.read_checkpoint(run_dir)
        runs.load_scene_state(scene, ck["scene"], run_dir)
        guidance.load_state_dict(ck.get("guidance", {}))
        state.load_state_dict(ck)
        runs.truncate_metrics(run_dir, state.step)
    else:
        runs.write_config(run_dir, cfg)
    return OpenRun(cfg, run_dir, prompts, guidance, scene, state, timings)


def run(cfg: RunConfig, run_dir: Path, resume: bool = False, stop_after: int | None = None, finish_run: bool = True) -> dict:
    """Train ``cfg.prompt`` into the run folder ``run_dir`` (created by ``runs.prepare_run_dir``), then finish it.

    Args:
        cfg: a checked RunConfig.
        run_dir: the run folder; resume: continue from its ``ckpt/last.pt``.
        stop_after: stop (with a checkpoint, like Ctrl-C) after this many steps in total (tests).
        finish_run: write the orbit video, mesh and metrics after the last step.

    Returns:
        summary.json's content.

    Raises:
        TrainingInterrupted: stopped before ``max_steps`` (Ctrl-C, SIGTERM, ``stop_after``); checkpoint saved.
    """
    from .trainer import train

    if cfg.trainer.threads:
        torch.set_num_threads(cfg.trainer.threads)
    r = open_run(cfg, run_dir, resume)
    stop = StopRequest()
    bar = tqdm(total=cfg.trainer.max_steps, initial=r.state.step, desc=cfg.prompt[:40], unit="step",
               disable=not cfg.trainer.progress, dynamic_ncols=True)

    def progress(s) -> None:
        bar.update(s.step - bar.n)
        bar.set_postfix(loss=f"{s.final_loss:.4g}", skipped=s.skipped_steps)

    state = r.state
    try:
        with stop.installed(), runs.MetricsLog(r.run_dir) as metrics:
            state = train(cfg, r.scene, r.guidance, r.prompts, state, r.hooks(metrics, stop, progress), stop_after=stop_after)
    except KeyboardInterrupt:
        bar.close()
        r.checkpoint(state)
        raise TrainingInterrupted(state.step, r.run_dir, signal.SIGINT) from None
    bar.close()
    r.trained(state, stop.signum)
    if not finish_run:
        return runs.read_summary(r.run_dir)
    return finish(cfg, r.run_dir, r.scene, r.timings)


def run_batched(cfgs: list[RunConfig], run_dirs: list[Path], resume: list[bool], finish_run: bool = True) -> list:
    """Train several runs in this process with one prior call per step for all of them (``sds3d.batched``).

    The runs share one prior (the first config's ``prior``, ``device`` and ``trainer.threads``:
    ``sds3d sweep --batch-runs`` groups runs that agree on them). An estimator without the
    prepare/finish split (``guidance.batching``) trains the runs one after another instead, with
    one notice. Each run's folder ends as ``run`` leaves it.

    Returns:
        Per run, summary.json's content, or the exception that ended it (the others go on).

    Raises:
        TrainingInterrupted: Ctrl-C or SIGTERM; every run's checkpoint is saved first.
    """
    from contextlib import ExitStack

    from .batched import BatchRun, train_batched
    from .errors import notice
    from .guidance.batching import supports_batching
    from .priors import load_prior
    from .trainer import train

    first = cfgs[0]
    if first.trainer.threads:
        torch.set_num_threads(first.trainer.threads)
    t0 = time.perf_counter()
    prior = load_prior(first.prior.name_or_path, device=resolve_device(first.device), cfg=first.prior)
    shared_s = time.perf_counter() - t0
    results: list = [None] * len(cfgs)
    opened: list[tuple[int, OpenRun, BatchRun]] = []
    for i, (cfg, run_dir, res) in enumerate(zip(cfgs, run_dirs, resume)):
        try:
            r = open_run(cfg, run_dir, res, prior=prior)
            r.timings["load_prior"] += shared_s
            opened.append((i, r, BatchRun(cfg, r.scene, r.guidance, r.prompts, r.state)))
        except Exception as e:  # noqa: BLE001 - one run's bad config or checkpoint does not stop the others
            results[i] = e
    solo = [(i, r, b) for i, r, b in opened if not supports_batching(r.guidance)]
    if solo:
        notice(f"guidance.method={solo[0][1].cfg.guidance.method} does not split its step for --batch-runs; "
               f"its {len(solo)} run(s) train one after another")
    stop = StopRequest()
    batch = [(i, r, b) for i, r, b in opened if supports_batching(r.guidance)]
    try:
        with stop.installed(), ExitStack() as logs:
            for _, r, b in opened:
                b.hooks = r.hooks(logs.enter_context(runs.MetricsLog(r.run_dir)), stop)
            train_batched([b for _, _, b in batch])
            for _, r, b in solo:
                with b.own_rng():
                    try:
                        b.state = train(r.cfg, r.scene, r.guidance, r.prompts, b.state, b.hooks)
                    except Exception as e:  # noqa: BLE001 - as in a batch: the run ends with its error
                        b.error = e
    except KeyboardInterrupt:
        stop.signum = signal.SIGINT
    if stop():  # Ctrl-C or SIGTERM: every run's checkpoint, then the caller stops
        for _, r, b in opened:
            with b.own_rng():
                r.checkpoint(b.state)
        raise TrainingInterrupted(min(b.state.step for _, _, b in opened), opened[0][1].run_dir, stop.signum)
    for i, r, b in opened:
        if b.error is not None:
            results[i] = b.error
            continue
        try:
            with b.own_rng():
                r.trained(b.state, stop.signum)
                results[i] = finish(r.cfg, r.run_dir, r.scene, r.timings) if finish_run else runs.read_summary(r.run_dir)
        except TrainingInterrupted:
            raise
        except Exception as e:  # noqa: BLE001
            results[i] = e
    return results


def finish(cfg: RunConfig, run_dir: Path, scene, timings: dict | None = None) -> dict:
    """After training: orbit video, mesh, toy-world metrics, all recorded in summary.json."""
    timings = dict(timings or {})
    scene.eval()
    # The video first: if the mesh comes out empty, the run still shows what it learned.
    t0 = time.perf_counter()
    runs.update_summary(run_dir, {"orbit": str(render_orbit(cfg, run_dir, scene))})
    t1 = time.perf_counter()
    runs.update_summary(run_dir, export_mesh(cfg, run_dir, scene))
    t2 = time.perf_counter()
    metrics = evaluate(cfg, run_dir, scene)
    if metrics is not None:
        runs.update_summary(run_dir, {"eval": metrics})
    timings.update(orbit=t1 - t0, export=t2 - t1, eval=time.perf_counter() - t2)
    return runs.update_summary(run_dir, {"timings": {k: round(v, 3) for k, v in timings.items()}})


def _orbit_cameras(cfg: RunConfig, n: int):
    return orbit_cameras(n, elevation_deg=cfg.orbit.elevation_deg, distance=sum(cfg.camera.distance) / 2,
                         fov_y_deg=sum(cfg.camera.fov_y_deg) / 2)


@torch.no_grad()
def render_orbit(cfg: RunConfig, run_dir: Path, scene) -> Path:
    """orbit.mp4 (or .gif without ffmpeg): a full turn around the object, Lambertian-shaded."""
    from .export import write_orbit_video

    cams = _orbit_cameras(cfg, cfg.orbit.frames).to(next(scene.parameters()).device)
    frames = torch.cat([scene.render(cams[i : i + 8], shading="lambertian", resolution=cfg.orbit.resolution,
                                     stratified=False)["rgb"].cpu() for i in range(0, len(cams), 8)])
    return write_orbit_video(frames, Path(run_dir) / "orbit.mp4")


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
    path.parent.mkdir(parents=True, exist_ok=True)
    iio.imwrite(path, frames_to_uint8(grid[None])[0])


def export_mesh(cfg: RunConfig, run_dir: Path, scene) -> dict:
    """Marching cubes -> cleanup -> colours -> mesh/ files. Returns the summary entries."""
    from .export import extract_mesh, write_mesh

    mesh = extract_mesh(scene, cfg.export)
    paths = write_mesh(mesh, scene, Path(run_dir) / "mesh", cfg.export)
    return {"mesh": {k: str(v) for k, v in paths.items()}, "mesh_vertices": int(len(mesh.vertices)), "mesh_faces": int(len(mesh.faces))}


def evaluate(cfg: RunConfig, run_dir: Path, scene) -> dict | None:
    """Toy-world metrics of the exported mesh, or None when they do not apply (not a toy prompt or prior, eval off)."""
    from .eval import evaluate_run, load_mesh_world
    from .priors import is_toy_prior
    from .toyworld.prompts import parse_prompt

    colour, shape, _ = parse_prompt(cfg.prompt)
    if not (cfg.eval.enabled and is_toy_prior(cfg.prior.name_or_path) and colour and shape):
        return None
    return evaluate_run(cfg, load_mesh_world(Path(run_dir), cfg.export.up_axis), scene)

