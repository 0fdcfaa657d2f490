"""Scaled dot-product and multi-head attention (Vaswani et al., 2017), with masks and an additive bias.

Axes: B batch, H heads, T query positions, S key positions, D model width,
Dh = D / H head width (head h owns the contiguous channel block [h Dh, (h+1) Dh)).

Scaled dot-product attention, per batch and head:

    scores = Q K^T / sqrt(Dh) + bias                   (T, S)
    scores = where(mask, scores, MASKED_SCORE)         mask: True = may attend
    P = softmax_rows(scores)
    O = (P * dropout_mask) V                           (T, Dv)

Backward (``g`` for the gradient of the loss):

    gPd = gO V^T,   gV = Pd^T gO,   gP = gPd * dropout_mask
    gscores = P * (gP - rowsum(P * gP)),  zeroed where masked
    gQ = gscores K / sqrt(Dh),   gK = gscores^T Q / sqrt(Dh),   gbias = gscores (summed to bias's shape)

Multi-head attention projects ``x_q`` and ``x_kv`` with ``w_q, w_k, w_v`` (D, D),
splits heads, attends, merges heads and projects with ``w_o`` (D, D).
A fully masked row attends uniformly to its masked keys (every score equals
MASKED_SCORE) and passes no gradient to Q, K or the bias.
"""

from __future__ import annotations

import functools
import math
from typing import Any, NamedTuple

from ..backend import MASKED_SCORE, array_namespace, sum_to_shape
from ..validate import require_bool, require_broadcastable, require_finite, require_float, require_shape
from .linear import LinearCache, init_linear, linear_backward, linear_forward
from .softmax import SoftmaxCache, softmax_backward, softmax_forward

ATTENTION_PARAMS = ("w_q", "b_q", "w_k", "b_k", "w_v", "b_v", "w_o", "b_o")


class SDPACache(NamedTuple):
    q: Any  # (B, H, T, Dh)
    k: Any  # (B, H, S, Dh)
    v: Any  # (B, H, S, Dv)
    softmax: SoftmaxCache  # p: (B, H, T, S)
    p_dropped: Any  # (B, H, T, S)
    mask: Any | None  # bool, broadcastable to (B, H, T, S)
    dropout_mask: Any | None  # broadcastable to (B, H, T, S)
    bias_shape: tuple[int, ...] | None
    scale: float


def causal_mask(t: int, s: int | None = None, *, xp, offset: int = 0) -> Any:
    """(T, S) boolean: query i may attend key j when j <= i + offset (keys may include a prefix of memory).

    Built once per (T, S, offset, namespace) and cached, since layers ask for it on every call:
    callers share the returned array and must not modify it.
    """
    return _causal_mask(t, t if s is None else s, offset, xp)


@functools.lru_cache(maxsize=8)
def _causal_mask(t: int, s: int, offset: int, xp) -> Any:
    rows = xp.arange(t)[:, None]
    cols = xp.arange(s)[None, :]
    return cols <= rows + offset  # (T, S)


def padding_mask(key_valid: Any) -> Any:
    """(B, S) boolean key validity → (B, 1, 1, S), ready to combine with other masks."""
    return key_valid[:, None, None, :]


def sdpa_forward(q: Any, k: Any, v: Any, *, mask: Any | None = None, bias: Any | None = None,
                 dropout_mask: Any | None = None, scale: float | None = None) -> tuple[Any, SDPACache]:
    """Scaled dot-product attention over the last two axes; leading axes broadcast (batch, heads, ...)."""
    xp = array_namespace(q, k, v)
    for name, a in (("q", q), ("k", k), ("v", v)):
        require_float(name, a)
        require_finite(name, a)
    if k.shape[-1] != q.shape[-1] or k.shape[-2] != v.shape[-2]:
        raise ValueError(f"k must have shape (..., S, {q.shape[-1]}) and v (..., S, Dv) with the same S; "
                         f"got k {tuple(k.shape)}, v {tuple(v.shape)}")
    scale = 1.0 / math.sqrt(q.shape[-1]) if scale is None else scale
    scores = xp.matmul(q, xp.matrix_transpose(k)) * scale  # (..., T, S)
    axes = (["B", "H"] if scores.ndim == 4 else [f"lead{i}" for i in range(scores.ndim - 2)]) + ["T", "S"]
    if bias is not None:
        require_float("bias", bias)
        require_finite("bias", bias)
        require_broadcastable("bias", bias, axes, scores.shape)
        scores = scores + bias
    if mask is not None:
        require_bool("mask", mask)
        require_broadcastable("mask", mask, axes, scores.shape)
        scores = xp.where(mask, scores, xp.asarray(MASKED_SCORE, dtype=scores.dtype))
    if dropout_mask is not None:
        require_float("dropout_mask", dropout_mask)
        require_broadcastable("dropout_mask", dropout_mask, axes, scores.shape)
    p, softmax_cache = softmax_forward(scores, axis=-1)  # (..., T, S)
    p_dropped = p if dropout_mask is None else p * dropout_mask
    out = xp.matmul(p_dropped, v)  # (..., T, Dv)
    bias_shape = None if bias is None else tuple(bias.shape)
    return out, SDPACache(q, k, v, softmax_cache, p_dropped, mask, dropout_mask, bias_shape, scale)


def sdpa_backward(dout: Any, cache: SDPACache) -> tuple[Any, Any, Any, Any | None]:
    """Returns dq, dk, dv and dbias (None when the forward had no bias)."""
    xp = array_namespace(dout)
    q, k, v, softmax_cache, p_dropped, mask, drop, bias_shape, scale = cache
    dv = xp.matmul(xp.matrix_transpose(p_dropped), dout)  # (..., S, Dv)
    dp = xp.matmul(dout, xp.matrix_transpose(v))  # (..., T, S)
    if drop is not None:
        dp = dp * drop
    dscores = softmax_backward(dp, softmax_cache)  # (..., T, S)
    if mask is not None:
        dscores = xp.where(mask, dscores, xp.asarray(0.0, dtype=dscores.dtype))  # a 0-d zero: no (T, S) buffer
    dq = xp.matmul(dscores, k) * scale  # (..., T, Dh)
    dk = xp.matmul(xp.matrix_transpose(dscores), q) * scale  # (..., S, Dh)
    dbias = None if bias_shape is None else sum_to_shape(dscores, bias_shape)
    return dq, dk, dv, dbias


def split_heads(x: Any, n_heads: int) -> Any:
    """(B, T, D) → (B, H, T, D/H)."""
    xp = array_namespace(x)
    b, t, d = x.shape
    return xp.permute_dims(xp.reshape(x, (b, t, n_heads, d // n_heads)), (0, 2, 1, 3))  # (B, H, T, Dh)


def merge_heads(x: Any) -> Any:
    """(B, H, T, Dh) → (B, T, H Dh)."""
    xp = array_namespace(x)
    b, h, t, dh = x.shape
    return xp.reshape(xp.permute_dims(x, (0, 2, 1, 3)), (b, t, h * dh))  # (B, T, D)


class MHACache(NamedTuple):
    q_proj: LinearCache
    k_proj: LinearCache
    v_proj: LinearCache
    attention: SDPACache
    out_proj: LinearCache
    n_heads: int


def mha_forward(x_q: Any, x_kv: Any, params: dict[str, Any], *, n_heads: int, mask: Any | None = None,
                bias: Any | None = None, dropout_mask: Any | None = None) -> tuple[Any, MHACache]:
    """Multi-head attention of queries ``x_q`` (B, T, D) over ``x_kv`` (B, S, D).

    params: w_q, b_q, w_k, b_k, w_v, b_v, w_o, b_o (weights (D, D)).
    mask: bool broadcastable to (B, H, T, S); bias: float broadcastable to (B, H, T, S).
    """
    require_shape("x_q", x_q, ["batch", "seq", "d_model"], [None, None, None])
    d = x_q.shape[-1]
    require_shape("x_kv", x_kv, ["batch", "seq_kv", "d_model"], [x_q.shape[0], None, d])
    if d % n_heads:
        raise ValueError(f"d_model={d} must be divisible by n_heads={n_heads}")
    missing = [name for name in ATTENTION_PARAMS if name not in params]
    if missing:
        raise ValueError(f"params is missing {missing}")
    q, q_cache = linear_forward(x_q, params["w_q"], params["b_q"])  # (B, T, D)
    k, k_cache = linear_forward(x_kv, params["w_k"], params["b_k"])  # (B, S, D)
    v, v_cache = linear_forward(x_kv, params["w_v"], params["b_v"])  # (B, S, D)
    heads, attention_cache = sdpa_forward(split_heads(q, n_heads), split_heads(k, n_heads), split_heads(v, n_heads),
                                          mask=mask, bias=bias, dropout_mask=dropout_mask)  # (B, H, T, Dh)
    y, o_cache = linear_forward(merge_heads(heads), params["w_o"], params["b_o"])  # (B, T, D)
    return y, MHACache(q_cache, k_cache, v_cache, attention_cache, o_cache, n_heads)


def mha_backward(dy: Any, cache: MHACache) -> tuple[Any, Any, dict[str, Any]]:
    """Returns dx_q, dx_kv and grads (w_*, b_*, and "bias" when the forward had one)."""
    dheads, grads_o = linear_backward(dy, cache.out_proj)  # (B, T, D)
    dq, dk, dv, dbias = sdpa_backward(split_heads(dheads, cache.n_heads), cache.attention)
    dx_q, grads_q = linear_backward(merge_heads(dq), cache.q_proj)
    dx_k, grads_k = linear_backward(merge_heads(dk), cache.k_proj)
    dx_v, grads_v = linear_backward(merge_heads(dv), cache.v_proj)
    grads = {}
    for suffix, g in (("q", grads_q), ("k", grads_k), ("v", grads_v), ("o", grads_o)):
        grads[f"w_{suffix}"], grads[f"b_{suffix}"] = g["w"], g["b"]
    if dbias is not None:
        grads["bias"] = dbias
    return dx_q, dx_k + dx_v, grads


def init_attention(rng, d_model: int, *, xp, dtype) -> dict[str, Any]:
    params = {}
    for suffix in "qkvo":
        p = init_linear(rng, d_model, d_model, xp=xp, dtype=dtype)
        params[f"w_{suffix}"], params[f"b_{suffix}"] = p["w"], p["b"]
    return params
