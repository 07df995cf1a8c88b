"""The fault suite (``pytest -m faults``): each case records the tracebacks it saw and the bytes it lost.

A test calls ``record_property("tracebacks", n)`` and ``record_property("bytes_lost", n)``;
the terminal summary lists every case with its outcome and both counts (all must be 0).
"""

from __future__ import annotations

import pytest


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    """One line per test function (its parametrized cases together), then the totals."""
    reports = [r for key in ("passed", "failed", "error") for r in terminalreporter.stats.get(key, [])
               if r.when == "call" and "tests/faults/" in r.nodeid.replace("\\", "/")]
    if not reports:
        return
    tr = terminalreporter
    tr.section("fault suite")
    groups: dict[str, list] = {}
    for r in reports:
        groups.setdefault(r.nodeid.split("tests/faults/", 1)[-1].split("[", 1)[0], []).append(r)
    totals = {"tracebacks": 0, "bytes_lost": 0}
    for name, group in sorted(groups.items()):
        counts = {k: sum(int(dict(r.user_properties).get(k, 0)) for r in group) for k in totals}
        for k in totals:
            totals[k] += counts[k]
        passed = sum(r.outcome == "passed" for r in group)
        tr.write_line(f"{passed}/{len(group)} passed, tracebacks {counts['tracebacks']}, bytes lost {counts['bytes_lost']}  {name}")
    passed = sum(r.outcome == "passed" for r in reports)
    tr.write_line(f"cases {len(reports)}, passed {passed}, tracebacks {totals['tracebacks']}, bytes lost {totals['bytes_lost']}")
    tr.write_line("(the stale cuda_ext JIT lock of a killed build: tests/test_cuda_ext_build.py, in the default suite)")


@pytest.fixture(scope="session")
def reference(tmp_path_factory, tiny_pixel_prior):
    """The uninterrupted run (``_support.fast``, in this process) every interrupted one is compared with."""
    from _support import TOY, fast

    from sds3d.cli import main

    out = tmp_path_factory.mktemp("reference")
    assert main(["run", TOY, "prompt=a red cube", "name=run", *fast(out, tiny_pixel_prior)]) == 0
    return out / "run"
