"""Registered examples of Reformer LSH attention: chunked (plain, causal, across buckets) and dense.

Sizes are small and pairwise distinct: B=2, H=3, Dk=4, Dv=5, D=6, L=8, R=2 rounds, nb=4 buckets,
chunk_len=4 (so C = R L / m = 4 chunks, windows cross rounds and wrap around).

The buckets are hashed once from the example's rotations and passed as static data: argmax is
piecewise constant. ``sample_rotations_with_margin`` redraws the rotations until every hash has a gap
of at least ``MARGIN`` between its two largest rotated coordinates, and the margin check asserts at
every finite-difference point that hashing the perturbed queries still gives the static buckets.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..backend import array_namespace, from_numpy
from ..random import generator, normal
from ..registry import Case, Mechanism, register
from .lsh import (hash_margins, lsh_attention_backward, lsh_attention_forward, lsh_hash, project_queries,
                  sample_rotations)
from .lsh_dense import lsh_dense_backward, lsh_dense_forward

PAPER = "Reformer: The Efficient Transformer (Kitaev, Kaiser, Levskaya, ICLR 2020)"
B, H, DK, DV, D, L = 2, 3, 4, 5, 6, 8
N_HASHES, N_BUCKETS, CHUNK_LEN = 2, 4, 4
MARGIN = 0.05


def sample_rotations_with_margin(rng: np.random.Generator, q: Any, n_hashes: int, n_buckets: int, *,
                                 margin: float = MARGIN, tries: int = 2000) -> Any:
    """Rotations (B, H, Dk, R, nb/2) whose hashes of ``q`` (B, H, L, Dk) all have a gap >= margin."""
    xp = array_namespace(q)
    b, h, _, dk = q.shape
    for _ in range(tries):
        rotations = sample_rotations(rng, b, h, dk, n_hashes, n_buckets, xp=np, dtype=np.float64)
        candidate = from_numpy(rotations, xp, q.dtype)
        if float(xp.min(hash_margins(q, candidate))) >= margin:
            return candidate
    raise RuntimeError(f"no rotations with hash margin >= {margin} in {tries} draws")


def init_lsh(rng: np.random.Generator, d_model: int, n_heads: int, d_k: int, d_v: int, *, xp, dtype) -> dict[str, Any]:
    """w_qk (D, H Dk), w_v (D, H Dv), w_o (H Dv, D), N(0, 1/fan_in)."""
    return {"w_qk": normal(rng, (d_model, n_heads * d_k), xp=xp, dtype=dtype, scale=d_model ** -0.5),
            "w_v": normal(rng, (d_model, n_heads * d_v), xp=xp, dtype=dtype, scale=d_model ** -0.5),
            "w_o": normal(rng, (n_heads * d_v, d_model), xp=xp, dtype=dtype, scale=(n_heads * d_v) ** -0.5)}


def example(seed: int, dtype: Any, xp) -> Case:
    rng = generator(seed)
    x = normal(rng, (B, L, D), xp=xp, dtype=dtype)
    params = init_lsh(rng, D, H, DK, DV, xp=xp, dtype=dtype)
    q = project_queries(x, params["w_qk"], H)  # (B, H, L, Dk)
    rotations = sample_rotations_with_margin(rng, q, N_HASHES, N_BUCKETS)
    return Case(inputs={"x": x}, params=params, static={"rotations": rotations, "buckets": lsh_hash(q, rotations)})


def margin_check(case: Case, _tol: float) -> None:
    """Hashing the (perturbed) queries must reproduce the static buckets."""
    q = project_queries(case.inputs["x"], case.params["w_qk"], H)
    xp = array_namespace(q)
    if not bool(xp.all(lsh_hash(q, case.static["rotations"]) == case.static["buckets"])):
        raise ValueError("a finite-difference step moved a query across a hash boundary; enlarge MARGIN")


def _chunked(causal: bool, across: bool):
    def forward(case: Case):
        y, cache = lsh_attention_forward(case.inputs["x"], case.params, case.static["buckets"], n_heads=H,
                                         n_buckets=N_BUCKETS, chunk_len=CHUNK_LEN, causal=causal,
                                         attend_across_buckets=across)
        return {"y": y}, cache

    def backward(cache, cot):
        dx, grads = lsh_attention_backward(cot["y"], cache)
        return {"x": dx, **grads}

    return forward, backward


def _dense_forward(case: Case):
    y, cache = lsh_dense_forward(case.inputs["x"], case.params, case.static["buckets"], n_heads=H,
                                 n_buckets=N_BUCKETS, causal=False)
    return {"y": y}, cache


def _dense_backward(cache, cot):
    dx, grads = lsh_dense_backward(cot["y"], cache)
    return {"x": dx, **grads}


for _name, _causal, _across in (("attention.lsh", False, False), ("attention.lsh.causal", True, False),
                                ("attention.lsh.across_buckets", False, True)):
    register(Mechanism(_name, PAPER, "attention", example, *_chunked(_causal, _across), margin_check=margin_check))
register(Mechanism("attention.lsh.dense", PAPER, "attention", example, _dense_forward, _dense_backward,
                   margin_check=margin_check))
