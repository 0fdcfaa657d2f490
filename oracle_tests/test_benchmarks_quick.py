"""Keeps the benchmark suite alive: the quick table, realistic sizes from the registry, the peers, interleaved timing."""

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
    proc = _run("--quick", "--only", "nn.attention", tmp_path=tmp_path)
    assert proc.returncode == 0, f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    rows = json.loads((tmp_path / "results.json").read_text())["rows"]
    names = {(r["name"], r["dtype"]) for r in rows}
    assert names == {(n, d) for n in ("nn.attention", "nn.attention.causal") for d in ("float32", "float64")}, names
    for r in rows:
        assert r["error"] == "", r
        assert r["peer_kind"] == "torch" and r["threads"] == 1, r
        assert 0 < r["oracle_s"] < 10 and 0 < r["peer_s"] < 10 and 0 < r["torch_oracle_s"] < 10, r
        assert r["target"] == 1.5 and abs(r["ratio"] - r["oracle_s"] / r["peer_s"]) < 1e-12, r
    table = (tmp_path / "table.md").read_text()
    assert "| nn.attention | float64 | 1 |" in table and "load average" in table, table
    assert (tmp_path / "ratios.png").stat().st_size > 0


def test_realistic_size_comes_from_the_registry():
    import numpy as np

    from benchmarks.cases import benchmark_case, realistic
    from reference.backend import namespace
    from reference.registry import get

    mechanism = get("nn.layer_norm")
    assert realistic(mechanism) == dict(mechanism.realistic) and mechanism.realistic, mechanism.realistic
    assert realistic(mechanism, quick=True) is None
    assert realistic(mechanism, batch=3)["batch"] == 3
    case, size = benchmark_case(mechanism, 0, np.float32, namespace("numpy"), batch=1)
    assert case.inputs["x"].shape == (1, mechanism.realistic["seq_len"], mechanism.realistic["d_model"]), size
    assert "batch=1" in size, size


def test_peers_run_at_small_configurations():
    """Each real peer runs one forward + backward at a small configuration, or says why it has none."""
    pytest.importorskip("transformers")
    from benchmarks.peers import NoPeer, peer_for
    from reference.registry import Case, get

    small = {"attention.lsh": {"d_v": 5, "seq_len": 16, "chunk_len": 4, "n_buckets": 4},
             "attention.lsra": {}, "attention.lsra.dynamic": {}, "objectives.electra": {},
             "architecture.albert.encoder": {}, "architecture.compressive": {"d_ff": 20, "n_cmem": 6},
             "nn.encoder_layer": {}}
    for name, overrides in small.items():
        mechanism = get(name)
        case = Case({}, {}, {}, mechanism.make_config(overrides))
        kind, run = peer_for(name)(case, "float64")
        run()
        run()  # twice: the gradients are reset between runs
        assert kind, name
    with pytest.raises(NoPeer, match="d_k != d_v"):
        peer_for("attention.lsh")(Case({}, {}, {}, get("attention.lsh").make_config()), "float64")
    with pytest.raises(NoPeer, match="sharing"):
        peer_for("architecture.albert.not_shared")(Case({}, {}, {}, get("architecture.albert.not_shared").make_config()),
                                                   "float64")


def test_interleaved_times_every_side_in_turns():
    from benchmarks.measure import interleaved

    calls: list[str] = []
    times = interleaved({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, 3, min_seconds=0.0)
    assert set(times) == {"a", "b"} and all(t >= 0 for t in times.values())
    assert calls == ["a", "b"] * 4, calls  # one warm-up each, then three rounds in turns


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
