"""Embedding lookup ``y = table[ids]`` and its scatter-add backward.

Forward:   y[..., :] = table[ids[...], :]
Backward:  dtable[v] = sum over positions n with ids[n] = v of dy[n]   (repeated ids accumulate)
"""

from __future__ import annotations

from typing import Any, NamedTuple

from ..backend import array_namespace, scatter_add
from ..validate import require_finite, require_float, require_index_range


class EmbeddingCache(NamedTuple):
    ids: Any  # (...,) int
    vocab_size: int


def embedding_forward(ids: Any, table: Any) -> tuple[Any, EmbeddingCache]:
    """ids (...,) integers in [0, V); table (V, E). Returns (..., E)."""
    xp = array_namespace(table)
    require_float("table", table)
    require_finite("table", table)
    if table.ndim != 2:
        raise ValueError(f"table must have shape (vocab, dim), got {tuple(table.shape)}")
    require_index_range("ids", ids, table.shape[0])
    flat = xp.reshape(ids, (-1,))
    y = xp.take(table, flat, axis=0)  # (N, E)
    return xp.reshape(y, (*ids.shape, table.shape[1])), EmbeddingCache(ids, table.shape[0])


def embedding_backward(dy: Any, cache: EmbeddingCache) -> Any:
    xp = array_namespace(dy)
    ids, vocab_size = cache
    flat_dy = xp.reshape(dy, (-1, dy.shape[-1]))  # (N, E)
    return scatter_add(flat_dy, xp.reshape(ids, (-1,)), vocab_size)  # (V, E)
