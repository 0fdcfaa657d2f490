"""StructBERT's sentence structural objective (Wang et al., ICLR 2020; arXiv:1908.04577v3, Sec. 2.3).

Data construction (no gradient; ``build_sentence_pair``, ``sample_sentence_pairs``):
    Given a first sentence S1 = sentence i of a document, the second sentence S2 is
      label 0 (NEXT):     sentence i + 1 of the same document,
      label 1 (PREVIOUS): sentence i - 1 of the same document,
      label 2 (RANDOM):   a sentence of another document,
    each with probability 1/3. Input: [CLS] S1 [SEP] S2 [SEP], segment 0 up to the first
    [SEP] and 1 after it, padded to T.

Forward:
    h = Encoder(x, segments)                      (B, T, D)
    c = tanh(h_[CLS] W_p + b_p)                   BERT's pooler      (B, D)
    z = c W_c + b_c                               3-way classifier   (B, 3)
    L_sent = mean_b -log softmax(z_b)[label_b]

Backward:
    dz_b = (softmax(z_b) - onehot(label_b)) / B;  dc = dz W_c^T;  du = dc (1 - c^2)
    dh_[CLS] = du W_p^T (the other positions receive no gradient from the head); then the encoder.

Axes: B batch, T sequence, V vocabulary, D width, F feed-forward width.
Paper symbol -> name: (S1, S2) -> a pair built by ``build_sentence_pair``; the three classes ->
NEXT, PREVIOUS, RANDOM; the [CLS] representation -> pooled.

Deviations / findings:
- The label order (0 next, 1 previous, 2 random) is this oracle's; the paper names the classes
  but no public pretraining code fixes an order.
- A pair longer than T is an error here (no truncation rule is implemented).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from ..backend import array_namespace
from ..nn.bert_embeddings import require_ids, require_tables
from ..nn.linear import LinearCache, init_linear, linear_backward, linear_forward
from ..nn.losses import CrossEntropyCache, cross_entropy_backward, cross_entropy_forward
from ..nn.text_encoder import TextEncoderCache, init_text_encoder, text_encoder_backward, text_encoder_forward
from ..validate import require_index_range, require_int, require_shape

NEXT, PREVIOUS, RANDOM = 0, 1, 2
N_CLASSES = 3


class SentencePairCache(NamedTuple):
    encoder: TextEncoderCache  # h (B, T, D)
    seq_len: int  # T
    pooler: LinearCache  # (B, D) -> (B, D)
    pooled: Any  # (B, D) tanh output
    classifier: LinearCache  # (B, D) -> (B, 3)
    loss: CrossEntropyCache


def structbert_sentence_forward(ids: Any, segments: Any, pad: Any, labels: Any, params: dict[str, Any], *,
                                n_heads: int, n_layers: int = 1,
                                activation: str = "gelu_tanh") -> tuple[tuple[Any, Any], SentencePairCache]:
    """Returns (L_sent, logits (B, 3)). params: text-encoder keys (with "seg") plus pool_w, pool_b, cls_w, cls_b."""
    xp = array_namespace(params["tok"])
    require_tables(params, ("tok", "seg", *params))  # every parameter a finite float array
    require_shape("params['tok']", params["tok"], ["vocab", "dim"], [None, None])
    require_ids("ids", ids, params["tok"].shape[0])
    require_int("segments", segments)
    require_shape("segments", segments, ["batch", "seq"], list(ids.shape))
    require_index_range("segments", segments, params["seg"].shape[0])
    require_int("labels", labels)
    require_shape("labels", labels, ["batch"], [ids.shape[0]])
    require_index_range("labels", labels, N_CLASSES)
    h, encoder = text_encoder_forward(ids, pad, params, n_heads=n_heads, n_layers=n_layers, segments=segments,
                                      activation=activation)  # (B, T, D)
    u, pooler = linear_forward(h[:, 0, :], params["pool_w"], params["pool_b"])  # (B, D)
    pooled = xp.tanh(u)
    logits, classifier = linear_forward(pooled, params["cls_w"], params["cls_b"])  # (B, 3)
    loss, ce = cross_entropy_forward(logits, labels)
    return (loss, logits), SentencePairCache(encoder, ids.shape[1], pooler, pooled, classifier, ce)


def structbert_sentence_backward(dloss: Any, cache: SentencePairCache, *, dlogits: Any = 0.0) -> dict[str, Any]:
    xp = array_namespace(cache.pooled)
    dz = cross_entropy_backward(dloss, cache.loss) + dlogits  # (B, 3)
    dpooled, cls = linear_backward(dz, cache.classifier)  # (B, D)
    dcls_h, pool = linear_backward(dpooled * (1.0 - cache.pooled * cache.pooled), cache.pooler)  # (B, D)
    b, d = dcls_h.shape
    dh = xp.concat([dcls_h[:, None, :], xp.zeros((b, cache.seq_len - 1, d), dtype=dcls_h.dtype)], axis=1)  # (B, T, D)
    grads = text_encoder_backward(dh, cache.encoder)
    grads.update({"pool_w": pool["w"], "pool_b": pool["b"], "cls_w": cls["w"], "cls_b": cls["b"]})
    return grads


def init_structbert_sentence(rng, *, vocab: int, n_positions: int, d_model: int, d_ff: int, xp, dtype,
                             n_layers: int = 1) -> dict[str, Any]:
    """A text encoder with two segment types, BERT's pooler and the 3-way classifier."""
    params = init_text_encoder(rng, vocab, n_positions, d_model, d_model, d_ff, xp=xp, dtype=dtype,
                               n_layers=n_layers, n_segments=2)
    for name, (d_in, d_out) in (("pool", (d_model, d_model)), ("cls", (d_model, N_CLASSES))):
        lin = init_linear(rng, d_in, d_out, xp=xp, dtype=dtype)
        params[name + "_w"], params[name + "_b"] = lin["w"], lin["b"]
    return params


def build_sentence_pair(documents: list, doc: int, index: int, label: int, *, seq_len: int, cls_id: int,
                        sep_id: int, pad_id: int, other: tuple[int, int] | None = None) -> tuple[list, list, list]:
    """[CLS] S1 [SEP] S2 [SEP] for S1 = documents[doc][index]; S2 by ``label``; ``other`` = (document,
    sentence) of the random sentence. Returns ids, segments, pad (lists of length seq_len)."""
    if label not in (NEXT, PREVIOUS, RANDOM):
        raise ValueError(f"label must be 0 (next), 1 (previous) or 2 (random), got {label}")
    sentences = documents[doc]
    if label in (NEXT, PREVIOUS) and len(sentences) < 2:
        raise ValueError(f"document {doc} has one sentence: it cannot give a "
                         f"{'next' if label == NEXT else 'previous'} pair")
    if not 0 <= index < len(sentences):
        raise ValueError(f"index must lie in [0, {len(sentences)}) for document {doc}, got {index}")
    if label == NEXT:
        if index + 1 >= len(sentences):
            raise ValueError(f"sentence {index} is the last of document {doc}: it has no next sentence")
        second = sentences[index + 1]
    elif label == PREVIOUS:
        if index == 0:
            raise ValueError(f"sentence 0 of document {doc} has no previous sentence")
        second = sentences[index - 1]
    else:
        if other is None or other[0] == doc:
            raise ValueError("a random pair needs other=(document, sentence) from a different document")
        second = documents[other[0]][other[1]]
    first = list(sentences[index])
    ids = [cls_id, *first, sep_id, *second, sep_id]
    if len(ids) > seq_len:
        raise ValueError(f"the pair needs {len(ids)} positions, more than seq_len={seq_len}")
    segments = [0] * (len(first) + 2) + [1] * (len(second) + 1)
    n = len(ids)
    return ids + [pad_id] * (seq_len - n), segments + [0] * (seq_len - n), [True] * n + [False] * (seq_len - n)


class SentencePairs(NamedTuple):
    ids: Any  # (B, T) int
    segments: Any  # (B, T) int
    pad: Any  # (B, T) bool
    labels: Any  # (B,) int


def sample_sentence_pairs(rng: np.random.Generator, documents: list, batch: int, *, seq_len: int, cls_id: int,
                          sep_id: int, pad_id: int, labels: list | None = None, xp) -> SentencePairs:
    """Draw ``batch`` pairs, each label uniform over {next, previous, random} unless ``labels`` fixes them."""
    if len(documents) < 2:
        raise ValueError("documents must hold at least two documents (a random pair needs another document)")
    multi = [d for d, s in enumerate(documents) if len(s) >= 2]
    if not multi:
        raise ValueError("every document has one sentence: none can give a next or previous pair")
    labels = [int(rng.integers(N_CLASSES)) for _ in range(batch)] if labels is None else list(labels)
    rows = []
    for label in labels:
        if label == RANDOM:
            doc = int(rng.integers(len(documents)))
            index = int(rng.integers(len(documents[doc])))
            other_doc = int(rng.choice([d for d in range(len(documents)) if d != doc]))
            other = (other_doc, int(rng.integers(len(documents[other_doc]))))
        else:
            doc = int(rng.choice(multi))
            low, high = (0, len(documents[doc]) - 1) if label == NEXT else (1, len(documents[doc]))
            index, other = int(rng.integers(low, high)), None
        rows.append(build_sentence_pair(documents, doc, index, label, seq_len=seq_len, cls_id=cls_id, sep_id=sep_id,
                                        pad_id=pad_id, other=other))
    ids, segments, pad = (np.asarray([r[k] for r in rows]) for k in range(3))
    return SentencePairs(xp.asarray(ids, dtype=xp.int64), xp.asarray(segments, dtype=xp.int64), xp.asarray(pad),
                         xp.asarray(np.asarray(labels), dtype=xp.int64))
