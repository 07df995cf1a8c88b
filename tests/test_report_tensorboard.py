"""logger=tensorboard: TensorBoard holds the same scalars as metrics.jsonl, also across a resume."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sds3d.checkpoint import TrainingInterrupted
from sds3d.config import ConfigError, load_config
from sds3d.pipeline import run
from sds3d.runs import prepare_run_dir

TOY = Path(__file__).resolve().parents[1] / "configs" / "toy.yaml"


def _cfg(tmp_path, prior, *extra):
    return load_config(TOY, ["prompt=a red cube", f"prior.name_or_path={prior}", f"out_dir={tmp_path}", "logger=tensorboard",
                             "trainer.max_steps=6", "trainer.log_every=1", "trainer.val_every=0", "trainer.ckpt_every=2",
                             "trainer.progress=false", "render.num_samples=8", "render.resolution=16", "trainer.threads=1", *extra])


def scalars(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir / "tensorboard"))
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def expected(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    out: dict[str, list] = {}
    for line in (run_dir / "metrics.jsonl").read_text().splitlines():
        record = json.loads(line)
        for k, v in record.items():
            if k != "step" and isinstance(v, (int, float)) and not isinstance(v, bool):
                out.setdefault(k, []).append((record["step"], v))
    return out


def assert_same(got: dict, want: dict) -> None:
    assert set(got) == set(want)
    for tag in want:
        assert [s for s, _ in got[tag]] == [s for s, _ in want[tag]], tag
        assert [v for _, v in got[tag]] == pytest.approx([v for _, v in want[tag]], rel=1e-6), tag  # float32 in events


def test_tensorboard_mirrors_metrics_jsonl_across_a_resume(tmp_path, tiny_pixel_prior):
    pytest.importorskip("tensorboard", reason="the tensorboard extra (pip install 'sds3d[tensorboard]') is not installed")
    cfg = _cfg(tmp_path, tiny_pixel_prior)
    run_dir = prepare_run_dir(cfg)
    with pytest.raises(TrainingInterrupted):
        run(cfg, run_dir, stop_after=3, finish_run=False)  # checkpoint at step 3
    # A step logged after the checkpoint by a run that was then killed: resume must drop it.
    from torch.utils.tensorboard import SummaryWriter

    with SummaryWriter(str(run_dir / "tensorboard")) as stale:
        stale.add_scalar("loss_sds", 999.0, 4)
    with open(run_dir / "metrics.jsonl", "a") as f:
        f.write(json.dumps({"step": 4, "loss_sds": 999.0}) + "\n")
    run(cfg, run_dir, resume=True, finish_run=False)
    want = expected(run_dir)
    assert [s for s, _ in want["loss_sds"]] == [1, 2, 3, 4, 5, 6]
    assert_same(scalars(run_dir), want)


def test_unknown_logger_is_one_line(tmp_path):
    with pytest.raises(ConfigError, match="logger='wandb' is unknown; use one of jsonl, tensorboard"):
        load_config(TOY, ["prompt=a red cube", "logger=wandb"])
