"""Peak memory of chunked LSH attention versus the dense hash-masked form, as the sequence grows.

    .venv/bin/python benchmarks/lsh_memory.py

Prints a Markdown table (copied into docs/mechanisms/attention.lsh.md): tracemalloc peak (MiB) of
forward + backward for B=1, H=2, D=32, Dk=Dv=16, R=2 rounds, chunk_len m=32, nb=2L/m buckets.
"""

from __future__ import annotations

import sys
import tracemalloc
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from reference.attention.lsh import (  # noqa: E402
    init_lsh,  # noqa: E402
    lsh_attention_backward,
    lsh_attention_forward,
    lsh_hash,
    project_queries,
    sample_rotations,
)
from reference.attention.lsh_dense import lsh_dense_backward, lsh_dense_forward  # noqa: E402
from reference.backend import namespace  # noqa: E402

XP = namespace("numpy")
H, D, DK, R, M = 2, 32, 16, 2, 32


def peak_mib(run) -> float:
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    run()
    peak = tracemalloc.get_traced_memory()[1] - base
    tracemalloc.stop()
    return peak / 2 ** 20


def main() -> None:
    print("| L | buckets | chunked LSH peak (MiB) | dense hash-masked peak (MiB) | dense / chunked |")
    print("|---|---|---|---|---|")
    for length in (128, 256, 512, 1024, 2048):
        rng = np.random.default_rng(0)
        n_buckets = 2 * length // M
        x = XP.asarray(rng.standard_normal((1, length, D)))
        params = init_lsh(rng, D, H, DK, DK, xp=XP, dtype=XP.float64)
        rot = sample_rotations(rng, 1, H, DK, R, n_buckets, xp=XP, dtype=XP.float64)
        buckets = lsh_hash(project_queries(x, params["w_qk"], H), rot)

        def chunked(x=x, params=params, buckets=buckets, n_buckets=n_buckets):
            y, cache = lsh_attention_forward(x, params, buckets, n_heads=H, n_buckets=n_buckets, chunk_len=M)
            lsh_attention_backward(np.ones_like(y), cache)

        def dense(x=x, params=params, buckets=buckets, n_buckets=n_buckets):
            y, cache = lsh_dense_forward(x, params, buckets, n_heads=H, n_buckets=n_buckets)
            lsh_dense_backward(np.ones_like(y), cache)

        a = peak_mib(chunked)
        b = peak_mib(dense)
        print(f"| {length} | {n_buckets} | {a:.2f} | {b:.2f} | {b / a:.1f} |")


if __name__ == "__main__":
    main()
