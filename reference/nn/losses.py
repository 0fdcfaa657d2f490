"""Softmax cross-entropy with an ignore index, and sigmoid binary cross-entropy.

Softmax cross-entropy over logits z (..., V) and integer targets y (...):

    l_n = -log softmax(z_n)[y_n] = logsumexp(z_n) - z_n[y_n]
    L = sum_{n valid} l_n / N_valid              valid: y_n != ignore_index
    dz_n = dL * (softmax(z_n) - onehot(y_n)) / N_valid   on valid n, 0 elsewhere

Sigmoid binary cross-entropy over logits z and targets t in [0, 1], weights w >= 0:

    l_n = max(z_n, 0) - z_n t_n + log(1 + exp(-|z_n|))   (= -t log s - (1-t) log(1-s), s = sigmoid z)
    L = sum_n w_n l_n / sum_n w_n
    dz_n = dL * w_n (sigmoid(z_n) - t_n) / sum_n w_n

Both losses return a 0-d array; their backward takes the scalar cotangent dL.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from ..backend import array_namespace, one_hot
from ..validate import require_finite, require_float, require_int
from .softmax import log_softmax_forward

IGNORE_INDEX = -100


class CrossEntropyCache(NamedTuple):
    p: Any  # (..., V) softmax of the logits
    targets: Any  # (...) integer targets, 0 where ignored (the one-hot is built in the backward only)
    valid: Any  # (..., 1) 1.0 where the target counts
    count: Any  # () number of valid targets (at least 1)


def cross_entropy_forward(logits: Any, targets: Any, *,
                          ignore_index: int = IGNORE_INDEX) -> tuple[Any, CrossEntropyCache]:
    """Mean cross-entropy over targets != ignore_index; logits (..., V), targets (...)."""
    xp = array_namespace(logits, targets)
    require_float("logits", logits)
    require_finite("logits", logits)
    require_int("targets", targets)
    if tuple(targets.shape) != tuple(logits.shape[:-1]):
        raise ValueError(f"targets must have shape {tuple(logits.shape[:-1])} (logits without the class axis), "
                         f"got {tuple(targets.shape)}")
    n_classes = logits.shape[-1]
    is_valid = targets != ignore_index
    if bool(xp.any(is_valid & ((targets < 0) | (targets >= n_classes)))):
        raise ValueError(f"targets must lie in [0, {n_classes}) or equal ignore_index={ignore_index}")
    safe = xp.where(is_valid, targets, xp.zeros_like(targets))
    valid = xp.astype(is_valid, logits.dtype)[..., None]  # (..., 1)
    log_p, softmax_cache = log_softmax_forward(logits)
    count = xp.maximum(xp.sum(valid), xp.asarray(1.0, dtype=logits.dtype))
    picked = xp.take_along_axis(log_p, safe[..., None], axis=-1)  # (..., 1) log p of each target
    loss = -xp.sum(picked * valid) / count
    return loss, CrossEntropyCache(softmax_cache.p, safe, valid, count)


def cross_entropy_backward(dloss: Any, cache: CrossEntropyCache) -> Any:
    p, targets, valid, count = cache
    target_hot = one_hot(targets, p.shape[-1], dtype=p.dtype)  # (..., V)
    return (p - target_hot) * (valid * (dloss / count))  # (..., V)


class BCECache(NamedTuple):
    logits: Any
    targets: Any
    weights: Any
    total_weight: Any


def sigmoid(z: Any) -> Any:
    """Logistic sigmoid, computed without overflow for either sign of z."""
    xp = array_namespace(z)
    e = xp.exp(-xp.abs(z))
    return xp.where(z >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def sigmoid_bce_forward(logits: Any, targets: Any, weights: Any | None = None) -> tuple[Any, BCECache]:
    """Weighted mean binary cross-entropy with logits; targets in [0, 1]; weights default to ones."""
    xp = array_namespace(logits, targets)
    require_float("logits", logits)
    require_float("targets", targets)
    require_finite("logits", logits)
    require_finite("targets", targets)
    if tuple(targets.shape) != tuple(logits.shape):
        raise ValueError(f"targets must have the logits' shape {tuple(logits.shape)}, got {tuple(targets.shape)}")
    weights = xp.ones_like(logits) if weights is None else weights
    if tuple(weights.shape) != tuple(logits.shape):
        raise ValueError(f"weights must have the logits' shape {tuple(logits.shape)}, got {tuple(weights.shape)}")
    total = xp.sum(weights)
    if not bool(total > 0):
        raise ValueError("weights must have a positive sum (no position would count)")
    per_item = xp.maximum(logits, xp.zeros_like(logits)) - logits * targets + xp.log1p(xp.exp(-xp.abs(logits)))
    return xp.sum(weights * per_item) / total, BCECache(logits, targets, weights, total)


def sigmoid_bce_backward(dloss: Any, cache: BCECache) -> Any:
    logits, targets, weights, total = cache
    return dloss * weights * (sigmoid(logits) - targets) / total
