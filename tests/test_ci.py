"""`.ci/run` runs the README's test command verbatim: on the pre-installed CPU torch, and on the newest torch."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def readme_test_command() -> str:
    quickstart = re.search(r"## Quickstart.*?```bash\n(.*?)```", (ROOT / "README.md").read_text(), re.S).group(1)
    (command,) = [line for line in quickstart.splitlines() if line.endswith("pytest")]
    return command


def test_ci_runs_the_readme_test_command_on_both_torches():
    command = readme_test_command()
    ci = (ROOT / ".ci" / "run").read_text()
    cpu_pass, newest_pass = ci.split("python3 -m venv .ci-venv-newest")
    assert command in cpu_pass.splitlines() and "pip install -q torch==2.13.0" in cpu_pass
    # The newest-torch venv gets no pre-installed torch: the README's command resolves it.
    assert f"'{command}'" in newest_pass and "torch==" not in newest_pass
