"""Post-LN Transformer decoder layer with cross-attention (Vaswani et al., 2017).

Forward, for target states x (B, T, D) and encoder states s (B, S, D):
    h1 = LN_1(x + SelfAttn(x, x; causal mask))
    h2 = LN_2(h1 + CrossAttn(h1, s; source padding mask))
    y  = LN_3(h2 + FFN(h2))

Backward, bottom-up: each residual sum passes its gradient to both branches; the
cross-attention returns gradients for its queries (into h1) and for the encoder
states s; the self-attention's query and key/value gradients both land on x.

params: self-attention ``self_w_q`` … ``self_b_o``, cross-attention ``cross_w_q`` …
``cross_b_o``, feed-forward ``w_1, b_1, w_2, b_2``, and ``ln{1,2,3}_{gamma,beta}``.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from .attention import ATTENTION_PARAMS, MHACache, init_attention, mha_backward, mha_forward
from .feed_forward import FFN_PARAMS, FeedForwardCache, feed_forward_backward, feed_forward_forward, init_feed_forward
from .layer_norm import LayerNormCache, init_layer_norm, layer_norm_backward, layer_norm_forward


class DecoderLayerCache(NamedTuple):
    self_attention: MHACache
    ln1: LayerNormCache
    cross_attention: MHACache
    ln2: LayerNormCache
    ffn: FeedForwardCache
    ln3: LayerNormCache


def _sub(params: dict[str, Any], prefix: str) -> dict[str, Any]:
    return {name: params[prefix + name] for name in ATTENTION_PARAMS}


def decoder_layer_forward(x: Any, s: Any, params: dict[str, Any], *, n_heads: int, self_mask: Any | None = None,
                          cross_mask: Any | None = None, activation: str = "gelu",
                          eps: float = 1e-5) -> tuple[Any, DecoderLayerCache]:
    """x (B, T, D) targets, s (B, S, D) encoder states; self_mask (T, T) or broadcastable, usually causal."""
    needed = [p + n for p in ("self_", "cross_") for n in ATTENTION_PARAMS] + list(FFN_PARAMS) + [
        f"ln{i}_{n}" for i in (1, 2, 3) for n in ("gamma", "beta")]
    missing = [name for name in needed if name not in params]
    if missing:
        raise ValueError(f"params is missing {missing}")
    a, self_cache = mha_forward(x, x, _sub(params, "self_"), n_heads=n_heads, mask=self_mask)  # (B, T, D)
    h1, ln1 = layer_norm_forward(x + a, params["ln1_gamma"], params["ln1_beta"], eps=eps)
    c, cross_cache = mha_forward(h1, s, _sub(params, "cross_"), n_heads=n_heads, mask=cross_mask)  # (B, T, D)
    h2, ln2 = layer_norm_forward(h1 + c, params["ln2_gamma"], params["ln2_beta"], eps=eps)
    f, ffn = feed_forward_forward(h2, {k: params[k] for k in FFN_PARAMS}, activation=activation)
    y, ln3 = layer_norm_forward(h2 + f, params["ln3_gamma"], params["ln3_beta"], eps=eps)
    return y, DecoderLayerCache(self_cache, ln1, cross_cache, ln2, ffn, ln3)


def decoder_layer_backward(dy: Any, cache: DecoderLayerCache) -> tuple[Any, Any, dict[str, Any]]:
    """Returns dx, ds and the parameter gradients."""
    grads: dict[str, Any] = {}
    dsum3, grads_ln3 = layer_norm_backward(dy, cache.ln3)  # d(h2 + f)
    dh2_ffn, grads_ffn = feed_forward_backward(dsum3, cache.ffn)
    dsum2, grads_ln2 = layer_norm_backward(dsum3 + dh2_ffn, cache.ln2)  # d(h1 + c)
    dh1_cross, ds, grads_cross = mha_backward(dsum2, cache.cross_attention)
    dsum1, grads_ln1 = layer_norm_backward(dsum2 + dh1_cross, cache.ln1)  # d(x + a)
    dx_q, dx_kv, grads_self = mha_backward(dsum1, cache.self_attention)
    for prefix, g in (("self_", grads_self), ("cross_", grads_cross)):
        grads.update({prefix + k: v for k, v in g.items()})
    grads.update(grads_ffn)
    for name, g in (("ln1", grads_ln1), ("ln2", grads_ln2), ("ln3", grads_ln3)):
        grads[f"{name}_gamma"], grads[f"{name}_beta"] = g["gamma"], g["beta"]
    return dsum1 + dx_q + dx_kv, ds, grads


def init_decoder_layer(rng, d_model: int, d_ff: int, *, xp, dtype) -> dict[str, Any]:
    params: dict[str, Any] = {}
    for prefix in ("self_", "cross_"):
        params.update({prefix + k: v for k, v in init_attention(rng, d_model, xp=xp, dtype=dtype).items()})
    params.update(init_feed_forward(rng, d_model, d_ff, xp=xp, dtype=dtype))
    for name in ("ln1", "ln2", "ln3"):
        ln = init_layer_norm(rng, d_model, xp=xp, dtype=dtype)
        params[f"{name}_gamma"], params[f"{name}_beta"] = ln["gamma"], ln["beta"]
    return params
