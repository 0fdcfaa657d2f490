"""Layer normalisation over the last axis (Ba, Kiros and Hinton, 2016).

Forward:   mu = mean(x),  var = mean((x - mu)^2),  xhat = (x - mu) / sqrt(var + eps)
           y = gamma * xhat + beta
Backward:  g = dy * gamma
           dx = (g - mean(g) - xhat * mean(g * xhat)) / sqrt(var + eps)
           dgamma = sum(dy * xhat),   dbeta = sum(dy)          (sums over leading axes)

eps: fairseq 1e-5 (our default); BERT and HuggingFace 1e-12 (pass ``eps=``).
"""

from __future__ import annotations

import math
import numbers
from typing import Any, NamedTuple

from ..backend import array_namespace
from ..random import normal
from ..validate import require_finite, require_float, require_shape


class LayerNormCache(NamedTuple):
    xhat: Any  # (..., D)
    inv_std: Any  # (..., 1)
    gamma: Any  # (D,)


def layer_norm_forward(x: Any, gamma: Any, beta: Any, *, eps: float = 1e-5) -> tuple[Any, LayerNormCache]:
    xp = array_namespace(x, gamma, beta)
    require_float("x", x)
    require_shape("gamma", gamma, ["d_model"], [x.shape[-1]])
    require_shape("beta", beta, ["d_model"], [x.shape[-1]])
    for name, a in (("x", x), ("gamma", gamma), ("beta", beta)):
        require_finite(name, a)
    if isinstance(eps, bool) or not isinstance(eps, numbers.Real):
        raise TypeError(f"eps must be a real number, got {type(eps).__name__}")
    if not (math.isfinite(eps) and eps > 0):
        raise ValueError(f"eps must be a finite number > 0 (it keeps sqrt(var + eps) away from zero), got {eps}")
    d = x.shape[-1]
    # Row sums as dot products (with ones, then with the centred row itself): one BLAS pass each,
    # where a mean along a short last axis is several times slower and a mean of squares needs a temporary.
    mu = xp.vecdot(x, xp.ones((d,), dtype=x.dtype))[..., None] / d  # (..., 1)
    centred = x - mu  # (..., D)
    var = xp.vecdot(centred, centred)[..., None] / d  # (..., 1)
    inv_std = 1.0 / xp.sqrt(var + eps)
    xhat = centred * inv_std  # (..., D)
    y = xhat * gamma
    y += beta  # in place on our own temporary: one buffer fewer (fresh buffers cost page faults)
    return y, LayerNormCache(xhat, inv_std, gamma)


def layer_norm_backward(dy: Any, cache: LayerNormCache) -> tuple[Any, dict[str, Any]]:
    xp = array_namespace(dy)
    xhat, inv_std, gamma = cache
    d = xhat.shape[-1]
    dy_xhat = dy * xhat  # (..., D), also dgamma's summand
    mean_g = xp.vecdot(dy, gamma)[..., None] / d  # (..., 1) mean(g), g = dy * gamma
    mean_g_xhat = xp.vecdot(dy_xhat, gamma)[..., None] / d  # (..., 1) mean(g * xhat)
    # dx = (g - mean(g) - xhat * mean(g * xhat)) * inv_std, updated in place on our own temporary
    dx = dy * gamma
    dx -= mean_g
    dx -= xhat * mean_g_xhat
    dx *= inv_std
    lead = tuple(range(dy.ndim - 1))
    return dx, {"gamma": xp.sum(dy_xhat, axis=lead), "beta": xp.sum(dy, axis=lead)}


def init_layer_norm(rng, d: int, *, xp, dtype) -> dict[str, Any]:
    """gamma near 1 and beta near 0, perturbed so that tests exercise both."""
    return {"gamma": 1.0 + normal(rng, (d,), xp=xp, dtype=dtype, scale=0.1),
            "beta": normal(rng, (d,), xp=xp, dtype=dtype, scale=0.1)}
