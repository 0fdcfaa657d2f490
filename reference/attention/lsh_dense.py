"""Reformer LSH attention computed densely: every round's full (L, L) score matrix under the hash mask.

Kitaev, Kaiser, Levskaya, "Reformer: The Efficient Transformer", ICLR 2020, arXiv:2001.04451v2, §2,
Eq. (3)-(4) with the sets P_i^(r) = {j : h_r(i) = h_r(j)} taken literally: no sorting, no chunks.
It is the specification the chunked code approximates: when one chunk holds a whole round
(chunk_len = L) and keys of other buckets are masked, :mod:`reference.attention.lsh` gives the same
outputs (tested). It costs O(R L^2) memory per head, against O(R L m) for the chunked form.

Axes: B batch, H heads, R rounds, L positions (queries i, keys j), Dk, Dv head widths.

Forward (per batch and head):

    Q = X W_qk,  V = X W_v,  K = Q / sqrt(mean(Q^2) + 1e-6) / sqrt(Dk)
    z_r[i, j] = Q_i . K_j - 1e5 [i = j],  MASKED_SCORE where h_r(i) != h_r(j) or (causal) j > i
    lam_r = logsumexp_j z_r,  o_r = softmax_j(z_r) V,  out = sum_r softmax_r(lam_r) o_r,  Y = concat_h(out) W_o

Backward: as the chunked form with the sort removed:
    do_r, dlam_r from the round combination;  dP_r = do_r V^T;  dV = sum_r P_r^T do_r
    dz_r = P_r (dP_r - rowsum(P_r dP_r)) + P_r dlam_r;  dz = sum_r dz_r
    dQ = dz K + key-normalisation backward of (dz^T Q)

Deviations: none beyond those of :mod:`reference.attention.lsh` (no -log N_ij duplicate correction).
"""

from __future__ import annotations

from typing import Any, NamedTuple

from ..backend import MASKED_SCORE, array_namespace
from ..nn.attention import merge_heads, split_heads
from ..nn.softmax import logsumexp
from .lsh import (SELF_PENALTY, RoundsCache, combine_rounds, combine_rounds_backward, normalise_keys,
                  normalise_keys_backward, project_queries, validate_lsh)


class LSHDenseCache(NamedTuple):
    x: Any  # (B, L, D)
    w_qk: Any  # (D, H Dk)
    w_v: Any  # (D, H Dv)
    w_o: Any  # (H Dv, D)
    merged: Any  # (B, L, H Dv)
    q: Any  # (B, H, L, Dk)
    k: Any  # (B, H, L, Dk) normalised keys
    inv_rms: Any  # (B, H, L, 1)
    v: Any  # (B, H, L, Dv)
    p: Any  # (B, H, R, L, L)
    rounds: RoundsCache
    n_heads: int


def lsh_dense_forward(x: Any, params: dict[str, Any], buckets: Any, *, n_heads: int, n_buckets: int,
                      causal: bool = False) -> tuple[Any, LSHDenseCache]:
    """Hash-masked dense attention of x (B, L, D) with buckets (B, H, R, L); params as lsh_attention_forward."""
    xp = array_namespace(x, buckets)
    validate_lsh(x, params, buckets, n_heads, n_buckets)
    length = x.shape[1]
    w_qk, w_v, w_o = params["w_qk"], params["w_v"], params["w_o"]
    q = project_queries(x, w_qk, n_heads)  # (B, H, L, Dk)
    v = split_heads(xp.matmul(x, w_v), n_heads)  # (B, H, L, Dv)
    k, inv_rms = normalise_keys(q)  # (B, H, L, Dk)
    z = xp.matmul(q, xp.matrix_transpose(k))  # (B, H, L, L)
    positions = xp.arange(length)
    is_self = positions[:, None] == positions[None, :]  # (L, L)
    z = xp.where(is_self, z - SELF_PENALTY, z)[:, :, None, ...]  # (B, H, 1, L, L)
    allowed = buckets[..., :, None] == buckets[..., None, :]  # (B, H, R, L, L) the hash mask P_i^(r)
    if causal:
        allowed = allowed & (positions[None, :] <= positions[:, None])
    z = xp.where(allowed, z, xp.asarray(MASKED_SCORE, dtype=z.dtype))  # (B, H, R, L, L)
    lam = logsumexp(z, axis=-1)  # (B, H, R, L)
    p = xp.exp(z - lam[..., None])  # (B, H, R, L, L)
    o = xp.matmul(p, v[:, :, None, ...])  # (B, H, R, L, Dv)
    out, rounds = combine_rounds(o, lam)  # (B, H, L, Dv)
    merged = merge_heads(out)  # (B, L, H Dv)
    return xp.matmul(merged, w_o), LSHDenseCache(x, w_qk, w_v, w_o, merged, q, k, inv_rms, v, p, rounds, n_heads)


def lsh_dense_backward(dy: Any, cache: LSHDenseCache) -> tuple[Any, dict[str, Any]]:
    """Returns dx (B, L, D) and grads {w_qk, w_v, w_o}."""
    xp = array_namespace(dy)
    x, w_qk, w_v, w_o, merged, q, k, inv_rms, v, p, rounds, n_heads = cache
    dw_o = xp.tensordot(merged, dy, axes=([0, 1], [0, 1]))  # (H Dv, D)
    dout = split_heads(xp.matmul(dy, xp.matrix_transpose(w_o)), n_heads)  # (B, H, L, Dv)
    do, dlam = combine_rounds_backward(dout, rounds)  # (B, H, R, L, Dv), (B, H, R, L)
    dp = xp.matmul(do, xp.matrix_transpose(v[:, :, None, ...]))  # (B, H, R, L, L)
    dv = xp.sum(xp.matmul(xp.matrix_transpose(p), do), axis=2)  # (B, H, L, Dv)
    dz = xp.sum(p * (dp - xp.sum(p * dp, axis=-1, keepdims=True)) + p * dlam[..., None], axis=2)  # (B, H, L, L)
    dq = xp.matmul(dz, k)  # (B, H, L, Dk)
    dk = xp.matmul(xp.matrix_transpose(dz), q)  # (B, H, L, Dk)
    dq = dq + normalise_keys_backward(dk, q, inv_rms)
    dq_m, dv_m = merge_heads(dq), merge_heads(dv)  # (B, L, H Dk), (B, L, H Dv)
    dx = xp.matmul(dq_m, xp.matrix_transpose(w_qk)) + xp.matmul(dv_m, xp.matrix_transpose(w_v))  # (B, L, D)
    return dx, {"w_qk": xp.tensordot(x, dq_m, axes=([0, 1], [0, 1])),
                "w_v": xp.tensordot(x, dv_m, axes=([0, 1], [0, 1])), "w_o": dw_o}
