"""Linear map ``y = x @ w + b`` with weights stored (d_in, d_out).

Axes: ``...`` any leading axes (batch, seq, heads), I = d_in, O = d_out.

Forward:   y = x w + b
Backward:  dx = dy w^T,   dw = x^T dy (summed over leading axes),   db = sum dy

PyTorch's ``nn.Linear.weight`` is ``w.T`` (DESIGN.md, weight layout).
"""

from __future__ import annotations

from typing import Any, NamedTuple

from ..backend import array_namespace
from ..random import normal
from ..validate import require_finite, require_float, require_shape


class LinearCache(NamedTuple):
    x: Any  # (..., I)
    w: Any  # (I, O)
    has_bias: bool


def linear_forward(x: Any, w: Any, b: Any | None = None) -> tuple[Any, LinearCache]:
    """``y = x @ w + b``; x (..., I), w (I, O), b (O,) or None."""
    xp = array_namespace(x, w)
    require_float("x", x)
    require_float("w", w)
    require_finite("x", x)
    require_finite("w", w)
    if w.ndim != 2:
        raise ValueError(f"w must have shape (d_in, d_out), got {tuple(w.shape)}")
    require_shape("x", x, ["...", "d_in"], [None, w.shape[0]])
    y = xp.matmul(x, w)  # (..., O)
    if b is not None:
        require_shape("b", b, ["d_out"], [w.shape[1]])
        require_finite("b", b)
        y = y + b
    return y, LinearCache(x, w, b is not None)


def linear_backward(dy: Any, cache: LinearCache) -> tuple[Any, dict[str, Any]]:
    """Returns ``dx, {"w": dw, "b": db}`` (``b`` only when the forward had a bias)."""
    xp = array_namespace(dy)
    x, w, has_bias = cache
    dx = xp.matmul(dy, xp.matrix_transpose(w))  # (..., I)
    x2 = xp.reshape(x, (-1, w.shape[0]))  # (N, I)
    dy2 = xp.reshape(dy, (-1, w.shape[1]))  # (N, O)
    grads = {"w": xp.matmul(xp.matrix_transpose(x2), dy2)}  # (I, O)
    if has_bias:
        grads["b"] = xp.sum(dy2, axis=0)  # (O,)
    return dx, grads


def init_linear(rng, d_in: int, d_out: int, *, xp, dtype, bias: bool = True) -> dict[str, Any]:
    """Weights N(0, 1/d_in) and a small random bias (so tests see a nonzero bias path)."""
    params = {"w": normal(rng, (d_in, d_out), xp=xp, dtype=dtype, scale=d_in**-0.5)}
    if bias:
        params["b"] = normal(rng, (d_out,), xp=xp, dtype=dtype, scale=0.1)
    return params
