"""The package's floors (shared/DESIGN.md): nothing imports upward, and reading a run loads no plotting.

The floors are import-linter contracts in pyproject.toml (`[tool.importlinter]`); import-linter
counts every import, lazy and type-only ones included, so a circle cannot hide in a function body.
"""

import shutil
import subprocess
import sys
from pathlib import Path

import grimp  # import-linter's import graph
import pytest

ROOT = Path(__file__).resolve().parents[2]


def _lint_imports() -> list[str]:
    tool = shutil.which("lint-imports", path=str(Path(sys.executable).parent))
    if tool is None:
        pytest.fail("lint-imports (import-linter) is not installed: make install installs it")
    return [tool, "--no-cache"]


def test_the_floors_hold():
    p = subprocess.run(_lint_imports(), cwd=ROOT, capture_output=True, text=True)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "1 kept, 0 broken" in p.stdout


def test_the_floors_catch_an_upward_import(tmp_path):
    """The contract is not vacuous: a run-directory module importing the analysis breaks it."""
    shutil.copytree(ROOT / "plugtrace", tmp_path / "plugtrace", ignore=shutil.ignore_patterns("*.so", "__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    with open(tmp_path / "plugtrace" / "run" / "meta.py", "a") as fh:
        fh.write("\nfrom ..analysis import Runs  # noqa\n")
    p = subprocess.run(_lint_imports(), cwd=tmp_path, capture_output=True, text=True, env={"PYTHONPATH": str(tmp_path)})
    assert p.returncode == 1 and "plugtrace.run is not allowed to import plugtrace.analysis" in p.stdout, p.stdout


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
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
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_no_import_circles():
    """No module needs, at any time (lazily or for its types too), a module that needs it back; a module is not
    counted as needing the packages above it."""
    graph = grimp.build_graph("plugtrace", cache_dir=None)
    edges = {
        m: {n for n in graph.find_modules_directly_imported_by(m) if not m.startswith(n + ".") and n != "plugtrace"}
        for m in graph.modules
    }
    assert _cycles(edges) == []


def test_the_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_reading_a_run_loads_no_plotting_library():
    code = (
        "import sys, plugtrace.analysis, plugtrace.run, plugtrace.query; "
        "print(sorted(m for m in sys.modules if m.startswith(('plugtrace.report', 'plugtrace.plots', "
        "'matplotlib', 'bokeh'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
