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
