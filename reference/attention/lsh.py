"""Reformer's LSH (hashed) self-attention with shared query-key.

Kitaev, Kaiser, Levskaya, "Reformer: The Efficient Transformer", ICLR 2020, arXiv:2001.04451v2, §2
("Locality-sensitive hashing attention"); reference code trax ``efficient_attention.py`` at the paper's
commit ``daefc069`` (2020-01-07; spec attention.md §3, spec findings.md). Dense twin:
:mod:`reference.attention.lsh_dense`; registered cases: :mod:`reference.attention.cases.lsh`.

Axes: B batch, H heads, L positions, D model width, d_k query-key width, d_v value width,
R hash rounds (n_hashes), N = R L sorted slots, C = N / m chunks, m chunk length, nb buckets.

Forward (per batch and head; spec §3.2):

    Q = X W_qk,  V = X W_v                                     shared QK (§2, "Shared-QK Transformer")
    h_r(i) = argmax([Q_i R_r ; -Q_i R_r])                      Eq. (4) angular LSH, R_r random rotation
    (padding) h_r(i) = nb for a padded position i             its own bucket (HF, see below)
    key(r, i) = L (h_r(i) + r nb') + i;  pi = argsort(key)     sort by round, bucket, position (nb' = nb or nb + 1)
    sQ = Q[pi mod L],  sV = V[pi mod L]                        (N, d_k), (N, d_v)
    K_a = sQ_a / sqrt(mean(sQ_a^2) + 1e-6) / sqrt(d_k)         keys normalised: z = q_i.q_j/|q_j|
    chunk c attends to [chunk c-1 ; chunk c] (cyclic)          window of 2m keys
    z[a, b] = sQ_a . K_b,  same position (self) -> z - 1e5,
            - log N[a, b]                                      duplicate correction (default, trax daefc069)
    masked -> MASKED_SCORE: other bucket, (causal) later position, padded key (except self)
    lam_a = logsumexp_b z[a, b],  so_a = sum_b exp(z[a, b] - lam_a) sV_b           Eq. (3) per round
    o_r = so[pi^-1],  l_r = lam[pi^-1]                         un-sort
    out_i = sum_r omega_{r,i} o_{r,i},  omega_{r,i} = exp(l_{r,i} - logsumexp_r l_{r,i})   round combination
    Y = concat_h(out) W_o

Duplicate correction (trax daefc069 ``efficient_attention.py`` l.913-960, ``allow_duplicate_attention=False``,
the default at l.452): N[a, b] counts the rounds r' in which key j = pos(b) lies in query i = pos(a)'s
attended window: same bucket and chunk_{r'}(j) in {chunk_{r'}(i), chunk_{r'}(i) - 1 mod C}. Both copies
of a key count when C = 1. N >= 1 on every unmasked pair; it is a constant of the static buckets, so the
backward is unchanged in form (trax: ``stop_gradient``).

Padding (``attention_mask``, HF ``modeling_reformer.py`` 4.57.6 l.769-776 and l.946-954): a padded
position is hashed into an extra bucket nb in every round and every padded key is masked; a padded query
still sees itself (HF's self value -1e5 beats its mask value -1e9, l.459-461, l.910).

Backward (fixed buckets; spec §3.3): round combination -> un-sort (gather with pi) ->
chunk softmax with a logsumexp output -> window to chunks (roll back) -> key
normalisation -> sort (scatter-add over the R copies = un-sort and sum over rounds).

Paper symbols: h (hash) = buckets, R (rotation) = rotations[b, h, :, r, :], n_rounds = n_hashes,
m = chunk_len, P_i (attention set) = same bucket within the window, the 10^5 self term = SELF_PENALTY,
N_ij = the duplicate count.

Deviations and options:
* The window is the current and the previous chunk (trax daefc069 ``look_one_back``, l.871-888); with one chunk in all
  (C = 1) every key appears twice (the duplicate correction removes the log 2 it adds to lam).
* ``attend_across_buckets=False`` (default: trax daefc069 l.453) masks keys of another bucket inside the
  window; True attends to the whole window, as trax today and HF. HF's mode is
  ``attend_across_buckets=True, duplicate_correction=False``.
* ``duplicate_correction=True`` (default: trax daefc069 l.452, ``allow_duplicate_attention=False``);
  False drops it (trax since f3e11e5e, HF). Across buckets the trax count can be zero for window pairs
  that cross a round boundary, so the two together are refused.
* Masked keys are replaced by MASKED_SCORE (HF style); the self term is subtracted (trax style), so a
  token that can only see itself gets lam = z_self - 1e5 and weight zero in the round combination
  whenever another round gives it a real key.
* ``stable_rounds=True`` computes omega = exp(l - max_r l) / sum_r exp(l - max_r l): equal in exact
  arithmetic to the default exp(l - logsumexp_r l) (trax daefc069 l.1038, HF l.673), float32-stable when
  every round of a position is self-only (l near -1e5, where a float32 ulp is 0.0078; docs: finding).
* Rotations are drawn per example and head (trax); HF shares them across the batch.
"""

from __future__ import annotations

import math
from typing import Any, Mapping, NamedTuple

import numpy as np

from ..backend import MASKED_SCORE, array_namespace, from_numpy
from ..nn.attention import merge_heads, split_heads
from ..nn.softmax import logsumexp
from ..random import normal
from ..validate import require_bool, require_finite, require_float, require_index_range, require_int, require_shape

LSH_PARAMS = ("w_qk", "w_v", "w_o")
SELF_PENALTY = 1e5  # subtracted from a token's score against itself (paper §2, trax daefc069 l.906)
KEY_EPS = 1e-6  # floor inside the key normalisation's RMS (trax daefc069 l.683, HF ``_len_and_dim_norm``)


class RoundsCache(NamedTuple):
    o: Any  # (B, H, R, L, d_v) per-round outputs
    lam: Any  # (B, H, R, L) per-round log-sum-exps
    omega: Any  # (B, H, R, L) round weights
    out: Any  # (B, H, L, d_v) combined output


class LSHCache(NamedTuple):
    x: Any  # (B, L, D)
    w_qk: Any  # (D, H d_k)
    w_v: Any  # (D, H d_v)
    w_o: Any  # (H d_v, D)
    merged: Any  # (B, L, H d_v) concatenated head outputs
    buckets: Any  # (B, H, R, L) int buckets used (padded positions in bucket nb)
    perm: Any  # (B, H, N) int: sorted slot -> flat index r L + i
    undo: Any  # (B, H, N) int: inverse of perm
    sq: Any  # (B, H, N, d_k) sorted queries
    inv_rms: Any  # (B, H, N, 1) (mean(sQ^2) + eps)^(-1/2)
    kw: Any  # (B, H, C, 2m, d_k) keys of each chunk's window
    vw: Any  # (B, H, C, 2m, d_v) values of each chunk's window
    p: Any  # (B, H, C, m, 2m) attention probabilities
    rounds: RoundsCache
    n_heads: int


def _require_count(name: str, value: Any, low: int = 1) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")


def sample_rotations(rng: np.random.Generator, batch: int, n_heads: int, d_k: int, n_hashes: int, n_buckets: int,
                     *, xp, dtype) -> Any:
    """Random rotations (B, H, d_k, R, nb/2), standard normal (trax draws one per example and head)."""
    for name, value in (("batch", batch), ("n_heads", n_heads), ("d_k", d_k), ("n_hashes", n_hashes)):
        _require_count(name, value)
    if isinstance(n_buckets, bool) or not isinstance(n_buckets, (int, np.integer)) or n_buckets < 2 or n_buckets % 2:
        raise ValueError(f"n_buckets must be an even number >= 2, got {n_buckets!r}")
    return from_numpy(rng.standard_normal((batch, n_heads, d_k, n_hashes, n_buckets // 2)), xp, dtype)


def _rotated(q: Any, rotations: Any) -> Any:
    """[q R ; -q R] for every round: (B, H, R, L, nb)."""
    for name, a in (("q", q), ("rotations", rotations)):
        require_float(name, a)
        require_finite(name, a)
    require_shape("q", q, ["batch", "heads", "seq", "d_k"], [None, None, None, None])
    require_shape("rotations", rotations, ["batch", "heads", "d_k", "n_hashes", "n_buckets/2"],
                  [q.shape[0], q.shape[1], q.shape[3], None, None])
    if rotations.shape[3] < 1:
        raise ValueError(f"rotations must hold at least one hash round (n_hashes >= 1), got shape {rotations.shape}")
    xp = array_namespace(q, rotations)
    b, h, d_k, r, half = rotations.shape
    y = xp.matmul(q, xp.reshape(rotations, (b, h, d_k, r * half)))  # (B, H, L, R nb/2)
    y = xp.permute_dims(xp.reshape(y, (b, h, q.shape[2], r, half)), (0, 1, 3, 2, 4))  # (B, H, R, L, nb/2)
    return xp.concat([y, -y], axis=-1)  # (B, H, R, L, nb)


def lsh_hash(q: Any, rotations: Any) -> Any:
    """Eq. (4): bucket of every query in every round, argmax([qR; -qR]) (first maximum on ties). (B, H, R, L)."""
    rotated = _rotated(q, rotations)
    return array_namespace(rotated).argmax(rotated, axis=-1)  # (B, H, R, L) Eq. (4)


def hash_margins(q: Any, rotations: Any) -> Any:
    """Gap between the largest and second largest rotated coordinate, (B, H, R, L): a tie has gap 0."""
    rotated = _rotated(q, rotations)
    s = array_namespace(rotated).sort(rotated, axis=-1)  # (B, H, R, L, nb)
    return s[..., -1] - s[..., -2]  # (B, H, R, L)


def project_queries(x: Any, w_qk: Any, n_heads: int) -> Any:
    """Q = X W_qk split into heads: (B, H, L, d_k)."""
    _require_count("n_heads", n_heads)
    for name, a in (("x", x), ("w_qk", w_qk)):
        require_float(name, a)
        require_finite(name, a)
    require_shape("x", x, ["batch", "seq", "d_model"], [None, None, None])
    require_shape("w_qk", w_qk, ["d_model", "heads*d_k"], [x.shape[2], None])
    if w_qk.shape[1] % n_heads:
        raise ValueError(f"w_qk must have shape (d_model, heads*d_k) with heads={n_heads}, got {w_qk.shape}")
    xp = array_namespace(x, w_qk)
    return split_heads(xp.matmul(x, w_qk), n_heads)  # (B, H, L, d_k)


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
    """K = sQ / sqrt(mean(sQ^2) + eps) / sqrt(d_k), and (mean(sQ^2) + eps)^(-1/2)."""
    xp = array_namespace(sq)
    inv_rms = 1.0 / xp.sqrt(xp.mean(sq * sq, axis=-1, keepdims=True) + KEY_EPS)  # (..., 1)
    return sq * inv_rms / math.sqrt(sq.shape[-1]), inv_rms


def normalise_keys_backward(dk: Any, sq: Any, inv_rms: Any) -> Any:
    """dsQ = rho dK - <sQ, dK> mu^(-3/2) d_k^(-3/2) sQ, with rho = mu^(-1/2) d_k^(-1/2) (spec §3.3 step 7)."""
    xp = array_namespace(dk)
    d_k = sq.shape[-1]
    inner = xp.sum(sq * dk, axis=-1, keepdims=True)  # (..., 1)
    return dk * inv_rms / math.sqrt(d_k) - inner * inv_rms ** 3 * sq / d_k ** 1.5


def combine_rounds(o: Any, lam: Any, *, stable: bool = False) -> tuple[Any, RoundsCache]:
    """out_i = sum_r softmax_r(lam_{r,i}) o_{r,i}. o (B, H, R, L, d_v), lam (B, H, R, L) -> (B, H, L, d_v)."""
    xp = array_namespace(o, lam)
    if stable:  # normalise by the sum: exact to rounding even where every lam is near -1e5
        e = xp.exp(lam - xp.max(lam, axis=2, keepdims=True))  # (B, H, R, L)
        omega = e / xp.sum(e, axis=2, keepdims=True)
    else:  # trax daefc069 l.1038, HF l.673
        omega = xp.exp(lam - logsumexp(lam, axis=2, keepdims=True))  # (B, H, R, L)
    out = xp.sum(omega[..., None] * o, axis=2)  # (B, H, L, d_v)
    return out, RoundsCache(o, lam, omega, out)


def combine_rounds_backward(dout: Any, cache: RoundsCache) -> tuple[Any, Any]:
    """do_r = omega_r dout;  dlam_r = omega_r <o_r - out, dout> (spec §3.3 step 2; both forms of omega)."""
    xp = array_namespace(dout)
    do = cache.omega[..., None] * dout[:, :, None, ...]  # (B, H, R, L, d_v)
    dlam = cache.omega * xp.sum((cache.o - cache.out[:, :, None, ...]) * dout[:, :, None, ...], axis=-1)  # (B, H, R, L)
    return do, dlam


def validate_lsh(x: Any, params: Mapping[str, Any], buckets: Any, n_heads: int, n_buckets: int,
                 attention_mask: Any = None) -> None:
    """Every argument of the LSH forwards, checked in the caller's names."""
    if not isinstance(params, Mapping):
        raise TypeError(f"params must be a dict with keys {LSH_PARAMS}, got {type(params).__name__}")
    missing = [name for name in LSH_PARAMS if name not in params]
    if missing:
        raise ValueError(f"params is missing {missing}")
    _require_count("n_heads", n_heads)
    _require_count("n_buckets", n_buckets)
    for name, a in (("x", x), *((k, params[k]) for k in LSH_PARAMS)):
        require_float(name, a)
        require_finite(name, a)
    require_shape("x", x, ["batch", "seq", "d_model"], [None, None, None])
    b, length, d = x.shape
    if b == 0 or length == 0:
        raise ValueError(f"x must hold at least one example and one position, got shape {x.shape}")
    require_shape("w_qk", params["w_qk"], ["d_model", "heads*d_k"], [d, None])
    require_shape("w_v", params["w_v"], ["d_model", "heads*d_v"], [d, None])
    for name in ("w_qk", "w_v"):
        if params[name].shape[1] % n_heads or params[name].shape[1] == 0:
            raise ValueError(f"{name} must have shape (d_model, heads*d) with heads={n_heads}, got {params[name].shape}")
    require_shape("w_o", params["w_o"], ["heads*d_v", "d_model"], [params["w_v"].shape[1], d])
    require_int("buckets", buckets)
    require_shape("buckets", buckets, ["batch", "heads", "n_hashes", "seq"], [b, n_heads, None, length])
    if buckets.shape[2] < 1:
        raise ValueError(f"buckets must hold at least one hash round (n_hashes >= 1), got shape {buckets.shape}")
    require_index_range("buckets", buckets, n_buckets)
    if attention_mask is not None:
        require_bool("attention_mask", attention_mask)
        require_shape("attention_mask", attention_mask, ["batch", "seq"], [b, length])


def pad_buckets(buckets: Any, attention_mask: Any, n_buckets: int) -> tuple[Any, int]:
    """Padded positions into their own bucket nb (HF l.769-776): (buckets, number of buckets used in the sort)."""
    if attention_mask is None:
        return buckets, n_buckets
    xp = array_namespace(buckets)
    pad = xp.asarray(n_buckets, dtype=buckets.dtype)
    return xp.where(attention_mask[:, None, None, :], buckets, pad), n_buckets + 1  # (B, H, R, L)


def duplicate_counts(buckets: Any, undo: Any, st: Any, m: int) -> Any:
    """N[a, b] of trax daefc069 l.913-960: rounds in which window key b lies in query a's window. (B, H, C, m, 2m).

    loc_r(i) = (h_r(i), chunk_r(i)) for the query, and (h_r(j), chunk_r(j) + 1 mod C) counts key j
    in the chunk before; both are compared round by round (C chunks of m slots, chunk_r(i) = undo // m).
    """
    xp = array_namespace(buckets, undo)
    b, h, r, length = buckets.shape
    c = r * length // m
    chunk = xp.reshape(undo // m, (b, h, r, length))  # (B, H, R, L) chunk of (round, position)
    here = xp.permute_dims(buckets * c + chunk, (0, 1, 3, 2))  # (B, H, L, R)
    after = xp.permute_dims(buckets * c + (chunk + 1) % c, (0, 1, 3, 2))  # (B, H, L, R) seen from the next chunk
    q_loc = xp.reshape(_gather(here, st), (b, h, c, m, 1, r))  # (B, H, C, m, 1, R)
    k_here = _window(xp.reshape(_gather(here, st), (b, h, c, m, r)))  # (B, H, C, 2m, R)
    k_after = _window(xp.reshape(_gather(after, st), (b, h, c, m, r)))  # (B, H, C, 2m, R)
    counts = xp.zeros((b, h, c, m, 2 * m), dtype=xp.int64)
    for k in range(r):  # one round at a time: no (..., 2m, R) temporaries
        q_k = q_loc[..., k]  # (B, H, C, m, 1)
        counts = counts + xp.astype(q_k == k_here[:, :, :, None, :, k], xp.int64) \
            + xp.astype(q_k == k_after[:, :, :, None, :, k], xp.int64)  # (B, H, C, m, 2m)
    return counts


def lsh_attention_forward(x: Any, params: Mapping[str, Any], buckets: Any, *, n_heads: int, n_buckets: int,
                          chunk_len: int, causal: bool = False, attend_across_buckets: bool = False,
                          duplicate_correction: bool = True, attention_mask: Any = None,
                          stable_rounds: bool = False) -> tuple[Any, LSHCache]:
    """Reformer LSH attention of x (B, L, D) with fixed buckets (B, H, R, L) (use :func:`lsh_hash`).

    params: w_qk (D, H d_k), w_v (D, H d_v), w_o (H d_v, D), no biases (trax, HF). attention_mask (B, L)
    bool, True = a real token (HF's ``attention_mask``). Defaults: paper-era trax (module docstring).
    """
    validate_lsh(x, params, buckets, n_heads, n_buckets, attention_mask)
    if duplicate_correction and attend_across_buckets:
        raise ValueError("duplicate_correction=True needs attend_across_buckets=False (trax daefc069's count is "
                         "zero for window pairs across a round boundary); HF's mode is attend_across_buckets=True, "
                         "duplicate_correction=False")
    xp = array_namespace(x, buckets)
    b, length, _ = x.shape
    _require_count("chunk_len", chunk_len)
    if length % chunk_len:
        raise ValueError(f"chunk_len must divide seq={length}, got {chunk_len}")
    w_qk, w_v, w_o = params["w_qk"], params["w_v"], params["w_o"]
    buckets, n_sort = pad_buckets(buckets, attention_mask, n_buckets)  # (B, H, R, L)
    r = buckets.shape[2]
    m, n = chunk_len, r * length
    c = n // m
    q = project_queries(x, w_qk, n_heads)  # (B, H, L, d_k)
    v = split_heads(xp.matmul(x, w_v), n_heads)  # (B, H, L, d_v)
    d_k, d_v = q.shape[-1], v.shape[-1]
    # Sort by (round, bucket, position); each position appears once per round.
    perm, undo = sort_by_bucket(buckets, n_sort)  # (B, H, N)
    st = perm % length  # (B, H, N) original position of each sorted slot
    sb = xp.reshape(buckets + n_sort * xp.reshape(xp.arange(r, dtype=buckets.dtype), (r, 1)), (b, n_heads, n))
    sb = xp.take_along_axis(sb, perm, axis=-1)  # (B, H, N) round-offset bucket of each slot
    sq, sv = _gather(q, st), _gather(v, st)  # (B, H, N, d_k), (B, H, N, d_v)
    kn, inv_rms = normalise_keys(sq)  # (B, H, N, d_k) shared-QK keys
    # Chunks of m sorted slots; each attends to the previous chunk and itself.
    qc = xp.reshape(sq, (b, n_heads, c, m, d_k))  # (B, H, C, m, d_k)
    kw = _window(xp.reshape(kn, (b, n_heads, c, m, d_k)))  # (B, H, C, 2m, d_k)
    vw = _window(xp.reshape(sv, (b, n_heads, c, m, d_v)))  # (B, H, C, 2m, d_v)
    pq, bq = xp.reshape(st, (b, n_heads, c, m)), xp.reshape(sb, (b, n_heads, c, m))  # (B, H, C, m)
    pk, bk = _window(pq), _window(bq)  # (B, H, C, 2m)
    z = xp.matmul(qc, xp.matrix_transpose(kw))  # (B, H, C, m, 2m) Eq. (3) logits, no 1/sqrt(d_k)
    is_self = pk[..., None, :] == pq[..., :, None]  # (B, H, C, m, 2m)
    allowed = xp.ones(z.shape, dtype=xp.bool)
    if not attend_across_buckets:
        allowed = allowed & (bq[..., :, None] == bk[..., None, :])  # same bucket (and round)
    if causal:
        allowed = allowed & (pk[..., None, :] <= pq[..., :, None])  # no later positions
    if attention_mask is not None:
        real = xp.take_along_axis(attention_mask, xp.reshape(pk, (b, n_heads * c * 2 * m)), axis=-1)
        allowed = allowed & (xp.reshape(real, (b, n_heads, c, 1, 2 * m)) | is_self)  # padded keys: only self
    z = xp.where(is_self, z - SELF_PENALTY, z)  # self only if nothing else
    if duplicate_correction:
        counts = duplicate_counts(buckets, undo, st, m)  # (B, H, C, m, 2m), >= 1 where allowed
        z = z - xp.log(xp.astype(xp.where(allowed, counts, 1), z.dtype))  # z - log N
    z = xp.where(allowed, z, xp.asarray(MASKED_SCORE, dtype=z.dtype))
    lam = logsumexp(z, axis=-1)  # (B, H, C, m)
    p = xp.exp(z - lam[..., None])  # (B, H, C, m, 2m) Eq. (3)
    so = xp.matmul(p, vw)  # (B, H, C, m, d_v)
    # Un-sort to (round, position) and combine rounds by their normalisers.
    o = xp.reshape(_gather(xp.reshape(so, (b, n_heads, n, d_v)), undo), (b, n_heads, r, length, d_v))  # (B, H, R, L, d_v)
    lam_u = xp.reshape(xp.take_along_axis(xp.reshape(lam, (b, n_heads, n)), undo, axis=-1),
                       (b, n_heads, r, length))  # (B, H, R, L)
    out, rounds = combine_rounds(o, lam_u, stable=stable_rounds)  # (B, H, L, d_v)
    merged = merge_heads(out)  # (B, L, H d_v)
    y = xp.matmul(merged, w_o)  # (B, L, D)
    return y, LSHCache(x, w_qk, w_v, w_o, merged, buckets, perm, undo, sq, inv_rms, kw, vw, p, rounds, n_heads)


def lsh_attention_backward(dy: Any, cache: LSHCache) -> tuple[Any, dict[str, Any]]:
    """Returns dx (B, L, D) and grads {w_qk, w_v, w_o} (spec §3.3)."""
    xp = array_namespace(dy)
    x, w_qk, w_v, w_o, merged, _, perm, undo, sq, inv_rms, kw, vw, p, rounds, n_heads = cache
    b, length, _ = x.shape
    _, _, c, m, _ = p.shape
    n, r = c * m, c * m // length
    d_k, d_v = sq.shape[-1], vw.shape[-1]
    # Y = merged W_o.
    dw_o = xp.tensordot(merged, dy, axes=([0, 1], [0, 1]))  # (H d_v, D)
    dout = split_heads(xp.matmul(dy, xp.matrix_transpose(w_o)), n_heads)  # (B, H, L, d_v)
    do, dlam_u = combine_rounds_backward(dout, rounds)  # (B, H, R, L, d_v), (B, H, R, L)
    # Un-sort o = so[undo]  =>  dso = do[perm] (a gather with the forward sort).
    dso = xp.reshape(_gather(xp.reshape(do, (b, n_heads, n, d_v)), perm), (b, n_heads, c, m, d_v))  # (B, H, C, m, d_v)
    dlam = xp.reshape(xp.take_along_axis(xp.reshape(dlam_u, (b, n_heads, n)), perm, axis=-1),
                      (b, n_heads, c, m))  # (B, H, C, m)
    # so = P Vw, P = exp(z - lam), lam = logsumexp(z); the masks and -log N are constants.
    dp = xp.matmul(dso, xp.matrix_transpose(vw))  # (B, H, C, m, 2m)
    dvw = xp.matmul(xp.matrix_transpose(p), dso)  # (B, H, C, 2m, d_v)
    dz = p * (dp - xp.sum(p * dp, axis=-1, keepdims=True)) + p * dlam[..., None]  # (B, H, C, m, 2m)
    qc = xp.reshape(sq, (b, n_heads, c, m, d_k))  # (B, H, C, m, d_k)
    dqc = xp.matmul(dz, kw)  # (B, H, C, m, d_k) query role
    dkw = xp.matmul(xp.matrix_transpose(dz), qc)  # (B, H, C, 2m, d_k) key role
    dkn = xp.reshape(_unwindow(dkw, m), (b, n_heads, n, d_k))  # (B, H, N, d_k)
    dsv = xp.reshape(_unwindow(dvw, m), (b, n_heads, n, d_v))  # (B, H, N, d_v)
    dsq = xp.reshape(dqc, (b, n_heads, n, d_k)) + normalise_keys_backward(dkn, sq, inv_rms)  # (B, H, N, d_k)
    # Gather sQ = Q[perm mod L]  =>  scatter-add = un-sort and sum over the R copies.
    dq = xp.sum(xp.reshape(_gather(dsq, undo), (b, n_heads, r, length, d_k)), axis=2)  # (B, H, L, d_k)
    dv = xp.sum(xp.reshape(_gather(dsv, undo), (b, n_heads, r, length, d_v)), axis=2)  # (B, H, L, d_v)
    dq_m, dv_m = merge_heads(dq), merge_heads(dv)  # (B, L, H d_k), (B, L, H d_v)
    dx = xp.matmul(dq_m, xp.matrix_transpose(w_qk)) + xp.matmul(dv_m, xp.matrix_transpose(w_v))  # (B, L, D)
    grads = {"w_qk": xp.tensordot(x, dq_m, axes=([0, 1], [0, 1])),  # (D, H d_k)
             "w_v": xp.tensordot(x, dv_m, axes=([0, 1], [0, 1])),  # (D, H d_v)
             "w_o": dw_o}
    return dx, grads


def lsh_intermediates(cache: LSHCache) -> dict[str, Any]:
    """Named intermediates in forward order: buckets, sort permutation, per-round outputs and log-sum-exps."""
    return {"buckets": cache.buckets, "perm": cache.perm, "round_outputs": cache.rounds.o,
            "round_logsumexp": cache.rounds.lam, "round_weights": cache.rounds.omega}


def init_lsh(rng: np.random.Generator, d_model: int, n_heads: int, d_k: int, d_v: int, *, xp, dtype) -> dict[str, Any]:
    """w_qk (D, H d_k), w_v (D, H d_v), w_o (H d_v, D), N(0, 1/fan_in)."""
    return {"w_qk": normal(rng, (d_model, n_heads * d_k), xp=xp, dtype=dtype, scale=d_model ** -0.5),
            "w_v": normal(rng, (d_model, n_heads * d_v), xp=xp, dtype=dtype, scale=d_model ** -0.5),
            "w_o": normal(rng, (n_heads * d_v, d_model), xp=xp, dtype=dtype, scale=(n_heads * d_v) ** -0.5)}
