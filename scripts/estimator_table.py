"""The method table of docs/estimators.md from the estimator sweep folders (configs/sweeps/estimators.yaml).

One row per config of the sweep's `config` grid, or with several sweep folders (e.g. the ε prior's
and the flow prior's, configs/sweeps/toy-eps-sds.yaml and toy-flow-estimators.yaml) one row per
config file and grid point of each ("toy-flow rfds"): runs, mean and worst mesh IoU, mean colour error,
mean recognition, mean training seconds per run, mean prior evaluations per step (metrics.jsonl's
prior_calls), seed diversity (mean pairwise IoU between the meshes of different seeds of the same
prompt, on a 64^3 grid without alignment: lower is more diverse), with --baseline the IoU
difference to that row paired by prompt and seed (mean ± standard error over the pairs) and, with --at, the mean IoU of
the same configs in shorter sweeps (time-to-quality) and, with --v2, toy world v2's columns from the
estimator sweeps on its faced objects and compositions (configs/sweeps/estimators-janus.yaml,
estimators-compositions.yaml): Janus rate over the unflooded runs, face present, composition
accuracy (docs/janus.md defines them). Writes the table between the markers
<!-- estimator-table --> and <!-- /estimator-table --> of --out (appended, with its markers, when they
are missing), with --by-shape a second table of mean and worst IoU per shape between
<!-- estimator-shapes --> markers, and, unless
--no-picture, a comparison picture (rows: configs, columns: prompts, seed 0).

    python scripts/estimator_table.py runs/sweeps/estimators --at 150=runs/sweeps/estimators-150 \
        --at 300=runs/sweeps/estimators-300 --out docs/estimators.md --picture docs/estimators.png
    python scripts/estimator_table.py runs/sweeps/estimators --v2 runs/sweeps/estimators-janus \
        --v2 runs/sweeps/estimators-compositions --out docs/estimators.md --picture docs/estimators.png
    python scripts/estimator_table.py runs/sweeps/toy-eps-sds runs/sweeps/toy-flow-estimators \
        --out docs/flow-priors.md --picture docs/flow-priors.png
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import sys
from pathlib import Path

from sds3d.sweep import expand, load_sweep_file
from sds3d.sweep.grid import CONFIG_KEY, display_value
from sds3d.sweep.report import metrics_of, result_image

START, END = "<!-- estimator-table -->", "<!-- /estimator-table -->"
SHAPES_START, SHAPES_END = "<!-- estimator-shapes -->", "<!-- /estimator-shapes -->"


def config_name(run, spec) -> str:
    """The run's config file stem, then its values of the other grid keys (a grid of only ``config``: the stem)."""
    value = dict(run.overrides).get(CONFIG_KEY)
    stem = Path(display_value(value) if value is not None else spec.config).stem
    return " ".join([stem] + [display_value(v) for k, v in run.overrides if k != CONFIG_KEY])


def read_runs(sweep_dir: Path) -> dict[str, list[dict]]:
    """Per config name: one dict per run folder with its metrics, prompt, seed, folder and prior calls per step."""
    spec = load_sweep_file(sweep_dir / "sweep.yaml")
    by_config: dict[str, list[dict]] = {}
    for run in expand(spec):
        folder = sweep_dir / run.name
        summary = json.loads((folder / "summary.json").read_text()) if (folder / "summary.json").is_file() else {}
        calls = []
        if (folder / "metrics.jsonl").is_file():
            calls = [json.loads(line).get("prior_calls") for line in (folder / "metrics.jsonl").read_text().splitlines()]
        v2 = summary.get("eval") if isinstance(summary.get("eval"), dict) and summary["eval"].get("world") == "v2" else None
        row = {**metrics_of(summary), "prompt": run.prompt, "seed": run.seed, "folder": folder,
               "prior_calls": mean([c for c in calls if c is not None]), "v2": v2}
        by_config.setdefault(config_name(run, spec), []).append(row)
    return by_config


def merged_runs(sweep_dirs: list[Path]) -> dict[str, list[dict]]:
    """``read_runs`` of several sweep folders, the rows of one config name together."""
    by_config: dict[str, list[dict]] = {}
    for sweep_dir in sweep_dirs:
        for name, rows in read_runs(sweep_dir).items():
            by_config.setdefault(name, []).extend(rows)
    return by_config


def mean(values) -> float | None:
    xs = [v for v in values if v is not None and math.isfinite(v)]
    return sum(xs) / len(xs) if xs else None


def seed_diversity(rows: list[dict], resolution: int = 64) -> float | None:
    """Mean pairwise occupancy IoU between the meshes of different seeds of each prompt."""
    from sds3d.eval import load_mesh_world, mesh_occupancy

    ious = []
    prompts = {r["prompt"] for r in rows}
    for prompt in sorted(prompts):
        grids = []
        for r in sorted((r for r in rows if r["prompt"] == prompt), key=lambda r: r["seed"]):
            try:
                grids.append(mesh_occupancy(load_mesh_world(r["folder"]), resolution))
            except Exception:  # noqa: BLE001 - a missing or empty mesh leaves the pair out
                continue
        for a, b in itertools.combinations(grids, 2):
            union = (a | b).sum()
            if union:
                ious.append(float((a & b).sum() / union))
    return mean(ious)


def fmt(value, spec: str = ".3f") -> str:
    return "" if value is None else format(value, spec)


def paired_difference(rows: list[dict], base: list[dict]) -> str:
    """Mean and standard error of IoU(row) - IoU(base) over the (prompt, seed) pairs both have."""
    base_iou = {(r["prompt"], r["seed"]): r["iou"] for r in base if r["iou"] is not None}
    d = [r["iou"] - base_iou[(r["prompt"], r["seed"])] for r in rows if r["iou"] is not None and (r["prompt"], r["seed"]) in base_iou]
    if len(d) < 2:
        return ""
    m = sum(d) / len(d)
    se = math.sqrt(sum((x - m) ** 2 for x in d) / (len(d) - 1) / len(d))
    return f"{m:+.3f} ± {se:.3f} ({len(d)})"


def v2_columns(rows: list[dict]) -> list[str]:
    """Janus rate (of the unflooded faced runs, with their count), face present, composition accuracy (with
    the count of composition runs) of one config's toy world v2 runs; janus_table.py's definitions."""
    faced = [r["v2"] for r in rows if r["v2"] and r["v2"].get("kind") == "faced"]
    judged = [m for m in faced if m.get("janus") is not None]
    comps = [r["v2"] for r in rows if r["v2"] and r["v2"].get("kind") == "composition"]
    janus = mean(float(m["janus"]) for m in judged)
    face = mean(float(m["face_present"]) for m in judged)
    comp = mean(float(bool(m["composition_ok"])) for m in comps)
    return [f"{janus:.0%} ({len(judged)})" if janus is not None else "", fmt(face, ".0%"),
            f"{comp:.0%} ({len(comps)})" if comp is not None else ""]


def table(main: dict[str, list[dict]], at: dict[int, dict[str, list[dict]]], diversity: bool, baseline: str | None = None,
          v2: dict[str, list[dict]] | None = None) -> str:
    steps = sorted(at)
    header = (["config", "runs", "mean IoU", "worst IoU", "colour error", "recognition", "train s/run", "prior calls/step",
               "seed diversity (pairwise IoU)"] + ([f"IoU − {baseline} (pairs)"] if baseline else [])
              + [f"IoU @ {s} steps" for s in steps]
              + (["Janus rate (runs)", "face present", "composition acc. (runs)"] if v2 is not None else []))
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, rows in main.items():
        ious = [r["iou"] for r in rows if r["iou"] is not None]
        cells = [name, str(len(ious)), fmt(mean(ious)), fmt(min(ious) if ious else None),
                 fmt(mean(r["colour_error"] for r in rows)), fmt(mean(r["recognition"] for r in rows), ".2f"),
                 fmt(mean(r["train_seconds"] for r in rows), ".1f"), fmt(mean(r["prior_calls"] for r in rows), ".2f"),
                 fmt(seed_diversity(rows)) if diversity else ""]
        cells += [paired_difference(rows, main[baseline])] if baseline else []
        cells += [fmt(mean(r["iou"] for r in at[s].get(name, []))) for s in steps]
        cells += v2_columns(v2.get(name, [])) if v2 is not None else []
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def shape_table(main: dict[str, list[dict]]) -> str:
    """Mean IoU per config (rows) and shape (columns: the prompt's last word, "a red cube" -> cube), with the
    worst run in brackets: where a method fails, which an all-prompt mean hides."""
    shapes = sorted({r["prompt"].split()[-1] for rows in main.values() for r in rows})
    lines = ["| config | " + " | ".join(f"{s}: mean (worst)" for s in shapes) + " |", "|" + "---|" * (len(shapes) + 1)]
    for name, rows in main.items():
        cells = [name]
        for shape in shapes:
            ious = [r["iou"] for r in rows if r["iou"] is not None and r["prompt"].split()[-1] == shape]
            cells.append(f"{mean(ious):.3f} ({min(ious):.3f})" if ious else "")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def picture(main: dict[str, list[dict]], path: Path, cell: int = 64) -> None:
    from PIL import Image, ImageDraw, ImageFont

    prompts = sorted({r["prompt"] for rows in main.values() for r in rows})
    label_w, head_h = 120, 28
    canvas = Image.new("RGB", (label_w + cell * len(prompts), head_h + cell * len(main)), "white")
    draw, font = ImageDraw.Draw(canvas), ImageFont.load_default()
    for j, prompt in enumerate(prompts):
        for k, word in enumerate(prompt.split()[1:]):
            draw.text((label_w + j * cell + 2, 2 + 12 * k), word, fill="black", font=font)
    for i, (name, rows) in enumerate(main.items()):
        draw.text((4, head_h + i * cell + cell // 2 - 6), name, fill="black", font=font)
        for j, prompt in enumerate(prompts):
            run = next((r for r in rows if r["prompt"] == prompt and r["seed"] == min(x["seed"] for x in rows)), None)
            img = result_image(run["folder"], cell) if run else None
            if img is not None:
                canvas.paste(img, (label_w + j * cell, head_h + i * cell))
    canvas.save(path)


def write(out: Path, text: str, start: str = START, end: str = END) -> None:
    """Replace the block between the markers ``start`` and ``end`` of ``out``; append it when they are missing."""
    block = f"{start}\n{text}{end}"
    old = out.read_text() if out.is_file() else ""
    if start in old and end in old:
        out.write_text(old[: old.index(start)] + block + old[old.index(end) + len(end):])
    else:
        out.write_text(old + ("\n" if old and not old.endswith("\n") else "") + block + "\n")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("sweep_dirs", type=Path, nargs="+", help="the 600-step sweep folder(s) (configs/sweeps/estimators.yaml's out)")
    ap.add_argument("--at", action="append", default=[], metavar="STEPS=DIR", help="a shorter sweep: its steps and folder")
    ap.add_argument("--out", type=Path, default=Path("docs/estimators.md"))
    ap.add_argument("--picture", type=Path, default=Path("docs/estimators.png"))
    ap.add_argument("--no-picture", action="store_true")
    ap.add_argument("--no-diversity", action="store_true", help="skip the pairwise mesh IoU (reads every mesh)")
    ap.add_argument("--v2", action="append", default=[], type=Path, metavar="DIR",
                    help="a toy world v2 estimator sweep (configs/sweeps/estimators-janus.yaml, -compositions.yaml): its columns")
    ap.add_argument("--baseline", help="a row name (e.g. 'toy sds'): add each row's IoU difference to it, paired by prompt and seed")
    ap.add_argument("--by-shape", action="store_true",
                    help=f"also the mean and worst IoU per shape (the prompt's last word), between {SHAPES_START} markers")
    args = ap.parse_args(argv)
    main_rows = merged_runs(args.sweep_dirs)
    at = {int(item.split("=", 1)[0]): read_runs(Path(item.split("=", 1)[1])) for item in args.at}
    if args.baseline is not None and args.baseline not in main_rows:
        print(f"estimator_table: --baseline {args.baseline!r} is no row of the table; give one of: {', '.join(main_rows)}",
              file=sys.stderr)
        raise SystemExit(2)
    v2 = merged_runs(args.v2) if args.v2 else None
    text = table(main_rows, at, diversity=not args.no_diversity, baseline=args.baseline, v2=v2)
    print(text, end="")
    write(args.out, text)
    if args.by_shape:
        shapes = shape_table(main_rows)
        print(shapes, end="")
        write(args.out, shapes, SHAPES_START, SHAPES_END)
    if not args.no_picture:
        picture(main_rows, args.picture)


if __name__ == "__main__":
    main()
