"""Layer normalisation over the last axis (Ba, Kiros and Hinton, 2016).

Forward:   mu = mean(x),  var = mean((x - mu)^2),  xhat = (x - mu) / sqrt(var + eps)
           y = gamma * xhat + beta
Backward:  g = dy * gamma
           dx = (g - mean(g) - xhat * mean(g * xhat)) / sqrt(var + eps)
           dgamma = sum(dy * xhat),   dbeta = sum(dy)          (sums over leading axes)

eps: fairseq 1e-5 (our default); BERT and HuggingFace 1e-12 (pass ``eps=``).
"""

from __future__ import annotations

from typing import Any, NamedTuple

from ..backend import array_namespace
from ..random import generator, normal
from ..registry import Case, Mechanism, register
from ..validate import require_finite, require_float, require_shape
from ._example import B, D, T


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
    mu = xp.mean(x, axis=-1, keepdims=True)  # (..., 1)
    centred = x - mu
    var = xp.mean(centred * centred, axis=-1, keepdims=True)  # (..., 1)
    inv_std = 1.0 / xp.sqrt(var + eps)
    xhat = centred * inv_std  # (..., D)
    return gamma * xhat + beta, LayerNormCache(xhat, inv_std, gamma)


def layer_norm_backward(dy: Any, cache: LayerNormCache) -> tuple[Any, dict[str, Any]]:
    xp = array_namespace(dy)
    xhat, inv_std, gamma = cache
    g = dy * gamma
    dx = (g - xp.mean(g, axis=-1, keepdims=True) - xhat * xp.mean(g * xhat, axis=-1, keepdims=True)) * inv_std
    lead = tuple(range(dy.ndim - 1))
    return dx, {"gamma": xp.sum(dy * xhat, axis=lead), "beta": xp.sum(dy, axis=lead)}


def init_layer_norm(rng, d: int, *, xp, dtype) -> dict[str, Any]:
    """gamma near 1 and beta near 0, perturbed so that tests exercise both."""
    return {"gamma": 1.0 + normal(rng, (d,), xp=xp, dtype=dtype, scale=0.1),
            "beta": normal(rng, (d,), xp=xp, dtype=dtype, scale=0.1)}


def _example(seed: int, dtype: Any, xp) -> Case:
    rng = generator(seed)
    return Case(inputs={"x": normal(rng, (B, T, D), xp=xp, dtype=dtype)}, params=init_layer_norm(rng, D, xp=xp, dtype=dtype))


def _forward(case: Case):
    y, cache = layer_norm_forward(case.inputs["x"], case.params["gamma"], case.params["beta"])
    return {"y": y}, cache


def _backward(cache, cot):
    dx, grads = layer_norm_backward(cot["y"], cache)
    return {"x": dx, **grads}


register(Mechanism("nn.layer_norm", "building block", "nn", _example, _forward, _backward))
