#!/usr/bin/env python
"""Gaussians vs NeRF on the toy benchmark: the tables in docs/gaussians.md and the picture of all 16 prompts.

    python scripts/gaussians_table.py runs/sweeps/gaussians-vs-nerf --doc docs/gaussians.md --picture docs/gaussians.png

Reads every run folder under the sweep folders given (any depth; several folders, e.g. NeRF runs
of another sweep with the same config, count as one): its config.yaml (``scene.kind``,
``trainer.max_steps``, prompt, seed) and summary.json (``eval.mesh_iou``, ``eval.colour_error``,
``eval.recognition``, ``train_seconds``, ``timings``, ``peak_rss_mib``). The runs of each kind
at several ``trainer.max_steps`` (docs/gaussians.md gives the sweep commands) give the steps to
reach IoU 0.9: per prompt and seed, the smallest budget whose run reaches it. The tables replace
the text between ``<!-- results -->`` and ``<!-- /results -->`` in ``--doc``; the picture has one
row per prompt (colour-major, ``toyworld.prompts.all_prompts``), NeRF's orbit frames on the
left and the Gaussians' on the right, from seed 0 at the largest budget.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections import defaultdict
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import yaml

KINDS = ("nerf", "gaussians")
IOU_GOAL = 0.9
BEGIN, END = "<!-- results -->", "<!-- /results -->"


def load_runs(folder: Path) -> list[dict]:
    """One record per finished run folder (a summary.json with eval metrics)."""
    runs = []
    for summary_path in sorted(folder.rglob("summary.json")):
        run_dir = summary_path.parent
        config_path = run_dir / "config.yaml"
        if not config_path.is_file():
            continue
        cfg = yaml.safe_load(config_path.read_text())
        summary = json.loads(summary_path.read_text())
        ev = summary.get("eval") or {}
        if ev.get("mesh_iou") is None:
            continue
        runs.append({
            "dir": run_dir, "kind": cfg["scene"]["kind"], "steps": int(cfg["trainer"]["max_steps"]),
            "prompt": cfg["prompt"], "seed": int(cfg["seed"]), "iou": float(ev["mesh_iou"]),
            "colour_error": float(ev["colour_error"]), "recognition": ev.get("recognition"),
            "train_s": float(summary["train_seconds"]), "total_s": float(sum((summary.get("timings") or {}).values())),
            "rss": summary.get("peak_rss_mib"), "gaussians": _final_count(run_dir)})
    return runs


def check_unique(runs: list[dict]) -> str | None:
    """None, or a line naming two run folders of the same kind, budget, prompt and seed (counted twice otherwise)."""
    seen = {}
    for r in runs:
        key = (r["kind"], r["steps"], r["prompt"], r["seed"])
        if key in seen:
            return (f"{seen[key]} and {r['dir']}: the same {r['kind']} run ({r['prompt']!r}, seed {r['seed']}, "
                    f"{r['steps']} steps) twice; pass folders that do not overlap")
        seen[key] = r["dir"]
    return None


def _final_count(run_dir: Path) -> float | None:
    """The Gaussian count of the last metrics record (None for a NeRF)."""
    path = run_dir / "metrics.jsonl"
    lines = path.read_text().splitlines() if path.is_file() else []
    return json.loads(lines[-1]).get("gaussians") if lines else None


def _mean(values) -> float | None:
    values = [v for v in values if v is not None]
    return sum(values) / len(values) if values else None


def _fmt(x, digits: int = 3) -> str:
    return "" if x is None else f"{x:.{digits}f}"


def tables(runs: list[dict]) -> str:
    """The markdown of the comparison (full budget, steps to IoU 0.9, per prompt, the goal)."""
    by_kind = {k: [r for r in runs if r["kind"] == k] for k in KINDS}
    budgets = sorted({r["steps"] for r in runs})
    full = {k: [r for r in rs if r["steps"] == max(budgets)] for k, rs in by_kind.items()}
    out = [f"At {max(budgets)} steps (mean over prompts x seeds; seconds of wall time per run; peak RSS of the run's process):", "",
           "| scene | runs | IoU | colour error | recognition | train s | total s | peak RSS MiB | Gaussians |",
           "|---|---|---|---|---|---|---|---|---|"]
    for k, rs in full.items():
        out.append(f"| {k} | {len(rs)} | {_fmt(_mean(r['iou'] for r in rs))} | {_fmt(_mean(r['colour_error'] for r in rs))} | "
                   f"{_fmt(_mean(r['recognition'] for r in rs))} | {_fmt(_mean(r['train_s'] for r in rs), 1)} | "
                   f"{_fmt(_mean(r['total_s'] for r in rs), 1)} | {_fmt(max((r['rss'] for r in rs if r['rss']), default=None), 0)} | "
                   f"{_fmt(_mean(r['gaussians'] for r in rs), 0)} |")
    out += ["", f"Steps to reach IoU {IOU_GOAL}: per prompt and seed, the smallest budget (`trainer.max_steps`, with the "
            "t annealing and the late camera phase scaled to it) whose run reaches it; mean IoU and total seconds per run at each budget (runs):", "",
            "| scene | reached | median steps | " + " | ".join(f"@ {b} steps" for b in budgets) + " |",
            "|---|---|---|" + "---|" * len(budgets)]
    for k, rs in by_kind.items():
        per_case = defaultdict(dict)
        for r in rs:
            per_case[(r["prompt"], r["seed"])][r["steps"]] = r["iou"]
        first = [min((b for b, iou in ious.items() if iou >= IOU_GOAL), default=None) for ious in per_case.values()]
        reached = [b for b in first if b is not None]
        median = statistics.median(reached) if reached else None
        means = [f"{_fmt(_mean(r['iou'] for r in rs if r['steps'] == b))}, {_fmt(_mean(r['total_s'] for r in rs if r['steps'] == b), 1)} s "
                 f"({sum(r['steps'] == b for r in rs)})" for b in budgets]
        out.append(f"| {k} | {len(reached)}/{len(per_case)} | {_fmt(median, 0)} | " + " | ".join(means) + " |")
    out += ["", "Per prompt at the full budget (mean over seeds), NeRF / Gaussians:", "",
            "| prompt | IoU | colour error | recognition |", "|---|---|---|---|"]
    for prompt in sorted({r["prompt"] for r in runs}, key=_prompt_order):
        cells = []
        for key, digits in (("iou", 3), ("colour_error", 3), ("recognition", 2)):
            a, b = (_mean(r[key] for r in full[k] if r["prompt"] == prompt) for k in KINDS)
            cells.append(f"{_fmt(a, digits)} / {_fmt(b, digits)}")
        out.append(f"| {prompt} | " + " | ".join(cells) + " |")
    nerf_iou, gs_iou = (_mean(r["iou"] for r in full[k]) for k in KINDS)
    nerf_s, gs_s = (_mean(r["total_s"] for r in full[k]) for k in KINDS)
    if None not in (nerf_iou, gs_iou, nerf_s, gs_s):
        out += ["", f"Goal (mean IoU within 0.02 of NeRF's in at most half its wall time): IoU {gs_iou:.3f} vs {nerf_iou:.3f} "
                f"({'met' if gs_iou >= nerf_iou - 0.02 else 'not met'}), time {gs_s:.1f} s vs {nerf_s:.1f} s, ratio "
                f"{gs_s / nerf_s:.2f} ({'met' if gs_s <= 0.5 * nerf_s else 'not met'})."]
        # "At each one's best settings": the Gaussians' fastest budget whose IoU is within 0.02 of the NeRF's full budget.
        ok = [(_mean(r["total_s"] for r in by_kind["gaussians"] if r["steps"] == b), b) for b in budgets
              if (_mean(r["iou"] for r in by_kind["gaussians"] if r["steps"] == b) or 0.0) >= nerf_iou - 0.02]
        if ok:
            t, b = min(ok)
            out[-1] += (f" The Gaussians' fastest budget within 0.02 of it: {b} steps, {t:.1f} s, ratio {t / nerf_s:.2f} "
                        f"({'met' if t <= 0.5 * nerf_s else 'not met'}).")
        else:
            out[-1] += " No Gaussian budget comes within 0.02 of it."
    return "\n".join(out) + "\n"


def _prompt_order(prompt: str) -> int:
    from sds3d.toyworld.prompts import all_prompts

    order = all_prompts()
    return order.index(prompt) if prompt in order else len(order)


def picture(runs: list[dict], path: Path, frames: int = 4) -> None:
    """One row per prompt: NeRF's orbit frames, then the Gaussians' (seed 0, largest budget)."""
    from sds3d.toyworld.prompts import all_prompts

    top = max(r["steps"] for r in runs)
    pick = {(r["kind"], r["prompt"]): r["dir"] for r in runs if r["steps"] == top and r["seed"] == 0}
    rows, blank = [], None
    for prompt in all_prompts():
        strips = []
        for kind in KINDS:
            video_path = next((p for p in (pick.get((kind, prompt), Path("-")) / n for n in ("orbit.mp4", "orbit.gif")) if p.exists()), None)
            if video_path is None:
                strips.append(None)
                continue
            video = iio.imread(video_path)
            idx = np.linspace(0, len(video), frames, endpoint=False).astype(int)
            strips.append(np.concatenate([video[i][..., :3] for i in idx], axis=1))
        blank = next((s for s in strips if s is not None), blank)
        rows.append(strips)
    if blank is None:
        _fail("no orbit videos at the largest budget for seed 0; the picture needs each kind's seed-0 runs")
    white = np.full_like(blank, 255)
    gap = np.full((blank.shape[0], 8, 3), 255, dtype=blank.dtype)
    image = np.concatenate([np.concatenate([rows[i][0] if rows[i][0] is not None else white, gap,
                                            rows[i][1] if rows[i][1] is not None else white], axis=1) for i in range(len(rows))])
    path.parent.mkdir(parents=True, exist_ok=True)
    iio.imwrite(path, image)


def _fail(message: str) -> None:
    print(f"gaussians_table: {message}", file=sys.stderr)
    raise SystemExit(2)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("folders", type=Path, nargs="+", help="sweep folders holding both kinds' runs")
    ap.add_argument("--doc", type=Path, default=Path("docs/gaussians.md"))
    ap.add_argument("--picture", type=Path, default=Path("docs/gaussians.png"))
    args = ap.parse_args()
    runs = [r for folder in args.folders for r in load_runs(folder)]
    if not any(r["kind"] == "gaussians" for r in runs) or not any(r["kind"] == "nerf" for r in runs):
        _fail(f"{' '.join(map(str, args.folders))}: need finished runs of both scene kinds (found {len(runs)} runs); "
              "run the sweeps in docs/gaussians.md first")
    if (duplicate := check_unique(runs)) is not None:
        _fail(duplicate)
    text = args.doc.read_text() if args.doc.is_file() else ""
    if BEGIN not in text or END not in text:
        _fail(f"{args.doc}: no {BEGIN} ... {END} section to fill; add the two markers where the tables go")
    head, rest = text.split(BEGIN, 1)
    args.doc.write_text(head + BEGIN + "\n" + tables(runs) + END + rest.split(END, 1)[1])
    picture(runs, args.picture)
    print(f"{args.doc}, {args.picture}: {len(runs)} runs")


if __name__ == "__main__":
    main()
