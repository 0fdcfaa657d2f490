"""Reformer's LSH (hashed) self-attention with shared query-key.

Kitaev, Kaiser, Levskaya, "Reformer: The Efficient Transformer", ICLR 2020, arXiv:2001.04451v2, §2
("Locality-sensitive hashing attention"); reference code trax ``efficient_attention.py`` (spec
attention.md §3). Dense twin: :mod:`reference.attention.lsh_dense`; examples: ``lsh_examples``.

Axes: B batch, H heads, L positions, D model width, Dk query-key width, Dv value width,
R hash rounds (n_hashes), N = R L sorted slots, C = N / m chunks, m chunk length, nb buckets.

Forward (per batch and head; spec §3.2):

    Q = X W_qk,  V = X W_v                                     shared QK (§2, "Shared-QK Transformer")
    h_r(i) = argmax([Q_i R_r ; -Q_i R_r])                      Eq. (4) angular LSH, R_r random rotation
    key(r, i) = L (h_r(i) + r nb) + i;  pi = argsort(key)      sort by round, bucket, position
    sQ = Q[pi mod L],  sV = V[pi mod L]                        (N, Dk), (N, Dv)
    K_a = sQ_a / sqrt(mean(sQ_a^2) + 1e-6) / sqrt(Dk)          keys normalised: z = q_i.q_j/|q_j|
    chunk c attends to [chunk c-1 ; chunk c] (cyclic)          window of 2m keys
    z[a, b] = sQ_a . K_b,  masks:  other bucket or (causal) later position -> MASKED_SCORE;
                                   same position (self) -> z - 1e5
    lam_a = logsumexp_b z[a, b],  so_a = sum_b exp(z[a, b] - lam_a) sV_b           Eq. (3) per round
    o_r = so[pi^-1],  l_r = lam[pi^-1]                         un-sort
    out_i = sum_r exp(l_{r,i} - logsumexp_r l_{r,i}) o_{r,i}   combination of rounds
    Y = concat_h(out) W_o

Backward (fixed buckets; spec §3.3): round combination -> un-sort (gather with pi) ->
chunk softmax with a logsumexp output -> window to chunks (roll back) -> key
normalisation -> sort (scatter-add over the R copies = un-sort and sum over rounds).

Paper symbols: h (hash) = buckets, R (rotation) = rotations[b, h, :, r, :], n_rounds = n_hashes,
m = chunk_len, P_i (attention set) = same bucket within the window, the 10^5 self term = SELF_PENALTY.

Deviations:
* The window is the current and the previous chunk (trax's ``look_adjacent``); with one chunk in all
  (C = 1) every key appears twice, which leaves outputs unchanged and adds log 2 to lam.
* ``attend_across_buckets=False`` (default) masks keys of another bucket inside the window, as the
  paper and trax at the paper's time; True attends to the whole window, as trax today and HF.
* No ``-log N_ij`` duplicate correction (trax today and HF have none); a key that shares a bucket with
  the query in several rounds counts once per round in the round combination.
* Masked keys are replaced by MASKED_SCORE (HF style); the self term is subtracted (trax style), so a
  token that can only see itself gets lam = z_self - 1e5 and weight zero in the round combination
  whenever another round gives it a real key.
* Rotations are drawn per example and head (trax); HF shares them across the batch.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import numpy as np

from ..backend import MASKED_SCORE, array_namespace, from_numpy
from ..nn.attention import merge_heads, split_heads
from ..nn.softmax import logsumexp
from ..validate import require_float, require_index_range, require_int, require_shape

LSH_PARAMS = ("w_qk", "w_v", "w_o")
SELF_PENALTY = 1e5  # subtracted from a token's score against itself (paper and trax)
KEY_EPS = 1e-6  # floor inside the key normalisation's RMS (trax, HF)


class LSHCache(NamedTuple):
    x: Any  # (B, L, D)
    w_qk: Any  # (D, H Dk)
    w_v: Any  # (D, H Dv)
    w_o: Any  # (H Dv, D)
    merged: Any  # (B, L, H Dv) concatenated head outputs
    perm: Any  # (B, H, N) int: sorted slot -> flat index r L + i
    undo: Any  # (B, H, N) int: inverse of perm
    sq: Any  # (B, H, N, Dk) sorted queries
    inv_rms: Any  # (B, H, N, 1) (mean(sQ^2) + eps)^(-1/2)
    kw: Any  # (B, H, C, 2m, Dk) keys of each chunk's window
    vw: Any  # (B, H, C, 2m, Dv) values of each chunk's window
    p: Any  # (B, H, C, m, 2m) attention probabilities
    rounds: "RoundsCache"
    n_heads: int


class RoundsCache(NamedTuple):
    o: Any  # (B, H, R, L, Dv) per-round outputs
    omega: Any  # (B, H, R, L) round weights
    out: Any  # (B, H, L, Dv) combined output


def sample_rotations(rng: np.random.Generator, batch: int, n_heads: int, d_k: int, n_hashes: int, n_buckets: int,
                     *, xp, dtype) -> Any:
    """Random rotations (B, H, Dk, R, nb/2), standard normal (trax draws one per example and head)."""
    if n_buckets < 2 or n_buckets % 2:
        raise ValueError(f"n_buckets must be an even number >= 2, got {n_buckets}")
    return from_numpy(rng.standard_normal((batch, n_heads, d_k, n_hashes, n_buckets // 2)), xp, dtype)


def _rotated(q: Any, rotations: Any) -> Any:
    """[q R ; -q R] for every round: (B, H, R, L, nb)."""
    xp = array_namespace(q, rotations)
    b, h, dk, r, half = rotations.shape
    require_shape("rotations", rotations, ["batch", "heads", "d_k", "n_hashes", "n_buckets/2"],
                  [q.shape[0], q.shape[1], q.shape[3], None, None])
    y = xp.matmul(q, xp.reshape(rotations, (b, h, dk, r * half)))  # (B, H, L, R nb/2)
    y = xp.permute_dims(xp.reshape(y, (b, h, q.shape[2], r, half)), (0, 1, 3, 2, 4))  # (B, H, R, L, nb/2)
    return xp.concat([y, -y], axis=-1)  # (B, H, R, L, nb)


def lsh_hash(q: Any, rotations: Any) -> Any:
    """Eq. (4): bucket of every query in every round, argmax([qR; -qR]) (first maximum on ties). (B, H, R, L)."""
    xp = array_namespace(q, rotations)
    return xp.argmax(_rotated(q, rotations), axis=-1)  # (B, H, R, L)


def hash_margins(q: Any, rotations: Any) -> Any:
    """Gap between the largest and second largest rotated coordinate, (B, H, R, L): a tie has gap 0."""
    xp = array_namespace(q, rotations)
    s = xp.sort(_rotated(q, rotations), axis=-1)  # (B, H, R, L, nb)
    return s[..., -1] - s[..., -2]  # (B, H, R, L)


def project_queries(x: Any, w_qk: Any, n_heads: int) -> Any:
    """Q = X W_qk split into heads: (B, H, L, Dk)."""
    xp = array_namespace(x, w_qk)
    return split_heads(xp.matmul(x, w_qk), n_heads)  # (B, H, L, Dk)


def sort_by_bucket(buckets: Any, n_buckets: int) -> tuple[Any, Any]:
    """perm (sorted slot -> r L + i) and its inverse, sorting by round, bucket, then position. (B, H, N) each."""
    xp = array_namespace(buckets)
    b, h, r, length = buckets.shape
    rounds = xp.reshape(xp.arange(r, dtype=buckets.dtype), (r, 1))  # (R, 1)
    positions = xp.arange(length, dtype=buckets.dtype)  # (L,)
    keys = length * (buckets + n_buckets * rounds) + positions  # (B, H, R, L) all distinct
    perm = xp.argsort(xp.reshape(keys, (b, h, r * length)), axis=-1, stable=True)  # (B, H, N)
    undo = xp.argsort(perm, axis=-1, stable=True)  # (B, H, N)
    return perm, undo


def _gather(a: Any, index: Any) -> Any:
    """a[..., index[..., n], :] along axis 2: (B, H, M, E) by (B, H, N) -> (B, H, N, E)."""
    xp = array_namespace(a, index)
    return xp.take_along_axis(a, index[..., None], axis=2)  # (B, H, N, E)


def _window(a: Any) -> Any:
    """[previous chunk ; chunk] along axis 3, cyclic over chunks: (B, H, C, m, ...) -> (B, H, C, 2m, ...)."""
    xp = array_namespace(a)
    return xp.concat([xp.roll(a, 1, axis=2), a], axis=3)


def _unwindow(da: Any, m: int) -> Any:
    """Backward of :func:`_window`: each chunk is 'current' of itself and 'previous' of the next chunk."""
    xp = array_namespace(da)
    return da[:, :, :, m:, ...] + xp.roll(da[:, :, :, :m, ...], -1, axis=2)  # (B, H, C, m, ...)


def normalise_keys(sq: Any) -> tuple[Any, Any]:
    """K = sQ / sqrt(mean(sQ^2) + eps) / sqrt(Dk), and (mean(sQ^2) + eps)^(-1/2)."""
    xp = array_namespace(sq)
    inv_rms = 1.0 / xp.sqrt(xp.mean(sq * sq, axis=-1, keepdims=True) + KEY_EPS)  # (..., 1)
    return sq * inv_rms / math.sqrt(sq.shape[-1]), inv_rms


def normalise_keys_backward(dk: Any, sq: Any, inv_rms: Any) -> Any:
    """dsQ = rho dK - <sQ, dK> mu^(-3/2) Dk^(-3/2) sQ, with rho = mu^(-1/2) Dk^(-1/2) (spec §3.3 step 7)."""
    xp = array_namespace(dk)
    d = sq.shape[-1]
    inner = xp.sum(sq * dk, axis=-1, keepdims=True)  # (..., 1)
    return dk * inv_rms / math.sqrt(d) - inner * inv_rms ** 3 * sq / d ** 1.5


def combine_rounds(o: Any, lam: Any) -> tuple[Any, RoundsCache]:
    """out_i = sum_r softmax_r(lam_{r,i}) o_{r,i}. o (B, H, R, L, Dv), lam (B, H, R, L) -> (B, H, L, Dv)."""
    xp = array_namespace(o, lam)
    omega = xp.exp(lam - logsumexp(lam, axis=2, keepdims=True))  # (B, H, R, L)
    out = xp.sum(omega[..., None] * o, axis=2)  # (B, H, L, Dv)
    return out, RoundsCache(o, omega, out)


def combine_rounds_backward(dout: Any, cache: RoundsCache) -> tuple[Any, Any]:
    """do_r = omega_r dout;  dlam_r = omega_r <o_r - out, dout> (spec §3.3 step 2)."""
    xp = array_namespace(dout)
    do = cache.omega[..., None] * dout[:, :, None, ...]  # (B, H, R, L, Dv)
    dlam = cache.omega * xp.sum((cache.o - cache.out[:, :, None, ...]) * dout[:, :, None, ...], axis=-1)  # (B, H, R, L)
    return do, dlam


def validate_lsh(x: Any, params: dict[str, Any], buckets: Any, n_heads: int, n_buckets: int) -> None:
    missing = [name for name in LSH_PARAMS if name not in params]
    if missing:
        raise ValueError(f"params is missing {missing}")
    require_float("x", x)
    require_shape("x", x, ["batch", "seq", "d_model"], [None, None, None])
    b, length, d = x.shape
    require_shape("w_qk", params["w_qk"], ["d_model", "heads*d_k"], [d, None])
    require_shape("w_v", params["w_v"], ["d_model", "heads*d_v"], [d, None])
    for name in ("w_qk", "w_v"):
        if params[name].shape[1] % n_heads:
            raise ValueError(f"{name} must have shape (d_model, heads*d) with heads={n_heads}, got {params[name].shape}")
    require_shape("w_o", params["w_o"], ["heads*d_v", "d_model"], [params["w_v"].shape[1], d])
    require_int("buckets", buckets)
    require_shape("buckets", buckets, ["batch", "heads", "n_hashes", "seq"], [b, n_heads, None, length])
    require_index_range("buckets", buckets, n_buckets)


def lsh_attention_forward(x: Any, params: dict[str, Any], buckets: Any, *, n_heads: int, n_buckets: int,
                          chunk_len: int, causal: bool = False,
                          attend_across_buckets: bool = False) -> tuple[Any, LSHCache]:
    """Reformer LSH attention of x (B, L, D) with fixed buckets (B, H, R, L) (use :func:`lsh_hash`).

    params: w_qk (D, H Dk), w_v (D, H Dv), w_o (H Dv, D), no biases (trax, HF).
    """
    xp = array_namespace(x, buckets)
    validate_lsh(x, params, buckets, n_heads, n_buckets)
    b, length, _ = x.shape
    if chunk_len < 1 or length % chunk_len:
        raise ValueError(f"chunk_len must divide seq={length}, got {chunk_len}")
    w_qk, w_v, w_o = params["w_qk"], params["w_v"], params["w_o"]
    r = buckets.shape[2]
    m, n = chunk_len, r * length
    c = n // m
    q = project_queries(x, w_qk, n_heads)  # (B, H, L, Dk)
    v = split_heads(xp.matmul(x, w_v), n_heads)  # (B, H, L, Dv)
    dk, dv = q.shape[-1], v.shape[-1]
    # Sort by (round, bucket, position); each position appears once per round.
    perm, undo = sort_by_bucket(buckets, n_buckets)  # (B, H, N)
    st = perm % length  # (B, H, N) original position of each sorted slot
    sb = xp.reshape(buckets + n_buckets * xp.reshape(xp.arange(r, dtype=buckets.dtype), (r, 1)), (b, n_heads, n))
    sb = xp.take_along_axis(sb, perm, axis=-1)  # (B, H, N) round-offset bucket of each slot
    sq, sv = _gather(q, st), _gather(v, st)  # (B, H, N, Dk), (B, H, N, Dv)
    kn, inv_rms = normalise_keys(sq)  # (B, H, N, Dk) shared-QK keys
    # Chunks of m sorted slots; each attends to the previous chunk and itself.
    qc = xp.reshape(sq, (b, n_heads, c, m, dk))  # (B, H, C, m, Dk)
    kw = _window(xp.reshape(kn, (b, n_heads, c, m, dk)))  # (B, H, C, 2m, Dk)
    vw = _window(xp.reshape(sv, (b, n_heads, c, m, dv)))  # (B, H, C, 2m, Dv)
    pq, bq = xp.reshape(st, (b, n_heads, c, m)), xp.reshape(sb, (b, n_heads, c, m))  # (B, H, C, m)
    pk, bk = _window(pq), _window(bq)  # (B, H, C, 2m)
    z = xp.matmul(qc, xp.matrix_transpose(kw))  # (B, H, C, m, 2m) Eq. (3) logits, no 1/sqrt(Dk)
    allowed = xp.ones(z.shape, dtype=xp.bool)
    if not attend_across_buckets:
        allowed = allowed & (bq[..., :, None] == bk[..., None, :])  # same bucket (and round)
    if causal:
        allowed = allowed & (pk[..., None, :] <= pq[..., :, None])  # no later positions
    is_self = pk[..., None, :] == pq[..., :, None]  # (B, H, C, m, 2m)
    z = xp.where(is_self, z - SELF_PENALTY, z)  # self only if nothing else
    z = xp.where(allowed, z, xp.asarray(MASKED_SCORE, dtype=z.dtype))
    lam = logsumexp(z, axis=-1)  # (B, H, C, m)
    p = xp.exp(z - lam[..., None])  # (B, H, C, m, 2m)
    so = xp.matmul(p, vw)  # (B, H, C, m, Dv)
    # Un-sort to (round, position) and combine rounds by their normalisers.
    o = xp.reshape(_gather(xp.reshape(so, (b, n_heads, n, dv)), undo), (b, n_heads, r, length, dv))  # (B, H, R, L, Dv)
    lam_u = xp.reshape(xp.take_along_axis(xp.reshape(lam, (b, n_heads, n)), undo, axis=-1),
                       (b, n_heads, r, length))  # (B, H, R, L)
    out, rounds = combine_rounds(o, lam_u)  # (B, H, L, Dv)
    merged = merge_heads(out)  # (B, L, H Dv)
    y = xp.matmul(merged, w_o)  # (B, L, D)
    return y, LSHCache(x, w_qk, w_v, w_o, merged, perm, undo, sq, inv_rms, kw, vw, p, rounds, n_heads)


def lsh_attention_backward(dy: Any, cache: LSHCache) -> tuple[Any, dict[str, Any]]:
    """Returns dx (B, L, D) and grads {w_qk, w_v, w_o} (spec §3.3)."""
    xp = array_namespace(dy)
    x, w_qk, w_v, w_o, merged, perm, undo, sq, inv_rms, kw, vw, p, rounds, n_heads = cache
    b, length, _ = x.shape
    _, _, c, m, _ = p.shape
    n, r = c * m, c * m // length
    dk, dv = sq.shape[-1], vw.shape[-1]
    # Y = merged W_o.
    dw_o = xp.tensordot(merged, dy, axes=([0, 1], [0, 1]))  # (H Dv, D)
    dout = split_heads(xp.matmul(dy, xp.matrix_transpose(w_o)), n_heads)  # (B, H, L, Dv)
    do, dlam_u = combine_rounds_backward(dout, rounds)  # (B, H, R, L, Dv), (B, H, R, L)
    # Un-sort o = so[undo]  =>  dso = do[perm] (a gather with the forward sort).
    dso = xp.reshape(_gather(xp.reshape(do, (b, n_heads, n, dv)), perm), (b, n_heads, c, m, dv))  # (B, H, C, m, Dv)
    dlam = xp.reshape(xp.take_along_axis(xp.reshape(dlam_u, (b, n_heads, n)), perm, axis=-1),
                      (b, n_heads, c, m))  # (B, H, C, m)
    # so = P Vw, P = exp(z - lam), lam = logsumexp(z).
    dp = xp.matmul(dso, xp.matrix_transpose(vw))  # (B, H, C, m, 2m)
    dvw = xp.matmul(xp.matrix_transpose(p), dso)  # (B, H, C, 2m, Dv)
    dz = p * (dp - xp.sum(p * dp, axis=-1, keepdims=True)) + p * dlam[..., None]  # (B, H, C, m, 2m)
    qc = xp.reshape(sq, (b, n_heads, c, m, dk))  # (B, H, C, m, Dk)
    dqc = xp.matmul(dz, kw)  # (B, H, C, m, Dk) query role
    dkw = xp.matmul(xp.matrix_transpose(dz), qc)  # (B, H, C, 2m, Dk) key role
    dkn = xp.reshape(_unwindow(dkw, m), (b, n_heads, n, dk))  # (B, H, N, Dk)
    dsv = xp.reshape(_unwindow(dvw, m), (b, n_heads, n, dv))  # (B, H, N, Dv)
    dsq = xp.reshape(dqc, (b, n_heads, n, dk)) + normalise_keys_backward(dkn, sq, inv_rms)  # (B, H, N, Dk)
    # Gather sQ = Q[perm mod L]  =>  scatter-add = un-sort and sum over the R copies.
    dq = xp.sum(xp.reshape(_gather(dsq, undo), (b, n_heads, r, length, dk)), axis=2)  # (B, H, L, Dk)
    dv_ = xp.sum(xp.reshape(_gather(dsv, undo), (b, n_heads, r, length, dv)), axis=2)  # (B, H, L, Dv)
    dq_m, dv_m = merge_heads(dq), merge_heads(dv_)  # (B, L, H Dk), (B, L, H Dv)
    dx = xp.matmul(dq_m, xp.matrix_transpose(w_qk)) + xp.matmul(dv_m, xp.matrix_transpose(w_v))  # (B, L, D)
    grads = {"w_qk": xp.tensordot(x, dq_m, axes=([0, 1], [0, 1])),  # (D, H Dk)
             "w_v": xp.tensordot(x, dv_m, axes=([0, 1], [0, 1])),  # (D, H Dv)
             "w_o": dw_o}
    return dx, grads
