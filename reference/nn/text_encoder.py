"""A BERT-style text encoder: input embeddings, an optional projection, and a stack of post-LN encoder layers.

Axes: B batch, T sequence, V vocabulary, E embedding width, D model width.

Forward:
    e = BertEmbeddings(ids)                      (B, T, E)  token + position (+ segment), LayerNorm
    x_0 = e proj_w + proj_b   if "proj_w" in params, else e     (E -> D; ELECTRA's and ALBERT's factorisation)
    x_{l+1} = EncoderLayer_l(x_l; padding mask)  for l = 0 .. L-1; layer l's params are keyed "layer{l}_" + name
    h = x_L

Backward: the layers in reverse, the projection, then the embeddings (scatter-add into the tables).
params may hold other keys (a mechanism's heads); only the encoder's keys are read, and the
backward returns a gradient for exactly the keys it read.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from ..random import generator, integers
from ..registry import Case, Mechanism, register
from ..validate import require_bool, require_shape
from .attention import ATTENTION_PARAMS, padding_mask
from .bert_embeddings import (BertEmbeddingsCache, bert_embeddings_backward, bert_embeddings_forward,
                              init_bert_embeddings)
from .encoder_layer import (LN_PARAMS, EncoderLayerCache, encoder_layer_backward, encoder_layer_forward,
                            init_encoder_layer)
from .feed_forward import FFN_PARAMS
from .linear import LinearCache, init_linear, linear_backward, linear_forward

LAYER_PARAMS = ATTENTION_PARAMS + FFN_PARAMS + LN_PARAMS
EMBEDDING_KEYS = ("tok", "pos", "seg", "ln_gamma", "ln_beta")


class TextEncoderCache(NamedTuple):
    embeddings: BertEmbeddingsCache  # e (B, T, E)
    proj: LinearCache | None  # (B, T, E) -> (B, T, D)
    layers: tuple[EncoderLayerCache, ...]  # each (B, T, D)
    embedding_keys: tuple[str, ...]


def text_encoder_forward(ids: Any, pad: Any, params: dict[str, Any], *, n_heads: int, n_layers: int = 1,
                         segments: Any | None = None, dropout: list[dict[str, Any]] | None = None,
                         activation: str = "gelu", eps: float = 1e-5) -> tuple[Any, TextEncoderCache]:
    """ids (B, T) int, pad (B, T) bool (True = real token). Returns h (B, T, D)."""
    require_bool("pad", pad)
    require_shape("pad", pad, ["batch", "seq"], list(ids.shape))
    emb_params = {k: params[k] for k in EMBEDDING_KEYS if k in params}
    e, embeddings = bert_embeddings_forward(ids, emb_params, segments=segments, eps=eps)  # (B, T, E)
    proj = None
    x = e
    if "proj_w" in params:
        x, proj = linear_forward(e, params["proj_w"], params["proj_b"])  # (B, T, D)
    mask = padding_mask(pad)  # (B, 1, 1, T)
    layers = []
    for layer in range(n_layers):
        layer_params = {k: params[f"layer{layer}_{k}"] for k in LAYER_PARAMS}
        x, cache = encoder_layer_forward(x, layer_params, n_heads=n_heads, mask=mask, eps=eps,
                                         activation=activation,
                                         dropout=None if dropout is None else dropout[layer])  # (B, T, D)
        layers.append(cache)
    return x, TextEncoderCache(embeddings, proj, tuple(layers), tuple(emb_params))


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


def _example(seed: int, dtype: Any, xp) -> Case:
    rng = generator(seed)
    pad = xp.asarray([[True] * 5, [True] * 3 + [False] * 2])
    return Case(inputs={}, params=init_text_encoder(rng, 7, 6, 3, 4, 5, xp=xp, dtype=dtype),
                static={"ids": integers(rng, 7, (2, 5), xp=xp), "pad": pad})


def _forward(case: Case):
    # BERT's tanh GELU (its TF code's form); also keeps the array-api-strict check fast.
    h, cache = text_encoder_forward(case.static["ids"], case.static["pad"], case.params, n_heads=2,
                                    activation="gelu_tanh")
    return {"h": h}, cache


register(Mechanism("nn.text_encoder", "BERT (Devlin et al., 2019)", "nn", _example, _forward,
                   lambda cache, cot: text_encoder_backward(cot["h"], cache)))
