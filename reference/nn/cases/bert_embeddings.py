"""Registered case of ``nn.bert_embeddings``: token + position (+ segment) embeddings, then LayerNorm."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ...config import Config, option
from ...random import generator, integers
from ...registry import Case, Mechanism, register
from ..bert_embeddings import bert_embeddings_backward, bert_embeddings_forward, init_bert_embeddings


@dataclass(frozen=True)
class BertEmbeddingsConfig(Config):
    title = "BERT's input embeddings of (batch, seq_len) ids"
    batch: int = option(2, "batch size B", minimum=1)
    seq_len: int = option(5, "sequence length T", minimum=1)
    vocab: int = option(7, "token table rows V", minimum=1)
    n_positions: int = option(6, "position table rows (>= seq_len)", minimum=1)
    width: int = option(3, "embedding width E (>= 2 for the LayerNorm)", minimum=2)
    n_segments: int = option(2, "segment table rows (0: no segment embedding)", minimum=0)

    def validate(self) -> None:
        if self.n_positions < self.seq_len:
            raise ValueError(f"BertEmbeddingsConfig.n_positions ({self.n_positions}) must be >= seq_len ({self.seq_len})")


def build(seed: int, dtype: Any, xp, config: BertEmbeddingsConfig) -> Case:
    rng = generator(seed)
    shape = (config.batch, config.seq_len)
    params = init_bert_embeddings(rng, config.vocab, config.n_positions, config.width, xp=xp, dtype=dtype,
                                  n_segments=config.n_segments)
    static = {"ids": integers(rng, config.vocab, shape, xp=xp)}
    if config.n_segments:
        static["segments"] = integers(rng, config.n_segments, shape, xp=xp)
    return Case(inputs={}, params=params, static=static)


def forward(case: Case):
    e, cache = bert_embeddings_forward(case.static["ids"], case.params, segments=case.static.get("segments"))
    return {"e": e}, cache


register(Mechanism("nn.bert_embeddings", "BERT (Devlin et al., 2019)", "nn", build, forward,
                   lambda cache, cot: bert_embeddings_backward(cot["e"], cache), config=BertEmbeddingsConfig,
                   edge_configs={"batch_1": {"batch": 1}, "length_1": {"seq_len": 1},
                                 "no_segments": {"n_segments": 0}, "vocab_1": {"vocab": 1},
                                 "odd_sizes": {"batch": 3, "seq_len": 9, "vocab": 13, "n_positions": 11, "width": 5}}))
