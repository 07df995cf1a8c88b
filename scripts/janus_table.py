#!/usr/bin/env python
"""The Janus table and the composition table of toy world v2 from the benchmark's sweep folders.

    sds3d sweep configs/sweeps/janus.yaml --jobs 2
    sds3d sweep configs/sweeps/compositions.yaml --jobs 2
    python scripts/janus_table.py --janus runs/sweeps/janus --compositions runs/sweeps/compositions

Reads every run folder's config.yaml (prior, view prompts, Perp-Neg) and summary.json ("eval":
toyworld.v2.metrics.evaluate_mesh), and writes the tables into README.md and docs/janus.md
(between the markers ``<!-- janus-tables:start -->`` and ``<!-- janus-tables:end -->``; README gets
a section at its end when it has none) and docs/janus-views.png: front (azimuth 0, where the face
belongs) and back (azimuth 180) views of the red owl, house and chair (seed 0) under each condition.

Janus rate: the fraction of runs with a second face >= 90 deg from the main one, over the runs
whose mesh is not flooded (metrics.janus.validity: flooded meshes have no verdict and are counted
apart); front ok: the main face within 45 deg of +x, over the runs with a face. Composition accuracy: the fraction of runs with composition_ok; part colour accuracy: the
fraction of parts whose colour is the prompt's.
"""

from __future__ import annotations

import argparse
import os
import re
from pathlib import Path

from omegaconf import OmegaConf

from sds3d.runs import read_summary
from sds3d.toyworld.v2.prompts import held_out_prompts

ROOT = Path(__file__).resolve().parents[1]
START, END = "<!-- janus-tables:start -->", "<!-- janus-tables:end -->"
#: (prior, view-dependent prompts, Perp-Neg) -> condition label (configs/sweeps/janus.yaml)
CONDITIONS = {
    ("toy-v2-text", False, False): "(a) view-suffix prior",
    ("toy-v2-text", True, False): "(b) view-suffix prior + view prompts",
    ("toy-v2-text", True, True): "(c) view-suffix prior + view prompts + Perp-Neg",
    ("toy-v2-camera", False, False): "(d) camera-conditioned prior",
    ("toy-v2-camera", True, False): "(d') camera-conditioned prior + view prompts",
    ("toy-v2-camera", True, True): "(d'') camera-conditioned prior + view prompts + Perp-Neg",
}
OBJECTS = ("owl", "house", "chair")
RELATIONS = ("on top of", "next to")  # toyworld_v2.json's composition relations


def read_runs(sweep_dir: Path) -> list[dict]:
    """One dict per finished run folder (v2 metrics in summary.json): prompt, seed, condition, eval, folder."""
    rows = []
    for run in sorted(p for p in Path(sweep_dir).iterdir() if (p / "config.yaml").is_file()):
        metrics = read_summary(run).get("eval")
        if not isinstance(metrics, dict) or metrics.get("world") != "v2":
            continue
        cfg = OmegaConf.load(run / "config.yaml")
        key = (str(cfg.prior.name_or_path), bool(cfg.guidance.view_dependent_prompts), bool(cfg.guidance.perp_neg))
        label = CONDITIONS.get(key, f"{key[0]}, view prompts {key[1]}, Perp-Neg {key[2]}")
        rows.append({"prompt": str(cfg.prompt), "seed": int(cfg.seed), "condition": label, "eval": metrics, "dir": run})
    return rows


def _mean(values) -> float | None:
    xs = [float(v) for v in values if v is not None]
    return sum(xs) / len(xs) if xs else None


def _ordered(labels) -> list[str]:
    known = list(CONDITIONS.values())
    return sorted(set(labels), key=lambda c: (known.index(c) if c in known else len(known), c))


def janus_table(rows: list[dict]) -> list[dict]:
    """Per condition: runs, flooded, Janus rate (all and per object), face present, faces, front_ok (of the
    runs with a face), IoU, v1's colour error and the body colour error (v2: the slot-coloured surface only,
    so a face drawn is no colour error)."""
    out = []
    for cond in _ordered(r["condition"] for r in rows if r["eval"]["kind"] == "faced"):
        mine = [r["eval"] for r in rows if r["condition"] == cond and r["eval"]["kind"] == "faced"]
        judged = [m for m in mine if m["janus"] is not None]
        entry = {"condition": cond, "runs": len(mine), "flooded": len(mine) - len(judged),
                 "janus_rate": _mean(m["janus"] for m in judged)}
        for name in OBJECTS:
            entry[f"janus_{name}"] = _mean(m["janus"] for m in judged if m["prompt"].split()[-1] == name)
        entry.update(face_present=_mean(m["face_present"] for m in judged), faces=_mean(m["n_faces"] for m in judged),
                     front_ok=_mean(m["front_ok"] for m in judged if m["face_present"]),
                     iou=_mean(m["iou"] for m in mine), colour_err=_mean(m["colour_err"] for m in mine),
                     body_colour_err=_mean(m.get("body_colour_err") for m in mine))
        out.append(entry)
    return out


def composition_table(rows: list[dict]) -> list[dict]:
    """Per condition, split (training / held out) and relation: runs, their seeds (a condition may have been
    run at fewer seeds than another), composition accuracy, union IoU, part
    colour accuracy. The relations apart because they differ in kind: "on top of" looks the same from every
    azimuth, "next to" does not (a prior that does not know the camera must guess its side, docs/janus.md)."""
    held = set(held_out_prompts())
    out = []
    comps = [r for r in rows if r["eval"]["kind"] == "composition"]
    for cond in _ordered(r["condition"] for r in comps):
        for split in ("training", "held out"):
            for relation in RELATIONS:
                runs = [r for r in comps if r["condition"] == cond and (r["prompt"] in held) == (split == "held out")
                        and f" {relation} " in r["prompt"]]
                if not runs:
                    continue
                mine = [r["eval"] for r in runs]
                out.append({"condition": cond, "prompts": split, "relation": relation, "runs": len(mine),
                            "seeds": sorted({r["seed"] for r in runs}),
                            "composition_acc": _mean(m["composition_ok"] for m in mine),
                            "union_iou": _mean(m["union_iou"] for m in mine),
                            "part_colour_acc": _mean(ok for m in mine for ok in m["part_colour_ok"])})
    return out


def _fmt(v, spec: str = ".2f") -> str:
    if v is None:
        return "–"
    return str(v) if isinstance(v, (int, str)) else format(v, spec)


def _seeds(rows: list[dict]) -> str:
    seeds = sorted({r["seed"] for r in rows})
    return f"seed{'s' if len(seeds) > 1 else ''} {', '.join(map(str, seeds))}"


def markdown(janus: list[dict], comps: list[dict], picture: str | None, *, janus_seeds: str, comp_seeds: str) -> str:
    lines = []
    if janus:
        lines += [f"**Janus table** (3 faced objects x 4 colours, {janus_seeds}; rates over unflooded runs)", "",
                  "| condition | runs | flooded | Janus rate | owl | house | chair | face present | faces | front ok | IoU | colour err | body colour err |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for e in janus:
            cells = [e["condition"], e["runs"], e["flooded"], _fmt(e["janus_rate"], ".0%")]
            cells += [_fmt(e[f"janus_{n}"], ".0%") for n in OBJECTS]
            cells += [_fmt(e["face_present"], ".0%"), _fmt(e["faces"]), _fmt(e["front_ok"], ".0%"), _fmt(e["iou"]), _fmt(e["colour_err"], ".3f"),
                      _fmt(e["body_colour_err"], ".3f")]
            lines.append("| " + " | ".join(map(str, cells)) + " |")
        lines.append("")
    if picture:
        lines += [f"![front (azimuth 0) and back (azimuth 180) views per condition]({picture})", ""]
    if comps:
        lines += [f"**Composition table** ({comp_seeds})", "",
                  "| condition | prompts | relation | runs | seeds | composition accuracy | union IoU | part colour accuracy |",
                  "|---|---|---|---|---|---|---|---|"]
        for e in comps:
            lines.append(f"| {e['condition']} | {e['prompts']} | {e['relation']} | {e['runs']} | {', '.join(map(str, e['seeds']))} | "
                         f"{_fmt(e['composition_acc'], '.0%')} | "
                         f"{_fmt(e['union_iou'])} | {_fmt(e['part_colour_acc'], '.0%')} |")
        lines.append("")
    return "\n".join(lines) if lines else "No finished v2 runs in the sweep folders yet.\n"


def replace_section(path: Path, body: str, heading: str | None = None) -> None:
    """Put ``body`` between the markers of ``path``; without markers, append them (under ``heading``)."""
    text = path.read_text() if path.is_file() else ""
    block = f"{START}\n{body.rstrip()}\n{END}"
    if START in text and END in text:
        text = re.sub(re.escape(START) + r".*?" + re.escape(END), lambda _: block, text, count=1, flags=re.S)
    else:
        text = text.rstrip() + ("\n\n" if text else "") + (f"{heading}\n\n" if heading else "") + block + "\n"
    path.write_text(text)


def views_picture(rows: list[dict], path: Path, size: int = 96) -> Path | None:
    """Front and back views of the red owl, house and chair (seed 0) per condition (rows), or None
    if no such run has a checkpoint."""
    import torch
    from PIL import Image, ImageDraw

    from sds3d.cameras import make_cameras
    from sds3d.runs import load_run_config, load_scene

    conds = _ordered(r["condition"] for r in rows if r["eval"]["kind"] == "faced")
    label_w, tiles = 360, {}
    for r in rows:
        name = r["prompt"].split()[-1]
        if r["seed"] != 0 or r["prompt"] != f"a red {name}" or name not in OBJECTS or not (r["dir"] / "ckpt" / "last.pt").is_file():
            continue
        cfg = load_run_config(r["dir"])
        scene = load_scene(cfg, r["dir"])
        cams = make_cameras(torch.tensor([0.0, 180.0]), torch.tensor([15.0, 15.0]), sum(cfg.camera.distance) / 2,
                            sum(cfg.camera.fov_y_deg) / 2)
        with torch.no_grad():
            rgb = scene.render(cams, shading="lambertian", resolution=size, stratified=False)["rgb"].clamp(0, 1)
        tiles[(r["condition"], name)] = [Image.fromarray((v.permute(1, 2, 0).numpy() * 255).round().astype("uint8")) for v in rgb]
    if not tiles:
        return None
    head = 20
    img = Image.new("RGB", (label_w + 6 * size, head + len(conds) * size), "white")
    draw = ImageDraw.Draw(img)
    for j, name in enumerate(OBJECTS):
        for k, side in enumerate(("front", "back")):
            draw.text((label_w + (2 * j + k) * size + 4, 4), f"{name} {side}", fill="black")
    for i, cond in enumerate(conds):
        draw.text((4, head + i * size + size // 2 - 6), cond, fill="black")
        for j, name in enumerate(OBJECTS):
            for k, tile in enumerate(tiles.get((cond, name), [])):
                img.paste(tile, (label_w + (2 * j + k) * size, head + i * size))
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)
    return path


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--janus", type=Path, default=Path("runs/sweeps/janus"))
    ap.add_argument("--compositions", type=Path, default=Path("runs/sweeps/compositions"))
    ap.add_argument("--readme", type=Path, default=ROOT / "README.md")
    ap.add_argument("--doc", type=Path, default=ROOT / "docs" / "janus.md")
    ap.add_argument("--no-picture", action="store_true", help="skip rendering docs/janus-views.png")
    args = ap.parse_args(argv)
    janus_rows = read_runs(args.janus) if args.janus.is_dir() else []
    comp_rows = read_runs(args.compositions) if args.compositions.is_dir() else []
    if not janus_rows and not comp_rows:
        raise SystemExit(f"janus_table: error: no finished v2 runs in {args.janus} or {args.compositions}; run the sweeps first")
    picture = None if args.no_picture else views_picture(janus_rows, args.doc.parent / "janus-views.png")
    janus, comps = janus_table(janus_rows), composition_table(comp_rows)
    rel = None if picture is None else os.path.relpath(picture, args.doc.parent)
    seeds = {"janus_seeds": _seeds(janus_rows), "comp_seeds": _seeds(comp_rows)}
    replace_section(args.doc, markdown(janus, comps, rel, **seeds))
    readme_pic = None if picture is None else os.path.relpath(picture, args.readme.parent)
    replace_section(args.readme, markdown(janus, comps, readme_pic, **seeds) + "\nHow they are made: [docs/janus.md](docs/janus.md).\n",
                    heading="## Toy world v2: the Janus and composition tables")
    print(markdown(janus, comps, rel, **seeds))


if __name__ == "__main__":
    main()
