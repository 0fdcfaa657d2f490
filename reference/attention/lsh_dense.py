"""Reformer LSH attention computed densely: every round's full (L, L) score matrix under the hash mask.

Kitaev, Kaiser, Levskaya, "Reformer: The Efficient Transformer", ICLR 2020, arXiv:2001.04451v2, §2,
Eq. (3)-(4) with the sets P_i^(r) = {j : h_r(i) = h_r(j)} taken literally: no sorting, no chunks.
It is the specification the chunked code approximates: when one chunk holds a whole round
(chunk_len = L) and keys of other buckets are masked, :mod:`reference.attention.lsh` gives the same
outputs (tested). It costs O(R L^2) memory per head, against O(R L m) for the chunked form.

Axes: B batch, H heads, R rounds, L positions (queries i, keys j), d_k, d_v head widths.

Forward (per batch and head):

    Q = X W_qk,  V = X W_v,  K = Q / sqrt(mean(Q^2) + 1e-6) / sqrt(d_k)
    z_r[i, j] = Q_i . K_j - 1e5 [i = j] - log N_ij,  N_ij = #{r' : h_r'(i) = h_r'(j)}  (duplicate correction)
    MASKED_SCORE where h_r(i) != h_r(j), (causal) j > i, or key j padded (j != i)
    lam_r = logsumexp_j z_r,  o_r = softmax_j(z_r) V,  out = sum_r softmax_r(lam_r) o_r,  Y = concat_h(out) W_o

Backward: as the chunked form with the sort removed:
    do_r, dlam_r from the round combination;  dP_r = do_r V^T;  dV = sum_r P_r^T do_r
    dz_r = P_r (dP_r - rowsum(P_r dP_r)) + P_r dlam_r;  dz = sum_r dz_r
    dQ = dz K + key-normalisation backward of (dz^T Q)

The duplicate count here is the paper's N_ij (rounds sharing a bucket, no chunks); it equals trax's
windowed count of :mod:`reference.attention.lsh` when one chunk holds a round. Deviations and options:
those of :mod:`reference.attention.lsh` (padding by ``attention_mask`` with HF's semantics).
"""

from __future__ import annotations

from typing import Any, Mapping, NamedTuple

from ..backend import MASKED_SCORE, array_namespace
from ..nn.attention import merge_heads, split_heads
from ..nn.softmax import logsumexp
from .lsh import (
    SELF_PENALTY,
    RoundsCache,
    combine_rounds,
    combine_rounds_backward,
    normalise_keys,
    normalise_keys_backward,
    pad_buckets,
    project_queries,
    validate_lsh,
)


class LSHDenseCache(NamedTuple):
    x: Any  # (B, L, D)
    w_qk: Any  # (D, H d_k)
    w_v: Any  # (D, H d_v)
    w_o: Any  # (H d_v, D)
    merged: Any  # (B, L, H d_v)
    buckets: Any  # (B, H, R, L) int buckets used (padded positions in bucket nb)
    q: Any  # (B, H, L, d_k)
    k: Any  # (B, H, L, d_k) normalised keys
    inv_rms: Any  # (B, H, L, 1)
    v: Any  # (B, H, L, d_v)
    p: Any  # (B, H, R, L, L)
    rounds: RoundsCache
    n_heads: int


def lsh_dense_forward(x: Any, params: Mapping[str, Any], buckets: Any, *, n_heads: int, n_buckets: int,
                      causal: bool = False, duplicate_correction: bool = True, attention_mask: Any = None,
                      stable_rounds: bool = False) -> tuple[Any, LSHDenseCache]:
    """Hash-masked dense attention of x (B, L, D) with buckets (B, H, R, L); arguments as lsh_attention_forward."""
    validate_lsh(x, params, buckets, n_heads, n_buckets, attention_mask)
    xp = array_namespace(x, buckets)
    length = x.shape[1]
    w_qk, w_v, w_o = params["w_qk"], params["w_v"], params["w_o"]
    buckets, _ = pad_buckets(buckets, attention_mask, n_buckets)  # (B, H, R, L)
    q = project_queries(x, w_qk, n_heads)  # (B, H, L, d_k)
    v = split_heads(xp.matmul(x, w_v), n_heads)  # (B, H, L, d_v)
    k, inv_rms = normalise_keys(q)  # (B, H, L, d_k)
    z = xp.matmul(q, xp.matrix_transpose(k))  # (B, H, L, L) Eq. (3) logits
    positions = xp.arange(length)
    is_self = positions[:, None] == positions[None, :]  # (L, L)
    z = xp.where(is_self, z - SELF_PENALTY, z)[:, :, None, ...]  # (B, H, 1, L, L)
    allowed = buckets[..., :, None] == buckets[..., None, :]  # (B, H, R, L, L) the hash mask P_i^(r)
    if duplicate_correction:
        counts = xp.sum(xp.astype(allowed, z.dtype), axis=2, keepdims=True)  # (B, H, 1, L, L) N_ij >= 1 where allowed
        z = z - xp.log(xp.where(allowed, counts, xp.asarray(1.0, dtype=z.dtype)))  # z - log N
    if causal:
        allowed = allowed & (positions[None, :] <= positions[:, None])
    if attention_mask is not None:
        allowed = allowed & (attention_mask[:, None, None, None, :] | is_self)  # padded keys: only self
    z = xp.where(allowed, z, xp.asarray(MASKED_SCORE, dtype=z.dtype))  # (B, H, R, L, L)
    lam = logsumexp(z, axis=-1)  # (B, H, R, L)
    p = xp.exp(z - lam[..., None])  # (B, H, R, L, L) Eq. (3)
    o = xp.matmul(p, v[:, :, None, ...])  # (B, H, R, L, d_v)
    out, rounds = combine_rounds(o, lam, stable=stable_rounds)  # (B, H, L, d_v)
    merged = merge_heads(out)  # (B, L, H d_v)
    cache = LSHDenseCache(x, w_qk, w_v, w_o, merged, buckets, q, k, inv_rms, v, p, rounds, n_heads)
    return xp.matmul(merged, w_o), cache


def lsh_dense_backward(dy: Any, cache: LSHDenseCache) -> tuple[Any, dict[str, Any]]:
    """Returns dx (B, L, D) and grads {w_qk, w_v, w_o}."""
    xp = array_namespace(dy)
    x, w_qk, w_v, w_o, merged, _, q, k, inv_rms, v, p, rounds, n_heads = cache
    dw_o = xp.tensordot(merged, dy, axes=([0, 1], [0, 1]))  # (H d_v, D)
    dout = split_heads(xp.matmul(dy, xp.matrix_transpose(w_o)), n_heads)  # (B, H, L, d_v)
    do, dlam = combine_rounds_backward(dout, rounds)  # (B, H, R, L, d_v), (B, H, R, L)
    dp = xp.matmul(do, xp.matrix_transpose(v[:, :, None, ...]))  # (B, H, R, L, L)
    dv = xp.sum(xp.matmul(xp.matrix_transpose(p), do), axis=2)  # (B, H, L, d_v)
    dz = xp.sum(p * (dp - xp.sum(p * dp, axis=-1, keepdims=True)) + p * dlam[..., None], axis=2)  # (B, H, L, L)
    dq = xp.matmul(dz, k)  # (B, H, L, d_k)
    dk = xp.matmul(xp.matrix_transpose(dz), q)  # (B, H, L, d_k)
    dq = dq + normalise_keys_backward(dk, q, inv_rms)
    dq_m, dv_m = merge_heads(dq), merge_heads(dv)  # (B, L, H d_k), (B, L, H d_v)
    dx = xp.matmul(dq_m, xp.matrix_transpose(w_qk)) + xp.matmul(dv_m, xp.matrix_transpose(w_v))  # (B, L, D)
    return dx, {"w_qk": xp.tensordot(x, dq_m, axes=([0, 1], [0, 1])),
                "w_v": xp.tensordot(x, dv_m, axes=([0, 1], [0, 1])), "w_o": dw_o}


def lsh_dense_intermediates(cache: LSHDenseCache) -> dict[str, Any]:
    """Named intermediates in forward order: buckets, per-round outputs, log-sum-exps and weights."""
    return {"buckets": cache.buckets, "round_outputs": cache.rounds.o, "round_logsumexp": cache.rounds.lam,
            "round_weights": cache.rounds.omega}
