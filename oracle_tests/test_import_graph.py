"""The package's import graph (issue 19): no cycles, and ``reference/`` never imports ``gradients/``.

Imports are read from the source with ``ast`` (module level and inside functions alike), so a
cycle hidden in a function-level import counts too.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("reference", "gradients")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, name: str) -> set[str]:
    """Every package module ``path`` imports (relative imports resolved)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


def _graph() -> dict[str, set[str]]:
    modules = {_module_name(p): p for package in PACKAGES for p in (ROOT / package).rglob("*.py")}
    return {name: {m for m in _imports(path, name) if m in modules and m != name} for name, path in modules.items()}


def test_reference_never_imports_gradients() -> None:
    offenders = {name: sorted(m for m in deps if m.startswith("gradients"))
                 for name, deps in _graph().items() if name.startswith("reference")}
    offenders = {k: v for k, v in offenders.items() if v}
    assert not offenders, f"reference/ must not import gradients/ (DESIGN.md): {offenders}"


def test_no_module_imports_one_that_imports_it_back() -> None:
    graph = _graph()
    cycles = []
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for dep in sorted(graph[node]):
            if state.get(dep) == 1:
                cycles.append(path[path.index(dep):] + [dep])
            elif dep not in state:
                visit(dep, path + [dep])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    # A package's __init__ importing its own submodules is not a cycle of two modules.
    real = [c for c in cycles if not any(a.startswith(b + ".") or b.startswith(a + ".") for a, b in zip(c, c[1:]))]
    assert not real, "import cycles:\n" + "\n".join(" -> ".join(c) for c in real)


def test_the_graph_sees_imports() -> None:
    """The reader is not vacuous: it finds known edges, relative and function-level ones included."""
    graph = _graph()
    assert "reference.registry" in graph["reference.config"] or "reference.config" in graph["reference.registry"]
    assert "reference.random" in graph["reference.registry"]  # imported inside oracle_run
    assert "reference.registry" in graph["gradients.check"]
