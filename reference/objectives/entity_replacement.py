"""WKLM's type-constrained entity replacement (Xiong, Du, Wang, Stoyanov, ICLR 2020; arXiv:1912.09637v1, Sec. 2).

The authors' code is public: xwhan/fairseq-wklm (the first author's fairseq fork; "the code" below):
``fairseq/models/kdn_model.py`` at 84ae840 (the classifier modes), ``fairseq/data/kdn_dataset.py`` at
2c054a8 (mention offsets), ``fairseq/criterions/kdn_loss.py`` at e5e07ef (the losses),
``fairseq/models/masked_lm.py`` about l.218-242 (the MLM head), ``sweep/commands.md`` (the pretraining
command: ``--use-mlm --boundary-loss``). All read as reported in spec/findings.md.

Data construction (no gradient; entity_replacement_data.py): each mention is replaced with
probability 0.5 by a different entity of the same type, never two adjacent mentions; label per
mention 1 replaced, 0 original; masked LM alongside, never inside a mention.

Forward:
    h = Encoder(x)                                                 (B, T, D)
    z = LN(act(h W + b))       the MLM head's transform, read by every mode (masked_lm.py l.218-242)
    classifier = "boundary" (default: the authors' command uses --boundary-loss):
        c_m = [z_{start_m - 1}; z_{end_m + 1}] W_ent + b_ent       (B, M, 2)  tokens just outside the mention
    classifier = "start_end" (--start-end):
        c^s_m = z_{start_m} W_start + b_start,  c^e_m = z_{end_m} W_end + b_end    two 2-way heads
    classifier = "start" (neither flag): c_m = z_{start_m} W_ent + b_ent
    L_ent = mean_{valid m} -log softmax(c_m)[y_m]   (start_end: the two heads' losses added)   Eq. (1)
    L_MLM = mean_{t masked} -log softmax(z_t tok^T + out_bias)[x_t]    (tied output projection)
    L = L_ent + L_MLM                                                                          Eq. (2)

Gathers are matrix products with one-hot selectors S (B, M, T): z_sel = S z.
Backward:
    dc_m = (softmax(c_m) - onehot(y_m)) / n_valid on valid mentions;  dr = dc W^T;  dW = r^T dc
    dz = sum over selectors S^T dr_part + dz_MLM;  then the MLM head's transform and the encoder
    (a position that two selectors pick, such as a one-token mention's start and end, gets both parts).

Axes: B batch, T sequence, M mentions per sequence (padded), V vocabulary, D width, E = D the head width.
Paper symbol -> name: an entity mention -> (mention_start, mention_end) inclusive; replaced / original ->
mention_labels 1 / 0; the classifier -> ent_w (2E, 2), ent_b (2,) (boundary, start) or
ent_start_w/b, ent_end_w/b (start_end).

Deviations / findings:
- The label sense (1 = replaced) is this oracle's; with a 2-way softmax the other sense swaps the
  classifier's two columns and changes nothing else.
- The replacement probability 0.5 and "no two adjacent mentions both replaced" (adjacent read as
  consecutive in mention order) are the paper's Sec. 2 [paper, recalled]; replacement entities are drawn
  uniformly among the other entities of the type.
- The Eq. numbers (1), (2) are this file's, in the order the paper's Sec. 2.2 states the losses.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from ..backend import array_namespace, one_hot
from ..nn.bert_embeddings import require_ids, require_tables
from ..nn.linear import LinearCache, init_linear, linear_backward, linear_forward
from ..nn.losses import IGNORE_INDEX, CrossEntropyCache, cross_entropy_backward, cross_entropy_forward
from ..nn.mlm_head import MLMHeadCache, init_mlm_head, mlm_head_backward, mlm_head_forward, mlm_head_keys
from ..nn.text_encoder import TextEncoderCache, init_text_encoder, text_encoder_backward, text_encoder_forward
from ..validate import require_bool, require_index_range, require_int, require_shape

HEAD = mlm_head_keys("head_")
#: The authors' three entity-classifier modes (kdn_model.py at 84ae840).
CLASSIFIERS = ("boundary", "start_end", "start")
#: Per mode: (parameter prefix, selector offsets) for each 2-way head; "start" and "end" select the
#: mention's own first / last token, "before" / "after" the tokens just outside it.
HEADS = {"boundary": (("ent_", ("before", "after")),),
         "start_end": (("ent_start_", ("start",)), ("ent_end_", ("end",))),
         "start": (("ent_", ("start",)),)}


class HeadCache(NamedTuple):
    prefix: str  # the head's parameter prefix ("ent_", "ent_start_", "ent_end_")
    selectors: tuple[Any, ...]  # each (B, M, T) one-hot
    classifier: LinearCache  # r (B, M, k E) -> (B, M, 2)
    loss: CrossEntropyCache


class EntityReplacementCache(NamedTuple):
    encoder: TextEncoderCache  # h (B, T, D)
    head: MLMHeadCache  # z (B, T, E), logits (B, T, V)
    heads: tuple[HeadCache, ...]
    mlm: CrossEntropyCache


def _positions(mention_start: Any, mention_end: Any) -> dict[str, Any]:
    return {"start": mention_start, "end": mention_end, "before": mention_start - 1, "after": mention_end + 1}


def entity_replacement_forward(ids: Any, pad: Any, mention_start: Any, mention_end: Any, mention_valid: Any,
                               mention_labels: Any, mlm_targets: Any, params: dict[str, Any], *, n_heads: int,
                               n_layers: int = 1, activation: str = "gelu_tanh", classifier: str = "boundary",
                               ) -> tuple[tuple[Any, Any, Any], EntityReplacementCache]:
    """Returns (L, L_ent, L_MLM). params: text-encoder keys, head_* and out_bias (tied MLM head), and the
    classifier's ent_w, ent_b (boundary, start) or ent_start_w/b, ent_end_w/b (start_end)."""
    if classifier not in CLASSIFIERS:
        raise ValueError(f"classifier must be one of {CLASSIFIERS}, got {classifier!r}")
    xp = array_namespace(params["tok"])
    require_tables(params, ("tok", *params))  # every parameter a finite float array
    require_shape("params['tok']", params["tok"], ["vocab", "dim"], [None, None])
    require_ids("ids", ids, params["tok"].shape[0])
    b, t = ids.shape
    require_bool("pad", pad)
    require_shape("pad", pad, ["batch", "seq"], [b, t])
    require_bool("mention_valid", mention_valid)
    require_shape("mention_valid", mention_valid, ["batch", "mentions"], [b, None])
    m = mention_valid.shape[1]
    for name, a in (("mention_start", mention_start), ("mention_end", mention_end), ("mention_labels", mention_labels)):
        require_int(name, a)
        require_shape(name, a, ["batch", "mentions"], [b, m])
    require_index_range("mention_start", mention_start, t)
    require_index_range("mention_end", mention_end, t)
    if bool(xp.any(mention_valid & (mention_labels != 0) & (mention_labels != 1))):
        raise ValueError("mention_labels must be 0 (original) or 1 (replaced) on valid mentions")
    if bool(xp.any(mention_valid & (mention_end < mention_start))):
        raise ValueError("mention_end must be >= mention_start for every valid mention")
    if not bool(xp.any(mention_valid)):
        raise ValueError("mention_valid selects no mention: the entity loss would be empty")
    dtype = params["tok"].dtype
    real = xp.astype(pad, dtype)[:, None, :]  # (B, 1, T)
    positions = _positions(mention_start, mention_end)
    used = {p for _, offsets in HEADS[classifier] for p in offsets} | {"start", "end"}
    hot = {}
    for p in sorted(used):
        inside = (positions[p] >= 0) & (positions[p] < t)  # (B, M)
        hot[p] = one_hot(xp.where(inside, positions[p], xp.zeros_like(positions[p])), t, dtype=dtype)  # (B, M, T)
        on_real = inside & (xp.sum(hot[p] * real, axis=-1) > 0)  # (B, M)
        if bool(xp.any(mention_valid & ~on_real)):
            where = {"before": "the token before the mention", "after": "the token after the mention"}.get(
                p, f"mention_{p}")
            raise ValueError(f"{where} must be a real (non-padding) position for every valid mention "
                             f"(classifier={classifier!r})")

    h, encoder = text_encoder_forward(ids, pad, params, n_heads=n_heads, n_layers=n_layers,
                                      activation=activation)  # (B, T, D)
    logits, head = mlm_head_forward(h, {k: params[name] for k, name in HEAD.items()}, params["tok"],
                                    activation=activation)  # (B, T, V); head.z = LN(act(h W + b)) (B, T, E)
    targets = xp.where(mention_valid, mention_labels, xp.full_like(mention_labels, IGNORE_INDEX))  # (B, M)
    ent_loss, heads = xp.asarray(0.0, dtype=dtype), []
    for prefix, offsets in HEADS[classifier]:
        r = xp.concat([xp.matmul(hot[p], head.z) for p in offsets], axis=-1)  # (B, M, k E)
        c, lin = linear_forward(r, params[prefix + "w"], params[prefix + "b"])  # (B, M, 2)
        loss, ce = cross_entropy_forward(c, targets)  # Eq. (1)
        ent_loss = ent_loss + loss  # start_end: the two heads' losses added
        heads.append(HeadCache(prefix, tuple(hot[p] for p in offsets), lin, ce))
    mlm_loss, mlm = cross_entropy_forward(logits, mlm_targets)
    cache = EntityReplacementCache(encoder, head, tuple(heads), mlm)
    return (ent_loss + mlm_loss, ent_loss, mlm_loss), cache  # Eq. (2)


def entity_replacement_backward(dloss: Any, cache: EntityReplacementCache, *, dent_loss: Any = 0.0,
                                dmlm_loss: Any = 0.0) -> dict[str, Any]:
    """Gradients of ``dloss L + dent_loss L_ent + dmlm_loss L_MLM``."""
    xp = array_namespace(cache.head.z)
    grads: dict[str, Any] = {}
    dz = xp.zeros_like(cache.head.z)  # (B, T, E)
    for head_cache in cache.heads:
        dc = cross_entropy_backward(dloss + dent_loss, head_cache.loss)  # (B, M, 2)
        dr, lin = linear_backward(dc, head_cache.classifier)  # (B, M, k E)
        width = dr.shape[-1] // len(head_cache.selectors)
        for k, hot in enumerate(head_cache.selectors):  # z_sel = S z  =>  dz += S^T dr_part
            dz = dz + xp.matmul(xp.matrix_transpose(hot), dr[..., k * width:(k + 1) * width])  # (B, T, E)
        grads[head_cache.prefix + "w"], grads[head_cache.prefix + "b"] = lin["w"], lin["b"]
    dlogits = cross_entropy_backward(dloss + dmlm_loss, cache.mlm)  # (B, T, V)
    dh, head, dtok_out = mlm_head_backward(dlogits, cache.head, dz_extra=dz)  # (B, T, D)
    grads.update(text_encoder_backward(dh, cache.encoder))
    grads["tok"] = grads["tok"] + dtok_out  # tied output projection
    grads.update({HEAD[k]: v for k, v in head.items()})
    return grads


def init_entity_replacement(rng, *, vocab: int, n_positions: int, d_model: int, d_ff: int, xp, dtype,
                            n_layers: int = 1, classifier: str = "boundary") -> dict[str, Any]:
    """A text encoder, a tied MLM head of width d_model and the classifier's 2-way heads."""
    params = init_text_encoder(rng, vocab, n_positions, d_model, d_model, d_ff, xp=xp, dtype=dtype, n_layers=n_layers)
    params.update({HEAD[k]: v for k, v in init_mlm_head(rng, d_model, d_model, vocab, xp=xp, dtype=dtype).items()})
    for prefix, offsets in HEADS[classifier]:
        lin = init_linear(rng, len(offsets) * d_model, 2, xp=xp, dtype=dtype)
        params[prefix + "w"], params[prefix + "b"] = lin["w"], lin["b"]
    return params
