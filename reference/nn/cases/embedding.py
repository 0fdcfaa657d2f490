"""Registered case of ``nn.embedding`` (a table lookup whose gradient scatters into repeated rows)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ...config import Config, option
from ...random import generator, integers, normal
from ...registry import Case, Mechanism, register
from ..embedding import embedding_backward, embedding_forward


@dataclass(frozen=True)
class EmbeddingConfig(Config):
    title = "a (vocab, d_model) table looked up by (batch, seq_len) ids"
    batch: int = option(2, "batch size B", minimum=1)
    seq_len: int = option(5, "sequence length T", minimum=1)
    vocab: int = option(11, "table rows V", minimum=1)
    d_model: int = option(6, "width D", minimum=1)
    ids_below: int = option(4, "ids are drawn from [0, ids_below), so repeats are certain (<= vocab)", minimum=1)

    def validate(self) -> None:
        if self.ids_below > self.vocab:
            raise ValueError(f"EmbeddingConfig.ids_below ({self.ids_below}) must be <= vocab ({self.vocab})")


def build(seed: int, dtype: Any, xp, config: EmbeddingConfig) -> Case:
    rng = generator(seed)
    ids = integers(rng, config.ids_below, (config.batch, config.seq_len), xp=xp)
    return Case(inputs={}, params={"table": normal(rng, (config.vocab, config.d_model), xp=xp, dtype=dtype)},
                static={"ids": ids})


def forward(case: Case):
    y, cache = embedding_forward(case.static["ids"], case.params["table"])
    return {"y": y}, cache


register(Mechanism("nn.embedding", "building block", "nn", build, forward,
                   lambda cache, cot: {"table": embedding_backward(cot["y"], cache)}, config=EmbeddingConfig,
                   edge_configs={"batch_1": {"batch": 1}, "length_1": {"seq_len": 1},
                                 "one_id": {"ids_below": 1}, "vocab_1": {"vocab": 1, "ids_below": 1},
                                 "odd_sizes": {"batch": 3, "seq_len": 13, "vocab": 17, "d_model": 7, "ids_below": 17}},
                   realistic={"batch": 8, "seq_len": 512, "vocab": 30000, "d_model": 128, "ids_below": 30000}))
