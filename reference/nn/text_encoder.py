"""A BERT-style text encoder: input embeddings, an optional projection, and a stack of post-LN encoder layers.

Axes: B batch, T sequence, V vocabulary, E embedding width, D model width.

Forward:
    e = BertEmbeddings(ids)                      (B, T, E)  token + position (+ segment), LayerNorm
    x_0 = e proj_w + proj_b   if "proj_w" in params, else e     (E -> D; ELECTRA's and ALBERT's factorisation)
    x_{l+1} = EncoderLayer_l(x_l; padding mask)  for l = 0 .. L-1; layer l's params are keyed "layer{l}_" + name
    h = x_L

Backward: the layers in reverse, the projection, then the embeddings (scatter-add into the tables).
Intermediates (``text_encoder_intermediates``): x_0 (after the embeddings and projection), then each
layer's output x_1 .. x_L, in forward order, so a comparison names the first layer that disagrees.
params may hold other keys (a mechanism's heads); only the encoder's keys are read, and the
backward returns a gradient for exactly the keys it read.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from ..validate import require_bool, require_int, require_shape
from .attention import ATTENTION_PARAMS, padding_mask
from .bert_embeddings import (
    BertEmbeddingsCache,
    bert_embeddings_backward,
    bert_embeddings_forward,
    init_bert_embeddings,
)
from .encoder_layer import (
    LN_PARAMS,
    EncoderLayerCache,
    encoder_layer_backward,
    encoder_layer_forward,
    init_encoder_layer,
)
from .feed_forward import FFN_PARAMS
from .linear import LinearCache, init_linear, linear_backward, linear_forward

LAYER_PARAMS = ATTENTION_PARAMS + FFN_PARAMS + LN_PARAMS
EMBEDDING_KEYS = ("tok", "pos", "seg", "ln_gamma", "ln_beta")


class TextEncoderCache(NamedTuple):
    embeddings: BertEmbeddingsCache  # e (B, T, E)
    proj: LinearCache | None  # (B, T, E) -> (B, T, D)
    layers: tuple[EncoderLayerCache, ...]  # each (B, T, D)
    embedding_keys: tuple[str, ...]
    hidden: tuple[Any, ...]  # x_0 .. x_L, each (B, T, D)


def text_encoder_forward(ids: Any, pad: Any, params: dict[str, Any], *, n_heads: int, n_layers: int = 1,
                         segments: Any | None = None, dropout: list[dict[str, Any]] | None = None,
                         activation: str = "gelu", eps: float = 1e-5,
                         padding_idx: int | None = None) -> tuple[Any, TextEncoderCache]:
    """ids (B, T) int, pad (B, T) bool (True = real token). Returns h (B, T, D).

    ``padding_idx``: HuggingFace's ``nn.Embedding`` padding_idx (that token's input-embedding gradient is dropped)."""
    require_int("ids", ids)
    require_shape("ids", ids, ["batch", "seq"], [None, None])
    require_bool("pad", pad)
    require_shape("pad", pad, ["batch", "seq"], list(ids.shape))
    if isinstance(n_layers, bool) or not isinstance(n_layers, int) or n_layers < 1:
        raise ValueError(f"n_layers must be a positive integer, got {n_layers!r}")
    if isinstance(n_heads, bool) or not isinstance(n_heads, int) or n_heads < 1:
        raise ValueError(f"n_heads must be a positive integer, got {n_heads!r}")
    if dropout is not None and len(dropout) != n_layers:
        raise ValueError(f"dropout must hold one dict of masks per layer ({n_layers}), got {len(dropout)}")
    emb_params = {k: params[k] for k in EMBEDDING_KEYS if k in params}
    e, embeddings = bert_embeddings_forward(ids, emb_params, segments=segments, eps=eps,
                                            padding_idx=padding_idx)  # (B, T, E)
    proj = None
    x = e
    if "proj_w" in params:
        x, proj = linear_forward(e, params["proj_w"], params["proj_b"])  # (B, T, D)
    mask = padding_mask(pad)  # (B, 1, 1, T)
    layers, hidden = [], [x]
    for layer in range(n_layers):
        missing = [f"layer{layer}_{k}" for k in LAYER_PARAMS if f"layer{layer}_{k}" not in params]
        if missing:
            raise ValueError(f"params lacks layer {layer}'s keys {missing} (n_layers={n_layers})")
        layer_params = {k: params[f"layer{layer}_{k}"] for k in LAYER_PARAMS}
        x, cache = encoder_layer_forward(x, layer_params, n_heads=n_heads, mask=mask, eps=eps,
                                         activation=activation,
                                         dropout=None if dropout is None else dropout[layer])  # (B, T, D)
        layers.append(cache)
        hidden.append(x)
    return x, TextEncoderCache(embeddings, proj, tuple(layers), tuple(emb_params), tuple(hidden))


def text_encoder_intermediates(cache: TextEncoderCache, prefix: str = "") -> dict[str, Any]:
    """``{prefix}embeddings`` (x_0) then ``{prefix}layer{l}`` (x_{l+1}), in forward order."""
    names = [f"{prefix}embeddings"] + [f"{prefix}layer{layer}" for layer in range(len(cache.layers))]
    return dict(zip(names, cache.hidden))


def text_encoder_backward(dh: Any, cache: TextEncoderCache) -> dict[str, Any]:
    grads: dict[str, Any] = {}
    dx = dh
    for layer in reversed(range(len(cache.layers))):
        dx, layer_grads = encoder_layer_backward(dx, cache.layers[layer])  # (B, T, D)
        grads.update({f"layer{layer}_{k}": v for k, v in layer_grads.items()})
    if cache.proj is not None:
        dx, proj = linear_backward(dx, cache.proj)  # (B, T, E)
        grads["proj_w"], grads["proj_b"] = proj["w"], proj["b"]
    grads.update(bert_embeddings_backward(dx, cache.embeddings))
    return grads


def init_text_encoder(rng, vocab: int, n_positions: int, width: int, d_model: int, d_ff: int, *, xp, dtype,
                      n_layers: int = 1, n_segments: int = 0) -> dict[str, Any]:
    """Embeddings of ``width``; a projection when ``width != d_model``; ``n_layers`` encoder layers."""
    params = init_bert_embeddings(rng, vocab, n_positions, width, xp=xp, dtype=dtype, n_segments=n_segments)
    if width != d_model:
        proj = init_linear(rng, width, d_model, xp=xp, dtype=dtype)
        params["proj_w"], params["proj_b"] = proj["w"], proj["b"]
    for layer in range(n_layers):
        params.update({f"layer{layer}_{k}": v
                       for k, v in init_encoder_layer(rng, d_model, d_ff, xp=xp, dtype=dtype).items()})
    return params
