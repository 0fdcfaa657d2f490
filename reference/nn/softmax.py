"""Softmax and log-softmax along an axis.

Forward:   p = exp(z - max z) / sum exp(z - max z)          (shift for stability)
           log p = z - logsumexp(z)
Backward:  dz = p * (dp - sum(p * dp))                       (softmax)
           dz = dlogp - p * sum(dlogp)                       (log-softmax)

Masking is the caller's business: masked scores are set to ``MASKED_SCORE``
(a finite constant) before the softmax, so their probability is an exact zero.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from ..backend import array_namespace
from ..validate import require_finite, require_float


class SoftmaxCache(NamedTuple):
    p: Any  # (..., N) probabilities
    axis: int


def softmax_forward(z: Any, *, axis: int = -1) -> tuple[Any, SoftmaxCache]:
    xp = array_namespace(z)
    require_float("z", z)
    require_finite("z", z)
    shifted = z - xp.max(z, axis=axis, keepdims=True)
    e = xp.exp(shifted)
    p = e / xp.sum(e, axis=axis, keepdims=True)
    return p, SoftmaxCache(p, axis)


def softmax_backward(dp: Any, cache: SoftmaxCache) -> Any:
    xp = array_namespace(dp)
    p, axis = cache
    dz = dp - xp.sum(p * dp, axis=axis, keepdims=True)
    dz *= p  # in place on our own temporary: one (..., N) buffer fewer, the same products
    return dz


def logsumexp(z: Any, *, axis: int = -1, keepdims: bool = False) -> Any:
    """log sum exp z along ``axis``, shifted by the max for stability."""
    xp = array_namespace(z)
    m = xp.max(z, axis=axis, keepdims=True)
    out = m + xp.log(xp.sum(xp.exp(z - m), axis=axis, keepdims=True))
    return out if keepdims else xp.squeeze(out, axis=axis)


def log_softmax_forward(z: Any, *, axis: int = -1) -> tuple[Any, SoftmaxCache]:
    xp = array_namespace(z)
    require_float("z", z)
    require_finite("z", z)
    log_p = z - logsumexp(z, axis=axis, keepdims=True)
    return log_p, SoftmaxCache(xp.exp(log_p), axis)


def log_softmax_backward(dlog_p: Any, cache: SoftmaxCache) -> Any:
    xp = array_namespace(dlog_p)
    p, axis = cache
    return dlog_p - p * xp.sum(dlog_p, axis=axis, keepdims=True)
