"""Registered case of ``objectives.structbert_word`` (see ../structbert_word.py for the mechanism).

Token ids: 0 [PAD], 1 [CLS], 2 [SEP], 3 [MASK], ordinary tokens from 4. Each real row is
[CLS] w ... w [SEP]; the last real row ends in ``n_padded`` padding positions and the last
``n_empty_rows`` rows are fully padded. Masking and trigram shuffles come from
``sample_structbert_word`` at the configured rates.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ...config import Config, option
from ...nn.text_encoder import text_encoder_intermediates
from ...random import generator
from ...registry import Case, Mechanism, register
from ..structbert_word import (
    WORD_REDUCTIONS,
    init_structbert_word,
    sample_structbert_word,
    structbert_word_backward,
    structbert_word_forward,
)

PAD, CLS, SEP, MASK = 0, 1, 2, 3


@dataclass(frozen=True)
class StructBertWordConfig(Config):
    title = "StructBERT's word structural objective (with BERT's MLM) on (batch, seq_len) ids"
    batch: int = option(2, "batch size B", minimum=1)
    seq_len: int = option(9, "sequence length T", minimum=6)
    vocab: int = option(11, "vocabulary V (ids 0-3 are [PAD], [CLS], [SEP], [MASK])", minimum=6)
    # D = 12: at D = 4 a LayerNorm row sits near its degenerate point and the full check's Richardson
    # step read 4e-7 relative on the tables (converging as h shrinks); at D = 12 the worst is 2e-9.
    d_model: int = option(12, "model width D (= the embedding width)", minimum=2)
    n_heads: int = option(3, "heads (divide d_model)", minimum=1)
    d_ff: int = option(5, "feed-forward width F", minimum=1)
    n_layers: int = option(1, "encoder layers", minimum=1)
    n_padded: int = option(1, "padding positions at the end of the last real row", minimum=0)
    n_empty_rows: int = option(0, "fully padded rows at the end of the batch", minimum=0)
    mask_rate: float = option(0.2, "BERT's MLM share (the paper keeps BERT's 15% [spec, paper recalled]; 0.2 "
                              "masks two per row at T=9)", minimum=0.01, maximum=0.9)
    trigram_rate: float = option(0.05, "share of the valid trigram windows shuffled (the paper's 5% "
                                 "[spec, paper recalled]); at least one per row", minimum=0.01, maximum=0.99)
    word_reduction: str = option("mean", "L_word over shuffled positions: 'mean' (spec) or 'sum' (Eq. 1)",
                                 choices=WORD_REDUCTIONS)
    activation: str = option("gelu_tanh", "hidden activation (BERT's TF modeling.py tanh form [recalled]; "
                             "'gelu' the exact one)", choices=("gelu", "gelu_tanh", "relu"))

    def validate(self) -> None:
        name = type(self).__name__
        if self.d_model % self.n_heads:
            raise ValueError(f"{name}.d_model ({self.d_model}) must be a multiple of n_heads ({self.n_heads})")
        if self.n_empty_rows >= self.batch:
            raise ValueError(f"{name}.n_empty_rows ({self.n_empty_rows}) must be < batch ({self.batch})")
        if self.seq_len - self.n_padded < 6:
            raise ValueError(f"{name}: seq_len - n_padded ({self.seq_len - self.n_padded}) must be >= 6 so that a "
                             "row holds a masked token and an unmasked trigram between [CLS] and [SEP]")


def build(seed: int, dtype: Any, xp, config: StructBertWordConfig) -> Case:
    c, rng = config, generator(seed)
    ids = np.full((c.batch, c.seq_len), PAD)
    for row in range(c.batch - c.n_empty_rows):
        n = c.seq_len - (c.n_padded if row == c.batch - c.n_empty_rows - 1 else 0)
        ids[row, :n] = [CLS, *rng.integers(4, c.vocab, n - 2), SEP]
    pad = ids != PAD
    for _ in range(50):  # redraw the masks until every real row keeps an unmasked trigram
        try:
            built = sample_structbert_word(rng, xp.asarray(ids), xp.asarray(pad), mask_id=MASK, vocab_size=c.vocab,
                                           special_ids=(PAD, CLS, SEP, MASK), mask_rate=c.mask_rate,
                                           trigram_rate=c.trigram_rate, xp=xp)
            break
        except ValueError as err:
            if "trigram" not in str(err):
                raise
    else:
        raise ValueError(f"StructBertWordConfig: mask_rate={c.mask_rate} leaves no unmasked trigram in a row of "
                         f"{c.seq_len - c.n_padded} tokens in 50 draws; lower mask_rate or lengthen the rows")
    params = init_structbert_word(rng, vocab=c.vocab, n_positions=c.seq_len, d_model=c.d_model, d_ff=c.d_ff,
                                  n_layers=c.n_layers, xp=xp, dtype=dtype)
    return Case(inputs={}, params=params,
                static={"input_ids": built.input_ids, "pad": xp.asarray(pad), "mlm_targets": built.mlm_targets,
                        "word_targets": built.word_targets, "original_ids": xp.asarray(ids)})


def forward(case: Case):
    c, s = case.config, case.static
    (loss, mlm_loss, word_loss), cache = structbert_word_forward(
        s["input_ids"], s["pad"], s["mlm_targets"], s["word_targets"], case.params, n_heads=c.n_heads,
        n_layers=c.n_layers, activation=c.activation, word_reduction=c.word_reduction)
    return {"loss": loss, "mlm_loss": mlm_loss, "word_loss": word_loss}, cache


def backward(cache, cot):
    return structbert_word_backward(cot["loss"], cache, dmlm_loss=cot.get("mlm_loss", 0.0),
                                    dword_loss=cot.get("word_loss", 0.0))


EDGE_CONFIGS = {
    "batch_1": {"batch": 1, "n_padded": 0},
    # two layers at D=4 put one layer norm so near its degenerate point that the checker's 1e-3 step blurs
    # the difference (analytic 12.6377082, central differences converge to it only below h = 1e-4): D=6
    "two_layers": {"n_layers": 2, "d_model": 6, "n_heads": 3},
    "fully_padded_row": {"batch": 3, "n_empty_rows": 1},
    "many_trigrams": {"seq_len": 17, "trigram_rate": 0.6, "mask_rate": 0.1},
    "sum_reduction": {"word_reduction": "sum"},
    "exact_gelu": {"activation": "gelu"},
    "odd_sizes": {"batch": 3, "seq_len": 13, "vocab": 17, "d_model": 9, "n_heads": 3, "d_ff": 7, "n_padded": 5},
}
#: BERT-Base sizes with StructBERT's rates (the paper's base model is BERT-Base sized [spec, paper recalled]).
REALISTIC = {"batch": 2, "seq_len": 128, "vocab": 30522, "d_model": 768, "n_heads": 12, "d_ff": 3072,
             "n_layers": 12, "mask_rate": 0.15}

register(Mechanism("objectives.structbert_word", "StructBERT (Wang et al., ICLR 2020)", "objectives", build, forward,
                   backward, config=StructBertWordConfig, edge_configs=EDGE_CONFIGS, realistic=REALISTIC,
                   intermediates=lambda cache: text_encoder_intermediates(cache.encoder)))
