"""Hierarchical accumulation (Nguyen, Joty, Hoi, Socher, ICLR 2020, arXiv:2002.08046v1, §3.1).

Given leaf vectors l_i and node vectors n_j (one head's values or keys), the paper encodes every
node from the leaves and nodes of its subtree in three steps, all vectorised over the tree:

1. Interpolation F (+ hierarchical embeddings E): a tensor holding, for every node column j, the
   node vectors n_t (plus E[i, t]) in the rows of the leaves i of span j, and the leaf vector:
       A[i, t] = 1[l_i ∈ R(x_t)] (n_t + E[i, t])                                     Eq. (1), (4)
2. Upward cumulative average U along the path V^i_j from leaf i up to node j:
       C[i, j] = l_i + Σ_t path[i, j, t] A[i, t]                                      Eq. (2), sum
       Ŝ[i, j] = 1[l_i ∈ R(x_j)] C[i, j] / den[i, j]      den: ``up_norm`` below      Eq. (2), mean
3. Weighted aggregation V with one scalar weight per leaf, w = L u_s:
       n̂_j = Σ_i w_i Ŝ[i, j] / span_j                      span_j: ``agg_norm`` below   Eq. (3)

Equation numbers are those of docs/mechanisms/attention.tree.md (the paper's text was not
available to check its numbering; the definitions follow the specification, spec §2.4).

Axes: B batch, H heads, N leaves, M nodes, Dh head width. ``path`` (B, N, M, M) is static (see
attention.tree_input): the sum over the path is one batched matmul, ``path @ A``, no loop.

Backward (g for gradients; derived step by step in docs/mechanisms/attention.tree.md):

    gŜ[i, j] = w_i gn̂_j / span_j                 gw_i = Σ_j <Ŝ[i, j], gn̂_j> / span_j
    gC = 1[l_i ∈ R(x_j)] gŜ / den
    gl_i = Σ_j gC[i, j]                           gA[i, t] = Σ_j path[i, j, t] gC[i, j]   (path^T @ gC)
    gn_t = Σ_i 1[l_i ∈ R(x_t)] gA[i, t]           gE[i, t] = 1[l_i ∈ R(x_t)] Σ_heads gA[i, t]

Defaults and what they cite (the paper's body could not be read, only its introduction: findings.md;
so the defaults are the authors' code, nxphi47/tree_transformer ``nstack_merge_tree_attention.py``, line
numbers as recorded in findings.md, and the spec's reading of the paper is a named option):

* ``up_norm="mean"``: the README recipe's ``upmean`` (``accumulate_upward``, about l.653-672): the leaf is
  prepended to the cumulative sum and the divisor is the node count, den = max(|V^i_j|, 1).
  ``"none"`` is the class default (``wnstack_up_norm='none'``, l.408-409), ``"sqrt_mean"`` the code's third
  choice, den = max(sqrt|V^i_j|, 1). ``"paper_recalled"``: the spec's reading of the paper, an average
  over the leaf and the |V^i_j| nodes, den = |V^i_j| + 1 (not re-read).
* ``agg_norm="mean"``: the README recipe's second ``mean`` (``accumulate_rightward``, about l.695-735):
  n̂_j is divided by the span size max(|L ∩ R(x_j)|, 1); ``"none"`` is the class default
  (``wnstack_norm='none'``), ``"sqrt_mean"`` divides by its square root. The code divides before the
  weighted sum, the oracle after: the same numbers.

**Deviations**:

* The code takes prefix sums over a bottom-up node list (cumsum) instead of the path tensor; both
  sum the same nodes when leaf i is in node j's span, and only those entries survive the mask.
* Span sizes are clamped to at least 1 (padded nodes), as in the code.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from ..backend import array_namespace
from ..validate import require_finite, require_float, require_shape
from .tree_input import TreeBatch, require_tree

UP_NORMS = ("mean", "none", "sqrt_mean", "paper_recalled")
AGG_NORMS = ("mean", "none", "sqrt_mean")


class AccumulationCache(NamedTuple):
    s_hat: Any  # (B, H, N, M, Dh) Ŝ
    w: Any  # (B, H, N)
    mask: Any  # (B, 1, N, M, 1) float, 1[l_i ∈ R(x_j)]
    path: Any  # (B, 1, N, M, M) float
    den: Any  # (B, 1, N, M, 1) float, the upward divisor
    span: Any  # (B, 1, M, 1) float, the aggregation divisor
    has_e: bool


def hierarchical_accumulation_forward(l: Any, n: Any, w: Any, tree: TreeBatch, *, e: Any | None = None,
                                      up_norm: str = "mean", agg_norm: str = "mean") -> tuple[Any, AccumulationCache]:
    """n̂ (B, H, M, Dh) from leaves l (B, H, N, Dh), nodes n (B, H, M, Dh), weights w (B, H, N), E (B, N, M, Dh)."""
    require_tree(tree)
    b, nl, m = tree.membership.shape
    for name, a in (("l", l), ("n", n), ("w", w)):
        require_float(name, a)
        require_finite(name, a)
    xp = array_namespace(l, n, w)
    require_shape("l", l, ["batch", "heads", "leaves", "d_head"], [b, None, nl, None])
    h, dh = l.shape[1], l.shape[3]
    require_shape("n", n, ["batch", "heads", "nodes", "d_head"], [b, h, m, dh])
    require_shape("w", w, ["batch", "heads", "leaves"], [b, h, nl])
    if e is not None:
        require_float("e", e)
        require_shape("e", e, ["batch", "leaves", "nodes", "d_head"], [b, nl, m, dh])
        require_finite("e", e)
    if up_norm not in UP_NORMS:
        raise ValueError(f"up_norm must be one of {UP_NORMS}, got {up_norm!r}")
    if agg_norm not in AGG_NORMS:
        raise ValueError(f"agg_norm must be one of {AGG_NORMS}, got {agg_norm!r}")
    dtype = l.dtype
    mask = xp.astype(tree.membership, dtype)[:, None, :, :, None]  # (B, 1, N, M, 1)
    path = xp.astype(tree.path, dtype)[:, None, ...]  # (B, 1, N, M, M)
    count = xp.astype(tree.path_len, dtype)[:, None, :, :, None]  # (B, 1, N, M, 1) |V^i_j|
    den = _divisor(count, up_norm, xp=xp)  # (B, 1, N, M, 1)
    span = _divisor(xp.astype(tree.span_len, dtype), agg_norm, xp=xp)[:, None, :, None]  # (B, 1, M, 1)

    a = n[:, :, None, :, :]  # (B, H, 1, M, Dh)
    if e is not None:
        a = a + e[:, None, ...]  # (B, H, N, M, Dh)  n_t + E[i, t]
    a = a * mask  # (B, H, N, M, Dh)                                              Eq. (1)
    c = l[:, :, :, None, :] + xp.matmul(path, a)  # (B, H, N, M, Dh)  l_i + Σ_{t ∈ V^i_j} A[i, t]
    s_hat = mask * c / den  # (B, H, N, M, Dh)                                   Eq. (2)
    n_hat = xp.sum(w[:, :, :, None, None] * s_hat, axis=2) / span  # (B, H, M, Dh)   Eq. (3)
    return n_hat, AccumulationCache(s_hat, w, mask, path, den, span, e is not None)


def _divisor(count: Any, norm: str, *, xp) -> Any:
    """The code's divisors: max(count, 1) ("mean"), max(sqrt(count), 1) ("sqrt_mean"), 1 ("none");
    the recalled paper's count + 1 ("paper_recalled")."""
    if norm == "paper_recalled":
        return count + 1.0
    if norm == "none":
        return xp.ones_like(count)
    root = count if norm == "mean" else xp.sqrt(count)
    return xp.maximum(root, xp.ones_like(root))


def hierarchical_accumulation_backward(dn_hat: Any, cache: AccumulationCache) -> tuple[Any, Any, Any, Any | None]:
    """Returns dl (B, H, N, Dh), dn (B, H, M, Dh), dw (B, H, N), de (B, N, M, Dh) or None."""
    xp = array_namespace(dn_hat)
    s_hat, w, mask, path, den, span, has_e = cache
    g = (dn_hat / span)[:, :, None, :, :]  # (B, H, 1, M, Dh)       n̂ = Σ_i w_i Ŝ / span
    ds_hat = w[:, :, :, None, None] * g  # (B, H, N, M, Dh)
    dw = xp.sum(s_hat * g, axis=(3, 4))  # (B, H, N)
    dc = mask * ds_hat / den  # (B, H, N, M, Dh)                      Ŝ = mask C / den
    dl = xp.sum(dc, axis=3)  # (B, H, N, Dh)                           C = l + path @ A
    da = xp.matmul(xp.matrix_transpose(path), dc) * mask  # (B, H, N, M, Dh)   A = mask (n + E)
    dn = xp.sum(da, axis=2)  # (B, H, M, Dh)
    de = xp.sum(da, axis=1) if has_e else None  # (B, N, M, Dh) E is shared by the heads
    return dl, dn, dw, de
