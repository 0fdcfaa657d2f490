"""BERT's input embedding layer: token + position (+ segment) embeddings, then layer norm.

Axes: B batch, T sequence, V vocabulary, P max positions (P >= T), G segment types, E width.

Forward:
    s[b, t] = tok[ids[b, t]] + pos[t] + seg[segments[b, t]]      (segment term optional)
    e = LayerNorm(s; ln_gamma, ln_beta)

Backward:
    ds = LN'(de)
    dtok = scatter_add over ids of ds,   dpos[t] = sum_b ds[b, t] (rows t >= T get 0),
    dseg = scatter_add over segments of ds

A table used by several networks (ELECTRA's generator and discriminator) gets the
sum of this backward's result over every use.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from ..backend import array_namespace
from ..random import generator, integers, normal
from ..registry import Case, Mechanism, register
from ..validate import require_float, require_shape
from .embedding import EmbeddingCache, embedding_backward, embedding_forward
from .layer_norm import LayerNormCache, init_layer_norm, layer_norm_backward, layer_norm_forward

EMBEDDING_PARAMS = ("tok", "pos", "ln_gamma", "ln_beta")


class BertEmbeddingsCache(NamedTuple):
    tok: EmbeddingCache  # ids (B, T)
    seg: EmbeddingCache | None  # segments (B, T)
    n_positions: int  # P
    ln: LayerNormCache  # (B, T, E)


def bert_embeddings_forward(ids: Any, params: dict[str, Any], *, segments: Any | None = None,
                            eps: float = 1e-5) -> tuple[Any, BertEmbeddingsCache]:
    """ids (B, T); params tok (V, E), pos (P, E), optional seg (G, E), ln_gamma, ln_beta (E,)."""
    require_float("pos", params["pos"])
    if ids.ndim != 2:
        raise ValueError(f"ids must have shape (batch, seq), got {tuple(ids.shape)}")
    t = ids.shape[1]
    require_shape("pos", params["pos"], ["max_positions", "dim"], [None, params["tok"].shape[1]])
    if params["pos"].shape[0] < t:
        raise ValueError(f"pos must have at least seq={t} rows, got {params['pos'].shape[0]}")
    s, tok = embedding_forward(ids, params["tok"])  # (B, T, E)
    s = s + params["pos"][:t, :][None, :, :]  # (B, T, E)
    seg = None
    if segments is not None:
        if "seg" not in params:
            raise ValueError("segments were given but params has no 'seg' table")
        require_shape("segments", segments, ["batch", "seq"], list(ids.shape))
        s_seg, seg = embedding_forward(segments, params["seg"])  # (B, T, E)
        s = s + s_seg
    e, ln = layer_norm_forward(s, params["ln_gamma"], params["ln_beta"], eps=eps)  # (B, T, E)
    return e, BertEmbeddingsCache(tok, seg, params["pos"].shape[0], ln)


def bert_embeddings_backward(de: Any, cache: BertEmbeddingsCache) -> dict[str, Any]:
    xp = array_namespace(de)
    ds, ln = layer_norm_backward(de, cache.ln)  # (B, T, E)
    t, width = ds.shape[1], ds.shape[2]
    dpos = xp.sum(ds, axis=0)  # (T, E)
    if cache.n_positions > t:
        dpos = xp.concat([dpos, xp.zeros((cache.n_positions - t, width), dtype=ds.dtype)], axis=0)  # (P, E)
    grads = {"tok": embedding_backward(ds, cache.tok), "pos": dpos, "ln_gamma": ln["gamma"], "ln_beta": ln["beta"]}
    if cache.seg is not None:
        grads["seg"] = embedding_backward(ds, cache.seg)  # (G, E)
    return grads


def init_bert_embeddings(rng, vocab: int, n_positions: int, width: int, *, xp, dtype,
                         n_segments: int = 0) -> dict[str, Any]:
    params = {"tok": normal(rng, (vocab, width), xp=xp, dtype=dtype),
              "pos": normal(rng, (n_positions, width), xp=xp, dtype=dtype, scale=0.5)}
    if n_segments:
        params["seg"] = normal(rng, (n_segments, width), xp=xp, dtype=dtype, scale=0.5)
    ln = init_layer_norm(rng, width, xp=xp, dtype=dtype)
    params["ln_gamma"], params["ln_beta"] = ln["gamma"], ln["beta"]
    return params


def _example(seed: int, dtype: Any, xp) -> Case:
    rng = generator(seed)
    return Case(inputs={}, params=init_bert_embeddings(rng, 7, 6, 3, xp=xp, dtype=dtype, n_segments=2),
                static={"ids": integers(rng, 7, (2, 5), xp=xp), "segments": integers(rng, 2, (2, 5), xp=xp)})


def _forward(case: Case):
    e, cache = bert_embeddings_forward(case.static["ids"], case.params, segments=case.static["segments"])
    return {"e": e}, cache


register(Mechanism("nn.bert_embeddings", "BERT (Devlin et al., 2019)", "nn", _example, _forward,
                   lambda cache, cot: bert_embeddings_backward(cot["e"], cache)))
