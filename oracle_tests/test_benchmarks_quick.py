"""Keeps the benchmark suite alive: ``python -m benchmarks --quick --only nn.attention`` runs and writes its table."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _run(*args: str, tmp_path: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "BENCH_THREADS": "1", "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "benchmarks", *args, "--out", str(tmp_path)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)


def test_quick_attention_table(tmp_path):
    pytest.importorskip("torch")
    proc = _run("--quick", "--memory", "--only", "nn.attention", tmp_path=tmp_path)
    assert proc.returncode == 0, f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    rows = json.loads((tmp_path / "results.json").read_text())["rows"]
    names = {(r["name"], r["dtype"]) for r in rows}
    assert names == {(n, d) for n in ("nn.attention", "nn.attention.causal") for d in ("float32", "float64")}, names
    for r in rows:
        assert r["error"] == "", r
        assert r["torch_kind"] == "torch", r
        assert 0 < r["oracle_s"] < 10 and 0 < r["torch_s"] < 10, (r["oracle_s"], r["torch_s"])
        assert r["oracle_traced"] > 0, r["oracle_traced"]  # tracemalloc sees NumPy's buffers
    table = (tmp_path / "table.md").read_text()
    assert "| nn.attention | float64 |" in table, table
    assert (tmp_path / "ratios.png").stat().st_size > 0


def test_size_patches_are_restored():
    from benchmarks.cases import patched, sizing
    import reference.nn.layer_norm as ln

    before = (ln.B, ln.T, ln.D)
    with patched(sizing("nn.layer_norm").patch):
        assert (ln.B, ln.T, ln.D) == (8, 512, 256), (ln.B, ln.T, ln.D)
    assert (ln.B, ln.T, ln.D) == before, ((ln.B, ln.T, ln.D), before)


@pytest.mark.skipif(importlib.util.find_spec("cupy") is not None, reason="CuPy is installed")
def test_cupy_backend_without_cupy_is_a_clean_error(tmp_path):
    proc = _run("--backend", "cupy", "--quick", "--only", "nn.linear", tmp_path=tmp_path)
    assert proc.returncode == 2, f"exit {proc.returncode}\n{proc.stderr}"
    assert "needs CuPy" in proc.stderr and "Traceback" not in proc.stderr, proc.stderr


def test_gradient_check_jobs_keeps_order_and_exit_status():
    """``--jobs 2`` (used by the benchmark's gradient-check target) checks in worker processes, in order."""
    proc = subprocess.run([sys.executable, "-m", "gradients", "check", "nn.linear", "nn.softmax", "--mode", "fast",
                           "--jobs", "2"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    out = proc.stdout
    assert 0 <= out.index("nn.linear") < out.index("nn.softmax"), out
