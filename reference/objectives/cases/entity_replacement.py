"""Registered case of ``objectives.entity_replacement`` (see ../entity_replacement.py and
../entity_replacement_data.py for the mechanism and its data construction).

Token ids: 0 [PAD], 1 [CLS], 2 [SEP], 3 [MASK], words 4-6, entities 7-12 (so vocab >= 13). The
documents cycle over "Curie lived in Paris near Rome" and "Bohr visited Berlin" with fixed
replacement decisions (a one-token and a two-token mention, a replaced and a kept one in each);
the last ``n_empty_rows`` rows are fully padded. The masked-LM positions are redrawn until the
batch holds at least one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ...backend import to_numpy
from ...config import Config, option
from ...nn.losses import IGNORE_INDEX
from ...nn.text_encoder import text_encoder_intermediates
from ...random import generator
from ...registry import Case, Mechanism, register
from ..entity_replacement import (
    CLASSIFIERS,
    entity_replacement_backward,
    entity_replacement_forward,
    init_entity_replacement,
)
from ..entity_replacement_data import MLM_POSITIONS, build_wklm_batch

PAD, CLS, SEP, MASK = 0, 1, 2, 3
TABLE = {"city": {"Paris": [7], "Berlin": [8, 9], "Rome": [10]}, "person": {"Curie": [11], "Bohr": [12, 7]}}
DOCUMENTS = [([11, 4, 5, 7, 6, 10], [(0, 0, "person", "Curie"), (3, 3, "city", "Paris"), (5, 5, "city", "Rome")]),
             ([12, 7, 4, 8, 9, 5], [(0, 1, "person", "Bohr"), (3, 4, "city", "Berlin")])]
DECISIONS = [[False, True, False], [True, False]]


@dataclass(frozen=True)
class EntityReplacementConfig(Config):
    title = "WKLM's entity replacement objective (with masked LM) on (batch, seq_len) ids"
    batch: int = option(2, "batch size B (documents cycle; the last n_empty_rows rows are padding)", minimum=1)
    seq_len: int = option(11, "sequence length T (a replaced document needs up to 10)", minimum=10)
    vocab: int = option(13, "vocabulary V (the entity table uses ids up to 12)", minimum=13)
    d_model: int = option(4, "model width D (= the MLM head width E)", minimum=2)
    n_heads: int = option(2, "heads (divide d_model)", minimum=1)
    d_ff: int = option(5, "feed-forward width F", minimum=1)
    n_layers: int = option(1, "encoder layers", minimum=1)
    max_mentions: int = option(3, "mention slots per row M (>= 3)", minimum=3)
    n_empty_rows: int = option(0, "fully padded rows at the end of the batch", minimum=0)
    classifier: str = option("boundary", "entity classifier (kdn_model.py at 84ae840; the authors' command uses "
                             "--boundary-loss, sweep/commands.md)", choices=CLASSIFIERS)
    mlm_positions: str = option("authors", "masked-LM position rule (entity_replacement_data.py)",
                                choices=MLM_POSITIONS)
    mlm_rate: float = option(0.2, "masked-LM share (the paper's 5% [paper, recalled] masks nothing at T=11 "
                             "under the authors' rule most of the time)", minimum=0.01, maximum=0.9)
    activation: str = option("gelu_tanh", "hidden activation (BERT's TF modeling.py tanh form [recalled]; "
                             "'gelu' the exact one)", choices=("gelu", "gelu_tanh", "relu"))

    def validate(self) -> None:
        name = type(self).__name__
        if self.d_model % self.n_heads:
            raise ValueError(f"{name}.d_model ({self.d_model}) must be a multiple of n_heads ({self.n_heads})")
        if self.n_empty_rows >= self.batch:
            raise ValueError(f"{name}.n_empty_rows ({self.n_empty_rows}) must be < batch ({self.batch})")


def build(seed: int, dtype: Any, xp, config: EntityReplacementConfig) -> Case:
    c, rng = config, generator(seed)
    rows = c.batch - c.n_empty_rows
    documents = [DOCUMENTS[row % 2] for row in range(rows)]
    decisions = [DECISIONS[row % 2] for row in range(rows)]
    for _ in range(50):  # redraw the masked-LM positions until the batch holds one
        batch = build_wklm_batch(rng, documents, TABLE, seq_len=c.seq_len, max_mentions=c.max_mentions,
                                 vocab_size=c.vocab, cls_id=CLS, sep_id=SEP, pad_id=PAD, mask_id=MASK,
                                 special_ids=(PAD, CLS, SEP, MASK), mlm_rate=c.mlm_rate, decisions=decisions,
                                 mlm_positions=c.mlm_positions, n_empty_rows=c.n_empty_rows, xp=xp)
        if np.any(to_numpy(batch.mlm_targets) != IGNORE_INDEX):
            break
    else:
        raise ValueError(f"EntityReplacementConfig: mlm_rate={c.mlm_rate} masks no token in 50 draws; raise it")
    params = init_entity_replacement(rng, vocab=c.vocab, n_positions=c.seq_len, d_model=c.d_model, d_ff=c.d_ff,
                                     n_layers=c.n_layers, classifier=c.classifier, xp=xp, dtype=dtype)
    return Case(inputs={}, params=params, static=batch._asdict())


def forward(case: Case):
    c, s = case.config, case.static
    (loss, ent_loss, mlm_loss), cache = entity_replacement_forward(
        s["ids"], s["pad"], s["mention_start"], s["mention_end"], s["mention_valid"], s["mention_labels"],
        s["mlm_targets"], case.params, n_heads=c.n_heads, n_layers=c.n_layers, activation=c.activation,
        classifier=c.classifier)
    return {"loss": loss, "ent_loss": ent_loss, "mlm_loss": mlm_loss}, cache


def backward(cache, cot):
    return entity_replacement_backward(cot["loss"], cache, dent_loss=cot.get("ent_loss", 0.0),
                                       dmlm_loss=cot.get("mlm_loss", 0.0))


EDGE_CONFIGS = {
    "batch_1": {"batch": 1},
    "two_layers": {"n_layers": 2},
    "fully_padded_row": {"batch": 3, "n_empty_rows": 1},
    "start_end": {"classifier": "start_end"},
    "start": {"classifier": "start"},
    "exact_mlm_rule": {"mlm_positions": "exact", "mlm_rate": 0.05},
    "exact_gelu": {"activation": "gelu"},
    "odd_sizes": {"batch": 3, "seq_len": 13, "vocab": 17, "d_model": 9, "n_heads": 3, "d_ff": 7, "max_mentions": 5},
}
#: RoBERTa/BERT-Base sizes (WKLM starts from BERT-Base [paper, recalled]).
REALISTIC = {"batch": 2, "seq_len": 128, "vocab": 30522, "d_model": 768, "n_heads": 12, "d_ff": 3072,
             "n_layers": 12, "max_mentions": 20}

register(Mechanism("objectives.entity_replacement", "WKLM (Xiong et al., ICLR 2020)", "objectives", build, forward,
                   backward, config=EntityReplacementConfig, edge_configs=EDGE_CONFIGS, realistic=REALISTIC,
                   intermediates=lambda cache: text_encoder_intermediates(cache.encoder)))
