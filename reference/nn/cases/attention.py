"""Registered cases of ``nn.attention`` (cross attention with padding, bias and dropout) and ``nn.attention.causal``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ...config import Config, option
from ...random import dropout_mask, generator, normal
from ...registry import Case, Mechanism, register
from ..attention import ATTENTION_PARAMS, causal_mask, init_attention, mha_backward, mha_forward, padding_mask

PAPER = "Attention is all you need (Vaswani et al., 2017)"


@dataclass(frozen=True)
class AttentionConfig(Config):
    title = "multi-head cross attention: queries (batch, seq_len, d_model) over keys/values (batch, kv_len, d_model)"
    batch: int = option(2, "batch size B", minimum=1)
    seq_len: int = option(5, "query length T", minimum=1)
    kv_len: int = option(3, "key/value length S", minimum=1)
    d_model: int = option(24, "model width D (a multiple of n_heads)", minimum=1)
    n_heads: int = option(4, "heads H", minimum=1)
    n_padded: int = option(1, "padded keys at the end of the first batch row (key padding mask)", minimum=0)
    dropout: float = option(0.2, "attention-probability dropout rate of the explicit mask", minimum=0.0, maximum=0.9)
    score_bias: bool = option(True, "an additive, differentiable score bias (1, H, T, S)")

    def validate(self) -> None:
        if self.d_model % self.n_heads:
            raise ValueError(f"AttentionConfig.d_model ({self.d_model}) must be a multiple of n_heads ({self.n_heads})")
        if self.n_padded >= self.kv_len:
            raise ValueError(f"AttentionConfig.n_padded ({self.n_padded}) must be < kv_len ({self.kv_len}): "
                             "a row with every key padded has no softmax")


@dataclass(frozen=True)
class CausalAttentionConfig(Config):
    title = "multi-head causal self-attention on (batch, seq_len, d_model)"
    batch: int = option(2, "batch size B", minimum=1)
    seq_len: int = option(5, "sequence length T", minimum=1)
    d_model: int = option(24, "model width D (a multiple of n_heads)", minimum=1)
    n_heads: int = option(4, "heads H", minimum=1)

    def validate(self) -> None:
        if self.d_model % self.n_heads:
            raise ValueError(f"CausalAttentionConfig.d_model ({self.d_model}) must be a multiple of "
                             f"n_heads ({self.n_heads})")


def build(seed: int, dtype: Any, xp, config: AttentionConfig) -> Case:
    rng = generator(seed)
    b, t, s, d, h = config.batch, config.seq_len, config.kv_len, config.d_model, config.n_heads
    inputs = {"x_q": normal(rng, (b, t, d), xp=xp, dtype=dtype), "x_kv": normal(rng, (b, s, d), xp=xp, dtype=dtype)}
    if config.score_bias:
        inputs["bias"] = normal(rng, (1, h, t, s), xp=xp, dtype=dtype, scale=0.5)
    valid = [[j < s - config.n_padded or i > 0 for j in range(s)] for i in range(b)]  # (B, S)
    static = {"mask": padding_mask(xp.asarray(valid))}
    if config.dropout > 0:
        static["dropout"] = dropout_mask(rng, (b, h, t, s), config.dropout, xp=xp, dtype=dtype)
    return Case(inputs=inputs, params=init_attention(rng, d, xp=xp, dtype=dtype), static=static)


def forward(case: Case):
    params = {k: case.params[k] for k in ATTENTION_PARAMS}
    y, cache = mha_forward(case.inputs["x_q"], case.inputs["x_kv"], params, n_heads=case.config.n_heads,
                           mask=case.static["mask"], bias=case.inputs.get("bias"),
                           dropout_mask=case.static.get("dropout"))
    return {"y": y}, cache


def backward(cache, cot):
    dx_q, dx_kv, grads = mha_backward(cot["y"], cache)
    return {"x_q": dx_q, "x_kv": dx_kv, **grads}


def build_causal(seed: int, dtype: Any, xp, config: CausalAttentionConfig) -> Case:
    rng = generator(seed)
    x = normal(rng, (config.batch, config.seq_len, config.d_model), xp=xp, dtype=dtype)
    return Case(inputs={"x": x}, params=init_attention(rng, config.d_model, xp=xp, dtype=dtype),
                static={"mask": causal_mask(config.seq_len, xp=xp)})


def forward_causal(case: Case):
    x = case.inputs["x"]
    y, cache = mha_forward(x, x, case.params, n_heads=case.config.n_heads, mask=case.static["mask"])
    return {"y": y}, cache


def backward_causal(cache, cot):
    dx_q, dx_kv, grads = mha_backward(cot["y"], cache)
    return {"x": dx_q + dx_kv, **grads}


EDGES = {
    "batch_1": {"batch": 1},
    "query_1": {"seq_len": 1},
    "key_1": {"kv_len": 1, "n_padded": 0},
    "one_head": {"n_heads": 1, "d_model": 5},
    "no_padding_no_dropout": {"n_padded": 0, "dropout": 0.0, "score_bias": False},
    "odd_sizes": {"batch": 3, "seq_len": 7, "kv_len": 9, "d_model": 15, "n_heads": 5, "n_padded": 4},
}
CAUSAL_EDGES = {
    "batch_1": {"batch": 1},
    "length_1": {"seq_len": 1},
    "odd_sizes": {"batch": 3, "seq_len": 9, "d_model": 15, "n_heads": 5},
}

register(Mechanism("nn.attention", PAPER, "nn", build, forward, backward, config=AttentionConfig, edge_configs=EDGES,
                   realistic={"batch": 8, "seq_len": 512, "kv_len": 512, "d_model": 256, "n_heads": 4}))
register(Mechanism("nn.attention.causal", PAPER, "nn", build_causal, forward_causal, backward_causal,
                   config=CausalAttentionConfig, edge_configs=CAUSAL_EDGES,
                   realistic={"batch": 8, "seq_len": 512, "d_model": 256, "n_heads": 4}))
