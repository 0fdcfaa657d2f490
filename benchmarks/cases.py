"""Benchmark cases: every mechanism at its registered realistic size.

A mechanism's ``realistic`` overrides (reference/registry.py) give the size a user runs (LSH at 4,096
tokens, a 12-layer ALBERT-base, ELECTRA-Small, batch 8 x 512 tokens for the building blocks); the case
is ``mechanism.example(seed, dtype, xp, realistic)``, so the benchmark runs the registered forward
and backward exactly as the checker does. ``--quick`` runs the registered defaults (tiny sizes: a
smoke test of the harness, whose ratios measure Python overhead). A mechanism without a realistic
size yet runs its registered example, and the table says so.
"""

from __future__ import annotations

from typing import Any

from reference.registry import Case, Mechanism

EXAMPLE = "registered example (no realistic size yet)"


def realistic(mechanism: Mechanism, *, quick: bool = False, batch: int | None = None) -> dict[str, Any] | None:
    """The configuration overrides the benchmark runs ``mechanism`` at (None: its registered example)."""
    if quick or mechanism.config is None:
        return None
    overrides = dict(mechanism.realistic)
    if batch is not None and "batch" in {f.name for f in _fields(mechanism.config)}:
        overrides["batch"] = batch
    return overrides or None


def _fields(config_class) -> tuple:
    import dataclasses

    return dataclasses.fields(config_class)


def benchmark_case(mechanism: Mechanism, seed: int, dtype: Any, xp, *, quick: bool = False,
                   batch: int | None = None) -> tuple[Case, str]:
    """(case, size): the case at the benchmark's size and a short description of that size."""
    overrides = realistic(mechanism, quick=quick, batch=batch)
    case = mechanism.example(seed, dtype, xp, overrides)
    if overrides is None:
        return case, "registered defaults (--quick)" if quick and mechanism.config is not None else EXAMPLE
    return case, " ".join(f"{k}={v}" for k, v in overrides.items())


def lsh_case(seed: int, dtype: Any, xp, *, batch: int, seq: int, d_model: int, n_heads: int, d_head: int,
             n_hashes: int, chunk_len: int) -> Case:
    """A registered ``attention.lsh`` case at these sizes (about ``chunk_len`` tokens per bucket, as the
    paper; no hash-margin redraws: nothing is differentiated numerically)."""
    from reference.registry import get

    n_buckets = max(2, 2 * (seq // (2 * chunk_len)))
    config = {"batch": batch, "seq_len": seq, "d_model": d_model, "n_heads": n_heads, "d_k": d_head, "d_v": d_head,
              "n_hashes": n_hashes, "n_buckets": n_buckets, "chunk_len": chunk_len, "hash_margin": 0.0}
    return get("attention.lsh").example(seed, dtype, xp, config)
