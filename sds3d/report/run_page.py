"""``report.html`` of a run folder: the mesh in 3D, the orbit video, renders, metrics, the loss, the config."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

from .page import data_uri, esc, install_viewer, page, rel, section, table

REPORT = "report.html"

FIDELITY_CAPTION = ("Rows: the scene's albedo, the exported mesh's albedo, the scene's normals, the mesh's normals, "
                    "silhouettes (grey: both; red: only the scene, the mesh is too small there; blue: only the mesh).")
RENDER_CAPTION = "Validation views around the object: shaded (top row) and normals (bottom row)."


def _summary(run_dir: Path) -> dict:
    try:
        return json.loads((run_dir / "summary.json").read_text())
    except (OSError, ValueError):
        return {}


def _metrics(run_dir: Path) -> list[dict]:
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        return []
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except ValueError:  # a line cut by a kill: the rest is still worth plotting
            continue
    return records


def loss_plot(records: list[dict], key: str = "loss_sds", width: int = 480, height: int = 160) -> str:
    """An inline SVG of ``key`` against the step, log-scaled (SDS losses span decades); "" if none."""
    points = [(r["step"], r[key]) for r in records if isinstance(r.get(key), (int, float)) and r[key] > 0 and math.isfinite(r[key])]
    if len(points) < 2:
        return ""
    steps = [p[0] for p in points]
    logs = [math.log10(p[1]) for p in points]
    s0, s1 = min(steps), max(steps)
    l0, l1 = min(logs), max(logs)
    span_s, span_l = max(s1 - s0, 1), max(l1 - l0, 1e-9)
    m = 36  # margin for the axis labels
    xy = " ".join(f"{m + (s - s0) / span_s * (width - m - 8):.1f},{8 + (l1 - v) / span_l * (height - 30):.1f}"
                  for s, v in zip(steps, logs))
    return (f'<svg class="plot" width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img" '
            f'aria-label="{esc(key)} by step">'
            f'<polyline fill="none" stroke="#0071e3" stroke-width="1.5" points="{xy}"/>'
            f'<text x="2" y="14" font-size="10">{10 ** l1:.3g}</text>'
            f'<text x="2" y="{height - 22}" font-size="10">{10 ** l0:.3g}</text>'
            f'<text x="{m}" y="{height - 6}" font-size="10">step {s0}</text>'
            f'<text x="{width - 70}" y="{height - 6}" font-size="10">step {s1}</text></svg>')


def _metric_rows(summary: dict) -> list[tuple]:
    ev = summary.get("eval") if isinstance(summary.get("eval"), dict) else {}
    fid = summary.get("fidelity") if isinstance(summary.get("fidelity"), dict) else {}
    rows = [
        ("shape IoU vs the toy shape", ev.get("mesh_iou"), "1 is the exact shape (toy prompts only)"),
        ("colour error", ev.get("colour_error"), "L2 distance in RGB to the prompted colour; 0 is exact"),
        ("recognition", ev.get("recognition"), "share of 8 views the toy world's judge recognises"),
        ("mesh vs scene: silhouette IoU", fid.get("mask_iou"), "the exported mesh against the scene's renders"),
        ("mesh vs scene: PSNR (dB)", fid.get("psnr"), "albedo images on white, all pixels"),
        ("mesh vs scene: PSNR inside (dB)", fid.get("psnr_inside"), "pixels both silhouettes cover"),
        ("mesh faces", summary.get("mesh_faces"), ""),
        ("mesh vertices", summary.get("mesh_vertices"), ""),
        ("training steps", summary.get("steps"), ""),
        ("training time (s)", summary.get("train_seconds"), ""),
        ("final SDS loss", summary.get("final_loss_sds"), ""),
        ("skipped steps", summary.get("skipped_steps"), "non-finite losses or gradients"),
    ]
    for phase, seconds in (summary.get("timings") or {}).items():
        rows.append((f"time: {phase} (s)", seconds, ""))
    return [r for r in rows if r[1] is not None]


def _viewer(run_dir: Path) -> tuple[str, str]:
    """The 3D view (head script, body) of mesh/mesh.glb, embedded; a hint when there is no .glb."""
    glb = run_dir / "mesh" / "mesh.glb"
    if not glb.is_file():
        hint = (f"<p>No mesh/mesh.glb in this run (export.formats has no glb). Write one with "
                f"<code>sds3d export {esc(run_dir)} --format obj --format glb</code>, then <code>sds3d report {esc(run_dir)}</code>.</p>")
        return "", hint
    body = (f'<model-viewer id="viewer" src="{data_uri(glb.read_bytes(), "model/gltf-binary")}" camera-controls '
            'auto-rotate tone-mapping="neutral" shadow-intensity="0" interaction-prompt="none" '
            f'alt="{esc("the exported mesh")}"><div slot="progress-bar"></div></model-viewer>'
            '<p class="caption">mesh/mesh.glb: drag to turn, scroll to zoom.</p>')
    return install_viewer(run_dir), body


def _video(run_dir: Path) -> str:
    for name in ("orbit.mp4", "orbit.gif"):
        if (run_dir / name).is_file():
            if name.endswith(".gif"):
                return f'<img class="render" src="{name}" alt="orbit" width="384">'
            return f'<video src="{name}" width="384" controls autoplay loop muted playsinline></video>'
    return "<p>No orbit video yet (<code>sds3d render RUN_DIR</code>).</p>"


def _renders(run_dir: Path) -> str:
    renders = run_dir / "renders"

    def step_of(p: Path) -> int:
        match = re.search(r"(\d+)", p.stem)
        return int(match.group(1)) if match else -1

    parts = []
    if (renders / "fidelity.png").is_file():
        parts.append(f'<figure><img class="render" src="renders/fidelity.png" alt="mesh fidelity" width="512">'
                     f'<figcaption class="caption">Mesh fidelity. {esc(FIDELITY_CAPTION)}</figcaption></figure>')
    for p in sorted(renders.glob("step_*.png"), key=step_of, reverse=True):
        parts.append(f'<figure><img class="render" src="{rel(p, run_dir)}" alt="{esc(p.stem)}" width="512">'
                     f'<figcaption class="caption">Step {step_of(p)}. {esc(RENDER_CAPTION)}</figcaption></figure>')
    return "".join(parts) or "<p>No validation renders (trainer.val_every=0).</p>"


def _files(run_dir: Path) -> str:
    names = ["mesh/mesh.obj", "mesh/mesh.mtl", "mesh/albedo.png", "mesh/mesh.glb", "mesh/mesh.ply", "mesh/mesh.json",
             "orbit.mp4", "summary.json", "config.yaml", "metrics.jsonl", "ckpt/last.pt"]
    items = [f'<li><a href="{esc(n)}">{esc(n)}</a></li>' for n in names if (run_dir / n).is_file()]
    return "<ul>" + "".join(items) + "</ul>"


def write_run_report(run_dir) -> Path:
    """Write ``report.html`` (and ``report_files/``) into ``run_dir`` from what the folder holds.

    Reads summary.json, metrics.jsonl, config.yaml, renders/, mesh/; anything missing is said in
    its section. Returns the page's path.
    """
    run_dir = Path(run_dir)
    summary = _summary(run_dir)
    head, viewer = _viewer(run_dir)
    config = (run_dir / "config.yaml").read_text() if (run_dir / "config.yaml").is_file() else "(no config.yaml)"
    plot = loss_plot(_metrics(run_dir)) or "<p>No loss records yet.</p>"
    prompt = summary.get("prompt") or run_dir.name
    status = summary.get("status") or ("finished" if "train_seconds" in summary else "not finished")
    body = "".join([
        '<div class="row">' + section("Mesh", viewer, "mesh") + section("Orbit video", _video(run_dir), "orbit") + "</div>",
        section("Metrics", table(_metric_rows(summary), ("metric", "value", "what it is")), "metrics"),
        section("SDS loss", plot + '<p class="caption">loss_sds by step (log scale), from metrics.jsonl.</p>', "loss"),
        section("Renders", _renders(run_dir), "renders"),
        section("Files", _files(run_dir), "files"),
        section("Resolved config", f"<pre>{esc(config)}</pre>", "config"),
    ])
    subtitle = f"{run_dir.name}: {status}"
    if summary.get("error"):
        subtitle += f" ({summary['error']})"
    path = run_dir / REPORT
    path.write_text(page(f"“{prompt}”", body, subtitle=subtitle, head=head,
                         footer="Refresh with: sds3d report RUN_DIR."))
    return path
