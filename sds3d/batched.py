"""K runs trained in lockstep, with one prior call per step for all of them (``sds3d sweep --batch-runs``).

Each run keeps its own scene, optimiser, generator, torch RNG state, schedules, hooks and step
count; per step, every run does ``trainer.begin_step`` and its estimator's ``prepare``, the prior
evaluates all their rows at once (``guidance.batching.predict_together``), and every run does its
estimator's ``finish`` and ``trainer.end_step``. A run computes what it would alone; only the
prior's arithmetic on a larger batch may round differently (with one run it is the same call).
A run that raises leaves the batch with its error; the others go on. Like ``trainer``, this
module knows no run folder.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch

from .guidance.batching import predict_together, supports_batching
from .trainer import TrainHooks, TrainState, begin_step, end_step, step_end


@dataclass
class BatchRun:
    """One run of a batch: what ``train`` takes, plus the torch RNG state it owns between its turns.

    ``rng_state`` starts as the global torch RNG state at construction (a fresh run's scene is
    built right before, seeding it; a resumed one has just loaded it from its checkpoint).
    """

    cfg: object
    scene: object
    guidance: object
    prompts: object
    state: TrainState
    hooks: TrainHooks = field(default_factory=TrainHooks)
    stop_after: int | None = None
    rng_state: torch.Tensor = field(default_factory=torch.get_rng_state)
    cuda_rng_state: torch.Tensor | None = field(
        default_factory=lambda: torch.cuda.get_rng_state() if torch.cuda.is_available() and torch.cuda.is_initialized() else None)
    error: Exception | None = None

    @contextmanager
    def own_rng(self):
        """Run the block on this run's global torch RNG state (solo runs draw from the global RNG
        too: nerfacc's grid updates, a VAE's posterior sample), then keep what it left."""
        outer = torch.get_rng_state()
        outer_cuda = torch.cuda.get_rng_state() if self.cuda_rng_state is not None else None
        torch.set_rng_state(self.rng_state)
        if self.cuda_rng_state is not None:
            torch.cuda.set_rng_state(self.cuda_rng_state)
        try:
            yield self
        finally:
            self.rng_state = torch.get_rng_state()
            torch.set_rng_state(outer)
            if self.cuda_rng_state is not None:
                self.cuda_rng_state = torch.cuda.get_rng_state()
                torch.cuda.set_rng_state(outer_cuda)


def train_batched(runs: list[BatchRun]) -> list[BatchRun]:
    """``trainer.train`` for every run at once, one prior call per step for all runs still training.

    Args:
        runs: runs whose estimators share one prior and split their step (``supports_batching``).

    Returns:
        ``runs``, each with its state after its last step (``error`` set when it raised).

    Raises:
        ValueError: an estimator without ``prepare``/``finish``, or runs on different priors.
    """
    if not runs:
        return runs
    prior = runs[0].guidance.prior
    for r in runs:
        if not supports_batching(r.guidance):
            raise ValueError(f"guidance.method={r.cfg.guidance.method!r} has no prepare/finish split; run it alone")
        if r.guidance.prior is not prior:
            raise ValueError("train_batched: every run of a batch must use the same prior object")
    devices = [next(r.scene.parameters()).device for r in runs]
    ends = [step_end(r.cfg, r.stop_after) for r in runs]
    t_starts = [time.time() - r.state.elapsed_s for r in runs]
    active = list(range(len(runs)))
    while True:
        active = [i for i in active if runs[i].error is None and runs[i].state.step < ends[i] and not runs[i].hooks.should_stop()]
        if not active:
            return runs
        pending = []
        for i in active:
            r = runs[i]
            try:
                with r.own_rng():
                    cams, shading, out, conditions = begin_step(r.cfg, r.scene, r.guidance, r.prompts, r.state, devices[i])
                    pending.append((i, shading, out, r.guidance.prepare(out["rgb"], conditions, r.state.step, cams, r.state.generator)))
            except Exception as e:  # noqa: BLE001 - one run's failure leaves the others training
                r.error = e
        outputs = predict_together(prior, [request for *_, request in pending]) if pending else []
        for (i, shading, out, request), prior_out in zip(pending, outputs):
            r = runs[i]
            try:
                with r.own_rng():
                    losses = r.guidance.finish(request, prior_out)
                    end_step(r.cfg, r.scene, r.state, r.hooks, losses, out, shading, ends[i], t_starts[i])
            except Exception as e:  # noqa: BLE001
                r.error = e
