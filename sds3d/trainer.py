"""The optimisation loop of one stage, top to bottom: condition -> camera -> render -> estimator -> step.

``train(cfg, scene, guidance, prompts, state, hooks)`` is all there is: each step is ``begin_step``
(schedules, cameras, render), the estimator, ``end_step`` (regularisers, optimiser, hooks), split so
``sds3d.batched`` can put one prior call between the halves of several runs. It knows no command line and
no run folder: what happens to a log record, a checkpoint or a validation render is the caller's
(``TrainHooks``; ``sds3d.pipeline`` writes them into the run folder). The loop owns the optimiser
and every loss weight; the scene renders and the guidance returns losses. Runs are deterministic
with ``seed`` on CPU, and a ``TrainState`` restored from a checkpoint continues exactly like an
uninterrupted run (all RNG state, the optimiser and the loss window are in it).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable

import torch

from .cameras import sample_cameras
from .config import RunConfig, lr_factor
from .render import sample_shading
from .render.losses import opacity_entropy_loss, opacity_loss, orientation_loss

#: Steps of loss_sds averaged into ``final_loss_sds``.
LOSS_WINDOW = 50


@dataclass
class TrainState:
    """Everything of a stage that changes while it trains, but the scene's and guidance's own state."""

    optimizer: torch.optim.Optimizer
    generator: torch.Generator
    step: int = 0
    skipped_steps: int = 0
    elapsed_s: float = 0.0
    recent_losses: list[float] = field(default_factory=list)  # loss_sds of the last LOSS_WINDOW finite steps

    def state_dict(self) -> dict:
        rng = {"generator": self.generator.get_state(), "torch_cpu": torch.get_rng_state()}
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            rng["torch_cuda"] = torch.cuda.get_rng_state()
        return {"step": self.step, "skipped_steps": self.skipped_steps, "elapsed_s": self.elapsed_s,
                "recent_losses": list(self.recent_losses), "optimizer": self.optimizer.state_dict(), "rng": rng}

    def load_state_dict(self, state: dict) -> None:
        self.step, self.skipped_steps = int(state["step"]), int(state["skipped_steps"])
        self.elapsed_s = float(state["elapsed_s"])
        self.recent_losses = [float(v) for v in state.get("recent_losses", [])]
        self.optimizer.load_state_dict(state["optimizer"])
        self.generator.set_state(state["rng"]["generator"])
        torch.set_rng_state(state["rng"]["torch_cpu"])
        if "torch_cuda" in state["rng"] and torch.cuda.is_available():
            torch.cuda.set_rng_state(state["rng"]["torch_cuda"])

    @property
    def final_loss(self) -> float:
        return sum(self.recent_losses) / max(1, len(self.recent_losses))


@dataclass
class TrainHooks:
    """What the caller does with the loop's output. Every hook is optional."""

    log: Callable[[dict], None] = lambda record: None  # a metrics record (every log_every steps)
    checkpoint: Callable[[TrainState], None] = lambda state: None  # every ckpt_every steps
    validate: Callable[[int], None] = lambda step: None  # every val_every steps
    progress: Callable[[TrainState], None] = lambda state: None  # after every step
    should_stop: Callable[[], bool] = lambda: False  # checked before every step (Ctrl-C, SIGTERM)


def new_state(cfg: RunConfig, scene, guidance) -> TrainState:
    """A fresh stage: Adam over the scene's and the guidance's parameter groups, the seeded generator."""
    t = cfg.trainer
    groups = scene.param_groups(t) + guidance.param_groups()
    for group in groups:
        group["base_lr"] = group["lr"]
    optimizer = torch.optim.Adam(groups, betas=tuple(t.betas), eps=t.eps)
    return TrainState(optimizer, torch.Generator().manual_seed(cfg.seed))


def loss_weights(cfg: RunConfig) -> dict[str, float]:
    """lambda_* of the trainer config by loss name; a loss without a lambda (an estimator's own) weighs 1."""
    t = cfg.trainer
    return {"loss_sds": t.lambda_sds, "loss_orient": t.lambda_orient, "loss_opacity": t.lambda_opacity,
            "loss_opacity_entropy": t.lambda_opacity_entropy}


def regularisers(cfg: RunConfig, out: dict) -> dict[str, torch.Tensor]:
    """The render regularisers with a non-zero weight: orientation (DreamFusion App. A.4), opacity, entropy."""
    t, losses = cfg.trainer, {}
    if t.lambda_orient > 0:
        losses["loss_orient"] = orientation_loss(out["weights"], out["sample_normals"], out["ray_dirs"], out.get("ray_indices"))
    if t.lambda_opacity > 0:
        losses["loss_opacity"] = opacity_loss(out["opacity"])
    if t.lambda_opacity_entropy > 0:
        losses["loss_opacity_entropy"] = opacity_entropy_loss(out["opacity"])
    return losses


def begin_step(cfg: RunConfig, scene, guidance, prompts, state: TrainState, device) -> tuple:
    """The first half of a step, up to the estimator: schedules, the step's cameras and render.

    Returns:
        (cameras, shading mode, render output, the views' prompt conditions).
    """
    t, step = cfg.trainer, state.step
    # Per-step schedules: learning rates (a group's own decay, else the trainer's), then the
    # scene's own (VolSDF beta, occupancy grid) and the guidance's.
    factor = lr_factor(step, t.max_steps, t.lr_schedule, t.lr_end_factor)
    for group in state.optimizer.param_groups:
        own = group.get("lr_schedule")
        if own is not None:
            group["lr"] = group["base_lr"] * lr_factor(step, own["steps"] or t.max_steps, own["kind"], own["end_factor"])
        else:
            group["lr"] = group["base_lr"] * (factor if group.get("scheduled", True) else 1.0)
    scene.update_step(step, t.max_steps)
    guidance.update_step(step, t.max_steps)

    # Camera -> render (random shading mode per step, DreamFusion Sec. 3.1).
    cams = sample_cameras(cfg.camera, generator=state.generator, step=step, max_steps=t.max_steps).to(device)
    shading = sample_shading(cfg.render, state.generator)
    out = scene.render(cams, shading=shading, generator=state.generator,
                       need_normals=shading != "albedo" or t.lambda_orient > 0)
    return cams, shading, out, prompts(cams.azimuth_deg, cams.elevation_deg)


def end_step(cfg: RunConfig, scene, state: TrainState, hooks: TrainHooks, losses: dict, out: dict, shading: str, end: int,
             t_start: float) -> None:
    """The second half of a step, after the estimator: regularisers, the optimiser step (skipped and
    counted when the loss or a gradient is not finite), then logging, progress, validation, checkpoint."""
    t, step = cfg.trainer, state.step
    losses.update(regularisers(cfg, out))
    weights = loss_weights(cfg)
    loss = sum(weights.get(k, 1.0) * v for k, v in losses.items() if k.startswith("loss_"))

    # Optimiser step, unless the loss or a gradient is not finite, or every gradient is zero (SDS
    # zeroes non-finite estimates, so nothing would be learnt): such steps are skipped and counted.
    state.optimizer.zero_grad(set_to_none=True)
    finite = bool(torch.isfinite(loss))
    if finite:
        scene.before_backward(step, out)
        loss.backward()
        peaks = [torch.linalg.vector_norm(p.grad, float("inf")) for g in state.optimizer.param_groups
                 for p in g["params"] if p.grad is not None]  # max |grad| per tensor; NaN if any entry is
        finite = all(bool(torch.isfinite(m)) for m in peaks) and any(bool(m > 0) for m in peaks)
    if finite:
        state.optimizer.step()
        scene.after_optimizer_step(step, state.optimizer)  # may replace parameters (densification)
        state.recent_losses = (state.recent_losses + [losses["loss_sds"].item()])[-LOSS_WINDOW:]
    else:
        state.skipped_steps += 1
        state.optimizer.zero_grad(set_to_none=True)
    state.step += 1
    state.elapsed_s = time.time() - t_start

    if state.step % max(1, t.log_every) == 0 or state.step == end:
        record = {"step": state.step, "loss": loss.item() if finite else None, "skipped_steps": state.skipped_steps,
                  "shading": shading, "lr": state.optimizer.param_groups[0]["lr"], "elapsed_s": round(state.elapsed_s, 3)}
        record.update({k: v.item() for k, v in losses.items() if v.numel() == 1 and math.isfinite(v.item())})
        record.update(scene.stats())
        hooks.log(record)
    hooks.progress(state)
    if t.val_every and state.step % t.val_every == 0:
        hooks.validate(state.step)
    if t.ckpt_every and state.step % t.ckpt_every == 0:
        hooks.checkpoint(state)


def step_end(cfg: RunConfig, stop_after: int | None) -> int:
    """The step after which this stage stops: ``max_steps``, or ``stop_after`` if earlier."""
    return cfg.trainer.max_steps if stop_after is None else min(cfg.trainer.max_steps, stop_after)


def train(cfg: RunConfig, scene, guidance, prompts, state: TrainState, hooks: TrainHooks | None = None,
          stop_after: int | None = None) -> TrainState:
    """Optimise ``scene`` for the prompt from ``state.step`` to ``cfg.trainer.max_steps`` (or ``stop_after``).

    Args:
        cfg: a checked RunConfig.
        scene: a ``sds3d.scene.Scene``; guidance: a ``sds3d.guidance.Guidance``;
        prompts: a ``PromptProcessor`` (per-view conditions).
        state: from ``new_state`` or restored from a checkpoint.
        hooks: logging, checkpoints, validation renders, progress, stop requests.
        stop_after: stop after this many steps in total (tests).

    Returns:
        The state after the last step taken (``state.step < max_steps`` when stopped early).
    """
    hooks = hooks or TrainHooks()
    device = next(scene.parameters()).device
    end = step_end(cfg, stop_after)
    t_start = time.time() - state.elapsed_s
    while state.step < end and not hooks.should_stop():
        cams, shading, out, conditions = begin_step(cfg, scene, guidance, prompts, state, device)
        # The estimator on the render (it batches its own prior calls); regularisers and the step in end_step.
        losses = guidance(out["rgb"], conditions, state.step, cameras=cams, generator=state.generator)
        end_step(cfg, scene, state, hooks, losses, out, shading, end, t_start)
    return state
