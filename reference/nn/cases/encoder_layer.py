"""Registered case of ``nn.encoder_layer`` (post-LN, key padding, explicit dropout masks at every site)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ...config import Config, option
from ...random import generator, normal
from ...registry import Case, Mechanism, register
from ..attention import padding_mask
from ..encoder_layer import encoder_layer_backward, encoder_layer_forward, init_encoder_layer, sample_encoder_dropout

PAPER = "Attention is all you need (Vaswani et al., 2017)"


@dataclass(frozen=True)
class EncoderLayerConfig(Config):
    title = "a post-LN Transformer encoder layer on (batch, seq_len, d_model)"
    batch: int = option(2, "batch size B", minimum=1)
    seq_len: int = option(5, "sequence length T", minimum=1)
    d_model: int = option(24, "model width D (a multiple of n_heads)", minimum=1)
    n_heads: int = option(4, "heads H", minimum=1)
    d_ff: int = option(7, "inner width F", minimum=1)
    n_padded: int = option(2, "padded positions at the end of the last batch row", minimum=0)
    dropout: float = option(0.1, "rate of the explicit dropout masks (0: none)", minimum=0.0, maximum=0.9)
    activation: str = option("gelu", "FFN activation", choices=("gelu", "gelu_tanh"))

    def validate(self) -> None:
        if self.d_model % self.n_heads:
            raise ValueError(f"EncoderLayerConfig.d_model ({self.d_model}) must be a multiple of n_heads ({self.n_heads})")
        if self.n_padded >= self.seq_len:
            raise ValueError(f"EncoderLayerConfig.n_padded ({self.n_padded}) must be < seq_len ({self.seq_len})")


def build(seed: int, dtype: Any, xp, config: EncoderLayerConfig) -> Case:
    rng = generator(seed)
    b, t, d, f = config.batch, config.seq_len, config.d_model, config.d_ff
    valid = [[i < b - 1 or j < t - config.n_padded for j in range(t)] for i in range(b)]  # (B, T)
    static = {"mask": padding_mask(xp.asarray(valid))}
    x = normal(rng, (b, t, d), xp=xp, dtype=dtype)
    params = init_encoder_layer(rng, d, f, xp=xp, dtype=dtype)
    if config.dropout > 0:
        static["dropout"] = sample_encoder_dropout(rng, b, t, d, f, config.n_heads, config.dropout, xp=xp, dtype=dtype)
    return Case(inputs={"x": x}, params=params, static=static)


def forward(case: Case):
    y, cache = encoder_layer_forward(case.inputs["x"], case.params, n_heads=case.config.n_heads,
                                     mask=case.static["mask"], activation=case.config.activation,
                                     dropout=case.static.get("dropout"))
    return {"y": y}, cache


def backward(cache, cot):
    dx, grads = encoder_layer_backward(cot["y"], cache)
    return {"x": dx, **grads}


register(Mechanism("nn.encoder_layer", PAPER, "nn", build, forward, backward, config=EncoderLayerConfig,
                   edge_configs={"batch_1": {"batch": 1, "n_padded": 0}, "length_1": {"seq_len": 1, "n_padded": 0},
                                 "no_dropout": {"dropout": 0.0},
                                 "odd_sizes": {"batch": 3, "seq_len": 7, "d_model": 15, "n_heads": 5, "d_ff": 11,
                                               "n_padded": 6}},
                   realistic={"batch": 8, "seq_len": 512, "d_model": 256, "n_heads": 4, "d_ff": 1024}))
