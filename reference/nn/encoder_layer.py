"""Post-LN Transformer encoder layer (Vaswani et al., 2017; BERT's layout).

Forward:
    a = MHA(x, x) * drop_attn                (self-attention, padding mask)
    h = LN_1(x + a)
    f = FFN(h) * drop_ffn
    y = LN_2(h + f)

Backward, reading the forward bottom-up:
    dh_sum, dln2 = LN_2'(dy);       df = dh_sum * drop_ffn
    dh = dh_sum + FFN'(df)          (residual + feed-forward path)
    dx_sum, dln1 = LN_1'(dh);       da = dx_sum * drop_attn
    dx = dx_sum + MHA'(da) (query and key/value paths summed)

params: the attention's w_q … b_o, the feed-forward's w_1, b_1, w_2, b_2, and
ln1_gamma, ln1_beta, ln2_gamma, ln2_beta.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from ..random import dropout_mask
from .attention import ATTENTION_PARAMS, MHACache, init_attention, mha_backward, mha_forward
from .feed_forward import FFN_PARAMS, FeedForwardCache, feed_forward_backward, feed_forward_forward, init_feed_forward
from .layer_norm import LayerNormCache, init_layer_norm, layer_norm_backward, layer_norm_forward

LN_PARAMS = ("ln1_gamma", "ln1_beta", "ln2_gamma", "ln2_beta")


class EncoderLayerCache(NamedTuple):
    attention: MHACache
    drop_attn: Any | None  # (B, T, D) or None
    ln1: LayerNormCache
    ffn: FeedForwardCache
    drop_ffn: Any | None  # (B, T, D) or None
    ln2: LayerNormCache


def encoder_layer_forward(x: Any, params: dict[str, Any], *, n_heads: int, mask: Any | None = None,
                          activation: str = "gelu", eps: float = 1e-5,
                          dropout: dict[str, Any] | None = None) -> tuple[Any, EncoderLayerCache]:
    """x (B, T, D). dropout: optional masks keyed "attn_probs", "attn", "ffn_inner", "ffn"."""
    dropout = dropout or {}
    missing = [name for name in ATTENTION_PARAMS + FFN_PARAMS + LN_PARAMS if name not in params]
    if missing:
        raise ValueError(f"params is missing {missing}")
    a, attention = mha_forward(x, x, {k: params[k] for k in ATTENTION_PARAMS}, n_heads=n_heads, mask=mask,
                               dropout_mask=dropout.get("attn_probs"))  # (B, T, D)
    drop_attn = dropout.get("attn")
    if drop_attn is not None:
        a = a * drop_attn
    h, ln1 = layer_norm_forward(x + a, params["ln1_gamma"], params["ln1_beta"], eps=eps)  # (B, T, D)
    f, ffn = feed_forward_forward(h, {k: params[k] for k in FFN_PARAMS}, activation=activation,
                                  dropout_mask=dropout.get("ffn_inner"))  # (B, T, D)
    drop_ffn = dropout.get("ffn")
    if drop_ffn is not None:
        f = f * drop_ffn
    y, ln2 = layer_norm_forward(h + f, params["ln2_gamma"], params["ln2_beta"], eps=eps)  # (B, T, D)
    return y, EncoderLayerCache(attention, drop_attn, ln1, ffn, drop_ffn, ln2)


def encoder_layer_backward(dy: Any, cache: EncoderLayerCache) -> tuple[Any, dict[str, Any]]:
    dsum2, ln2 = layer_norm_backward(dy, cache.ln2)  # d(h + f)
    df = dsum2 if cache.drop_ffn is None else dsum2 * cache.drop_ffn
    dh_ffn, grads_ffn = feed_forward_backward(df, cache.ffn)
    dsum1, ln1 = layer_norm_backward(dsum2 + dh_ffn, cache.ln1)  # d(x + a)
    da = dsum1 if cache.drop_attn is None else dsum1 * cache.drop_attn
    dx_q, dx_kv, grads_attn = mha_backward(da, cache.attention)
    grads = {**grads_attn, **grads_ffn, "ln1_gamma": ln1["gamma"], "ln1_beta": ln1["beta"],
             "ln2_gamma": ln2["gamma"], "ln2_beta": ln2["beta"]}
    return dsum1 + dx_q + dx_kv, grads


def init_encoder_layer(rng, d_model: int, d_ff: int, *, xp, dtype) -> dict[str, Any]:
    params = {**init_attention(rng, d_model, xp=xp, dtype=dtype), **init_feed_forward(rng, d_model, d_ff, xp=xp, dtype=dtype)}
    for name in ("ln1", "ln2"):
        ln = init_layer_norm(rng, d_model, xp=xp, dtype=dtype)
        params[f"{name}_gamma"], params[f"{name}_beta"] = ln["gamma"], ln["beta"]
    return params


def sample_encoder_dropout(rng, batch: int, seq: int, d_model: int, d_ff: int, n_heads: int, rate: float, *,
                           xp, dtype) -> dict[str, Any]:
    """Explicit dropout masks for every dropout site of the layer."""
    return {"attn_probs": dropout_mask(rng, (batch, n_heads, seq, seq), rate, xp=xp, dtype=dtype),
            "attn": dropout_mask(rng, (batch, seq, d_model), rate, xp=xp, dtype=dtype),
            "ffn_inner": dropout_mask(rng, (batch, seq, d_ff), rate, xp=xp, dtype=dtype),
            "ffn": dropout_mask(rng, (batch, seq, d_model), rate, xp=xp, dtype=dtype)}
