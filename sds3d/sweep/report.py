"""A sweep's results: one row per run (summary.csv, summary.md), the comparison image and index.html.

Metrics are read defensively from each run's summary.json: the trainer writes ``train_seconds``
and ``final_loss_sds``; ``sds3d.eval.evaluate_run`` writes ``eval.mesh_iou``, ``eval.colour_error``
and ``eval.recognition`` (toy prompts only). A missing metric is left empty, the row's ``note``
says why, and summary.md's means name the runs they leave out.
"""

from __future__ import annotations

import csv
import math
import warnings
from pathlib import Path

from ..runs import read_summary
from .grid import RunSpec, display_value

METRIC_COLUMNS = ("iou", "colour_error", "recognition", "train_seconds", "final_loss_sds")
EVAL_COLUMNS = ("iou", "colour_error", "recognition")
#: What comparison.png's cell lines abbreviate (drawn under the grid).
LEGEND = ("IoU: exported mesh vs the toy shape (1 best)", "col: colour error, L2 in RGB (0 best)",
          "rec: share of 8 views the judge recognises", "s: training seconds", "loss: final SDS loss")
_METRIC_SOURCES = {  # column -> where it may live in summary.json, first found wins
    "iou": (("eval", "mesh_iou"), ("eval", "iou"), ("iou",), ("mesh_iou",)),
    "colour_error": (("eval", "colour_error"), ("colour_error",)),
    "recognition": (("eval", "recognition"), ("recognition",)),
    "train_seconds": (("train_seconds",),),
    "final_loss_sds": (("final_loss_sds",),),
}


def _number(value) -> float | None:
    try:
        x = float(value)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


def metrics_of(summary: dict) -> dict[str, float | None]:
    """``{iou, colour_error, recognition, train_seconds, final_loss_sds}`` from a summary.json dict."""
    out = {}
    for col, sources in _METRIC_SOURCES.items():
        value = None
        for path in sources:
            node = summary
            for key in path:
                node = node.get(key) if isinstance(node, dict) else None
            value = _number(node)
            if value is not None:
                break
        out[col] = value
    return out


def collect_rows(runs: list[RunSpec], sweep_dir: Path, statuses: dict[str, str] | None = None) -> list[dict]:
    """One dict per run: run, prompt, seed, each grid key, metrics, status, error."""
    rows = []
    for run in runs:
        summary = read_summary(Path(sweep_dir) / run.name)
        row = {"run": run.name, "prompt": run.prompt, "seed": run.seed}
        row.update({k: display_value(v) for k, v in run.overrides})
        row.update(metrics_of(summary))
        error = summary.get("error") or ""
        status = (statuses or {}).get(run.name) or ("failed" if error else ("done" if row["train_seconds"] is not None else "missing"))
        row.update({"status": status, "error": error, "note": _note(summary, row, status)})
        rows.append(row)
    return rows


def _note(summary: dict, row: dict, status: str) -> str:
    """Why a finished run lacks toy-world metrics ("" when it has them all)."""
    if status != "done" or all(row[c] is not None for c in EVAL_COLUMNS):
        return ""
    ev = summary.get("eval")
    if not isinstance(ev, dict):
        return "no toy-world eval (the prompt or prior is not the toy world's, or eval.enabled=false)"
    skipped = ev.get("skipped") if isinstance(ev.get("skipped"), dict) else {}
    missing = [c for c in EVAL_COLUMNS if row[c] is None]
    reasons = sorted({str(skipped[k]) for k in skipped})
    return f"no {', '.join(missing)}" + (f": {'; '.join(reasons)}" if reasons else "")


def left_out(row: dict, metric: str) -> str | None:
    """Why ``row`` is not in the mean of ``metric`` (None if it is)."""
    if row.get(metric) is not None:
        return None
    if row["status"] == "failed":
        return f"failed ({row.get('error') or 'no error recorded'})"
    if row["status"] != "done":
        return "not run yet"
    return row.get("note") or f"no {metric} in summary.json"


def _columns(rows: list[dict]) -> list[str]:
    cols: list[str] = []
    for row in rows:
        cols += [k for k in row if k not in cols]
    return cols


def _fmt(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def write_csv(rows: list[dict], path: Path) -> Path:
    cols = _columns(rows)
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=cols)
        w.writeheader()
        for row in rows:
            w.writerow({k: _fmt(row.get(k)) for k in cols})
    return path


def _md_cell(value) -> str:
    return _fmt(value).replace("|", "\\|").replace("\n", " ")


def _md_table(header: list[str], body: list[list]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_md_cell(v) for v in r) + " |" for r in body]
    return lines


def _mean_cell(rs: list[dict], metric: str) -> str:
    xs = [r[metric] for r in rs if r[metric] is not None]
    if not xs:
        return ""
    mean = _fmt(sum(xs) / len(xs))
    return mean if len(xs) == len(rs) else f"{mean} ({len(xs)} of {len(rs)})"


def write_markdown(rows: list[dict], path: Path, grid_keys: list[str], title: str = "sds3d sweep") -> Path:
    """summary.md: the mean of each metric per grid point over prompts x seeds, the runs each mean
    leaves out and why, then every run."""
    lines = [f"# {title}", ""]
    if rows:
        points: dict[tuple, list[dict]] = {}
        for row in rows:
            points.setdefault(tuple(row.get(k) for k in grid_keys), []).append(row)
        header, body = mean_table(rows, grid_keys)
        lines += ["## Mean over prompts x seeds", "",
                  "A mean is over the runs that have the metric; \"(n of N)\" marks a mean over fewer than all.", ""]
        lines += _md_table(header, body) + [""]
        omitted = []
        for p, rs in points.items():
            for r in rs:
                reasons: dict[str, list[str]] = {}
                for c in METRIC_COLUMNS:
                    why = left_out(r, c)
                    if why is not None:
                        reasons.setdefault(why, []).append(c)
                point = ", ".join(f"{k}={_fmt(v)}" for k, v in zip(grid_keys, p)) or "all runs"
                omitted += [f"- {point}: `{r['run']}` left out of {', '.join(cs)}: {why}" for why, cs in reasons.items()]
        lines += ["## Left out of the means", ""] + (omitted or ["None: every run has every metric."]) + ["", "## Runs", ""]
        cols = [c for c in _columns(rows) if c != "run"] + ["run"]
        lines += _md_table(cols, [[r.get(c) for c in cols] for r in rows])
    path.write_text("\n".join(lines) + "\n")
    return path


def result_image(run_dir: Path, size: int):
    """A picture of a run's result (PIL RGB, size x size) or None: the first frame of its orbit
    video, else the first view of its last validation render."""
    from PIL import Image

    run_dir = Path(run_dir)
    for name in ("orbit.mp4", "orbit.gif"):
        if (run_dir / name).is_file():
            try:
                import imageio.v3 as iio

                with warnings.catch_warnings():  # imageio's ffmpeg reader leaves a pipe to the GC
                    warnings.simplefilter("ignore", ResourceWarning)
                    frame = iio.imread(run_dir / name, index=0)
                return Image.fromarray(frame[..., :3]).convert("RGB").resize((size, size), Image.LANCZOS)
            except Exception:  # noqa: BLE001 - an unreadable video falls back to the renders
                pass
    renders = sorted((run_dir / "renders").glob("step_*.png"))
    if renders:
        img = Image.open(renders[-1]).convert("RGB")
        h = img.height // 2  # save_validation_renders: shaded views on top, normals below, square views
        return img.crop((0, 0, h, h)).resize((size, size), Image.LANCZOS)
    return None


def _cell_text(row: dict) -> list[str]:
    if row["status"] == "failed":
        return ["FAILED", (row.get("error") or "")[:60]]
    if row["train_seconds"] is None:
        return ["not run"]
    m = {k: row.get(k) for k in METRIC_COLUMNS}
    f = lambda v, spec: "-" if v is None else format(v, spec)  # noqa: E731
    return [f"IoU {f(m['iou'], '.2f')}  col {f(m['colour_error'], '.3f')}",
            f"rec {f(m['recognition'], '.2f')}  {f(m['train_seconds'], '.3g')} s",
            f"loss {f(m['final_loss_sds'], '.3g')}"]


def write_comparison(rows: list[dict], runs: list[RunSpec], sweep_dir: Path, path: Path, cell: int = 128) -> Path:
    """comparison.png: rows prompts x seeds, columns grid points; each cell the result + metrics."""
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.load_default()
    line_h, pad = 12, 4
    text_h = 3 * line_h + pad
    columns = list(dict.fromkeys(r.column for r in runs))
    row_keys = list(dict.fromkeys((r.prompt, r.seed) for r in runs))
    label_w, head_h = 150, 2 * line_h + 2 * pad
    W = label_w + len(columns) * (cell + pad) + pad
    grid_h = head_h + len(row_keys) * (cell + text_h + pad)
    draw = ImageDraw.Draw(Image.new("RGB", (1, 1)))  # to measure the legend's lines
    legend = _wrap_legend(draw, font, W - 2 * pad)
    H = grid_h + len(legend) * line_h + pad
    canvas = Image.new("RGB", (W, H), "white")
    draw = ImageDraw.Draw(canvas)
    by_name = {r["run"]: r for r in rows}

    def wrap(text: str, width_px: int) -> list[str]:
        words, lines, cur = text.split(" "), [], ""
        for w in words:
            trial = f"{cur} {w}".strip()
            if draw.textlength(trial, font=font) <= width_px or not cur:
                cur = trial
            else:
                lines.append(cur)
                cur = w
        return lines + [cur]

    for j, col in enumerate(columns):
        x = label_w + pad + j * (cell + pad)
        for k, line in enumerate(wrap(col, cell)[:2]):
            draw.text((x, pad + k * line_h), line, fill="black", font=font)
    for i, (prompt, seed) in enumerate(row_keys):
        y = head_h + i * (cell + text_h + pad)
        for k, line in enumerate((wrap(prompt, label_w - 2 * pad) + [f"seed {seed}"])[:4]):
            draw.text((pad, y + k * line_h), line, fill="black", font=font)
        for j, col in enumerate(columns):
            x = label_w + pad + j * (cell + pad)
            run = next((r for r in runs if r.prompt == prompt and r.seed == seed and r.column == col), None)
            row = by_name.get(run.name) if run else None
            if row is None:
                continue
            img = result_image(Path(sweep_dir) / run.name, cell)
            if img is None:
                draw.rectangle((x, y, x + cell - 1, y + cell - 1), fill=(230, 230, 230))
                draw.text((x + pad, y + cell // 2 - line_h // 2), "no render", fill="gray", font=font)
            else:
                canvas.paste(img, (x, y))
            colour = "red" if row["status"] == "failed" else "black"
            for k, line in enumerate(_cell_text(row)):
                draw.text((x, y + cell + 2 + k * line_h), line, fill=colour, font=font)
    for k, line in enumerate(legend):
        draw.text((pad, grid_h + k * line_h), line, fill="dimgray", font=font)
    canvas.save(path)
    return path


def _wrap_legend(draw, font, width_px: int) -> list[str]:
    """``LEGEND`` joined with " | " into lines no wider than ``width_px``."""
    lines, cur = [], ""
    for item in LEGEND:
        trial = f"{cur} | {item}" if cur else item
        if cur and draw.textlength(trial, font=font) > width_px:
            lines.append(cur)
            cur = item
        else:
            cur = trial
    return lines + [cur]


def mean_table(rows: list[dict], grid_keys: list[str]) -> tuple[list[str], list[list]]:
    """The per-grid-point means of summary.md: header and body rows (cells as ``_mean_cell`` writes them)."""
    points: dict[tuple, list[dict]] = {}
    for row in rows:
        points.setdefault(tuple(row.get(k) for k in grid_keys), []).append(row)
    header = list(grid_keys) + ["runs", "failed"] + [f"mean {c}" for c in METRIC_COLUMNS]
    body = [list(p) + [len(rs), sum(r["status"] == "failed" for r in rs)] + [_mean_cell(rs, c) for c in METRIC_COLUMNS]
            for p, rs in points.items()]
    return header, body


def write_index(rows: list[dict], runs: list[RunSpec], sweep_dir: Path, path: Path, grid_keys: list[str],
                title: str = "sds3d sweep") -> Path:
    """index.html: the means, then the comparison grid (rows prompts x seeds, columns grid points),
    each cell a picture of the run and its metrics, linking to the run's report.html."""
    from ..report.page import esc, page, png_data_uri, section, table

    sweep_dir = Path(sweep_dir)
    by_name = {r["run"]: r for r in rows}
    columns = list(dict.fromkeys(r.column for r in runs))
    row_keys = list(dict.fromkeys((r.prompt, r.seed) for r in runs))
    grid = ["<table class=\"grid\"><tr><th></th>" + "".join(f"<th>{esc(c)}</th>" for c in columns) + "</tr>"]
    for prompt, seed in row_keys:
        cells = [f"<th>{esc(prompt)}<br><span class=\"note\">seed {seed}</span></th>"]
        for col in columns:
            run = next((r for r in runs if r.prompt == prompt and r.seed == seed and r.column == col), None)
            row = by_name.get(run.name) if run else None
            if row is None:
                cells.append("<td></td>")
                continue
            run_dir = sweep_dir / run.name
            img = result_image(run_dir, 128)
            picture = (f'<img src="{png_data_uri(img)}" alt="{esc(run.name)}">' if img is not None
                       else '<div class="note">no render</div>')
            text = "\n".join(_cell_text(row))
            css = "cell failed" if row["status"] == "failed" else "cell"
            report = run_dir / "report.html"
            href = f"{run.name}/report.html" if report.is_file() else f"{run.name}/"
            cells.append(f'<td><a href="{esc(href)}" title="{esc(run.name)}">{picture}<div class="{css}">{esc(text)}</div></a></td>')
        grid.append("<tr>" + "".join(cells) + "</tr>")
    grid.append("</table>")
    header, body = mean_table(rows, grid_keys)
    legend = "<p class=\"note\">" + esc(" | ".join(LEGEND)) + "</p>"
    files = "".join(f'<li><a href="{n}">{n}</a></li>' for n in ("summary.md", "summary.csv", "comparison.png")
                    if (sweep_dir / n).is_file())
    html_body = "".join([
        section("Mean over prompts x seeds", table([tuple(r) for r in body], tuple(header))
                + "<p class=\"note\">A mean is over the runs that have the metric; \"(n of N)\" marks a mean over "
                  "fewer than all (summary.md says which runs and why).</p>", "means"),
        section("Runs", "".join(grid) + legend + "<p class=\"note\">Each cell opens its run's report.</p>", "grid"),
        section("Files", f"<ul>{files}</ul>", "files"),
    ])
    path.write_text(page(title, html_body, subtitle=f"{len(rows)} runs in {sweep_dir}"))
    return path
