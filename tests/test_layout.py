"""The repository's layout rules (ARCHITECTURE.md, "Imports point one way"), as tests that can fail.

- the package's import graph has no cycle (imports inside functions count too);
- `worldmodel/kernels` imports nothing from the rest of `worldmodel`;
- only `worldmodel/app` and `worldmodel/cli.py` import `worldmodel.app`;
- no function is longer than 80 lines outside `worldmodel/kernels`;
- `ruff check` (configured in pyproject.toml) is clean.
"""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "worldmodel"
MAX_FUNCTION_LINES = 80


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _package_modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The package modules that `name` imports anywhere in its file, relative imports resolved.

    `from pkg import x` counts as importing `pkg.x` when that is a module, else `pkg`."""
    is_package = path.name == "__init__.py"
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".") if is_package else name.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            targets = [f"{source}.{a.name}" if f"{source}.{a.name}" in modules else source
                       for a in node.names]
        else:
            continue
        for target in targets:
            # `import worldmodel.a.b` names the module a.b; keep the longest prefix that is a module
            while target and target not in modules:
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def _graph() -> dict[str, set[str]]:
    modules = _package_modules()
    return {name: _imports(name, path, modules) for name, path in modules.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle (as a path a -> ... -> a) per strongly connected component with more than one module."""
    index, low, stack, on_stack, components = {}, {}, [], set(), []

    def visit(v):  # Tarjan's algorithm
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = set()
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.add(w)
                if w == v:
                    break
            if len(component) > 1:
                components.append(component)

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10 * len(graph) + 100))
    for v in sorted(graph):
        if v not in index:
            visit(v)

    cycles = []
    for component in components:
        start = min(component)
        # breadth-first from start inside the component until an edge leads back to start
        parent, queue = {start: None}, [start]
        for v in queue:
            if start in graph[v]:
                path = [v]
                while parent[path[-1]] is not None:
                    path.append(parent[path[-1]])
                cycles.append(path[::-1] + [start])
                break
            for w in sorted(graph[v] & component):
                if w not in parent:
                    parent[w] = v
                    queue.append(w)
    return cycles


def test_cycle_finder_names_a_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycles(graph) == [["a", "b", "c", "a"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_relative_imports_resolve(tmp_path):
    modules = {"worldmodel": None, "worldmodel.eval": None, "worldmodel.eval.metrics": None,
               "worldmodel.world": None, "worldmodel.actions": None}
    src = tmp_path / "protocols.py"
    src.write_text("from . import metrics\nfrom ..world import World\n"
                   "def f():\n    from worldmodel.actions import NAMES\n    import worldmodel.eval.metrics\n")
    assert _imports("worldmodel.eval.protocols", src, modules) == {
        "worldmodel.eval.metrics", "worldmodel.world", "worldmodel.actions"}


def test_import_graph_has_no_cycle():
    cycles = _cycles(_graph())
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


def test_kernels_are_a_leaf():
    graph = _graph()
    kernels = [m for m in graph if m == "worldmodel.kernels" or m.startswith("worldmodel.kernels.")]
    assert kernels, "worldmodel/kernels/ is missing (the Triton kernels live under the package)"
    outside = {f"{m} imports {t}" for m in kernels for t in graph[m]
               if not (t == "worldmodel.kernels" or t.startswith("worldmodel.kernels."))}
    assert not outside, "worldmodel/kernels must import nothing from the rest of worldmodel: " + \
        "; ".join(sorted(outside))


def test_only_the_app_and_cli_import_the_app():
    graph = _graph()

    def in_app(m):
        return m == "worldmodel.app" or m.startswith("worldmodel.app.")

    offenders = {f"{m} imports {t}" for m, targets in graph.items() for t in targets
                 if in_app(t) and not in_app(m) and m != "worldmodel.cli"}
    assert not offenders, "the library never imports the app: " + "; ".join(sorted(offenders))


def _python_files():
    for folder in ("worldmodel", "scripts", "tests", "app", "kernels"):
        yield from sorted((ROOT / folder).rglob("*.py"))


def test_no_function_over_80_lines_outside_kernels():
    long = []
    for path in _python_files():
        rel = path.relative_to(ROOT)
        if rel.parts[0] == "kernels" or rel.parts[:2] == ("worldmodel", "kernels"):
            continue
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                if n > MAX_FUNCTION_LINES:
                    long.append(f"{rel}:{node.lineno} {node.name} ({n} lines)")
    assert not long, f"functions over {MAX_FUNCTION_LINES} lines: " + "; ".join(long)


def test_ruff_is_clean():
    try:
        import ruff  # noqa: F401
    except ImportError:
        pytest.fail("ruff is not installed: it is a dev dependency (pip install -e '.[dev]')")
    command = [sys.executable, "-m", "ruff", "check", "--no-cache", "--output-format", "concise", str(ROOT)]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, "ruff check is not clean:\n" + (result.stdout + result.stderr)[-4000:]
