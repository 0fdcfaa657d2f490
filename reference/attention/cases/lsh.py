"""Registered cases of Reformer LSH attention: chunked (plain, causal, HF's mode, padded) and dense.

Defaults are small and pairwise distinct: B=3, H=4, d_k=5, d_v=7, D=9, L=16, R=2 rounds, nb=6 buckets,
chunk_len=8 (C = R L / m = 4 chunks, so windows cross rounds and wrap around).

The buckets are hashed once from the case's rotations and passed as static data: argmax is piecewise
constant. :func:`sample_rotations_with_margin` redraws each (example, head, round) slice of the
rotations until every hash of that slice has a gap of at least ``hash_margin`` between its two largest
rotated coordinates, and the margin check asserts at every finite-difference point that hashing the
perturbed queries still gives the static buckets. Long slices make the margin impossible (the smallest
of L gaps shrinks like 1/L): the builder then says so in one error, and ``hash_margin=0`` builds
without the guarantee (benchmarks, comparisons; the checker still reports a bucket that moves).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ...backend import array_namespace, from_numpy, to_numpy
from ...config import Config, option
from ...random import generator, normal
from ...registry import Case, Mechanism, register
from ..lsh import (
    hash_margins,
    init_lsh,
    lsh_attention_backward,
    lsh_attention_forward,
    lsh_hash,
    lsh_intermediates,
    project_queries,
    sample_rotations,
)
from ..lsh_dense import lsh_dense_backward, lsh_dense_forward, lsh_dense_intermediates

PAPER = "Reformer: The Efficient Transformer (Kitaev, Kaiser, Levskaya, ICLR 2020)"
TRIES = 200  # redraws per (example, head, round) slice


@dataclass(frozen=True)
class LshConfig(Config):
    title = "Reformer LSH self-attention on (batch, seq_len, d_model) inputs with fixed hash buckets"
    batch: int = option(3, "batch size B", minimum=1)
    n_heads: int = option(4, "heads H", minimum=1)
    seq_len: int = option(16, "sequence length L", minimum=1)
    d_model: int = option(9, "model width D", minimum=1)
    d_k: int = option(5, "shared query-key width per head", minimum=1)
    d_v: int = option(7, "value width per head", minimum=1)
    n_hashes: int = option(2, "hash rounds R", minimum=1)
    n_buckets: int = option(6, "buckets nb (even)", minimum=2)
    chunk_len: int = option(8, "chunk length m (divides seq_len; the dense variant ignores it)", minimum=1)
    causal: bool = option(False, "mask later positions")
    attend_across_buckets: bool = option(False, "attend to the whole window (True: trax today, HF)")
    duplicate_correction: bool = option(True, "subtract log N_ij (trax daefc069 allow_duplicate_attention=False)")
    stable_rounds: bool = option(False, "float32-stable round weights exp(l - max) / sum (same float64 result)")
    padded: tuple[int, ...] = option((), "trailing padded positions per example (empty: no attention_mask)",
                                     minimum=0)
    hash_margin: float = option(0.05, "least gap of every hash (0: no guarantee)", minimum=0.0)

    def validate(self) -> None:
        if self.n_buckets % 2:
            raise ValueError(f"LshConfig.n_buckets must be even, got {self.n_buckets}")
        if self.seq_len % self.chunk_len:
            raise ValueError(f"LshConfig.chunk_len must divide seq_len={self.seq_len}, got {self.chunk_len}")
        if self.duplicate_correction and self.attend_across_buckets:
            raise ValueError("LshConfig.duplicate_correction=True needs attend_across_buckets=False "
                             "(HF's mode: attend_across_buckets=True, duplicate_correction=False)")
        if self.padded and (len(self.padded) != self.batch or max(self.padded) > self.seq_len):
            raise ValueError(f"LshConfig.padded must hold batch={self.batch} counts <= seq_len={self.seq_len}, "
                             f"got {self.padded}")


EDGE_CONFIGS = {
    "several_rounds": {"batch": 2, "n_heads": 3, "seq_len": 8, "chunk_len": 4, "n_hashes": 4},
    "one_chunk": {"batch": 2, "seq_len": 8, "chunk_len": 8, "n_hashes": 1},
    "one_chunk_per_round": {"batch": 2, "seq_len": 8, "chunk_len": 8, "n_hashes": 3},
    "chunk_len_1": {"batch": 2, "n_heads": 3, "seq_len": 5, "chunk_len": 1},
    "batch_1_one_head": {"batch": 1, "n_heads": 1},
    "two_buckets": {"n_buckets": 2, "batch": 2},
    "causal_several_rounds": {"batch": 2, "n_heads": 3, "seq_len": 8, "chunk_len": 4, "n_hashes": 3,
                              "causal": True, "stable_rounds": True},
    "fully_padded_row": {"batch": 3, "n_heads": 3, "seq_len": 8, "chunk_len": 4, "padded": (0, 8, 3)},
    "padded_causal_hf_mode": {"batch": 2, "n_heads": 3, "seq_len": 8, "chunk_len": 4, "padded": (2, 5),
                              "causal": True, "attend_across_buckets": True, "duplicate_correction": False},
    "no_duplicate_correction": {"batch": 2, "duplicate_correction": False},
}
# A realistic size (HF ReformerConfig's chunk length 64 and num_hashes scale); no margin guarantee at L=4096.
REALISTIC = {"batch": 1, "n_heads": 4, "seq_len": 4096, "d_model": 256, "d_k": 64, "d_v": 64, "n_hashes": 4,
             "n_buckets": 64, "chunk_len": 64, "hash_margin": 0.0}


def sample_rotations_with_margin(rng: np.random.Generator, q: Any, n_hashes: int, n_buckets: int, *,
                                 margin: float, tries: int = TRIES) -> Any:
    """Rotations (B, H, d_k, R, nb/2) whose hashes of ``q`` (B, H, L, d_k) all have a gap >= margin.

    Each (example, head, round) slice is redrawn on its own until its L hashes clear the margin."""
    xp = array_namespace(q)
    b, h, length, d_k = q.shape
    q_host = to_numpy(q).astype(np.float64)
    rot = sample_rotations(rng, b, h, d_k, n_hashes, n_buckets, xp=np, dtype=np.float64)  # (B, H, d_k, R, nb/2)
    for _ in range(tries):
        low = to_numpy(hash_margins(np.asarray(q_host), rot)).min(axis=-1) < margin  # (B, H, R) slices to redraw
        if not low.any():
            return from_numpy(rot, xp, q.dtype)
        fresh = rng.standard_normal(rot.shape)
        rot = np.where(low[:, :, None, :, None], fresh, rot)
    raise ValueError(f"no rotations give all {length} hashes of an (example, head, round) slice a margin >= "
                     f"{margin} in {tries} draws (seq_len={length}, n_buckets={n_buckets}): the margin a gradient "
                     f"check needs is impossible at this size; set hash_margin lower, or 0 to build without it")


def build(seed: int, dtype: Any, xp, config: LshConfig) -> Case:
    rng = generator(seed)
    x = normal(rng, (config.batch, config.seq_len, config.d_model), xp=xp, dtype=dtype)
    params = init_lsh(rng, config.d_model, config.n_heads, config.d_k, config.d_v, xp=xp, dtype=dtype)
    q = project_queries(x, params["w_qk"], config.n_heads)  # (B, H, L, d_k)
    if config.hash_margin > 0:
        rotations = sample_rotations_with_margin(rng, q, config.n_hashes, config.n_buckets, margin=config.hash_margin)
    else:
        rotations = sample_rotations(rng, config.batch, config.n_heads, config.d_k, config.n_hashes,
                                     config.n_buckets, xp=xp, dtype=dtype)
    static = {"rotations": rotations, "buckets": lsh_hash(q, rotations)}
    if config.padded:
        real = np.arange(config.seq_len)[None, :] < config.seq_len - np.asarray(config.padded)[:, None]  # (B, L)
        static["attention_mask"] = xp.asarray(real)
    return Case(inputs={"x": x}, params=params, static=static)


def margin_check(case: Case) -> None:
    """Hashing the (perturbed) queries must reproduce the static buckets."""
    q = project_queries(case.inputs["x"], case.params["w_qk"], case.config.n_heads)
    xp = array_namespace(q)
    if not bool(xp.all(lsh_hash(q, case.static["rotations"]) == case.static["buckets"])):
        raise ValueError("a finite-difference step moved a query across a hash boundary; raise hash_margin")


def forward(case: Case):
    c = case.config
    y, cache = lsh_attention_forward(case.inputs["x"], case.params, case.static["buckets"], n_heads=c.n_heads,
                                     n_buckets=c.n_buckets, chunk_len=c.chunk_len, causal=c.causal,
                                     attend_across_buckets=c.attend_across_buckets,
                                     duplicate_correction=c.duplicate_correction,
                                     attention_mask=case.static.get("attention_mask"), stable_rounds=c.stable_rounds)
    return {"y": y}, cache


def backward(cache, cot):
    dx, grads = lsh_attention_backward(cot["y"], cache)
    return {"x": dx, **grads}


def dense_forward(case: Case):
    c = case.config
    y, cache = lsh_dense_forward(case.inputs["x"], case.params, case.static["buckets"], n_heads=c.n_heads,
                                 n_buckets=c.n_buckets, causal=c.causal, duplicate_correction=c.duplicate_correction,
                                 attention_mask=case.static.get("attention_mask"), stable_rounds=c.stable_rounds)
    return {"y": y}, cache


def dense_backward(cache, cot):
    dx, grads = lsh_dense_backward(cot["y"], cache)
    return {"x": dx, **grads}


VARIANTS = {
    "attention.lsh": {},
    "attention.lsh.causal": {"causal": True},
    # HF transformers' LSHSelfAttention: the whole window, no duplicate correction.
    "attention.lsh.across_buckets": {"attend_across_buckets": True, "duplicate_correction": False},
    "attention.lsh.padded": {"padded": (0, 5, 11)},
}


def _edges_for(defaults: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The edge configurations, with a variant's padding cut to each edge's batch and length."""
    if "padded" not in defaults:
        return EDGE_CONFIGS
    full = LshConfig.make(defaults)
    out = {}
    for label, edge in EDGE_CONFIGS.items():
        batch, length = edge.get("batch", full.batch), edge.get("seq_len", full.seq_len)
        cut = tuple(min(p, length) for p in (defaults["padded"] * batch)[:batch])
        out[label] = {"padded": cut, **edge}
    return out


for _name, _defaults in VARIANTS.items():
    register(Mechanism(_name, PAPER, "attention", build, forward, backward, margin_check=margin_check,
                       config=LshConfig, defaults=_defaults, edge_configs=_edges_for(_defaults), realistic=REALISTIC,
                       intermediates=lsh_intermediates))
_DENSE_EDGES = {k: v for k, v in EDGE_CONFIGS.items() if not v.get("attend_across_buckets")}
register(Mechanism("attention.lsh.dense", PAPER, "attention", build, dense_forward, dense_backward,
                   margin_check=margin_check, config=LshConfig, edge_configs=_DENSE_EDGES,
                   realistic={**REALISTIC, "seq_len": 1024}, intermediates=lsh_dense_intermediates))
