"""The dependency rules of docs/architecture.md, checked on the source: every import counts,
including the ones inside functions (a circle hidden in a function is still a circle)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _module_files() -> dict[str, Path]:
    files = {}
    for root, prefix in ((REPO / "sds3d", "sds3d"), (REPO / "cuda_ext", "sds3d.cuda_ext")):
        for path in root.rglob("*.py"):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            files[".".join([prefix, *parts])] = path
    return files


MODULES = _module_files()


def _imports(name: str, path: Path) -> set[str]:
    """sds3d modules ``name`` imports anywhere in its file, resolved to known module names."""
    is_package = path.name == "__init__.py"
    package = name if is_package else name.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        targets = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                origin = ".".join(base + ([node.module] if node.module else []))
            else:
                origin = node.module or ""
            # `from X import Y`: the module X.Y if there is one, else a name defined in X.
            targets = [f"{origin}.{a.name}" if f"{origin}.{a.name}" in MODULES else origin for a in node.names]
        for target in targets:
            if target in MODULES:
                found.add(target)
    found.discard(name)
    return found


GRAPH = {name: _imports(name, path) for name, path in MODULES.items()}


def _component(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "sds3d"


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on_stack, out = {}, {}, [], set(), []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_the_module_graph_is_read_from_the_source():
    # The checks below are only as good as the graph: a few edges that must be there.
    assert "sds3d.trainer" in GRAPH["sds3d.pipeline"]
    assert "sds3d.cameras" in GRAPH["sds3d.trainer"]
    assert "sds3d.priors" in GRAPH["sds3d.pipeline"]  # imported inside a function
    assert "sds3d.cuda_ext._torch_impl" in MODULES


def test_the_import_graph_has_no_cycle():
    assert _cycles(GRAPH) == []


def test_cycle_finder_finds_a_circle_hidden_in_functions():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


FORBIDDEN = {
    "guidance": {"scene", "fields", "render"},
    "priors": {"scene", "fields", "render", "guidance"},
    "fields": {"priors", "guidance", "scene", "render"},
    "render": {"priors", "guidance", "scene"},
    "trainer": {"cli", "runs", "pipeline", "sweep"},
}


@pytest.mark.parametrize("component", sorted(FORBIDDEN))
def test_forbidden_arrows(component):
    bad = {(m, d) for m, deps in GRAPH.items() if _component(m) == component for d in deps if _component(d) in FORBIDDEN[component]}
    assert bad == set()


def test_cuda_ext_is_a_leaf_and_toyworld_is_data():
    assert {d for m, deps in GRAPH.items() if _component(m) == "cuda_ext" for d in deps if _component(d) != "cuda_ext"} == set()
    allowed = {"toyworld", "cameras", "priors", "errors", "paths", "signals"}
    assert {d for m, deps in GRAPH.items() if _component(m) == "toyworld" for d in deps if _component(d) not in allowed} == set()


def test_only_the_command_line_and_sweeps_sequence_runs():
    importers = {m for m, deps in GRAPH.items() if "sds3d.pipeline" in deps}
    assert {_component(m) for m in importers} <= {"cli", "sweep"}
    assert {m for m, deps in GRAPH.items() if "sds3d.cli" in deps} <= {"sds3d.__main__"}
