"""report.html of a run folder and index.html of a sweep folder: what they embed and link (no browser here;
tests/test_report_browser.py opens them in Chromium)."""

from __future__ import annotations

import base64
import json
import re
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote

import torch
from PIL import Image

from node_tools import validate_gltf
from sds3d.config import load_config, to_yaml
from sds3d.export import ExportConfig, extract_mesh, write_mesh, write_orbit_video
from sds3d.report import write_run_report
from sds3d.report.page import VENDOR, VENDOR_FILES
from sds3d.report.run_page import loss_plot
from sds3d.sweep.grid import RunSpec
from sds3d.sweep.report import collect_rows, write_index
from test_export import SphereField

torch.set_num_threads(1)
TOY = Path(__file__).resolve().parents[1] / "configs" / "toy.yaml"


def make_run_folder(run_dir: Path, glb: bool = True) -> Path:
    """A finished run's files, made without training: a sphere's mesh, a video, renders, metrics, config."""
    field = SphereField()
    cfg = ExportConfig(resolution=24, texture="vertex", formats=["obj", "glb"] if glb else ["obj"])
    write_mesh(extract_mesh(field, cfg), field, run_dir / "mesh", cfg)
    frames = torch.linspace(0, 1, 4)[:, None, None, None].expand(4, 3, 32, 32)
    write_orbit_video(frames.contiguous(), run_dir / "orbit.mp4", fps=4)
    (run_dir / "renders").mkdir()
    Image.new("RGB", (128, 64), (40, 80, 200)).save(run_dir / "renders" / "step_00010.png")
    Image.new("RGB", (128, 160), (200, 80, 40)).save(run_dir / "renders" / "fidelity.png")
    (run_dir / "config.yaml").write_text(to_yaml(load_config(TOY, ["prompt=a <red> cube"])))
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps({"step": s, "loss_sds": 10.0 / s}) + "\n" for s in (1, 10, 100)))
    (run_dir / "summary.json").write_text(json.dumps({
        "prompt": "a <red> cube", "steps": 100, "train_seconds": 12.5, "final_loss_sds": 0.1, "mesh_faces": 908,
        "eval": {"mesh_iou": 0.9123, "colour_error": 0.0765, "recognition": 1.0},
        "fidelity": {"mask_iou": 0.987, "psnr": 24.8, "psnr_inside": 21.8}, "timings": {"train": 12.5}}))
    return run_dir


class Refs(HTMLParser):
    """Every src/href of a page."""

    def __init__(self):
        super().__init__()
        self.refs: list[tuple[str, str, str]] = []

    def handle_starttag(self, tag, attrs):
        for k, v in attrs:
            if k in ("src", "href") and v is not None:
                self.refs.append((tag, k, v))


def refs_of(path: Path) -> list[tuple[str, str, str]]:
    parser = Refs()
    parser.feed(path.read_text())
    return parser.refs


def test_run_report_embeds_the_mesh_and_links_the_run_files(tmp_path):
    run_dir = make_run_folder(tmp_path / "run")
    page = write_run_report(run_dir)
    assert page == run_dir / "report.html"
    refs = refs_of(page)
    (viewer,) = [v for tag, k, v in refs if tag == "model-viewer"]
    assert viewer.startswith("data:model/gltf-binary;base64,")
    assert base64.b64decode(viewer.split(",", 1)[1]) == (run_dir / "mesh" / "mesh.glb").read_bytes()
    local = [v for tag, k, v in refs if not v.startswith(("data:", "http"))]
    assert {"orbit.mp4", "renders/fidelity.png", "renders/step_00010.png", "report_files/model-viewer-umd.min.js"} <= set(local)
    for ref in local:  # every link resolves inside the run folder: the page works from file:// and offline
        assert (run_dir / unquote(ref)).is_file(), ref
    assert not any(v.startswith("http") for _, _, v in refs)
    for name in VENDOR_FILES:  # the viewer travels with its licences
        assert (run_dir / "report_files" / name).read_bytes() == (VENDOR / name).read_bytes()
    text = page.read_text()
    assert "0.9123" in text and "0.987" in text and "24.8" in text  # eval and fidelity metrics
    assert "a &lt;red&gt; cube" in text and "<red>" not in text  # the prompt is text, escaped
    assert "name_or_path: toy" in text  # the resolved config


def test_run_report_without_a_glb_says_how_to_get_one(tmp_path):
    run_dir = make_run_folder(tmp_path / "run", glb=False)
    text = write_run_report(run_dir).read_text()
    assert "<model-viewer" not in text and "--format glb" in text and not (run_dir / "report_files").exists()


def test_loss_plot_maps_steps_and_log_losses_onto_the_box():
    svg = loss_plot([{"step": 0, "loss_sds": 100.0}, {"step": 50, "loss_sds": 10.0}, {"step": 100, "loss_sds": 1.0},
                     {"step": 60, "loss_sds": None}], width=236, height=130)
    points = [tuple(map(float, p.split(","))) for p in re.search(r'points="([^"]+)"', svg).group(1).split()]
    # x = 36 + step / 100 * (236 - 44); y = 8 + (2 - log10 loss) / 2 * (130 - 30)
    assert points == [(36.0, 8.0), (132.0, 58.0), (228.0, 108.0)]
    assert loss_plot([{"step": 1, "loss_sds": 1.0}]) == ""


def test_sweep_index_links_each_cell_to_its_run_report(tmp_path):
    runs = [RunSpec("a red cube", 0, (("guidance.scale", s),)) for s in ("1", "3")]
    make_run_folder(tmp_path / runs[0].name)
    write_run_report(tmp_path / runs[0].name)
    (tmp_path / runs[1].name).mkdir()
    (tmp_path / runs[1].name / "summary.json").write_text(json.dumps({"status": "failed", "error": "RuntimeError: boom"}))
    rows = collect_rows(runs, tmp_path)
    page = write_index(rows, runs, tmp_path, tmp_path / "index.html", ["guidance.scale"])
    hrefs = [v for tag, k, v in refs_of(page) if tag == "a"]
    assert f"{runs[0].name}/report.html" in hrefs and f"{runs[1].name}/" in hrefs
    text = page.read_text()
    assert "FAILED" in text and "RuntimeError: boom" in text and "0.912" in text
    assert "col: colour error" in text  # the legend
    (thumb,) = [v for tag, k, v in refs_of(page) if tag == "img"]  # the failed run has no picture
    assert thumb.startswith("data:image/png;base64,")


def test_a_run_writes_its_report_and_fidelity(tmp_path, tiny_pixel_prior):
    from sds3d.pipeline import run
    from sds3d.runs import prepare_run_dir

    cfg = load_config(TOY, ["prompt=a red cube", f"prior.name_or_path={tiny_pixel_prior}", f"out_dir={tmp_path}",
                            "trainer.max_steps=2", "trainer.progress=false", "render.resolution=16", "render.num_samples=8",
                            "trainer.val_every=0", "orbit.frames=2", "orbit.resolution=16", "export.resolution=16",
                            "export.texture=vertex", "trainer.threads=1", "eval.enabled=false"])
    run_dir = prepare_run_dir(cfg)
    summary = run(cfg, run_dir)  # 2 steps from the density blob: a ball-shaped mesh
    assert (run_dir / "report.html").is_file() and (run_dir / "report_files" / "model-viewer-umd.min.js").is_file()
    assert set(summary["fidelity"]) >= {"mask_iou", "psnr", "psnr_inside", "views", "resolution"}
    assert (run_dir / "renders" / "fidelity.png").is_file() and summary["mesh"]["glb"].endswith("mesh.glb")
    for report in validate_gltf([Path(summary["mesh"]["glb"])]):  # the .glb a run writes is valid glTF
        assert (report["errors"], report["warnings"]) == (0, 0), report
