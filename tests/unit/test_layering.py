"""The package's layering: no import circles, and the data side never imports the presentation side."""

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "plugtrace"


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _top_level(tree: ast.Module):
    """The statements run when the module is imported: not function bodies, not `if TYPE_CHECKING:` blocks."""
    pending = list(tree.body)
    while pending:
        node = pending.pop()
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            pending.extend(node.orelse)
            continue
        yield node
        pending.extend(child for child in ast.iter_child_nodes(node) if isinstance(child, ast.stmt))


def _imports(path: Path, when_imported: bool) -> set[str]:
    """plugtrace modules `path` imports: those it needs to be imported, or those it uses at all (lazily too)."""
    name = _module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    tree = ast.parse(path.read_text())
    found = set()
    for node in _top_level(tree) if when_imported else ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            candidates = [target] + [f"{target}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            candidates = [a.name for a in node.names]
        else:
            continue
        found.update(c for c in candidates if c.startswith("plugtrace"))
    return found


def _graph(when_imported: bool) -> dict[str, set[str]]:
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py") if "probes" not in p.parts}
    graph = {}
    for name, path in modules.items():
        # a module depends on the plugtrace modules it names, not on the packages above them
        graph[name] = {
            m
            for m in _imports(path, when_imported)
            if m in modules and m != name and not name.startswith(m + ".") and m != "plugtrace"
        }
    return graph


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
    """Importing any module never needs a module that needs it back. (Type-only imports and a method's lazy
    import of the module it hands work to, like `Run.to_perfetto`, are not import-time circles.)"""
    assert _cycles(_graph(when_imported=True)) == []


def test_the_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_data_never_imports_presentation():
    graph = _graph(when_imported=False)  # not even lazily
    presentation = {
        m for m in graph if m.startswith(("plugtrace.report", "plugtrace.plots", "plugtrace.magic", "plugtrace.cli"))
    }
    for data in ("plugtrace.analysis", "plugtrace.store", "plugtrace.query", "plugtrace.synthetic"):
        assert not graph[data] & presentation, data
    # and at run time: reading a run loads no plotting library
    code = (
        "import sys, plugtrace.analysis, plugtrace.store, plugtrace.query; "
        "print(sorted(m for m in sys.modules if m.startswith(('plugtrace.report', 'plugtrace.plots', "
        "'matplotlib', 'bokeh'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
