"""The report pages in a real headless browser (Debian's Chromium driven by playwright-core), from file://.

A run's report.html loads without console errors or failed requests, its <model-viewer> loads the
embedded mesh and draws it (the canvas is not blank), and a sweep's index.html links every cell to
a page that exists. Screenshots are kept in tests/.artifacts/ (git-ignored).
"""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import unquote, urlparse

import numpy as np
import pytest
from PIL import Image

from node_tools import browse
from sds3d.report import write_run_report
from sds3d.sweep.grid import RunSpec
from sds3d.sweep.report import collect_rows, write_index
from test_report import make_run_folder

ARTIFACTS = Path(__file__).parent / ".artifacts"
pytestmark = pytest.mark.slow  # a browser start and WebGL on the CPU: 10-20 s


def drawn_fraction(path: Path) -> tuple[float, float]:
    """Pixel standard deviation and the share of pixels that are not the page's white."""
    a = np.asarray(Image.open(path).convert("RGB"), np.float64)
    return float(a.std()), float((np.abs(a - 255.0).max(axis=-1) > 24).mean())


def test_run_report_shows_the_mesh_in_a_browser(tmp_path):
    ARTIFACTS.mkdir(exist_ok=True)
    run_dir = make_run_folder(tmp_path / "run")
    page = write_run_report(run_dir)
    result = browse(page, ARTIFACTS / "report-run.png", ARTIFACTS / "report-run-viewer.png")
    assert result["errors"] == [] and result["failed"] == [], result
    assert result["viewers"] == 1 and result["loaded"] is True
    std, drawn = drawn_fraction(ARTIFACTS / "report-run-viewer.png")
    assert std > 10.0 and drawn > 0.05, (std, drawn)  # the sphere is drawn, not a blank canvas


def test_a_page_without_a_mesh_draws_nothing(tmp_path):
    # The blank-canvas check can fail: the same viewer with an empty scene draws (almost) no pixels.
    run_dir = make_run_folder(tmp_path / "run")
    page = write_run_report(run_dir)
    glb = (run_dir / "mesh" / "mesh.glb").read_bytes()
    text = page.read_text()
    import base64

    empty = base64.b64encode(json.dumps({"asset": {"version": "2.0"}, "scenes": [{"nodes": []}], "scene": 0}).encode()).decode()
    page.write_text(text.replace(base64.b64encode(glb).decode(), empty).replace("model/gltf-binary", "model/gltf+json"))
    result = browse(page, tmp_path / "empty.png", tmp_path / "empty-viewer.png")
    assert result["loaded"] is True and drawn_fraction(tmp_path / "empty-viewer.png")[1] < 0.01


def test_sweep_index_opens_and_links_to_run_reports(tmp_path):
    ARTIFACTS.mkdir(exist_ok=True)
    runs = [RunSpec("a red cube", 0, (("guidance.scale", s),)) for s in ("1", "3")]
    for run in runs:
        make_run_folder(tmp_path / run.name)
        write_run_report(tmp_path / run.name)
    page = write_index(collect_rows(runs, tmp_path), runs, tmp_path, tmp_path / "index.html", ["guidance.scale"])
    result = browse(page, ARTIFACTS / "report-sweep.png", tmp_path / "unused.png")
    assert result["errors"] == [] and result["failed"] == [] and result["viewers"] == 0
    targets = [Path(unquote(urlparse(u).path)) for u in result["links"] if u.endswith("report.html")]
    assert sorted(t.parent.name for t in targets) == sorted(r.name for r in runs) and all(t.is_file() for t in targets)
