"""WKLM's type-constrained entity replacement (Xiong, Du, Wang, Stoyanov, ICLR 2020; arXiv:1912.09637v1, Sec. 2).

Data construction (no gradient; entity_replacement_data.py):
    Mentions are spans linked to entities; each entity has a type. Walking the mentions in
    order, a mention is replaced with probability 0.5 by the surface tokens of a different
    entity of the same type, except that a mention right after a replaced one is kept (no two
    adjacent mentions both replaced). The span length may change; the new spans are returned.
    Label per mention: 1 replaced, 0 original. MLM alongside at 5%, never inside a mention.

Forward:
    h = Encoder(x)                                             (B, T, D)
    r_m = [h_{start_m}; h_{end_m}]                             (B, M, 2D) boundary tokens of mention m
    z_m = r_m w + b                                            (B, M)     P(mention m replaced) = sigmoid(z_m)
    L_ent = mean_{valid m} BCEWithLogits(z_m, y_m)             [L_entRep], Sec. 2.2 (y = 1: replaced)
    L_MLM = mean_{t masked} -log softmax(MLMHead(h)_t)[x_t]    (tied output projection)
    L = L_ent + L_MLM

Gathers are matrix products with one-hot selectors S (B, M, T), E (B, M, T):
    h_start = S h,  h_end = E h.
Backward:
    dz_m = (sigmoid(z_m) - y_m) / n_valid on valid mentions;  dr = dz w^T;  dw = r^T dz
    dh = S^T dr[..., :D] + E^T dr[..., D:] + dh_MLM
    (a one-token mention has start = end: that position receives both halves).

Axes: B batch, T sequence, M mentions per sequence (padded), V vocabulary, D width.
Paper symbol -> name: e (an entity mention) -> (mention_start, mention_end); replaced / original ->
mention_labels (1 / 0); the classifier over the boundary tokens -> ent_w (2D, 1), ent_b (1,).

Deviations / findings:
- The paper's classifier predicts whether the entity is original; labelling "replaced" as 1 flips
  the sign of z and changes nothing else (the loss is symmetric in that relabelling).
- "Adjacent" is read as consecutive in mention order; the paper's exact rule and the authors'
  pretraining code were not found, so this reading is this oracle's (docs page).
- Replacement entities are drawn uniformly among the other entities of the type (the paper samples
  from entities of the same type in its Wikipedia corpus).
"""

from __future__ import annotations

from typing import Any, NamedTuple

from ..backend import array_namespace, one_hot
from ..nn.linear import LinearCache, linear_backward, linear_forward
from ..nn.losses import BCECache, CrossEntropyCache, cross_entropy_backward, cross_entropy_forward
from ..nn.losses import sigmoid_bce_backward, sigmoid_bce_forward
from ..nn.mlm_head import MLMHeadCache, mlm_head_backward, mlm_head_forward
from ..nn.text_encoder import TextEncoderCache, text_encoder_backward, text_encoder_forward
from ..validate import require_bool, require_float, require_index_range, require_shape

HEAD_KEYS = ("w", "b", "ln_gamma", "ln_beta", "out_bias")


class EntityReplacementCache(NamedTuple):
    encoder: TextEncoderCache  # h (B, T, D)
    start_hot: Any  # (B, M, T) one-hot S
    end_hot: Any  # (B, M, T) one-hot E
    classifier: LinearCache  # r (B, M, 2D) -> (B, M, 1)
    ent: BCECache  # z (B, M)
    head: MLMHeadCache  # logits (B, T, V)
    mlm: CrossEntropyCache


def entity_replacement_forward(ids: Any, pad: Any, mention_start: Any, mention_end: Any, mention_valid: Any,
                               mention_labels: Any, mlm_targets: Any, params: dict[str, Any], *, n_heads: int,
                               n_layers: int = 1, activation: str = "gelu_tanh",
                               ) -> tuple[tuple[Any, Any, Any], EntityReplacementCache]:
    """Returns (L, L_ent, L_MLM). params: text-encoder keys, head_* and out_bias (tied MLM head), ent_w, ent_b."""
    xp = array_namespace(params["tok"])
    b, t = ids.shape
    require_index_range("ids", ids, params["tok"].shape[0])
    require_bool("mention_valid", mention_valid)
    m = mention_valid.shape[-1]
    for name, a in (("mention_start", mention_start), ("mention_end", mention_end), ("mention_valid", mention_valid),
                    ("mention_labels", mention_labels)):
        require_shape(name, a, ["batch", "mentions"], [b, m])
    require_index_range("mention_start", mention_start, t)
    require_index_range("mention_end", mention_end, t)
    require_float("mention_labels", mention_labels)
    if bool(xp.any(mention_valid & (mention_end < mention_start))):
        raise ValueError("mention_end must be >= mention_start for every valid mention")
    if not bool(xp.any(mention_valid)):
        raise ValueError("mention_valid selects no mention: the entity loss would be empty")
    dtype = params["tok"].dtype
    start_hot = one_hot(mention_start, t, dtype=dtype)  # (B, M, T)
    end_hot = one_hot(mention_end, t, dtype=dtype)  # (B, M, T)
    real = xp.astype(pad, dtype)[:, None, :]  # (B, 1, T)
    on_real = (xp.sum(start_hot * real, axis=-1) > 0) & (xp.sum(end_hot * real, axis=-1) > 0)  # (B, M)
    if bool(xp.any(mention_valid & ~on_real)):
        raise ValueError("every valid mention must lie on real (non-padding) tokens")

    h, encoder = text_encoder_forward(ids, pad, params, n_heads=n_heads, n_layers=n_layers,
                                      activation=activation)  # (B, T, D)
    r = xp.concat([xp.matmul(start_hot, h), xp.matmul(end_hot, h)], axis=-1)  # (B, M, 2D)  [h_start; h_end]
    z, classifier = linear_forward(r, params["ent_w"], params["ent_b"])  # (B, M, 1)
    ent_loss, ent = sigmoid_bce_forward(z[..., 0], mention_labels, xp.astype(mention_valid, h.dtype))  # [L_entRep]

    head_params = {k: params["head_" + k] if k != "out_bias" else params["out_bias"] for k in HEAD_KEYS}
    logits, head = mlm_head_forward(h, head_params, params["tok"], activation=activation)  # (B, T, V)
    mlm_loss, mlm = cross_entropy_forward(logits, mlm_targets)
    cache = EntityReplacementCache(encoder, start_hot, end_hot, classifier, ent, head, mlm)
    return (ent_loss + mlm_loss, ent_loss, mlm_loss), cache


def entity_replacement_backward(dloss: Any, cache: EntityReplacementCache, *, dent_loss: Any = 0.0,
                                dmlm_loss: Any = 0.0) -> dict[str, Any]:
    """Gradients of ``dloss L + dent_loss L_ent + dmlm_loss L_MLM``."""
    xp = array_namespace(cache.start_hot)
    dz = sigmoid_bce_backward(dloss + dent_loss, cache.ent)  # (B, M)
    dr, cls = linear_backward(dz[..., None], cache.classifier)  # (B, M, 2D)
    d = dr.shape[-1] // 2
    # h_start = S h, h_end = E h  =>  dh = S^T dh_start + E^T dh_end (shared boundaries add up)
    dh = (xp.matmul(xp.matrix_transpose(cache.start_hot), dr[..., :d])
          + xp.matmul(xp.matrix_transpose(cache.end_hot), dr[..., d:]))  # (B, T, D)
    dlogits = cross_entropy_backward(dloss + dmlm_loss, cache.mlm)  # (B, T, V)
    dh_mlm, head, dtok_out = mlm_head_backward(dlogits, cache.head)
    grads = text_encoder_backward(dh + dh_mlm, cache.encoder)
    grads["tok"] = grads["tok"] + dtok_out  # tied output projection
    grads.update({"head_" + k if k != "out_bias" else k: v for k, v in head.items()})
    grads["ent_w"], grads["ent_b"] = cls["w"], cls["b"]
    return grads
