#!/usr/bin/env python
"""The long measurements of docs/performance.md, and the filling of its TO MEASURE blocks.

    python scripts/perf_measure.py ttq --jobs 2            # time to quality: IoU vs steps, 4 prompts x 3 seeds
    python scripts/perf_measure.py quality --jobs 2        # the 16 prompts at seed 0 against their targets
    python scripts/perf_measure.py throughput --label jobs2 --jobs 2
    python scripts/perf_measure.py throughput --label batch8 --batch-runs 8
    python scripts/perf_measure.py fill ab-toy=ab-toy.json ttq=runs/sweeps/ttq/ttq.json sd-batch=sd.jsonl gpu=gpu.txt

Every measurement is an ordinary ``sds3d sweep`` (``run_sweep``; the equivalent command is
printed), so a re-run skips finished runs; each writes a JSON file of its numbers. ``fill``
replaces the block between ``<!-- fill:NAME -->`` and ``<!-- /fill:NAME -->`` in the doc with a
table made from the file given for NAME: a JSON of ``bench_run.py --json`` or of a command here
(several throughput JSONs, comma-separated, side by side), ``bench_sd_step.py``'s JSON lines
(``.jsonl``), or text (``.txt``, e.g. gpu_check.sh's table) as is.
"""

from __future__ import annotations

import argparse
import csv
import json
import re
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
#: The 4 prompts of the toy config's measurements (docs/toy-config.md) and the 16 of the toy world.
FOUR = ["a red cone", "a blue cube", "a green sphere", "a yellow torus"]
SIXTEEN = [f"a {c} {s}" for c in ("red", "green", "blue", "yellow") for s in ("sphere", "cube", "cone", "torus")]
#: Quality targets of the 16-prompt check (issue 20): mean IoU, per-shape minimum IoU, max colour error.
MEAN_IOU = 0.925
MIN_IOU = {"sphere": 0.90, "cone": 0.90, "cube": 0.85, "torus": 0.75}
MAX_COLOUR = 0.2


def sweep(config: str, grid: dict, prompts: list[str], seeds: list[int], out: Path, overrides: list[str], jobs: int,
          batch_runs: int = 1) -> tuple[list[dict], float, float]:
    """``sds3d sweep`` in this process; its rows (summary.csv), wall seconds and CPU seconds (this
    process and its workers: less noisy than wall time on a shared machine)."""
    from sds3d.sweep import SweepSpec, run_sweep

    cmd = (f"sds3d sweep {config} {' '.join(overrides)} " + " ".join(f"--grid {k}={','.join(v)}" for k, v in grid.items())
           + " --prompts " + " ".join(f'"{p}"' for p in prompts) + f" --seeds {' '.join(map(str, seeds))} --out {out}"
           + (f" --jobs {jobs}" if jobs > 1 else "") + (f" --batch-runs {batch_runs}" if batch_runs > 1 else ""))
    print(f"perf_measure: {cmd}", file=sys.stderr, flush=True)
    t0, c0 = time.perf_counter(), cpu_seconds()
    result = run_sweep(SweepSpec(config, grid=grid, prompts=prompts, seeds=seeds, out=str(out), overrides=overrides),
                       jobs=jobs, batch_runs=batch_runs)
    return result.rows, time.perf_counter() - t0, cpu_seconds() - c0


def cpu_seconds() -> float:
    """User + system seconds of this process and of its finished child processes."""
    import resource

    me, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + children.ru_utime + children.ru_stime


def shape_of(prompt: str) -> str:
    return prompt.split()[-1]


def _num(v) -> float | None:
    try:
        return float(v)
    except (TypeError, ValueError):
        return None


def summarise(rows: list[dict]) -> dict:
    """Mean IoU, min IoU per shape, mean and max colour error, mean train seconds, failures."""
    done = [r for r in rows if r["status"] == "done" and _num(r.get("iou")) is not None]
    by_shape: dict[str, list[float]] = {}
    for r in done:
        by_shape.setdefault(shape_of(r["prompt"]), []).append(_num(r["iou"]))
    colours = [_num(r["colour_error"]) for r in done if _num(r.get("colour_error")) is not None]
    return {"runs": len(rows), "failed": len(rows) - len(done),
            "mean_iou": statistics.mean(_num(r["iou"]) for r in done) if done else None,
            "min_iou": {s: min(v) for s, v in sorted(by_shape.items())}, "mean_colour": statistics.mean(colours) if colours else None,
            "max_colour": max(colours) if colours else None,
            "mean_train_s": statistics.mean(_num(r["train_seconds"]) for r in done) if done else None}


def cmd_ttq(args) -> Path:
    out = Path(args.out)
    points = []
    for steps in args.steps:
        rows, wall, cpu = sweep(args.config, {"trainer.max_steps": [str(steps)]}, args.prompts, args.seeds, out / f"steps-{steps}",
                           [], args.jobs, args.batch_runs)  # the schedules are fractions of max_steps: they scale
        points.append({"steps": steps, **summarise(rows), "wall_s": wall, "cpu_s": cpu})
        print(json.dumps(points[-1]), file=sys.stderr)
    path = out / "ttq.json"
    path.write_text(json.dumps({"kind": "ttq", "config": args.config, "prompts": args.prompts, "seeds": args.seeds, "points": points}, indent=2))
    print(path)
    return path


def check_targets(s: dict) -> list[str]:
    """The targets the summary misses (empty: all met)."""
    missed = []
    if s["mean_iou"] is None or s["mean_iou"] < MEAN_IOU:
        missed.append(f"mean IoU {s['mean_iou']} < {MEAN_IOU}")
    missed += [f"min {shape} IoU {s['min_iou'].get(shape)} < {lo}" for shape, lo in MIN_IOU.items()
               if s["min_iou"].get(shape) is None or s["min_iou"][shape] < lo]
    if s["max_colour"] is None or s["max_colour"] > MAX_COLOUR:
        missed.append(f"max colour error {s['max_colour']} > {MAX_COLOUR}")
    if s["failed"]:
        missed.append(f"{s['failed']} runs failed")
    return missed


def cmd_quality(args) -> Path:
    from sds3d.config import load_config

    out = Path(args.out)
    if args.max_steps is None:  # the config's own (a grid of one value: a sweep needs a grid)
        args.max_steps = load_config(args.config, ["prompt=a red cube"]).trainer.max_steps
    rows, wall, cpu = sweep(args.config, {"trainer.max_steps": [str(args.max_steps)]}, SIXTEEN, [0], out,
                       list(args.overrides), args.jobs, args.batch_runs)
    s = summarise(rows)
    missed = check_targets(s)
    path = out / "quality.json"
    path.write_text(json.dumps({"kind": "quality", "config": args.config, "max_steps": args.max_steps, **s, "missed": missed,
                                "per_prompt": {r["prompt"]: {"iou": _num(r.get("iou")), "colour_error": _num(r.get("colour_error"))} for r in rows},
                                "wall_s": wall, "cpu_s": cpu}, indent=2))
    print(("PASS" if not missed else "FAIL: " + "; ".join(missed)) + f"  ({path})")
    return path


def cmd_throughput(args) -> Path:
    out = Path(args.out) / args.label
    scales = [f"{v:g}" for v in args.scales]
    rows, wall, cpu = sweep(args.config, {"guidance.scale": scales}, args.prompts, [0], out, [f"trainer.max_steps={args.max_steps}"],
                       args.jobs, args.batch_runs)
    done = sum(r["status"] == "done" for r in rows)
    path = out / "throughput.json"
    path.write_text(json.dumps({"kind": "throughput", "label": args.label, "jobs": args.jobs, "batch_runs": args.batch_runs,
                                "runs": len(rows), "done": done, "wall_s": wall, "runs_per_hour": 3600 * done / wall,
                                "cpu_s": cpu, "runs_per_cpu_hour": 3600 * done / cpu,
                                "max_steps": args.max_steps, "prompts": len(args.prompts), "scales": scales}, indent=2))
    print(f"{args.label}: {done} runs in {wall:.0f} s = {3600 * done / wall:.0f} runs/hour; {cpu:.0f} CPU s = "
          f"{3600 * done / cpu:.0f} runs per CPU hour  ({path})")
    return path


# -- fill ---------------------------------------------------------------------------------------------------


def _f(v, spec=".3f") -> str:
    return "-" if v is None else format(v, spec)


def render_block(data: dict | list | str) -> str:
    """A markdown table for one JSON (or a list of throughput JSONs, or bench_sd_step.py's lines); text verbatim."""
    if isinstance(data, str):  # e.g. the table gpu_check.sh printed
        return "```\n" + data.strip() + "\n```"
    if isinstance(data, list) and "part" in data[0]:  # bench_sd_step.py --batches lines
        lines = ["| part | batch | threads | s per call | s per sample |", "|---|---|---|---|---|"]
        lines += [f"| {d['part']} | {d['batch']} | {d['threads']} | {d['s_per_call_median']:.3g} | {d['s_per_sample']:.3g} |" for d in data]
        return "\n".join(lines)
    if isinstance(data, list):  # throughput runs side by side
        base = data[0]["runs_per_hour"]
        lines = ["| sweep | runs | wall s | runs / hour | vs first | CPU s | runs / CPU hour |", "|---|---|---|---|---|---|---|"]
        lines += [f"| {d['label']} (--jobs {d['jobs']}, --batch-runs {d['batch_runs']}) | {d['done']}/{d['runs']} | {d['wall_s']:.0f} | "
                  f"{d['runs_per_hour']:.0f} | {d['runs_per_hour'] / base:.2f}x | {d['cpu_s']:.0f} | {d['runs_per_cpu_hour']:.0f} |" for d in data]
        return "\n".join(lines)
    kind = data.get("kind", "ab")
    if kind == "ttq":
        shapes = sorted({s for p in data["points"] for s in p["min_iou"]})
        lines = ["| steps | mean IoU | " + " | ".join(f"min {s}" for s in shapes) + " | mean colour | train s |",
                 "|---|---|" + "---|" * len(shapes) + "---|---|"]
        lines += [f"| {p['steps']} | {_f(p['mean_iou'])} | " + " | ".join(_f(p["min_iou"].get(s)) for s in shapes)
                  + f" | {_f(p['mean_colour'])} | {_f(p['mean_train_s'], '.1f')} |" for p in data["points"]]
        return "\n".join(lines)
    if kind == "quality":
        verdict = "all targets met" if not data["missed"] else "missed: " + "; ".join(data["missed"])
        lines = [f"`{data['config']}`, {data['max_steps']} steps, 16 prompts at seed 0: mean IoU {_f(data['mean_iou'])}, "
                 f"max colour error {_f(data['max_colour'])} ({verdict}).", "",
                 "| shape | min IoU | target |", "|---|---|---|"]
        lines += [f"| {s} | {_f(data['min_iou'].get(s))} | {lo} |" for s, lo in MIN_IOU.items()]
        return "\n".join(lines)
    # bench_run.py --json: medians per phase, A / B
    phases = ("startup", "load_prior", "train", "orbit", "export", "eval", "total", "cpu")
    sides = list(data["runs"])
    med = {n: {k: statistics.median(r[k] for r in data["runs"][n]) for k in phases} for n in sides}
    head = "| phase | " + " | ".join(f"{n}: {data['configs'][n]} (s)" for n in sides) + (" | A / B |" if len(sides) == 2 else " |")
    lines = [f"{len(data['runs'][sides[0]])} runs each, alternating, {data['threads']} threads, prompt \"{data['prompt']}\"; medians.", "",
             head, "|---|" + "---|" * (len(sides) + (len(sides) == 2))]
    for k in phases:
        cells = " | ".join(f"{med[n][k]:.2f}" for n in sides)
        ratio = f" | {med['A'][k] / med['B'][k]:.2f} |" if len(sides) == 2 and med["B"][k] else " |"
        lines.append(f"| {k} | {cells}{ratio}")
    return "\n".join(lines)


def fill(doc: str, blocks: dict[str, str]) -> str:
    """``doc`` with each ``<!-- fill:NAME -->...<!-- /fill:NAME -->`` block's body replaced (markers kept)."""
    for name, body in blocks.items():
        pattern = re.compile(rf"(<!-- fill:{re.escape(name)} -->\n).*?(\n<!-- /fill:{re.escape(name)} -->)", re.S)
        if not pattern.search(doc):
            raise SystemExit(f"perf_measure fill: no block <!-- fill:{name} --> in the doc")
        doc = pattern.sub(lambda m: m.group(1) + body + m.group(2), doc)
    return doc


def cmd_fill(args) -> None:
    blocks = {}
    for item in args.blocks:
        name, sep, files = item.partition("=")
        if not sep:
            raise SystemExit(f"perf_measure fill: {item!r} is not NAME=FILE[,FILE...]")
        paths = [Path(f) for f in files.split(",")]
        if paths[0].suffix == ".txt":
            blocks[name] = render_block(paths[0].read_text())
            continue
        if paths[0].suffix == ".jsonl":
            data = [json.loads(line) for p in paths for line in p.read_text().splitlines() if line.strip()]
        else:
            data = [json.loads(p.read_text()) for p in paths]
        blocks[name] = render_block(data if len(data) > 1 or data[0].get("kind") == "throughput" else data[0])
    doc = Path(args.doc)
    doc.write_text(fill(doc.read_text(), blocks))
    print(f"filled {', '.join(blocks)} in {doc}")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)

    def common(p, out, config="configs/toy-fast.yaml"):
        p.add_argument("--config", default=config)
        p.add_argument("--jobs", type=int, default=1)
        p.add_argument("--batch-runs", type=int, default=1)
        p.add_argument("--out", default=out)

    p = sub.add_parser("ttq", help="IoU vs steps (schedules scaled to the steps)")
    common(p, "runs/sweeps/ttq")
    p.add_argument("--steps", type=lambda t: [int(v) for v in t.split(",")], default=[100, 150, 200, 300, 450, 600])
    p.add_argument("--prompts", nargs="+", default=FOUR)
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p = sub.add_parser("quality", help="the 16 prompts at seed 0 against the targets")
    common(p, "runs/sweeps/quality-toy-fast")
    p.add_argument("--max-steps", type=int, help="default: the config's trainer.max_steps")
    p.add_argument("overrides", nargs="*")
    p = sub.add_parser("throughput", help="runs per hour of the guidance-scale sweep (or a smaller one)")
    common(p, "runs/sweeps/throughput", config="configs/toy.yaml")
    p.add_argument("--label", required=True)
    p.add_argument("--prompts", nargs="+", default=SIXTEEN)
    p.add_argument("--scales", nargs="+", type=float, default=[0, 1, 3, 7.5, 30, 100])
    p.add_argument("--max-steps", type=int, default=600)
    p = sub.add_parser("fill", help="fill docs/performance.md's blocks from JSON files")
    p.add_argument("blocks", nargs="+", metavar="NAME=FILE[,FILE]")
    p.add_argument("--doc", default=str(REPO / "docs" / "performance.md"))
    args = ap.parse_args(argv)
    {"ttq": cmd_ttq, "quality": cmd_quality, "throughput": cmd_throughput, "fill": cmd_fill}[args.cmd](args)


if __name__ == "__main__":
    main()
