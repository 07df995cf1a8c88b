"""Run folders: create them safely, reload a finished or interrupted run, and write its outputs.

Layout (DESIGN.md): config.yaml, metrics.jsonl, ckpt/last.pt, renders/, mesh/mesh.obj (+ .mtl,
texture), orbit.mp4 (or .gif), summary.json.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import torch

from .cameras import orbit_cameras
from .checkpoint import CheckpointError, load_checkpoint
from .config import ConfigError, RunConfig, load_config, run_name


class RunDirError(ValueError):
    """The run folder cannot be used as asked (exists, unwritable, not a run)."""


def prepare_run_dir(cfg: RunConfig, overwrite: bool = False) -> Path:
    """Create ``out_dir/<name>``; refuse to touch an existing run unless ``overwrite``."""
    out_dir = Path(cfg.out_dir).expanduser()
    run_dir = out_dir / run_name(cfg)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        probe = out_dir / f".sds3d-write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise RunDirError(f"cannot write to out_dir {out_dir} ({e.strerror or e}); choose another with out_dir=PATH") from None
    if run_dir.exists() and any(run_dir.iterdir()):
        if not overwrite:
            raise RunDirError(f"run folder {run_dir} already exists; continue it with `sds3d run --resume {run_dir}`, "
                              "replace it with --overwrite, or pick another name=...")
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    return run_dir


def load_run_config(run_dir: Path, overrides: list[str] | None = None) -> RunConfig:
    path = Path(run_dir) / "config.yaml"
    if not path.is_file():
        raise RunDirError(f"{run_dir} is not an sds3d run folder (no config.yaml)")
    try:
        return load_config(path, overrides)
    except ConfigError as e:
        raise RunDirError(f"{path}: {e}") from None


def load_scene(cfg: RunConfig, run_dir: Path, device: torch.device | str = "cpu"):
    """The trained field and background of a run, from ``ckpt/last.pt``."""
    from .trainer import build_scene

    field, background = build_scene(cfg, torch.device(device))
    ck = load_checkpoint(Path(run_dir) / "ckpt" / "last.pt")
    try:
        field.load_state_dict(ck["field"])
        background.load_state_dict(ck["background"])
    except (KeyError, RuntimeError) as e:
        raise CheckpointError(f"checkpoint of {run_dir} does not match its config.yaml ({str(e).splitlines()[0][:120]})") from None
    field.eval()
    background.eval()
    return field, background


def update_summary(run_dir: Path, values: dict) -> dict:
    """Merge ``values`` into summary.json (never clobbering other keys)."""
    path = Path(run_dir) / "summary.json"
    summary = json.loads(path.read_text()) if path.exists() else {}
    summary.update(values)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(summary, indent=2) + "\n")
    os.replace(tmp, path)
    return summary


def export_mesh(cfg: RunConfig, run_dir: Path, field) -> dict:
    """Marching cubes -> cleanup -> colours -> mesh/ files. Returns {"mesh": path, ...}."""
    from .export import extract_mesh, write_mesh

    mesh = extract_mesh(field, cfg.export)
    paths = write_mesh(mesh, field, Path(run_dir) / "mesh", cfg.export)
    return {"mesh": {k: str(v) for k, v in paths.items()}, "mesh_vertices": int(len(mesh.vertices)), "mesh_faces": int(len(mesh.faces))}


@torch.no_grad()
def render_orbit(cfg: RunConfig, run_dir: Path, field, background) -> Path:
    """orbit.mp4 (or .gif without ffmpeg): a full turn around the object, Lambertian-shaded."""
    from .export import write_orbit_video
    from .render import render

    t = cfg.trainer
    cams = orbit_cameras(t.orbit_frames, elevation_deg=t.orbit_elevation_deg, distance=sum(cfg.camera.distance) / 2,
                         fov_y_deg=sum(cfg.camera.fov_y_deg) / 2).to(next(field.parameters()).device)
    frames = torch.cat([render(field, background, cams[i : i + 8], cfg.render, shading="lambertian", resolution=t.orbit_resolution,
                               stratified=False)["rgb"].cpu() for i in range(0, len(cams), 8)])
    return write_orbit_video(frames, Path(run_dir) / "orbit.mp4")


def finish_run(cfg: RunConfig, run_dir: Path, field, background, train_seconds: float, skipped_steps: int, final_loss: float) -> dict:
    """After training: mesh, orbit video, toy-world metrics, summary.json."""
    field.eval()
    summary = {"prompt": cfg.prompt, "steps": cfg.trainer.max_steps, "skipped_steps": skipped_steps,
               "train_seconds": round(train_seconds, 2), "final_loss_sds": final_loss}
    # The video first: if the mesh comes out empty, the run still shows what it learned.
    summary["orbit"] = str(render_orbit(cfg, run_dir, field, background))
    update_summary(run_dir, summary)
    update_summary(run_dir, export_mesh(cfg, run_dir, field))
    from .priors import is_toy_prior
    from .toyworld.prompts import parse_prompt

    colour, shape, _ = parse_prompt(cfg.prompt)
    # Toy prompts with a toy-world prior (the shipped one or a retrained folder) only.
    if cfg.trainer.evaluate and is_toy_prior(cfg.guidance.pretrained) and colour and shape:
        from .eval import evaluate_run

        evaluate_run(Path(run_dir), field=field, background=background, cfg=cfg)  # merges into summary.json
    return json.loads((Path(run_dir) / "summary.json").read_text())
