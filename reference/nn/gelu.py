"""GELU (Hendrycks and Gimpel, 2016), exact (erf) and tanh-approximated forms; also ReLU.

Exact:  y = x Phi(x) = 0.5 x (1 + erf(x / sqrt 2))
        dy/dx = Phi(x) + x phi(x),   phi(x) = exp(-x^2/2) / sqrt(2 pi)
Tanh:   u = sqrt(2/pi) (x + 0.044715 x^3),  y = 0.5 x (1 + tanh u)
        dy/dx = 0.5 (1 + tanh u) + 0.5 x (1 - tanh^2 u) sqrt(2/pi) (1 + 3 * 0.044715 x^2)

BERT and ELECTRA use the exact form; GPT-2 and some reimplementations the tanh one.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

from ..backend import array_namespace, erf
from ..validate import require_finite, require_float

_TANH_COEFF = 0.044715
_SQRT_2_OVER_PI = math.sqrt(2.0 / math.pi)

ACTIVATIONS = ("gelu", "gelu_tanh", "relu")


class ActivationCache(NamedTuple):
    x: Any
    kind: str
    # (..., D) Phi(x) for "gelu", tanh(...) for "gelu_tanh", None for "relu": computed once in the
    # forward so that the backward does not evaluate erf / tanh again.
    aux: Any = None


def activation_forward(x: Any, kind: str = "gelu") -> tuple[Any, ActivationCache]:
    """``kind``: "gelu" (exact), "gelu_tanh" or "relu"."""
    xp = array_namespace(x)
    require_float("x", x)
    require_finite("x", x)
    aux = None
    if kind == "gelu":
        aux = 0.5 * (1.0 + erf(x / math.sqrt(2.0)))  # Phi(x)
        y = x * aux  # = 0.5 x (1 + erf(x / sqrt 2)), bit for bit (the 0.5 is exact)
    elif kind == "gelu_tanh":
        # x * x * x, not x**3: NumPy's power calls pow() per element, several hundred times slower
        aux = xp.tanh(_SQRT_2_OVER_PI * (x + _TANH_COEFF * (x * x * x)))
        y = 0.5 * x * (1.0 + aux)
    elif kind == "relu":
        y = xp.maximum(x, xp.asarray(0.0, dtype=x.dtype))  # max(x, 0); NumPy's where is several times slower
    else:
        raise ValueError(f"kind must be one of {ACTIVATIONS}, got {kind!r}")
    return y, ActivationCache(x, kind, aux)


def activation_backward(dy: Any, cache: ActivationCache) -> Any:
    xp = array_namespace(dy)
    x, kind, aux = cache
    if kind == "gelu":
        cdf = aux  # Phi(x), kept by the forward
        pdf = xp.exp(-0.5 * x * x) / math.sqrt(2.0 * math.pi)
        return dy * (cdf + x * pdf)
    if kind == "gelu_tanh":
        t = aux  # tanh(sqrt(2/pi) (x + 0.044715 x^3)), kept by the forward
        return dy * (0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * _SQRT_2_OVER_PI * (1.0 + 3 * _TANH_COEFF * x * x))
    return dy * xp.astype(x > 0, dy.dtype)  # a multiplication: NumPy's where is several times slower
