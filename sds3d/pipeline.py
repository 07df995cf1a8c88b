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
    from .guidance import PromptProcessor, build_guidance
    from .priors import is_toy_prior, load_prior
    from .scene import build_scene
    from .trainer import TrainHooks, new_state, train

    run_dir = Path(run_dir)
    device = resolve_device(cfg.device)
    if cfg.trainer.threads:
        torch.set_num_threads(cfg.trainer.threads)
    t0 = time.perf_counter()
    prior = load_prior(cfg.prior.name_or_path, device=device, cfg=cfg.prior)
    if is_toy_prior(cfg.prior.name_or_path):
        from .eval import is_v2_prompt
        from .toyworld.prompts import check_vocabulary

        if not is_v2_prompt(cfg.prompt):  # v2's faced objects and compositions are toy-world prompts too
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

    def checkpoint(s) -> None:
        runs.write_checkpoint(run_dir, {**s.state_dict(), "scene": scene.state_dict(), "guidance": guidance.state_dict()})

    stop = StopRequest()
    bar = tqdm(total=cfg.trainer.max_steps, initial=state.step, desc=cfg.prompt[:40], unit="step",
               disable=not cfg.trainer.progress, dynamic_ncols=True)

    def progress(s) -> None:
        bar.update(s.step - bar.n)
        bar.set_postfix(loss=f"{s.final_loss:.4g}", skipped=s.skipped_steps)

    try:
        with stop.installed(), runs.MetricsLog(run_dir) as metrics:
            hooks = TrainHooks(log=metrics.write, checkpoint=checkpoint, progress=progress, should_stop=stop,
                               validate=lambda step: save_validation_renders(cfg, scene, run_dir / "renders" / f"step_{step:05d}.png"))
            state = train(cfg, scene, guidance, prompts, state, hooks, stop_after=stop_after)
    except KeyboardInterrupt:
        bar.close()
        checkpoint(state)
        raise TrainingInterrupted(state.step, run_dir, signal.SIGINT) from None
    bar.close()
    checkpoint(state)
    if state.step < cfg.trainer.max_steps:
        raise TrainingInterrupted(state.step, run_dir, stop.signum)
    timings["train"] = state.elapsed_s
    runs.update_summary(run_dir, {"prompt": cfg.prompt, "steps": cfg.trainer.max_steps, "skipped_steps": state.skipped_steps,
                                  "train_seconds": round(state.elapsed_s, 2), "final_loss_sds": state.final_loss})
    if not finish_run:
        return runs.read_summary(run_dir)
    return finish(cfg, run_dir, scene, timings)


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
    from .eval import evaluate_run, is_v2_prompt, load_mesh_world
    from .priors import is_toy_prior
    from .toyworld.prompts import parse_prompt

    colour, shape, _ = parse_prompt(cfg.prompt)
    if not (cfg.eval.enabled and is_toy_prior(cfg.prior.name_or_path) and ((colour and shape) or is_v2_prompt(cfg.prompt))):
        return None
    return evaluate_run(cfg, load_mesh_world(Path(run_dir), cfg.export.up_axis), scene)

