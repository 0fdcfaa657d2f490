"""Position-wise feed-forward network (Vaswani et al., 2017, Eq. 2).

Axes: ... leading axes, D model width, F inner width.

Forward:   h = x w_1 + b_1            (..., F)
           a = act(h) * dropout_mask  (GELU by default; ReLU as in the original Transformer)
           y = a w_2 + b_2            (..., D)
Backward:  da = dy w_2^T;  dh = act'(h) * (da * dropout_mask);  dx = dh w_1^T
"""

from __future__ import annotations

from typing import Any, NamedTuple

from .dropout import dropout_backward, dropout_forward
from .gelu import ActivationCache, activation_backward, activation_forward
from .linear import LinearCache, init_linear, linear_backward, linear_forward

FFN_PARAMS = ("w_1", "b_1", "w_2", "b_2")


class FeedForwardCache(NamedTuple):
    inner: LinearCache
    activation: ActivationCache
    dropout_mask: Any | None  # broadcastable to (..., F)
    outer: LinearCache


def feed_forward_forward(x: Any, params: dict[str, Any], *, activation: str = "gelu",
                         dropout_mask: Any | None = None) -> tuple[Any, FeedForwardCache]:
    """params: w_1 (D, F), b_1 (F,), w_2 (F, D), b_2 (D,)."""
    missing = [name for name in FFN_PARAMS if name not in params]
    if missing:
        raise ValueError(f"params is missing {missing}")
    h, inner = linear_forward(x, params["w_1"], params["b_1"])  # (..., F)
    a, act = activation_forward(h, activation)
    a, _ = dropout_forward(a, dropout_mask)
    y, outer = linear_forward(a, params["w_2"], params["b_2"])  # (..., D)
    return y, FeedForwardCache(inner, act, dropout_mask, outer)


def feed_forward_backward(dy: Any, cache: FeedForwardCache) -> tuple[Any, dict[str, Any]]:
    da, grads_2 = linear_backward(dy, cache.outer)  # (..., F)
    dh = activation_backward(dropout_backward(da, cache.dropout_mask), cache.activation)
    dx, grads_1 = linear_backward(dh, cache.inner)  # (..., D)
    return dx, {"w_1": grads_1["w"], "b_1": grads_1["b"], "w_2": grads_2["w"], "b_2": grads_2["b"]}


def init_feed_forward(rng, d_model: int, d_ff: int, *, xp, dtype) -> dict[str, Any]:
    inner = init_linear(rng, d_model, d_ff, xp=xp, dtype=dtype)
    outer = init_linear(rng, d_ff, d_model, xp=xp, dtype=dtype)
    return {"w_1": inner["w"], "b_1": inner["b"], "w_2": outer["w"], "b_2": outer["b"]}
