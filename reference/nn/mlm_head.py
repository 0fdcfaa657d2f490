"""BERT's masked-language-model head with an output projection tied to the token embeddings.

Axes: ... leading axes (batch, seq), H hidden width, E embedding width, V vocabulary.

Forward:
    u = h w + b                    (H -> E)
    a = GELU(u)                    (exact erf form, or BERT's tanh form with activation="gelu_tanh")
    z = LayerNorm(a; ln_gamma, ln_beta)
    logits = z table^T + out_bias  (E -> V; table is the token embedding table, tied)

Backward (``dz_extra``: a further cotangent on the transform z, for heads that read it, such as WKLM's
entity classifier):
    dz = dlogits table + dz_extra,   dtable = dlogits^T z (summed over leading axes),   dout_bias = sum dlogits
    da = LN'(dz),  du = GELU'(da),  dh = du w^T,  dw = h^T du,  db = sum du

The head's ``dtable`` is one contribution to the tied table's gradient; the
caller adds the input embedding's contribution (weight tying: sum over uses).
"""

from __future__ import annotations

from typing import Any, NamedTuple

from ..backend import array_namespace
from ..random import normal
from ..validate import require_finite, require_float, require_shape
from .gelu import ActivationCache, activation_backward, activation_forward
from .layer_norm import LayerNormCache, init_layer_norm, layer_norm_backward, layer_norm_forward
from .linear import LinearCache, init_linear, linear_backward, linear_forward

#: The head's parameter names (one definition; the objectives and ALBERT import it).
MLM_HEAD_PARAMS = ("w", "b", "ln_gamma", "ln_beta", "out_bias")


def mlm_head_keys(prefix: str, out_bias: str = "out_bias") -> dict[str, str]:
    """How a model names the head's parameters: ``{"w": prefix + "w", ..., "out_bias": out_bias}``."""
    return {k: out_bias if k == "out_bias" else prefix + k for k in MLM_HEAD_PARAMS}


class MLMHeadCache(NamedTuple):
    dense: LinearCache  # h (..., H) -> (..., E)
    act: ActivationCache  # (..., E)
    ln: LayerNormCache  # (..., E)
    z: Any  # (..., E)
    table: Any  # (V, E)


def mlm_head_forward(h: Any, params: dict[str, Any], table: Any, *, activation: str = "gelu",
                     eps: float = 1e-5) -> tuple[Any, MLMHeadCache]:
    """h (..., H); params w (H, E), b (E,), ln_gamma, ln_beta (E,), out_bias (V,); table (V, E)."""
    xp = array_namespace(h, table)
    require_float("h", h)
    require_finite("h", h)
    require_shape("table", table, ["vocab", "dim"], [None, params["w"].shape[1]])
    require_shape("out_bias", params["out_bias"], ["vocab"], [table.shape[0]])
    u, dense = linear_forward(h, params["w"], params["b"])  # (..., E)
    a, act = activation_forward(u, activation)
    z, ln = layer_norm_forward(a, params["ln_gamma"], params["ln_beta"], eps=eps)  # (..., E)
    logits = xp.matmul(z, xp.matrix_transpose(table)) + params["out_bias"]  # (..., V)
    return logits, MLMHeadCache(dense, act, ln, z, table)


def mlm_head_backward(dlogits: Any, cache: MLMHeadCache, *,
                      dz_extra: Any | None = None) -> tuple[Any, dict[str, Any], Any]:
    """Returns ``dh, grads, dtable`` (grads keyed as MLM_HEAD_PARAMS); ``dz_extra`` (..., E) adds to dz."""
    xp = array_namespace(dlogits)
    vocab, width = cache.table.shape
    dz = xp.matmul(dlogits, cache.table)  # (..., E)
    if dz_extra is not None:
        dz = dz + dz_extra  # (..., E)
    flat_dlogits = xp.reshape(dlogits, (-1, vocab))  # (N, V)
    dtable = xp.matmul(xp.matrix_transpose(flat_dlogits), xp.reshape(cache.z, (-1, width)))  # (V, E)
    da, ln = layer_norm_backward(dz, cache.ln)
    du = activation_backward(da, cache.act)
    dh, dense = linear_backward(du, cache.dense)  # (..., H)
    grads = {"w": dense["w"], "b": dense["b"], "ln_gamma": ln["gamma"], "ln_beta": ln["beta"],
             "out_bias": xp.sum(flat_dlogits, axis=0)}
    return dh, grads, dtable


def init_mlm_head(rng, hidden: int, width: int, vocab: int, *, xp, dtype) -> dict[str, Any]:
    dense = init_linear(rng, hidden, width, xp=xp, dtype=dtype)
    ln = init_layer_norm(rng, width, xp=xp, dtype=dtype)
    return {"w": dense["w"], "b": dense["b"], "ln_gamma": ln["gamma"], "ln_beta": ln["beta"],
            "out_bias": normal(rng, (vocab,), xp=xp, dtype=dtype, scale=0.1)}
