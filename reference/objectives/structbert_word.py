"""StructBERT's word structural objective (Wang et al., ICLR 2020; arXiv:1908.04577v3, Sec. 2.2).

Data construction (no gradient; ``sample_structbert_word``):
    1. BERT's masked LM: round(mask_rate * n_real) (at least 1) non-special real positions M;
       80% show [MASK], 10% a random token, 10% keep their token.
    2. Trigrams: among windows (t, t+1, t+2) of real, non-special, unmasked tokens, choose
       max(1, round(trigram_rate * n_windows)) non-overlapping ones (the paper: 5% of trigrams).
    3. Shuffle each chosen trigram by a permutation pi that is not the identity:
       x~_{t+j} = x_{t+pi(j)}, j = 0, 1, 2.
    4. Targets: the original token at each position of a shuffled trigram (all three; a
       position that pi keeps in place is still predicted), and at each masked position.

Forward:
    h = Encoder(x~)                                                    (B, T, D)
    logits = MLMHead(h)   (dense -> GELU -> LayerNorm -> tok^T + bias, tied)   (B, T, V)
    L_MLM = mean_{t in M} -log softmax(logits_t)[x_t]
    L_word = mean_{t in shuffled} -log softmax(logits_t)[x_t]          Eq. (1): max sum log P(pos_t = x_t | x~)
             (word_reduction="sum": the sum over shuffled positions, Eq. (1) as written)
    L = L_MLM + L_word

Backward:
    dlogits_t = dL_MLM (p_t - onehot(x_t)) / |M| [t in M] + dL_word (p_t - onehot(x_t)) / |S| [t in S]
    then the tied head (its tok contribution is added to the input embedding's) and the encoder.

Axes: B batch, T sequence, V vocabulary, D width, F feed-forward width.
Paper symbol -> name: t_1..t_K (a shuffled span) -> a trigram at ``trigram_starts``; K = 3;
P(pos_i = t_i) -> softmax(logits); theta -> params.

Deviations / findings:
- The paper gives Eq. (1) as a sum of log-likelihoods; averaging over shuffled positions (like
  BERT's MLM average, the spec's reading, spec/objectives.md Sec. 2 item 3) is the default and
  ``word_reduction="sum"`` the option; the authors' pretraining code is not public (their release,
  alibaba/AliceMind StructBERT/, has fine-tuning code only), so the normalisation is not confirmed.
- Defaults from the paper as the spec reads it [spec, paper recalled]: BERT's 15% masking (80/10/10),
  5% of trigrams, K = 3. The tanh GELU is BERT's TF modeling.py form [recalled]; "gelu" is the option.
- "5% of trigrams" is read as a share of the valid windows, rounded, at least one per sequence;
  a sequence with no valid window is an error, not silently skipped.
- The MLM and word objectives share one output head (the paper uses the MLM softmax for both).
"""

from __future__ import annotations

from itertools import permutations
from typing import Any, NamedTuple

import numpy as np

from ..backend import array_namespace, from_numpy, to_numpy
from ..nn.bert_embeddings import require_ids, require_tables
from ..nn.losses import IGNORE_INDEX, CrossEntropyCache, cross_entropy_backward, cross_entropy_forward
from ..nn.mlm_head import MLMHeadCache, init_mlm_head, mlm_head_backward, mlm_head_forward, mlm_head_keys
from ..nn.text_encoder import TextEncoderCache, init_text_encoder, text_encoder_backward, text_encoder_forward
from ..validate import require_int, require_shape

#: The five non-identity orderings of a trigram.
SHUFFLES = tuple(p for p in permutations(range(3)) if p != (0, 1, 2))
HEAD = mlm_head_keys("head_")
#: How L_word averages: "mean" over shuffled positions (spec/objectives.md Sec. 2 item 3, like BERT's MLM
#: average) or "sum", Eq. (1)'s sum of log-likelihoods over the batch's shuffled positions.
WORD_REDUCTIONS = ("mean", "sum")


class StructBertWordExample(NamedTuple):
    input_ids: Any  # (B, T) int, masked and shuffled
    mlm_targets: Any  # (B, T) int, original token at masked positions, IGNORE_INDEX elsewhere
    word_targets: Any  # (B, T) int, original token at shuffled-trigram positions, IGNORE_INDEX elsewhere
    trigram_starts: list  # per sequence, the chosen window starts
    shuffles: list  # per sequence, the permutation of each chosen trigram


class StructBertWordCache(NamedTuple):
    encoder: TextEncoderCache  # h (B, T, D)
    head: MLMHeadCache  # logits (B, T, V)
    mlm: CrossEntropyCache
    word: CrossEntropyCache
    word_scale: Any  # () 1 ("mean") or the number of shuffled positions ("sum")


def structbert_word_forward(input_ids: Any, pad: Any, mlm_targets: Any, word_targets: Any,
                            params: dict[str, Any], *, n_heads: int, n_layers: int = 1,
                            activation: str = "gelu_tanh", word_reduction: str = "mean",
                            ) -> tuple[tuple[Any, Any, Any], StructBertWordCache]:
    """Returns (L, L_MLM, L_word). params: text-encoder keys plus head_w, head_b, head_ln_gamma, head_ln_beta,
    out_bias; the head's output projection is params["tok"] (tied)."""
    xp = array_namespace(params["tok"])
    require_tables(params, ("tok", *params))  # every parameter a finite float array
    require_shape("params['tok']", params["tok"], ["vocab", "dim"], [None, None])
    vocab = params["tok"].shape[0]
    require_ids("input_ids", input_ids, vocab)
    if word_reduction not in WORD_REDUCTIONS:
        raise ValueError(f"word_reduction must be one of {WORD_REDUCTIONS}, got {word_reduction!r}")
    for name, targets in (("mlm_targets", mlm_targets), ("word_targets", word_targets)):
        require_int(name, targets)
        require_shape(name, targets, ["batch", "seq"], list(input_ids.shape))
        valid = targets != IGNORE_INDEX
        if bool(xp.any(valid & ((targets < 0) | (targets >= vocab)))):
            raise ValueError(f"{name} must lie in [0, {vocab}) or equal IGNORE_INDEX={IGNORE_INDEX}")
        if not bool(xp.any(valid)):
            raise ValueError(f"{name} has no target: its loss would be empty")
    h, encoder = text_encoder_forward(input_ids, pad, params, n_heads=n_heads, n_layers=n_layers,
                                      activation=activation)  # (B, T, D)
    logits, head = mlm_head_forward(h, {k: params[name] for k, name in HEAD.items()}, params["tok"],
                                    activation=activation)  # (B, T, V)
    mlm_loss, mlm = cross_entropy_forward(logits, mlm_targets)
    word_mean, word = cross_entropy_forward(logits, word_targets)
    scale = word.count if word_reduction == "sum" else xp.asarray(1.0, dtype=logits.dtype)
    word_loss = scale * word_mean  # Eq. (1): -sum log P(pos_t = x_t | x~), averaged unless "sum"
    return (mlm_loss + word_loss, mlm_loss, word_loss), StructBertWordCache(encoder, head, mlm, word, scale)


def structbert_word_backward(dloss: Any, cache: StructBertWordCache, *, dmlm_loss: Any = 0.0,
                             dword_loss: Any = 0.0) -> dict[str, Any]:
    """Gradients of ``dloss L + dmlm_loss L_MLM + dword_loss L_word``."""
    dlogits = (cross_entropy_backward(dloss + dmlm_loss, cache.mlm)
               + cross_entropy_backward(cache.word_scale * (dloss + dword_loss), cache.word))  # (B, T, V)
    dh, head, dtok_out = mlm_head_backward(dlogits, cache.head)  # (B, T, D), (V, D)
    grads = text_encoder_backward(dh, cache.encoder)
    grads["tok"] = grads["tok"] + dtok_out  # tied: input embedding + output projection
    grads.update({HEAD[k]: v for k, v in head.items()})
    return grads


def init_structbert_word(rng, *, vocab: int, n_positions: int, d_model: int, d_ff: int, xp, dtype,
                         n_layers: int = 1) -> dict[str, Any]:
    """A text encoder of width d_model (no projection) and a tied MLM head."""
    params = init_text_encoder(rng, vocab, n_positions, d_model, d_model, d_ff, xp=xp, dtype=dtype, n_layers=n_layers)
    params.update({HEAD[k]: v for k, v in init_mlm_head(rng, d_model, d_model, vocab, xp=xp, dtype=dtype).items()})
    return params


def sample_structbert_word(rng: np.random.Generator, ids: Any, pad: Any, *, mask_id: int, vocab_size: int,
                           special_ids: tuple[int, ...] = (), mask_rate: float = 0.15,
                           trigram_rate: float = 0.05, xp=None) -> StructBertWordExample:
    """BERT masking, then non-overlapping trigrams of unmasked tokens shuffled by non-identity permutations."""
    for name, rate in (("mask_rate", mask_rate), ("trigram_rate", trigram_rate)):
        if not 0.0 < rate < 1.0:
            raise ValueError(f"{name} must lie in (0, 1), got {rate}")
    xp = xp or array_namespace(ids)
    x = np.asarray(to_numpy(ids))
    real = np.asarray(to_numpy(pad)).astype(bool)
    if x.ndim != 2 or real.shape != x.shape:
        raise ValueError(f"ids and pad must have shape (batch, seq), got {x.shape} and {real.shape}")
    if x.size and (x.min() < 0 or x.max() >= vocab_size):
        raise ValueError(f"ids must lie in [0, {vocab_size}), got values in [{x.min()}, {x.max()}]")
    ordinary = real & ~np.isin(x, special_ids)
    out = x.copy()
    mlm_targets = np.full(x.shape, IGNORE_INDEX)
    word_targets = np.full(x.shape, IGNORE_INDEX)
    normal_ids = np.setdiff1d(np.arange(vocab_size), special_ids)
    starts_all, shuffles_all = [], []
    for row in range(x.shape[0]):
        if not real[row].any():  # a fully padded row: nothing to mask or shuffle
            starts_all.append([])
            shuffles_all.append([])
            continue
        candidates = np.flatnonzero(ordinary[row])
        if candidates.size == 0:
            raise ValueError(f"sequence {row} has no maskable token")
        count = int(min(max(1, np.round(real[row].sum() * mask_rate)), candidates.size))
        masked = rng.choice(candidates, size=count, replace=False)
        mlm_targets[row, masked] = x[row, masked]
        kind = rng.uniform(size=count)  # BERT: 80% [MASK], 10% random token, 10% keep
        out[row, masked] = np.where(kind < 0.8, mask_id,
                                    np.where(kind < 0.9, rng.choice(normal_ids, size=count), x[row, masked]))
        free = ordinary[row].copy()
        free[masked] = False
        windows = np.flatnonzero(free[:-2] & free[1:-1] & free[2:]) if x.shape[1] >= 3 else np.zeros(0, int)
        if windows.size == 0:
            raise ValueError(f"sequence {row} has no three consecutive unmasked ordinary tokens: "
                             "too short for a trigram")
        wanted = max(1, int(np.round(trigram_rate * windows.size)))
        starts: list[int] = []
        for start in rng.permutation(windows):  # non-overlapping, in random order
            if len(starts) == wanted:
                break
            if all(abs(int(start) - s) >= 3 for s in starts):
                starts.append(int(start))
        shuffles = [SHUFFLES[int(rng.integers(len(SHUFFLES)))] for _ in starts]
        for start, perm in zip(starts, shuffles):
            span = x[row, start:start + 3]
            out[row, start:start + 3] = span[list(perm)]  # x~_{t+j} = x_{t+pi(j)}
            word_targets[row, start:start + 3] = span
        starts_all.append(starts)
        shuffles_all.append(shuffles)
    return StructBertWordExample(from_numpy(out, xp, xp.int64), from_numpy(mlm_targets, xp, xp.int64),
                                 from_numpy(word_targets, xp, xp.int64), starts_all, shuffles_all)
