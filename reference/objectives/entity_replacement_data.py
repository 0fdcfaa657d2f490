"""WKLM data construction and the registered example of ``objectives.entity_replacement``.

An entity table maps each type to its entities and their surface tokens::

    {"city": {"Paris": [7], "Berlin": [8, 9], "Rome": [10]}, "person": {"Curie": [11], "Bohr": [12, 7]}}

A document is a token list and its mentions, each ``(start, end, type, entity)`` with ``end``
inclusive. ``replace_entities`` walks the mentions in order: each is replaced with probability
``replace_prob`` by the tokens of another entity of its type (uniformly chosen), unless the previous
mention was replaced (no two adjacent mentions both replaced). ``build_wklm_batch`` adds [CLS] and
[SEP], pads to T, masks a ``mlm_rate`` share of the tokens outside mentions (BERT's 80/10/10), and
returns arrays for ``entity_replacement_forward``.

A type with a single entity cannot give a replacement: ``validate_entity_table`` rejects it.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from ..backend import from_numpy
from ..nn.linear import init_linear
from ..nn.losses import IGNORE_INDEX
from ..nn.mlm_head import init_mlm_head
from ..nn.text_encoder import init_text_encoder
from ..random import generator
from ..registry import Case, Mechanism, register
from .entity_replacement import entity_replacement_backward, entity_replacement_forward

REPLACE_PROB = 0.5
MLM_RATE = 0.05


def validate_entity_table(table: dict) -> None:
    for etype, entities in table.items():
        if len(entities) < 2:
            raise ValueError(f"entity type {etype!r} has a single entity ({list(entities)}): no same-type "
                             "replacement exists; add entities or drop the type")
        for name, tokens in entities.items():
            if len(tokens) == 0:
                raise ValueError(f"entity {name!r} of type {etype!r} has no surface tokens")


class Replaced(NamedTuple):
    tokens: list  # the new token list
    mentions: list  # [(start, end)] inclusive, in the new list
    labels: list  # 1 replaced, 0 original
    entities: list  # the entity shown at each mention


def replace_entities(rng: np.random.Generator, tokens: list, mentions: list, table: dict, *,
                     replace_prob: float = REPLACE_PROB, decisions: list | None = None) -> Replaced:
    """Type-constrained replacement of one document's mentions; ``decisions`` fixes the coin flips."""
    validate_entity_table(table)
    if not 0.0 <= replace_prob <= 1.0:
        raise ValueError(f"replace_prob must lie in [0, 1], got {replace_prob}")
    order = sorted(range(len(mentions)), key=lambda k: mentions[k][0])
    out, new_mentions, labels, shown = [], [], [], []
    cursor, previous_replaced, last_end = 0, False, -1
    for rank, k in enumerate(order):
        start, end, etype, name = mentions[k]
        if not (0 <= start <= end < len(tokens)) or start <= last_end:
            raise ValueError(f"mention {k} = {(start, end)} must lie in the document and not overlap another")
        if etype not in table or name not in table[etype]:
            raise ValueError(f"mention {k}: entity {name!r} of type {etype!r} is not in the entity table")
        want = bool(rng.uniform() < replace_prob) if decisions is None else bool(decisions[rank])
        if decisions is not None and want and previous_replaced:
            raise ValueError(f"decisions replace two adjacent mentions ({rank - 1} and {rank})")
        replace = want and not previous_replaced
        if replace:
            others = sorted(e for e in table[etype] if e != name)
            name = others[int(rng.integers(len(others)))]
        surface = list(table[etype][name]) if replace else list(tokens[start:end + 1])
        out.extend(tokens[cursor:start])
        new_mentions.append((len(out), len(out) + len(surface) - 1))
        out.extend(surface)
        labels.append(int(replace))
        shown.append(name)
        cursor, previous_replaced, last_end = end + 1, replace, end
    out.extend(tokens[cursor:])
    return Replaced(out, new_mentions, labels, shown)


class WKLMBatch(NamedTuple):
    ids: Any  # (B, T) int
    pad: Any  # (B, T) bool
    mention_start: Any  # (B, M) int
    mention_end: Any  # (B, M) int
    mention_valid: Any  # (B, M) bool
    mention_labels: Any  # (B, M) float, 1 = replaced
    mlm_targets: Any  # (B, T) int, IGNORE_INDEX where not masked


def build_wklm_batch(rng: np.random.Generator, documents: list, table: dict, *, seq_len: int, max_mentions: int,
                     vocab_size: int, cls_id: int, sep_id: int, pad_id: int, mask_id: int,
                     special_ids: tuple[int, ...], mlm_rate: float = MLM_RATE, replace_prob: float = REPLACE_PROB,
                     decisions: list | None = None, xp, dtype) -> WKLMBatch:
    """documents: [(tokens, mentions)]; decisions: optional per-document lists of coin flips."""
    if not 0.0 < mlm_rate < 1.0:
        raise ValueError(f"mlm_rate must lie in (0, 1), got {mlm_rate}")
    b = len(documents)
    ids = np.full((b, seq_len), pad_id)
    starts, ends = np.zeros((b, max_mentions), dtype=np.int64), np.zeros((b, max_mentions), dtype=np.int64)
    valid, labels = np.zeros((b, max_mentions), dtype=bool), np.zeros((b, max_mentions))
    targets = np.full((b, seq_len), IGNORE_INDEX)
    normal_ids = np.setdiff1d(np.arange(vocab_size), special_ids)
    for row, (tokens, mentions) in enumerate(documents):
        if any(not 0 <= tok < vocab_size for tok in tokens):
            raise ValueError(f"document {row}: token ids must lie in [0, {vocab_size})")
        if len(mentions) > max_mentions:
            raise ValueError(f"document {row} has {len(mentions)} mentions, more than max_mentions={max_mentions}")
        done = replace_entities(rng, tokens, mentions, table, replace_prob=replace_prob,
                                decisions=None if decisions is None else decisions[row])
        seq = [cls_id, *done.tokens, sep_id]
        if len(seq) > seq_len:
            raise ValueError(f"document {row} needs {len(seq)} positions after replacement, more than {seq_len}")
        ids[row, :len(seq)] = seq
        for k, (s, e) in enumerate(done.mentions):
            starts[row, k], ends[row, k], valid[row, k], labels[row, k] = s + 1, e + 1, True, done.labels[k]
        inside = np.zeros(seq_len, dtype=bool)
        for s, e in done.mentions:
            inside[s + 1:e + 2] = True
        candidates = np.flatnonzero((np.arange(seq_len) < len(seq)) & ~inside & ~np.isin(ids[row], special_ids))
        if candidates.size == 0:
            raise ValueError(f"document {row} has no token outside mentions to mask")
        count = int(min(max(1, np.round(mlm_rate * len(seq))), candidates.size))
        masked = rng.choice(candidates, size=count, replace=False)
        targets[row, masked] = ids[row, masked]
        kind = rng.uniform(size=count)  # BERT: 80% [MASK], 10% random token, 10% keep
        ids[row, masked] = np.where(kind < 0.8, mask_id,
                                    np.where(kind < 0.9, rng.choice(normal_ids, size=count), ids[row, masked]))
    return WKLMBatch(from_numpy(ids, xp, xp.int64), from_numpy(ids != pad_id, xp), from_numpy(starts, xp, xp.int64),
                     from_numpy(ends, xp, xp.int64), from_numpy(valid, xp), from_numpy(labels, xp, dtype),
                     from_numpy(targets, xp, xp.int64))


# ---- registered example: B=2, T=11, V=13, D=4 (2 heads), F=5, M=3 --------------------------------------------
PAD, CLS, SEP, MASK = 0, 1, 2, 3
B, T, V, D, F, M, HEADS = 2, 11, 13, 4, 5, 3, 2
TABLE = {"city": {"Paris": [7], "Berlin": [8, 9], "Rome": [10]}, "person": {"Curie": [11], "Bohr": [12, 7]}}
#: "Curie lived in Paris near Rome" / "Bohr visited Berlin"; words 4, 5, 6.
DOCUMENTS = [([11, 4, 5, 7, 6, 10], [(0, 0, "person", "Curie"), (3, 3, "city", "Paris"), (5, 5, "city", "Rome")]),
             ([12, 7, 4, 8, 9, 5], [(0, 1, "person", "Bohr"), (3, 4, "city", "Berlin")])]
DECISIONS = [[False, True, False], [True, False]]


def example(seed: int, dtype: Any, xp) -> Case:
    rng = generator(seed)
    batch = build_wklm_batch(rng, DOCUMENTS, TABLE, seq_len=T, max_mentions=M, vocab_size=V, cls_id=CLS,
                             sep_id=SEP, pad_id=PAD, mask_id=MASK, special_ids=(PAD, CLS, SEP, MASK),
                             decisions=DECISIONS, xp=xp, dtype=dtype)
    params = init_text_encoder(rng, V, T, D, D, F, xp=xp, dtype=dtype)
    params.update({"head_" + k if k != "out_bias" else k: v
                   for k, v in init_mlm_head(rng, D, D, V, xp=xp, dtype=dtype).items()})
    ent = init_linear(rng, 2 * D, 1, xp=xp, dtype=dtype)
    params["ent_w"], params["ent_b"] = ent["w"], ent["b"]
    return Case(inputs={}, params=params, static=batch._asdict())


def forward(case: Case):
    s = case.static
    (loss, ent_loss, mlm_loss), cache = entity_replacement_forward(
        s["ids"], s["pad"], s["mention_start"], s["mention_end"], s["mention_valid"], s["mention_labels"],
        s["mlm_targets"], case.params, n_heads=HEADS)
    return {"loss": loss, "ent_loss": ent_loss, "mlm_loss": mlm_loss}, cache


def backward(cache, cot):
    return entity_replacement_backward(cot["loss"], cache, dent_loss=cot.get("ent_loss", 0.0),
                                       dmlm_loss=cot.get("mlm_loss", 0.0))


register(Mechanism("objectives.entity_replacement", "WKLM (Xiong et al., ICLR 2020)", "objectives", example,
                   forward, backward))
