"""Registered case of ``nn.text_encoder``: BERT embeddings, an optional projection, a stack of encoder layers."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ...config import Config, option
from ...random import generator, integers
from ...registry import Case, Mechanism, register
from ..text_encoder import init_text_encoder, text_encoder_backward, text_encoder_forward


@dataclass(frozen=True)
class TextEncoderConfig(Config):
    title = "a BERT-style text encoder of (batch, seq_len) ids"
    batch: int = option(2, "batch size B", minimum=1)
    seq_len: int = option(5, "sequence length T", minimum=1)
    vocab: int = option(7, "vocabulary V", minimum=1)
    width: int = option(6, "embedding width E (a projection to d_model when they differ)", minimum=2)
    d_model: int = option(3, "model width D (a multiple of n_heads)", minimum=2)
    n_heads: int = option(1, "heads H", minimum=1)
    d_ff: int = option(4, "inner width F", minimum=1)
    n_layers: int = option(1, "encoder layers L", minimum=1)
    n_padded: int = option(2, "padded positions at the end of the last batch row", minimum=0)
    activation: str = option("gelu_tanh", "FFN activation (BERT's TF code uses the tanh form)",
                             choices=("gelu", "gelu_tanh"))

    def validate(self) -> None:
        if self.d_model % self.n_heads:
            raise ValueError(f"TextEncoderConfig.d_model ({self.d_model}) must be a multiple of n_heads ({self.n_heads})")
        if self.n_padded >= self.seq_len:
            raise ValueError(f"TextEncoderConfig.n_padded ({self.n_padded}) must be < seq_len ({self.seq_len})")


def build(seed: int, dtype: Any, xp, config: TextEncoderConfig) -> Case:
    rng = generator(seed)
    b, t = config.batch, config.seq_len
    pad = xp.asarray([[i < b - 1 or j < t - config.n_padded for j in range(t)] for i in range(b)])  # (B, T)
    params = init_text_encoder(rng, config.vocab, t, config.width, config.d_model, config.d_ff, xp=xp, dtype=dtype,
                               n_layers=config.n_layers)
    return Case(inputs={}, params=params, static={"ids": integers(rng, config.vocab, (b, t), xp=xp), "pad": pad})


def forward(case: Case):
    c = case.config
    h, cache = text_encoder_forward(case.static["ids"], case.static["pad"], case.params, n_heads=c.n_heads,
                                    n_layers=c.n_layers, activation=c.activation)
    return {"h": h}, cache


register(Mechanism("nn.text_encoder", "BERT (Devlin et al., 2019)", "nn", build, forward,
                   lambda cache, cot: text_encoder_backward(cot["h"], cache), config=TextEncoderConfig,
                   edge_configs={"batch_1": {"batch": 1, "n_padded": 0}, "length_1": {"seq_len": 1, "n_padded": 0},
                                 "no_projection": {"width": 3}, "two_layers_two_heads": {"n_layers": 2, "n_heads": 3,
                                                                                         "d_model": 6},
                                 "odd_sizes": {"batch": 3, "seq_len": 7, "vocab": 11, "width": 9, "d_model": 5,
                                               "n_heads": 5, "d_ff": 13, "n_padded": 6}}))
