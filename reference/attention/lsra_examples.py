"""Registered examples of Lite Transformer's LSRA layer (encoder and decoder, LightConv and DynamicConv).

Sizes are small and pairwise distinct where they can be: B=2, T=5, D=10 (Da=4 attention channels in
Ha=2 heads, Dc=6 convolution channels in Hc=3 kernel heads of R=2 channels), K=3 for the encoder and
K=7 > T for the decoder (taps beyond the sequence read only padding). The FFN is flattened (F = D).

Registered names:

* ``attention.lsra``: encoder, LightConv + GLU, padding, every dropout site (the paper's layer);
* ``attention.lsra.dynamic``: encoder, DynamicConv + GLU (the WMT configuration);
* ``attention.lsra.causal``: decoder self-attention block, LightConv without GLU (the IWSLT configuration);
* ``attention.lsra.causal_dynamic``: decoder block with DynamicConv + GLU;
* ``attention.lsra.interleaved``: the interleaved channel-to-head map of fairseq's ``LightweightConv1d``;
* ``attention.lsra.branch_input``: Lite Transformer's padding zeroing before the input linear (spec D1).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..nn.attention import init_attention
from ..nn.feed_forward import init_feed_forward
from ..nn.layer_norm import init_layer_norm
from ..nn.linear import init_linear
from ..random import dropout_mask, generator, normal
from ..registry import Case, Mechanism, register
from .lsra import LSRAConfig, lsra_backward, lsra_forward

PAPER = "Lite Transformer with Long-Short Range Attention (Wu, Liu, Lin, Lin, Han, ICLR 2020)"
B, T, D, DA, HA, HC = 2, 5, 10, 4, 2, 3
RATE = 0.1


def init_lsra(rng: np.random.Generator, d_model: int, config: LSRAConfig, *, xp, dtype,
              d_ff: int | None = None) -> dict[str, Any]:
    """Parameters of one LSRA layer; the FFN is flattened (d_ff = d_model) unless told otherwise."""
    da, dc = config.d_attn, d_model - config.d_attn
    params = dict(init_attention(rng, da, xp=xp, dtype=dtype))
    lin_in = init_linear(rng, dc, 2 * dc if config.glu else dc, xp=xp, dtype=dtype)
    params["w_in"], params["b_in"] = lin_in["w"], lin_in["b"]
    if config.conv == "lightweight":
        params["theta"] = normal(rng, (config.n_conv_heads, config.kernel_size), xp=xp, dtype=dtype)
    else:
        params["w_gen"] = normal(rng, (dc, config.n_conv_heads * config.kernel_size), xp=xp, dtype=dtype,
                                 scale=dc ** -0.5)
    lin_out = init_linear(rng, dc, dc, xp=xp, dtype=dtype)
    params["w_out"], params["b_out"] = lin_out["w"], lin_out["b"]
    params.update(init_feed_forward(rng, d_model, d_ff or d_model, xp=xp, dtype=dtype))
    for name in ("ln1", "ln2"):
        ln = init_layer_norm(rng, d_model, xp=xp, dtype=dtype)
        params[f"{name}_gamma"], params[f"{name}_beta"] = ln["gamma"], ln["beta"]
    return params


def sample_lsra_dropout(rng: np.random.Generator, batch: int, seq: int, d_model: int, config: LSRAConfig,
                        rate: float, *, xp, dtype, d_ff: int | None = None) -> dict[str, Any]:
    """Explicit masks for every dropout site of the layer (weight dropout on the normalised kernel)."""
    hc, k = config.n_conv_heads, config.kernel_size
    weight_shape = (hc, k) if config.conv == "lightweight" else (batch, seq, hc, k)
    return {"attn_probs": dropout_mask(rng, (batch, config.n_attn_heads, seq, seq), rate, xp=xp, dtype=dtype),
            "weight": dropout_mask(rng, weight_shape, rate, xp=xp, dtype=dtype),
            "branch": dropout_mask(rng, (batch, seq, d_model), rate, xp=xp, dtype=dtype),
            "ffn_inner": dropout_mask(rng, (batch, seq, d_ff or d_model), rate, xp=xp, dtype=dtype),
            "ffn": dropout_mask(rng, (batch, seq, d_model), rate, xp=xp, dtype=dtype)}


CONFIGS = {
    "attention.lsra": LSRAConfig(DA, HA, HC, 3, conv="lightweight", glu=True),
    "attention.lsra.dynamic": LSRAConfig(DA, HA, HC, 3, conv="dynamic", glu=True),
    "attention.lsra.causal": LSRAConfig(DA, HA, HC, 7, conv="lightweight", glu=False, causal=True),
    "attention.lsra.causal_dynamic": LSRAConfig(DA, HA, HC, 7, conv="dynamic", glu=True, causal=True),
    "attention.lsra.interleaved": LSRAConfig(DA, HA, HC, 3, conv="lightweight", glu=True, head_layout="interleaved"),
    "attention.lsra.branch_input": LSRAConfig(DA, HA, HC, 3, conv="dynamic", glu=True, pad_mask_site="branch_input"),
}


def make_example(config: LSRAConfig):
    def example(seed: int, dtype: Any, xp) -> Case:
        rng = generator(seed)
        x = normal(rng, (B, T, D), xp=xp, dtype=dtype)
        params = init_lsra(rng, D, config, xp=xp, dtype=dtype)
        static: dict[str, Any] = {"dropout": sample_lsra_dropout(rng, B, T, D, config, RATE, xp=xp, dtype=dtype)}
        if not config.causal:
            static["valid"] = xp.asarray([[True] * T, [True] * (T - 2) + [False] * 2])  # (B, T)
        return Case(inputs={"x": x}, params=params, static=static)

    def forward(case: Case):
        y, cache = lsra_forward(case.inputs["x"], case.params, config, valid=case.static.get("valid"),
                                dropout=case.static["dropout"])
        return {"y": y}, cache

    def backward(cache, cot):
        dx, grads = lsra_backward(cot["y"], cache)
        return {"x": dx, **grads}

    return example, forward, backward


for _name, _config in CONFIGS.items():
    register(Mechanism(_name, PAPER, "attention", *make_example(_config)))
