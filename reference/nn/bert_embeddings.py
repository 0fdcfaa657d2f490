"""BERT's input embedding layer: token + position (+ segment) embeddings, then layer norm.

Axes: B batch, T sequence, V vocabulary, P max positions (P >= T), G segment types, E width.

Forward:
    s[b, t] = tok[ids[b, t]] + pos[t] + seg[segments[b, t]]      (segment term optional)
    e = LayerNorm(s; ln_gamma, ln_beta)

Backward:
    ds = LN'(de)
    dtok = scatter_add over ids of ds,   dpos[t] = sum_b ds[b, t] (rows t >= T get 0),
    dseg = scatter_add over segments of ds
    padding_idx=k (an option, HuggingFace's ``nn.Embedding(..., padding_idx=pad_token_id)``,
    transformers 4.57.6 ``models/electra/modeling_electra.py`` l.137): dtok[k] = 0 (the forward is unchanged)

A table used by several networks (ELECTRA's generator and discriminator) gets the
sum of this backward's result over every use.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from ..backend import array_namespace
from ..random import normal
from ..validate import require_finite, require_float, require_index_range, require_int, require_shape
from .embedding import EmbeddingCache, embedding_backward, embedding_forward
from .layer_norm import LayerNormCache, init_layer_norm, layer_norm_backward, layer_norm_forward

EMBEDDING_PARAMS = ("tok", "pos", "ln_gamma", "ln_beta")


class BertEmbeddingsCache(NamedTuple):
    tok: EmbeddingCache  # ids (B, T)
    seg: EmbeddingCache | None  # segments (B, T)
    n_positions: int  # P
    ln: LayerNormCache  # (B, T, E)
    padding_idx: int | None  # a token whose input-embedding gradient is dropped (HF's padding_idx), or None


def require_ids(name: str, ids: Any, vocab: int) -> None:
    """``ids`` must be a non-empty (batch, seq) integer array with values in [0, vocab)."""
    require_int(name, ids)
    require_shape(name, ids, ["batch", "seq"], [None, None])
    if ids.shape[0] == 0 or ids.shape[1] == 0:
        raise ValueError(f"{name} must hold at least one sequence of at least one token, got shape {tuple(ids.shape)}")
    require_index_range(name, ids, vocab)


def require_tables(params: dict[str, Any], keys: tuple[str, ...]) -> None:
    """Each ``params[key]`` must be a real floating array (a list, a tuple or an integer array is a TypeError)."""
    for key in keys:
        if key not in params:
            raise ValueError(f"params has no {key!r} entry")
        require_float(f"params[{key!r}]", params[key])
        require_finite(f"params[{key!r}]", params[key])


def bert_embeddings_forward(ids: Any, params: dict[str, Any], *, segments: Any | None = None, eps: float = 1e-5,
                            padding_idx: int | None = None) -> tuple[Any, BertEmbeddingsCache]:
    """ids (B, T); params tok (V, E), pos (P, E), optional seg (G, E), ln_gamma, ln_beta (E,)."""
    require_tables(params, ("tok", "pos", "ln_gamma", "ln_beta"))
    require_shape("params['tok']", params["tok"], ["vocab", "dim"], [None, None])
    require_ids("ids", ids, params["tok"].shape[0])
    t = ids.shape[1]
    require_shape("pos", params["pos"], ["max_positions", "dim"], [None, params["tok"].shape[1]])
    if params["pos"].shape[0] < t:
        raise ValueError(f"pos must have at least seq={t} rows, got {params['pos'].shape[0]}")
    if padding_idx is not None and not 0 <= padding_idx < params["tok"].shape[0]:
        raise ValueError(f"padding_idx must lie in [0, {params['tok'].shape[0]}) or be None, got {padding_idx}")
    s, tok = embedding_forward(ids, params["tok"])  # (B, T, E)
    s = s + params["pos"][:t, :][None, :, :]  # (B, T, E)
    seg = None
    if segments is not None:
        if "seg" not in params:
            raise ValueError("segments were given but params has no 'seg' table")
        require_tables(params, ("seg",))
        require_int("segments", segments)
        require_shape("segments", segments, ["batch", "seq"], list(ids.shape))
        require_index_range("segments", segments, params["seg"].shape[0])
        s_seg, seg = embedding_forward(segments, params["seg"])  # (B, T, E)
        s = s + s_seg
    e, ln = layer_norm_forward(s, params["ln_gamma"], params["ln_beta"], eps=eps)  # (B, T, E)
    return e, BertEmbeddingsCache(tok, seg, params["pos"].shape[0], ln, padding_idx)


def bert_embeddings_backward(de: Any, cache: BertEmbeddingsCache) -> dict[str, Any]:
    xp = array_namespace(de)
    ds, ln = layer_norm_backward(de, cache.ln)  # (B, T, E)
    t, width = ds.shape[1], ds.shape[2]
    dpos = xp.sum(ds, axis=0)  # (T, E)
    if cache.n_positions > t:
        dpos = xp.concat([dpos, xp.zeros((cache.n_positions - t, width), dtype=ds.dtype)], axis=0)  # (P, E)
    dtok = embedding_backward(ds, cache.tok)  # (V, E)
    if cache.padding_idx is not None:  # HF's padding_idx: that row's lookup passes no gradient
        keep = xp.arange(dtok.shape[0]) != cache.padding_idx  # (V,)
        dtok = dtok * xp.astype(keep, dtok.dtype)[:, None]  # (V, E)
    grads = {"tok": dtok, "pos": dpos, "ln_gamma": ln["gamma"], "ln_beta": ln["beta"]}
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
