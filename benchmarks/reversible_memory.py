"""Peak memory of the reversible backward versus the stored-activation backward, and reconstruction drift.

    .venv/bin/python benchmarks/reversible_memory.py

Prints three Markdown tables (copied into docs/mechanisms/architecture.reversible.md):
1. tracemalloc peak (MiB) of forward + backward for depths 2..32, full attention, B=2, T=128, D=32,
   H=4, F=128, no dropout (masks would be inputs of both variants alike);
2. max |reconstructed - stored| layer input, float64 and exact (int64 fixed point, 32 fractional bits),
   for depths 1..64;
3. the reversible stack's forward + backward peak against the number of feed-forward chunks
   (issue 16.6: B=1, T=1024, D=32, F=4096, 2 layers, float64).

This is the one reversible memory measurement: the test suite and the notebook call
:func:`peak_mib` and :func:`ff_chunk_peak_mib` from here.
"""

from __future__ import annotations

import sys
import tracemalloc
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from reference.architecture.reversible import (  # noqa: E402
    init_reversible_layers,
    reversible_backward,
    reversible_forward,
    reversible_inverse,
    sample_reversible_tapes,
    stored_backward,
    stored_forward,
)
from reference.architecture.reversible_blocks import ReversibleConfig  # noqa: E402
from reference.backend import namespace  # noqa: E402

XP = namespace("numpy")


def stack(config, n_layers, batch, seq, d_model, d_ff, seed=0):
    rng = np.random.default_rng(seed)
    x = XP.asarray(rng.standard_normal((batch, seq, d_model)))
    layers = init_reversible_layers(rng, n_layers, d_model, d_ff, config, xp=XP, dtype=XP.float64)
    tapes = sample_reversible_tapes(rng, n_layers, batch, seq, d_model, d_ff, config, xp=XP, dtype=XP.float64)
    return x, layers, tapes


def peak_mib(forward, backward, x, layers, tapes, config) -> float:
    """tracemalloc peak (MiB) of ``forward`` then ``backward`` with all-ones cotangents, above what exists before."""
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    (y1, y2), cache = forward(x, layers, tapes, config)
    backward(np.ones_like(y1), np.ones_like(y2), cache)
    peak = tracemalloc.get_traced_memory()[1] - base
    tracemalloc.stop()
    return peak / 2 ** 20


def memory_table() -> None:
    config = ReversibleConfig(n_heads=4, activation="gelu_tanh")
    print("| depth | reversible backward peak (MiB) | stored-activation backward peak (MiB) | parameters (MiB) |")
    print("|---|---|---|---|")
    for depth in (2, 4, 8, 16, 32):
        x, layers, tapes = stack(config, depth, 2, 128, 32, 128)
        rev = peak_mib(reversible_forward, reversible_backward, x, layers, tapes, config)
        sto = peak_mib(stored_forward, stored_backward, x, layers, tapes, config)
        params = sum(v.nbytes for p in layers for v in p.values()) / 2 ** 20
        print(f"| {depth} | {rev:.2f} | {sto:.2f} | {params:.2f} |")


def drift_table() -> None:
    print("\n| depth | float64 max reconstruction error | exact mode (32 fractional bits) |")
    print("|---|---|---|")
    results = {}
    for bits in (None, 32):
        config = ReversibleConfig(n_heads=2, n_ff_chunks=2, activation="gelu_tanh", exact_bits=bits)
        x, layers, tapes = stack(config, 64, 2, 16, 8, 32, seed=1)
        _, stored = stored_forward(x, layers, tapes, config)
        for depth in (1, 2, 4, 8, 16, 32, 64):
            (_, _), cache = reversible_forward(x, layers[:depth], tapes[:depth], config)
            rebuilt = reversible_inverse(cache.y1, cache.y2, layers[:depth], cache.tapes, config)
            err = max(float(np.max(np.abs(a - b))) for pair, ref in zip(rebuilt, stored.inputs) for a, b in zip(pair, ref))
            results[(bits, depth)] = err * (1.0 if bits is None else 2.0 ** -bits)
    for depth in (1, 2, 4, 8, 16, 32, 64):
        print(f"| {depth} | {results[(None, depth)]:.2e} | {results[(32, depth)]:.1f} |")


def ff_chunk_peak_mib(n_ff_chunks: int, *, n_layers: int = 2, batch: int = 1, seq: int = 1024, d_model: int = 32,
                      d_ff: int = 4096, n_heads: int = 2, seed: int = 0) -> float:
    """Peak (MiB) of the reversible stack's forward + backward with ``n_ff_chunks`` feed-forward chunks
    (float64, full attention, no dropout); defaults: the sizes of issue 16.6."""
    config = ReversibleConfig(n_heads=n_heads, n_ff_chunks=n_ff_chunks, activation="gelu_tanh")
    x, layers, tapes = stack(config, n_layers, batch, seq, d_model, d_ff, seed=seed)
    return peak_mib(reversible_forward, reversible_backward, x, layers, tapes, config)


def chunk_table() -> None:
    print("\n| feed-forward chunks | forward + backward peak (MiB) | ratio to 1 chunk |")
    print("|---|---|---|")
    one = ff_chunk_peak_mib(1)
    for n in (1, 2, 4, 8, 16, 64):
        peak = one if n == 1 else ff_chunk_peak_mib(n)
        print(f"| {n} | {peak:.1f} | {peak / one:.2f} |")


if __name__ == "__main__":
    memory_table()
    drift_table()
    chunk_table()
