"""WKLM data construction for ``objectives.entity_replacement`` (its registered case: cases/entity_replacement.py).

An entity table maps each type to its entities and their surface tokens::

    {"city": {"Paris": [7], "Berlin": [8, 9], "Rome": [10]}, "person": {"Curie": [11], "Bohr": [12, 7]}}

A document is a token list and its mentions, each ``(start, end, type, entity)`` with ``end``
inclusive. ``replace_entities`` walks the mentions in order: each is replaced with probability
``replace_prob`` by the tokens of another entity of its type (uniformly chosen), unless the previous
mention was replaced (no two adjacent mentions both replaced). ``build_wklm_batch`` adds [CLS] and
[SEP], pads to T, chooses masked-LM positions by ``mlm_positions`` (BERT's 80/10/10 at each), and
returns arrays for ``entity_replacement_forward``:

- ``"authors"`` (default): ceil(mlm_rate * n) positions drawn without replacement over the n tokens of
  the sequence, those inside a mention (or special) then skipped, so the effective rate is lower
  (the authors' dataset code, as spec/findings.md reports it from xwhan/fairseq-wklm);
- ``"exact"``: max(1, round(mlm_rate * n)) positions drawn among the tokens outside mentions (this
  oracle's earlier rule).

A type with a single entity cannot give a replacement: ``validate_entity_table`` rejects it.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from ..backend import from_numpy
from ..nn.losses import IGNORE_INDEX

#: The paper's replacement probability (Sec. 2 [paper, recalled]).
REPLACE_PROB = 0.5
#: The masked-LM share (the paper's 5% [paper, recalled]).
MLM_RATE = 0.05
MLM_POSITIONS = ("authors", "exact")


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
    mention_labels: Any  # (B, M) int, 1 = replaced
    mlm_targets: Any  # (B, T) int, IGNORE_INDEX where not masked


def build_wklm_batch(rng: np.random.Generator, documents: list, table: dict, *, seq_len: int, max_mentions: int,
                     vocab_size: int, cls_id: int, sep_id: int, pad_id: int, mask_id: int,
                     special_ids: tuple[int, ...], mlm_rate: float = MLM_RATE, replace_prob: float = REPLACE_PROB,
                     decisions: list | None = None, mlm_positions: str = "authors", n_empty_rows: int = 0,
                     xp) -> WKLMBatch:
    """documents: [(tokens, mentions)]; decisions: optional per-document lists of coin flips; ``n_empty_rows``
    fully padded rows follow the documents."""
    if not 0.0 < mlm_rate < 1.0:
        raise ValueError(f"mlm_rate must lie in (0, 1), got {mlm_rate}")
    if mlm_positions not in MLM_POSITIONS:
        raise ValueError(f"mlm_positions must be one of {MLM_POSITIONS}, got {mlm_positions!r}")
    b = len(documents) + n_empty_rows
    ids = np.full((b, seq_len), pad_id)
    starts, ends = np.zeros((b, max_mentions), dtype=np.int64), np.zeros((b, max_mentions), dtype=np.int64)
    valid, labels = np.zeros((b, max_mentions), dtype=bool), np.zeros((b, max_mentions), dtype=np.int64)
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
        allowed = (np.arange(seq_len) < len(seq)) & ~inside & ~np.isin(ids[row], special_ids)
        if mlm_positions == "authors":  # ceil(n rate) over the block, then skip entity (and special) tokens
            drawn = rng.choice(len(seq), size=int(np.ceil(mlm_rate * len(seq))), replace=False)
            masked = drawn[allowed[drawn]]
        else:
            candidates = np.flatnonzero(allowed)
            if candidates.size == 0:
                raise ValueError(f"document {row} has no token outside mentions to mask")
            masked = rng.choice(candidates, size=int(min(max(1, np.round(mlm_rate * len(seq))), candidates.size)),
                                replace=False)
        count = masked.size
        targets[row, masked] = ids[row, masked]
        kind = rng.uniform(size=count)  # BERT: 80% [MASK], 10% random token, 10% keep
        ids[row, masked] = np.where(kind < 0.8, mask_id,
                                    np.where(kind < 0.9, rng.choice(normal_ids, size=count), ids[row, masked]))
    return WKLMBatch(from_numpy(ids, xp, xp.int64), from_numpy(ids != pad_id, xp), from_numpy(starts, xp, xp.int64),
                     from_numpy(ends, xp, xp.int64), from_numpy(valid, xp), from_numpy(labels, xp, xp.int64),
                     from_numpy(targets, xp, xp.int64))
