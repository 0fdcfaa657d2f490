"""Registered case of ``nn.decoder_layer`` (causal self-attention, cross attention with source padding, FFN)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ...config import Config, option
from ...random import generator, normal
from ...registry import Case, Mechanism, register
from ..attention import causal_mask, padding_mask
from ..decoder_layer import decoder_layer_backward, decoder_layer_forward, init_decoder_layer

PAPER = "Attention is all you need (Vaswani et al., 2017)"


@dataclass(frozen=True)
class DecoderLayerConfig(Config):
    title = "a post-LN Transformer decoder layer: targets (batch, seq_len, d_model), source (batch, source_len, d_model)"
    batch: int = option(2, "batch size B", minimum=1)
    seq_len: int = option(5, "target length T", minimum=1)
    source_len: int = option(3, "source length S", minimum=1)
    d_model: int = option(24, "model width D (a multiple of n_heads)", minimum=1)
    n_heads: int = option(4, "heads H", minimum=1)
    d_ff: int = option(7, "inner width F", minimum=1)
    n_padded: int = option(1, "padded source positions at the end of the first batch row", minimum=0)

    def validate(self) -> None:
        if self.d_model % self.n_heads:
            raise ValueError(f"DecoderLayerConfig.d_model ({self.d_model}) must be a multiple of n_heads ({self.n_heads})")
        if self.n_padded >= self.source_len:
            raise ValueError(f"DecoderLayerConfig.n_padded ({self.n_padded}) must be < source_len ({self.source_len})")


def build(seed: int, dtype: Any, xp, config: DecoderLayerConfig) -> Case:
    rng = generator(seed)
    b, t, s, d = config.batch, config.seq_len, config.source_len, config.d_model
    valid = [[j < s - config.n_padded or i > 0 for j in range(s)] for i in range(b)]  # (B, S)
    return Case(inputs={"x": normal(rng, (b, t, d), xp=xp, dtype=dtype), "s": normal(rng, (b, s, d), xp=xp, dtype=dtype)},
                params=init_decoder_layer(rng, d, config.d_ff, xp=xp, dtype=dtype),
                static={"self_mask": causal_mask(t, xp=xp), "cross_mask": padding_mask(xp.asarray(valid))})


def forward(case: Case):
    y, cache = decoder_layer_forward(case.inputs["x"], case.inputs["s"], case.params, n_heads=case.config.n_heads,
                                     self_mask=case.static["self_mask"], cross_mask=case.static["cross_mask"])
    return {"y": y}, cache


def backward(cache, cot):
    dx, ds, grads = decoder_layer_backward(cot["y"], cache)
    return {"x": dx, "s": ds, **grads}


register(Mechanism("nn.decoder_layer", PAPER, "nn", build, forward, backward, config=DecoderLayerConfig,
                   edge_configs={"batch_1": {"batch": 1, "n_padded": 0}, "target_1": {"seq_len": 1},
                                 "source_1": {"source_len": 1, "n_padded": 0},
                                 "odd_sizes": {"batch": 3, "seq_len": 7, "source_len": 9, "d_model": 15, "n_heads": 5,
                                               "d_ff": 11, "n_padded": 4}},
                   realistic={"batch": 8, "seq_len": 512, "source_len": 512, "d_model": 256, "n_heads": 4, "d_ff": 1024}))
