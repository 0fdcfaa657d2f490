"""ALBERT: factorized embedding parameterization, cross-layer parameter sharing, sentence-order prediction.

Lan, Chen, Goodman, Gimpel, Sharma, Soricut, "ALBERT: A Lite BERT for Self-supervised Learning of
Language Representations", ICLR 2020, arXiv:1909.11942v6, §3.1 (spec architecture.md §3.3-3.5).
Parameter counts and the paper's tables: :mod:`.albert_params`; registered cases and configurations:
:mod:`reference.architecture.cases.albert`. Equation numbers (1)-(7) are this docstring's.

Axes: B batch, T sequence, V vocabulary, P positions, E embedding width, Hd hidden width (the paper's H),
F feed-forward width, L layers, heads of width Hd / heads.

Forward:

    e_t = LN_E(E_word[x_t] + E_pos[t] + E_type[s_t]) * drop         (B, T, E)   V x E tables         (1)
    H^0 = e W_proj + b_proj                                         (B, T, Hd)  O(V E + E Hd)        (2)
    H^l = Block(H^{l-1}; theta_attn(l), theta_ffn(l))  l = 1..L     post-LN encoder layer            (3)
    p = tanh(H^L_0 W_p + b_p)                                        (B, Hd)     pooled [CLS]         (4)
    dtheta = sum_l dtheta^{(l)}                                      a shared weight's gradient       (5)
    SOP logits = p W_s + b_s;  L_SOP = mean_b CE(logits_b, order_b)  label 0: A then B; 1: swapped    (6)
    MLM logits_t = LN_m(GELU(H^L_t W_m + b_m)) E_word^T + b_out       decoder tied to E_word           (7)
    L = L_MLM + L_SOP

The encoder alone (:func:`albert_encoder_forward`, HF's ``AlbertModel``) is (1)-(4) without the heads.

Sharing (paper §3.1 and Table 4): theta_attn(l) = W_Q, W_K, W_V, W_O, their biases, LN_1; theta_ffn(l) =
W_1, W_2, their biases, LN_2. "all": both shared by every layer; "attention": theta_attn shared;
"ffn": theta_ffn shared; "none": BERT. A shared tensor is keyed "block_<name>", a per-layer one
"layer<l>_<name>".

Backward: the layers in reverse; a shared weight's gradient is the sum of its per-use VJPs,
    dtheta = sum_l dtheta^{(l)}        (the chain rule through every layer that reads theta),
the tied E_word gets the embedding scatter-add plus the MLM decoder's dlogits^T z, and
the pooler's tanh gives dpre = dp (1 - p^2).

**Deviations** (spec §3.10): attention masks use MASKED_SCORE (-1e9) with a ``where``, not the official
additive -10000, so padded keys get exactly zero gradient; L_MLM is the mean over targeted positions
(HF), not sum / (sum w + 1e-5) (official); the projection exists only when E != Hd (official, not HF);
the code's G groups x K inner layers are not implemented, the paper's four sharing modes are.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, NamedTuple

from ..backend import array_namespace
from ..nn.attention import ATTENTION_PARAMS, padding_mask
from ..nn.bert_embeddings import BertEmbeddingsCache, bert_embeddings_backward, bert_embeddings_forward
from ..nn.encoder_layer import EncoderLayerCache, encoder_layer_backward, encoder_layer_forward
from ..nn.feed_forward import FFN_PARAMS
from ..nn.linear import LinearCache, linear_backward, linear_forward
from ..nn.losses import IGNORE_INDEX, CrossEntropyCache, cross_entropy_backward, cross_entropy_forward
from ..nn.mlm_head import MLMHeadCache, mlm_head_backward, mlm_head_forward
from ..validate import require_bool, require_index_range, require_int, require_shape

SHARING = ("all", "attention", "ffn", "none")
ATTENTION_GROUP = ATTENTION_PARAMS + ("ln1_gamma", "ln1_beta")  # theta_attn: attention and the LN after it
FFN_GROUP = FFN_PARAMS + ("ln2_gamma", "ln2_beta")  # theta_ffn: feed-forward and the LN after it
EMBEDDING_KEYS = ("tok", "pos", "seg", "ln_gamma", "ln_beta")
MLM_KEYS = {"mlm_w": "w", "mlm_b": "b", "mlm_ln_gamma": "ln_gamma", "mlm_ln_beta": "ln_beta",
            "mlm_out_bias": "out_bias"}


@dataclass(frozen=True)
class AlbertConfig:
    n_layers: int  # L
    n_heads: int
    sharing: str = "all"  # all (the paper's default, §3.1), attention, ffn, none
    activation: str = "gelu_tanh"  # the official "gelu" is the tanh form (modeling.py:299-312)
    eps: float = 1e-12  # BERT/ALBERT layer-norm epsilon

    def __post_init__(self) -> None:
        for name in ("n_layers", "n_heads"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"AlbertConfig.{name} must be a positive integer, got {value!r}")
        if self.sharing not in SHARING:
            raise ValueError(f"AlbertConfig.sharing must be one of {SHARING}, got {self.sharing!r}")
        if not self.eps > 0:
            raise ValueError(f"AlbertConfig.eps must be positive, got {self.eps!r}")


def layer_keys(sharing: str, layer: int) -> dict[str, str]:
    """Map a block's parameter names to the model's keys for one layer (who shares what)."""
    attn = "block_" if sharing in ("all", "attention") else f"layer{layer}_"
    ffn = "block_" if sharing in ("all", "ffn") else f"layer{layer}_"
    return {**{k: attn + k for k in ATTENTION_GROUP}, **{k: ffn + k for k in FFN_GROUP}}


class AlbertEncoderOutputs(NamedTuple):
    h: Any  # (B, T, Hd) final hidden states
    pooled: Any | None  # (B, Hd) tanh(H^L_0 W_p + b_p), or None without the pooler
    hidden_states: tuple  # L + 1 arrays (B, T, Hd): H^0 .. H^L (paper Figure 1)


class AlbertEncoderCache(NamedTuple):
    config: AlbertConfig
    embeddings: BertEmbeddingsCache  # (B, T, E)
    drop_emb: Any | None  # (B, T, E)
    proj: LinearCache | None  # (B, T, E) -> (B, T, Hd)
    layers: tuple[EncoderLayerCache, ...]  # L x (B, T, Hd)
    t: int  # T
    pool: LinearCache | None  # (B, Hd) -> (B, Hd)
    pooled: Any | None  # (B, Hd) tanh output
    hidden_states: tuple  # H^0 .. H^L (B, T, Hd), kept for the named intermediates


class AlbertOutputs(NamedTuple):
    h: Any  # (B, T, Hd) final hidden states
    sop_logits: Any  # (B, 2)
    mlm_logits: Any  # (B, T, V)
    loss: Any  # () L_MLM + L_SOP
    sop_loss: Any  # ()
    mlm_loss: Any  # ()
    hidden_states: tuple  # L + 1 arrays (B, T, Hd): H^0 .. H^L (paper Figure 1)


class AlbertCache(NamedTuple):
    encoder: AlbertEncoderCache
    sop: LinearCache  # (B, Hd) -> (B, 2)
    sop_ce: CrossEntropyCache
    mlm: MLMHeadCache
    mlm_ce: CrossEntropyCache


def _check_batch(ids: Any, segments: Any, pad: Any, params: dict[str, Any], config: AlbertConfig) -> None:
    if not isinstance(config, AlbertConfig):
        raise TypeError(f"config must be an AlbertConfig, got {type(config).__name__}")
    if not isinstance(params, dict) or "tok" not in params:
        raise TypeError("params must be a dict of arrays holding at least 'tok' (the token table)")
    require_int("ids", ids)
    if ids.ndim != 2 or 0 in tuple(ids.shape):
        raise ValueError(f"ids must have a non-empty shape (batch, seq), got {tuple(ids.shape)}")
    require_index_range("ids", ids, params["tok"].shape[0])
    require_shape("segments", segments, ["batch", "seq"], list(ids.shape))
    require_index_range("segments", segments, params["seg"].shape[0])
    require_bool("pad", pad)
    require_shape("pad", pad, ["batch", "seq"], list(ids.shape))


def albert_encoder_forward(ids: Any, segments: Any, pad: Any, params: dict[str, Any], config: AlbertConfig, *,
                           pooler: bool = True,
                           dropout: dict[str, Any] | None = None) -> tuple[AlbertEncoderOutputs, AlbertEncoderCache]:
    """The encoder without its pretraining heads (HF ``AlbertModel``): embeddings, projection, L shared layers
    and (``pooler=True``) the tanh pooler of [CLS]. ids, segments (B, T) int; pad (B, T) bool (True = token).
    dropout: optional "emb" (B, T, E) and "layers": L encoder-layer dicts."""
    xp = array_namespace(params["tok"])
    _check_batch(ids, segments, pad, params, config)
    dropout = dropout or {}
    e, embeddings = bert_embeddings_forward(ids, {k: params[k] for k in EMBEDDING_KEYS}, segments=segments,
                                            eps=config.eps)  # (B, T, E)                         Eq. (1)
    drop_emb = dropout.get("emb")
    e = e if drop_emb is None else e * drop_emb
    proj, x = None, e
    if "proj_w" in params:  # factorized embedding: E -> Hd
        x, proj = linear_forward(e, params["proj_w"], params["proj_b"])  # (B, T, Hd)          Eq. (2)
    mask = padding_mask(pad)  # (B, 1, 1, T)
    hidden, layers = [x], []
    layer_dropout = dropout.get("layers")
    for layer in range(config.n_layers):
        block = {k: params[key] for k, key in layer_keys(config.sharing, layer).items()}  # shared keys repeat
        x, cache = encoder_layer_forward(x, block, n_heads=config.n_heads, mask=mask, activation=config.activation,
                                         eps=config.eps,
                                         dropout=None if layer_dropout is None else layer_dropout[layer])  # Eq. (3)
        hidden.append(x)
        layers.append(cache)
    pool = pooled = None
    if pooler:
        pre, pool = linear_forward(x[:, 0, :], params["pool_w"], params["pool_b"])  # (B, Hd)
        pooled = xp.tanh(pre)  # (B, Hd)                                                         Eq. (4)
    return (AlbertEncoderOutputs(x, pooled, tuple(hidden)),
            AlbertEncoderCache(config, embeddings, drop_emb, proj, tuple(layers), ids.shape[1], pool, pooled,
                               tuple(hidden)))


def albert_encoder_backward(dh: Any | None, cache: AlbertEncoderCache, *, dpooled: Any | None = None,
                            grads: dict[str, Any] | None = None) -> dict[str, Any]:
    """Gradients of the encoder's parameters from cotangents of h (B, T, Hd) and the pooled vector (B, Hd).

    ``grads`` (not mutated) holds gradients already due to shared keys (the tied token table); the result adds to
    a copy of it."""
    xp = array_namespace(cache.embeddings.ln.xhat)
    if dh is None and dpooled is None:
        raise ValueError("albert_encoder_backward needs a cotangent: dh, dpooled or both")
    grads = dict(grads or {})
    if dh is None:
        dh = xp.zeros((dpooled.shape[0], cache.t, dpooled.shape[1]), dtype=dpooled.dtype)  # (B, T, Hd)  # not gradient-checked: a pooled-only cotangent (test_encoder_is_the_pretraining_model_without_its_heads)
    dx = dh
    if dpooled is not None:
        dpre = dpooled * (1.0 - cache.pooled * cache.pooled)  # tanh'
        dcls, pool = linear_backward(dpre, cache.pool)  # (B, Hd)
        grads["pool_w"], grads["pool_b"] = pool["w"], pool["b"]
        is_cls = xp.astype(xp.arange(cache.t) == 0, dx.dtype)[None, :, None]  # (1, T, 1)
        dx = dx + is_cls * dcls[:, None, :]  # (B, T, Hd) the pooler reads H^L_0
    for layer in reversed(range(cache.config.n_layers)):
        dx, block = encoder_layer_backward(dx, cache.layers[layer])  # (B, T, Hd)
        for name, key in layer_keys(cache.config.sharing, layer).items():
            _accumulate(grads, key, block[name])  # dtheta = sum_l dtheta^{(l)}                  Eq. (5)
    if cache.proj is not None:
        dx, proj = linear_backward(dx, cache.proj)  # (B, T, E)
        grads["proj_w"], grads["proj_b"] = proj["w"], proj["b"]
    if cache.drop_emb is not None:
        dx = dx * cache.drop_emb
    for key, value in bert_embeddings_backward(dx, cache.embeddings).items():
        _accumulate(grads, key, value)  # "tok" gets the input side here
    return grads


def albert_forward(ids: Any, segments: Any, pad: Any, params: dict[str, Any], config: AlbertConfig, *,
                   mlm_targets: Any, sop_labels: Any,
                   dropout: dict[str, Any] | None = None) -> tuple[AlbertOutputs, AlbertCache]:
    """ids, segments (B, T) int; pad (B, T) bool (True = token); mlm_targets (B, T) int (-100 = not
    predicted); sop_labels (B,) int in {0, 1}. dropout: optional "emb" (B, T, E) and "layers": L encoder-layer
    dicts."""
    _check_batch(ids, segments, pad, params, config)
    require_int("mlm_targets", mlm_targets)
    require_shape("mlm_targets", mlm_targets, ["batch", "seq"], list(ids.shape))
    predicted = mlm_targets != IGNORE_INDEX
    vocab = params["tok"].shape[0]
    if bool(array_namespace(ids).any(predicted & ((mlm_targets < 0) | (mlm_targets >= vocab)))):
        raise ValueError(f"mlm_targets must lie in [0, {vocab}) or be {IGNORE_INDEX} (not predicted)")
    require_int("sop_labels", sop_labels)
    require_shape("sop_labels", sop_labels, ["batch"], [ids.shape[0]])
    require_index_range("sop_labels", sop_labels, 2)
    encoded, encoder = albert_encoder_forward(ids, segments, pad, params, config, pooler=True, dropout=dropout)
    x = encoded.h
    sop_logits, sop = linear_forward(encoded.pooled, params["sop_w"], params["sop_b"])  # (B, 2)
    sop_loss, sop_ce = cross_entropy_forward(sop_logits, sop_labels)  # ()                       Eq. (6)
    mlm_logits, mlm = mlm_head_forward(x, {v: params[k] for k, v in MLM_KEYS.items()}, params["tok"],
                                       activation=config.activation, eps=config.eps)  # (B, T, V)
    mlm_loss, mlm_ce = cross_entropy_forward(mlm_logits, mlm_targets)  # ()                      Eq. (7)
    outputs = AlbertOutputs(x, sop_logits, mlm_logits, mlm_loss + sop_loss, sop_loss, mlm_loss, encoded.hidden_states)
    return outputs, AlbertCache(encoder, sop, sop_ce, mlm, mlm_ce)


def _accumulate(grads: dict[str, Any], key: str, value: Any) -> None:
    """A shared tensor's gradient is the sum over its uses (``grads`` is the caller's own working dict)."""
    grads[key] = value if key not in grads else grads[key] + value


def albert_backward(dloss: Any, cache: AlbertCache, *, dh: Any | None = None,
                    dsop_logits: Any | None = None) -> dict[str, Any]:
    """Gradients of every parameter for cotangents of the loss (and optionally of h and the SOP logits)."""
    grads: dict[str, Any] = {}
    dmlm_logits = cross_entropy_backward(dloss, cache.mlm_ce)  # (B, T, V)
    dx, mlm_grads, dtable = mlm_head_backward(dmlm_logits, cache.mlm)  # (B, T, Hd)
    grads.update({k: mlm_grads[v] for k, v in MLM_KEYS.items()})
    grads["tok"] = dtable  # the tied decoder's share of dE_word
    if dh is not None:
        dx = dx + dh
    dsop = cross_entropy_backward(dloss, cache.sop_ce)  # (B, 2)
    if dsop_logits is not None:
        dsop = dsop + dsop_logits
    dpooled, sop = linear_backward(dsop, cache.sop)  # (B, Hd)
    grads["sop_w"], grads["sop_b"] = sop["w"], sop["b"]
    return albert_encoder_backward(dx, cache.encoder, dpooled=dpooled, grads=grads)


def layer_transition_metrics(hidden_states: Any, pad: Any) -> tuple[Any, Any]:
    """Paper Figure 1: per layer, the L2 distance and the angle in degrees between its input and output
    embedding of each token, averaged over the real tokens [the paper does not state the averaging, U].

    hidden_states: L + 1 arrays (B, T, Hd); pad (B, T) bool. Returns (L,) distances and (L,) angles.
    """
    xp = array_namespace(pad)
    weight = xp.astype(pad, hidden_states[0].dtype)  # (B, T)
    count = xp.sum(weight)
    distances, angles = [], []
    for before, after in zip(hidden_states[:-1], hidden_states[1:]):
        diff = after - before
        dist = xp.sqrt(xp.sum(diff * diff, axis=-1))  # (B, T)
        cos = xp.sum(before * after, axis=-1) / (xp.linalg.vector_norm(before, axis=-1)
                                                 * xp.linalg.vector_norm(after, axis=-1))  # (B, T)
        angle = xp.acos(xp.clip(cos, -1.0, 1.0)) * (180.0 / math.pi)  # (B, T)
        distances.append(xp.sum(dist * weight) / count)
        angles.append(xp.sum(angle * weight) / count)
    return xp.stack(distances), xp.stack(angles)
