"""Registered case of ``nn.feed_forward``: ``act(x w_1 + b_1) w_2 + b_2`` with an optional inner dropout mask."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ...config import Config, option
from ...random import dropout_mask, generator, normal
from ...registry import Case, Mechanism, register
from ..feed_forward import feed_forward_backward, feed_forward_forward, init_feed_forward

PAPER = "Attention is all you need (Vaswani et al., 2017)"


@dataclass(frozen=True)
class FeedForwardConfig(Config):
    title = "a position-wise feed-forward network on (batch, seq_len, d_model)"
    batch: int = option(2, "batch size B", minimum=1)
    seq_len: int = option(5, "sequence length T", minimum=1)
    d_model: int = option(6, "model width D", minimum=1)
    d_ff: int = option(7, "inner width F", minimum=1)
    activation: str = option("gelu", "inner activation (ReLU's kink has no margin guarantee here)",
                             choices=("gelu", "gelu_tanh"))
    dropout: float = option(0.0, "inner dropout rate of the explicit mask", minimum=0.0, maximum=0.9)


def build(seed: int, dtype: Any, xp, config: FeedForwardConfig) -> Case:
    rng = generator(seed)
    b, t = config.batch, config.seq_len
    static = {}
    if config.dropout > 0:
        static["dropout"] = dropout_mask(rng, (b, t, config.d_ff), config.dropout, xp=xp, dtype=dtype)
    return Case(inputs={"x": normal(rng, (b, t, config.d_model), xp=xp, dtype=dtype)},
                params=init_feed_forward(rng, config.d_model, config.d_ff, xp=xp, dtype=dtype), static=static)


def forward(case: Case):
    y, cache = feed_forward_forward(case.inputs["x"], case.params, activation=case.config.activation,
                                    dropout_mask=case.static.get("dropout"))
    return {"y": y}, cache


def backward(cache, cot):
    dx, grads = feed_forward_backward(cot["y"], cache)
    return {"x": dx, **grads}


register(Mechanism("nn.feed_forward", PAPER, "nn", build, forward, backward, config=FeedForwardConfig,
                   edge_configs={"batch_1": {"batch": 1}, "length_1": {"seq_len": 1},
                                 "tanh_gelu_dropout": {"activation": "gelu_tanh", "dropout": 0.3},
                                 "odd_sizes": {"batch": 3, "seq_len": 7, "d_model": 11, "d_ff": 13}},
                   realistic={"batch": 8, "seq_len": 512, "d_model": 256, "d_ff": 1024}))
