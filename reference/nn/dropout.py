"""Dropout with an explicit mask (randomness is data; DESIGN.md).

Forward:   y = x * m,   m in {0, 1/(1-p)} drawn by ``reference.random.dropout_mask``
Backward:  dx = dy * m
"""

from __future__ import annotations

from typing import Any

from ..random import dropout_mask
from ..validate import require_broadcastable, require_finite, require_float

sample_dropout_mask = dropout_mask


def dropout_forward(x: Any, mask: Any | None) -> tuple[Any, Any]:
    """``mask`` broadcastable to x's shape, or None for no dropout."""
    require_float("x", x)
    require_finite("x", x)
    if mask is None:
        return x, None
    require_float("mask", mask)
    require_broadcastable("mask", mask, [f"x axis {i}" for i in range(x.ndim)], x.shape)
    return x * mask, mask


def dropout_backward(dy: Any, mask: Any | None) -> Any:
    return dy if mask is None else dy * mask
