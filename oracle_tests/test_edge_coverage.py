"""Every edge configuration of every mechanism passes the gradient check, and every line runs under one.

One test does both, so the edge configurations are checked once: ``python -m gradients check
--mode fast --edges`` (the random-direction gradient check of every registered mechanism at its
default and at each of its edge configurations, on NumPy in float64) runs under coverage and must
exit 0. Then every statement
of every forward and backward function in ``reference/`` must have run, except the validation
that only raises (``raise ...`` and an ``if`` whose whole body raises). A branch that no registered
configuration reaches would hide a planted bug from every check (issue 13: the causal path of the
reversible block and the GELU backward's recomputation were such branches).
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

coverage = pytest.importorskip("coverage")

REFERENCE = Path(__file__).resolve().parents[1] / "reference"
SECTIONS = ("nn", "attention", "objectives", "embeddings", "architecture")


#: A line that ends with this comment, and says why, is exempt: a branch no finite difference can
#: judge (a stop-gradient, a rounding of the loss value, a cotangent the registered outputs never
#: leave empty), tested elsewhere as the reason names.
PRAGMA = "# not gradient-checked:"


def _only_raises(body: list[ast.stmt]) -> bool:
    """Validation: a block that ends by raising (it may first compose the message)."""
    return bool(body) and isinstance(body[-1], ast.Raise) and \
        not any(isinstance(s, (ast.If, ast.For, ast.While, ast.Return)) for s in body)


def _required_lines(tree: ast.Module, source: list[str]) -> dict[int, str]:
    """Statement lines of every ``*_forward`` / ``*_backward`` function, less the raise-only validation."""
    required: dict[int, str] = {}

    def exempt(s: ast.stmt) -> bool:
        return PRAGMA in source[s.lineno - 1] and len(source[s.lineno - 1].split(PRAGMA, 1)[1].strip()) > 10

    def visit(statements: list[ast.stmt], function: str) -> None:
        for s in statements:
            if isinstance(s, ast.Raise) or (isinstance(s, ast.Expr) and isinstance(s.value, ast.Constant)):
                continue
            if exempt(s):
                continue
            if isinstance(s, ast.If) and _only_raises(s.body):
                required[s.lineno] = function  # the test itself runs
                visit(s.orelse, function)
                continue
            required[s.lineno] = function
            for field in ("body", "orelse", "finalbody"):
                visit(getattr(s, field, []) or [], function)
            for handler in getattr(s, "handlers", []) or []:
                visit(handler.body, function)

    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef) and node.name.endswith(("_forward", "_backward")):
            visit(node.body, node.name)
    return required


def test_every_edge_configuration_passes_and_every_line_runs(tmp_path) -> None:
    """``python -m gradients check --mode fast --edges`` under coverage: exit 0, then no unreached line."""
    files = [p for section in SECTIONS for p in sorted((REFERENCE / section).glob("*.py"))]
    data_file = tmp_path / "coverage.data"
    run = subprocess.run([sys.executable, "-m", "coverage", "run", f"--data-file={data_file}",
                          f"--include={REFERENCE}/*", "-m", "gradients", "check", "--mode", "fast", "--edges"],
                         cwd=REFERENCE.parent, capture_output=True, text=True, timeout=1500)
    assert run.returncode == 0, ("edge configurations fail the gradient check:\n"
                                 + "\n".join(line for line in run.stderr.splitlines() if "FAILED" in line)
                                 + run.stderr[-2000:])

    data = coverage.CoverageData(basename=str(data_file))
    data.read()
    unreached: list[str] = []
    for path in files:
        executed = set(data.lines(str(path)) or [])
        text = path.read_text()
        required = _required_lines(ast.parse(text), text.splitlines())
        missing = sorted(line for line in required if line not in executed)
        if missing:
            where = ", ".join(f"{line} ({required[line]})" for line in missing[:12])
            unreached.append(f"{path.relative_to(REFERENCE.parent)}: lines {where}")
    assert not unreached, ("forward/backward lines that no registered configuration's gradient check runs "
                           "(register a configuration or an edge configuration that reaches them):\n"
                           + "\n".join(unreached))
