"""npm packages the tests run under node: the Khronos glTF validator and playwright-core.

They are installed into ``tests/.node`` (git-ignored) by ``.ci/run``, or on first use here; a
machine without node or npm (or without the registry) skips the tests that need them, saying why.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

NODE_DIR = Path(__file__).parent / ".node"
#: Pinned so that a test's verdict does not change under it (.ci/run installs the same).
PACKAGES = {"gltf-validator": "2.0.0-dev.3.10", "playwright-core": "1.65.1"}

_VALIDATE = r"""
const fs = require('fs');
const validator = require(process.argv[1]);
const paths = JSON.parse(process.argv[2]);
Promise.all(paths.map(p => validator.validateBytes(new Uint8Array(fs.readFileSync(p)), {maxIssues: 100})
  .then(r => ({path: p, errors: r.issues.numErrors, warnings: r.issues.numWarnings,
               messages: r.issues.messages.filter(m => m.severity <= 1).map(m => `${m.code} ${m.pointer || ''}: ${m.message}`)}))))
  .then(rs => console.log(JSON.stringify(rs)))
  .catch(e => { console.error(String(e)); process.exit(1); });
"""


def node_package(name: str) -> Path:
    """The folder of npm package ``name`` in ``tests/.node``, installing it if missing (else pytest.skip)."""
    folder = NODE_DIR / "node_modules" / name
    if folder.is_dir():
        return folder
    if shutil.which("node") is None or shutil.which("npm") is None:
        pytest.skip(f"node and npm are not installed (apt-get install nodejs npm): {name} runs on node")
    spec = f"{name}@{PACKAGES[name]}"
    result = subprocess.run(["npm", "install", "--no-audit", "--no-fund", "--prefix", str(NODE_DIR), spec],
                            capture_output=True, text=True, timeout=600)
    if result.returncode != 0 or not folder.is_dir():
        pytest.skip(f"npm install {spec} failed: {(result.stderr or result.stdout).strip().splitlines()[-1:]}")
    return folder


def validate_gltf(paths: list[Path]) -> list[dict]:
    """The Khronos glTF validator's verdict on each file: {path, errors, warnings, messages}."""
    validator = node_package("gltf-validator")
    out = subprocess.run(["node", "-e", _VALIDATE, str(validator), json.dumps([str(p) for p in paths])],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


CHROMIUM = Path("/usr/bin/chromium")

_BROWSE = r"""
const { chromium } = require(process.argv[1]);
const [page_url, shot, element_shot, executable] = process.argv.slice(2);
(async () => {
  // SwiftShader: WebGL on the CPU, as on a machine without a GPU.
  const browser = await chromium.launch({ executablePath: executable,
    args: ['--no-sandbox', '--use-gl=angle', '--use-angle=swiftshader', '--enable-unsafe-swiftshader'] });
  const page = await browser.newPage({ viewport: { width: 1100, height: 900 } });
  const errors = [], failed = [];
  page.on('console', m => { if (m.type() === 'error') errors.push(m.text()); });
  page.on('pageerror', e => errors.push(String(e)));
  page.on('requestfailed', r => failed.push(`${r.url().slice(0, 120)} ${r.failure() && r.failure().errorText}`));
  await page.goto(page_url, { waitUntil: 'load', timeout: 120000 });  // SwiftShader on a busy CPU is slow
  const viewers = await page.locator('model-viewer').count();
  let loaded = null;
  if (viewers) {
    loaded = await page.waitForFunction(() => document.querySelector('model-viewer').loaded === true, null, { timeout: 120000 })
      .then(() => true, () => false);
    await page.evaluate(() => { const v = document.querySelector('model-viewer'); v.autoRotate = false; v.jumpCameraToGoal(); });
    await page.waitForTimeout(1000);  // a few frames after the camera settles
    await page.locator('model-viewer').screenshot({ path: element_shot });
  }
  await page.screenshot({ path: shot, fullPage: true });
  const links = await page.$$eval('a[href]', as => as.map(a => a.href));
  console.log(JSON.stringify({ errors, failed, viewers, loaded, links }));
  await browser.close();
})().catch(e => { console.error(String(e)); process.exit(1); });
"""


def browse(page: Path, shot: Path, element_shot: Path) -> dict:
    """Open ``page`` from file:// in headless Chromium: console errors, failed requests, whether its
    <model-viewer> loaded (screenshot of it in ``element_shot``), its links; full-page screenshot in ``shot``."""
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is missing (apt-get install -y chromium)")
    playwright = node_package("playwright-core")
    out = subprocess.run(["node", "-e", _BROWSE, str(playwright), Path(page).resolve().as_uri(), str(shot), str(element_shot),
                          str(CHROMIUM)], capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.strip().splitlines()[-1])
