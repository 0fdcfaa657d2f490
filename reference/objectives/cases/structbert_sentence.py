"""Registered case of ``objectives.structbert_sentence`` (see ../structbert_sentence.py for the mechanism).

The corpus is ``n_documents`` documents drawn from the seed, each of 2 or 3 sentences of 1 to
``max_sentence_len`` ordinary tokens (ids from 3; 0 [PAD], 1 [CLS], 2 [SEP]). The labels cycle
next, previous, random over the batch, so the default batch of 3 holds one pair of each class.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ...config import Config, option
from ...nn.text_encoder import text_encoder_intermediates
from ...random import generator
from ...registry import Case, Mechanism, register
from ..structbert_sentence import (
    N_CLASSES,
    init_structbert_sentence,
    sample_sentence_pairs,
    structbert_sentence_backward,
    structbert_sentence_forward,
)

PAD, CLS, SEP = 0, 1, 2


@dataclass(frozen=True)
class StructBertSentenceConfig(Config):
    title = "StructBERT's sentence structural objective on (batch, seq_len) sentence pairs"
    batch: int = option(3, "batch size B (labels cycle next, previous, random)", minimum=1)
    seq_len: int = option(8, "sequence length T ([CLS] S1 [SEP] S2 [SEP] and padding)", minimum=5)
    vocab: int = option(11, "vocabulary V (ids 0-2 are [PAD], [CLS], [SEP])", minimum=4)
    d_model: int = option(4, "model width D", minimum=2)
    n_heads: int = option(2, "heads (divide d_model)", minimum=1)
    d_ff: int = option(5, "feed-forward width F", minimum=1)
    n_layers: int = option(1, "encoder layers", minimum=1)
    n_documents: int = option(3, "documents in the corpus (a random pair needs two)", minimum=2)
    max_sentence_len: int = option(2, "longest sentence, in tokens", minimum=1)
    activation: str = option("gelu_tanh", "hidden activation (BERT's TF modeling.py tanh form [recalled]; "
                             "'gelu' the exact one)", choices=("gelu", "gelu_tanh", "relu"))

    def validate(self) -> None:
        name = type(self).__name__
        if self.d_model % self.n_heads:
            raise ValueError(f"{name}.d_model ({self.d_model}) must be a multiple of n_heads ({self.n_heads})")
        if self.seq_len < 2 * self.max_sentence_len + 3:
            raise ValueError(f"{name}.seq_len ({self.seq_len}) must hold two sentences of max_sentence_len "
                             f"({self.max_sentence_len}) and three special tokens: >= {2 * self.max_sentence_len + 3}")


def build(seed: int, dtype: Any, xp, config: StructBertSentenceConfig) -> Case:
    c, rng = config, generator(seed)
    documents = [[[int(t) for t in rng.integers(3, c.vocab, int(rng.integers(1, c.max_sentence_len + 1)))]
                  for _ in range(int(rng.integers(2, 4)))] for _ in range(c.n_documents)]
    pairs = sample_sentence_pairs(rng, documents, c.batch, seq_len=c.seq_len, cls_id=CLS, sep_id=SEP, pad_id=PAD,
                                  labels=[row % N_CLASSES for row in range(c.batch)], xp=xp)
    params = init_structbert_sentence(rng, vocab=c.vocab, n_positions=c.seq_len, d_model=c.d_model, d_ff=c.d_ff,
                                      n_layers=c.n_layers, xp=xp, dtype=dtype)
    return Case(inputs={}, params=params, static=pairs._asdict())


def forward(case: Case):
    c, s = case.config, case.static
    (loss, logits), cache = structbert_sentence_forward(s["ids"], s["segments"], s["pad"], s["labels"], case.params,
                                                        n_heads=c.n_heads, n_layers=c.n_layers,
                                                        activation=c.activation)
    return {"loss": loss, "logits": logits}, cache


def backward(cache, cot):
    return structbert_sentence_backward(cot["loss"], cache, dlogits=cot.get("logits", 0.0))


EDGE_CONFIGS = {
    "batch_1": {"batch": 1},
    "two_layers": {"n_layers": 2},
    "one_token_sentences": {"max_sentence_len": 1, "seq_len": 5},
    "exact_gelu": {"activation": "gelu"},
    "odd_sizes": {"batch": 5, "seq_len": 11, "vocab": 13, "d_model": 9, "n_heads": 3, "d_ff": 7,
                  "max_sentence_len": 3, "n_documents": 4},
}
REALISTIC = {"batch": 3, "seq_len": 128, "vocab": 30522, "d_model": 768, "n_heads": 12, "d_ff": 3072,
             "n_layers": 12, "max_sentence_len": 60, "n_documents": 8}

register(Mechanism("objectives.structbert_sentence", "StructBERT (Wang et al., ICLR 2020)", "objectives", build,
                   forward, backward, config=StructBertSentenceConfig, edge_configs=EDGE_CONFIGS, realistic=REALISTIC,
                   intermediates=lambda cache: text_encoder_intermediates(cache.encoder)))
