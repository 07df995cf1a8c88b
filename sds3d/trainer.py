"""The optimisation loop, top to bottom: prompt -> embeddings -> camera -> render -> SDS -> step.

``train(cfg, run_dir)`` is all a caller needs (the CLI parses, then calls it). The loop owns the
optimiser and every loss weight; the guidance only returns losses. Runs are deterministic with
``seed`` on CPU, and ``resume=True`` continues from ``ckpt/last.pt`` exactly like an
uninterrupted run (all RNG state is in the checkpoint).
"""

from __future__ import annotations

import json
import math
import signal
import threading
import time
from pathlib import Path

import torch
from tqdm import tqdm

from .cameras import orbit_cameras, sample_cameras
from .checkpoint import TrainingInterrupted, load_checkpoint, save_checkpoint
from .config import RunConfig, lr_factor, to_yaml
from .fields.background import Background
from .fields.nerf import NeRFField
from .guidance import PromptProcessor, build_guidance
from .priors import load_prior
from .render import render, sample_shading
from .render.losses import opacity_entropy_loss, opacity_loss, orientation_loss
from .render.nerfacc_backend import PackedRenderer, orientation_loss_packed, render_packed, select_render_backend


class _StopAtStepBoundary:
    """While active, the first Ctrl-C (SIGINT) only sets ``requested``; a second one interrupts at once."""

    def __init__(self):
        self.requested = False
        self._previous = None

    def _handler(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():  # signals only work there
            self._previous = signal.signal(signal.SIGINT, self._handler)
        return self

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
        return False


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def build_scene(cfg: RunConfig, device: torch.device) -> tuple[NeRFField, Background]:
    """The trainable 3D representation: NeRF field and background, initialised from ``cfg.seed``."""
    torch.manual_seed(cfg.seed)
    return NeRFField(cfg.field).to(device), Background(cfg.background).to(device)


def make_optimizer(cfg: RunConfig, field: NeRFField, background: Background) -> torch.optim.Optimizer:
    t = cfg.trainer
    groups = [{"params": list(field.parameters()), "lr": t.lr}]
    bg_params = [p for p in background.parameters() if p.requires_grad]
    if bg_params:
        groups.append({"params": bg_params, "lr": t.lr_background})
    return torch.optim.Adam(groups, betas=tuple(t.betas), eps=t.eps)


def _rng_state(generator: torch.Generator, device: torch.device) -> dict:
    state = {"generator": generator.get_state(), "torch_cpu": torch.get_rng_state()}
    if device.type == "cuda":
        state["torch_cuda"] = torch.cuda.get_rng_state(device)
    return state


def _set_rng_state(state: dict, generator: torch.Generator, device: torch.device) -> None:
    generator.set_state(state["generator"])
    torch.set_rng_state(state["torch_cpu"])
    if device.type == "cuda" and "torch_cuda" in state:
        torch.cuda.set_rng_state(state["torch_cuda"], device)


def _truncate_metrics(path: Path, last_step: int) -> None:
    """On resume, drop metric lines logged after the checkpoint (they will be logged again)."""
    if not path.exists():
        return
    keep = [line for line in path.read_text().splitlines() if line.strip() and json.loads(line)["step"] <= last_step]
    path.write_text("".join(line + "\n" for line in keep))


@torch.no_grad()
def save_validation_renders(field, background, cfg: RunConfig, path: Path) -> None:
    """A row of shaded views around the object and a row of their normals (PNG)."""
    import imageio.v3 as iio

    from .export.video import frames_to_uint8

    cams = orbit_cameras(cfg.trainer.val_views, elevation_deg=cfg.trainer.orbit_elevation_deg,
                         distance=sum(cfg.camera.distance) / 2, fov_y_deg=sum(cfg.camera.fov_y_deg) / 2)
    out = render(field, background, cams, cfg.render, shading="lambertian", stratified=False)
    rgb = torch.cat(list(out["rgb"]), dim=-1)
    a = out["opacity"]
    normal = torch.cat(list((out["normal"] * 0.5 + 0.5) * a + (1 - a)), dim=-1)  # on white
    grid = torch.cat([rgb, normal], dim=-2).clamp(0, 1)
    path.parent.mkdir(parents=True, exist_ok=True)
    iio.imwrite(path, frames_to_uint8(grid[None])[0])


def train(cfg: RunConfig, run_dir: Path, resume: bool = False, stop_after: int | None = None, finish: bool = True) -> dict:
    """Optimise a NeRF for ``cfg.prompt`` by SDS, then export the mesh and the orbit video.

    Args:
        cfg: a checked RunConfig (``sds3d.config.load_config``).
        run_dir: the run folder (created by the caller); outputs per DESIGN.md.
        resume: continue from ``run_dir/ckpt/last.pt``.
        stop_after: stop (with a checkpoint, like Ctrl-C) after this many steps in total (tests).
        finish: export the mesh and orbit video and evaluate after the last step.

    Returns:
        The summary written to ``summary.json``.
    """
    t = cfg.trainer
    device = resolve_device(cfg.device)
    if t.threads:
        torch.set_num_threads(t.threads)

    # Prompt -> embeddings (each distinct text encoded once; view-dependent suffixes).
    prior = load_prior(cfg.guidance.pretrained, device=device, cfg=cfg.prior)
    if cfg.guidance.pretrained == "toy":
        from .toyworld.prompts import check_vocabulary

        check_vocabulary(cfg.prompt)
    prompts = PromptProcessor(prior, cfg.prompt, cfg.guidance.negative_prompt, cfg.guidance.view_dependent_prompts, cfg.camera)
    guidance = build_guidance(cfg.guidance, prior)

    # The 3D representation and its optimiser.
    field, background = build_scene(cfg, device)
    optimizer = make_optimizer(cfg, field, background)
    base_lrs = [group["lr"] for group in optimizer.param_groups]
    # [brief E] render.backend auto on CUDA: nerfacc packed sampling; its occupancy grid is state
    # (refreshed every N steps, checkpointed). None on CPU: the batched ``render`` below, unchanged.
    packed = PackedRenderer(field.bound).to(device) if select_render_backend(cfg.render.backend, device)[0] == "nerfacc" else None
    generator = torch.Generator().manual_seed(cfg.seed)
    lambdas = {"loss_sds": t.lambda_sds, "loss_orient": t.lambda_orient,
               "loss_opacity": t.lambda_opacity, "loss_opacity_entropy": t.lambda_opacity_entropy}

    ckpt_path = run_dir / "ckpt" / "last.pt"
    metrics_path = run_dir / "metrics.jsonl"
    step, skipped, elapsed = 0, 0, 0.0
    if resume:
        ck = load_checkpoint(ckpt_path)
        field.load_state_dict(ck["field"])
        background.load_state_dict(ck["background"])
        optimizer.load_state_dict(ck["optimizer"])
        _set_rng_state(ck["rng"], generator, device)
        if packed is not None and "packed" in ck:  # [brief E] occupancy grid
            packed.load_state_dict(ck["packed"])
        step, skipped, elapsed = int(ck["step"]), int(ck["skipped_steps"]), float(ck["elapsed_s"])
        _truncate_metrics(metrics_path, step)
    else:
        (run_dir / "config.yaml").write_text(to_yaml(cfg))

    def checkpoint() -> None:
        save_checkpoint({"step": step, "skipped_steps": skipped, "elapsed_s": elapsed, "field": field.state_dict(),
                         "background": background.state_dict(), "optimizer": optimizer.state_dict(),
                         "rng": _rng_state(generator, device),
                         **({"packed": packed.state_dict()} if packed is not None else {})}, ckpt_path)

    end = t.max_steps if stop_after is None else min(t.max_steps, stop_after)
    bar = tqdm(total=t.max_steps, initial=step, desc=cfg.prompt[:40], unit="step", disable=not t.progress, dynamic_ncols=True)
    recent: list[float] = []
    t_start = time.time() - elapsed
    stop = _StopAtStepBoundary()  # Ctrl-C finishes the current step, so resume stays exact
    try:
        with stop, open(metrics_path, "a") as metrics_file:
            while step < end and not stop.requested:
                # Per-step schedules: learning rate, and the field's own (VolSDF beta).
                factor = lr_factor(step, t.max_steps, t.lr_schedule, t.lr_end_factor)
                for group, base_lr in zip(optimizer.param_groups, base_lrs):
                    group["lr"] = base_lr * factor
                field.update_step(step, t.max_steps)

                # Camera -> render (random shading mode per step, DreamFusion Sec. 3.1).
                cams = sample_cameras(cfg.camera, generator=generator, step=step).to(device)
                shading = sample_shading(cfg.render, generator)
                need_normals = shading != "albedo" or t.lambda_orient > 0
                if packed is not None:  # [brief E] nerfacc on CUDA
                    packed.update(step, field)
                    out = render_packed(packed, field, background, cams, cfg.render, shading=shading, generator=generator, need_normals=need_normals)
                else:
                    out = render(field, background, cams, cfg.render, shading=shading, generator=generator, need_normals=need_normals)

                # SDS on the render (one batched prior call), plus regularisers.
                text = prompts(cams.azimuth_deg, cams.elevation_deg)
                losses = guidance(out["rgb"], text, step, cameras=cams, generator=generator)
                if t.lambda_orient > 0:
                    losses["loss_orient"] = (
                        orientation_loss(out["weights"], out["sample_normals"], out["ray_dirs"]) if packed is None
                        else orientation_loss_packed(out["weights"], out["sample_normals"], out["ray_dirs"], out["ray_indices"]))
                if t.lambda_opacity > 0:
                    losses["loss_opacity"] = opacity_loss(out["opacity"])
                if t.lambda_opacity_entropy > 0:
                    losses["loss_opacity_entropy"] = opacity_entropy_loss(out["opacity"])
                loss = sum(lambdas[k] * v for k, v in losses.items() if k in lambdas)

                # Optimiser step, unless the loss or a gradient is not finite (skipped and counted).
                optimizer.zero_grad(set_to_none=True)
                finite = bool(torch.isfinite(loss))
                if finite:
                    loss.backward()
                    grads = [p.grad for g in optimizer.param_groups for p in g["params"] if p.grad is not None]
                    finite = all(bool(torch.isfinite(g).all()) for g in grads)
                if finite:
                    optimizer.step()
                else:
                    skipped += 1
                    optimizer.zero_grad(set_to_none=True)
                step += 1
                elapsed = time.time() - t_start

                if finite:
                    recent = (recent + [losses["loss_sds"].item()])[-50:]
                if step % max(1, t.log_every) == 0 or step == end:
                    record = {"step": step, "loss": loss.item() if finite else None, "skipped_steps": skipped,
                              "shading": shading, "lr": optimizer.param_groups[0]["lr"], "elapsed_s": round(elapsed, 3)}
                    record.update({k: v.item() for k, v in losses.items() if v.numel() == 1 and math.isfinite(v.item())})
                    metrics_file.write(json.dumps(record) + "\n")
                    metrics_file.flush()
                bar.update(1)
                bar.set_postfix(loss=f"{sum(recent) / max(1, len(recent)):.4g}", skipped=skipped)
                if t.val_every and step % t.val_every == 0:
                    save_validation_renders(field, background, cfg, run_dir / "renders" / f"step_{step:05d}.png")
                if t.ckpt_every and step % t.ckpt_every == 0:
                    checkpoint()
    except KeyboardInterrupt:
        bar.close()
        checkpoint()
        raise TrainingInterrupted(step, run_dir) from None
    bar.close()
    checkpoint()
    if step < t.max_steps:
        raise TrainingInterrupted(step, run_dir)

    if not recent and metrics_path.exists():  # resumed at max_steps: the log has the last losses
        logged = [json.loads(line) for line in metrics_path.read_text().splitlines() if line.strip()]
        recent = [r["loss_sds"] for r in logged if "loss_sds" in r][-5:]
    if not finish:
        return {"steps": step, "skipped_steps": skipped}
    from .runs import finish_run

    return finish_run(cfg, run_dir, field, background, train_seconds=elapsed, skipped_steps=skipped,
                      final_loss=sum(recent) / max(1, len(recent)))
