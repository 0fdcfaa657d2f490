"""Hierarchical accumulation (Nguyen, Joty, Hoi, Socher, ICLR 2020, arXiv:2002.08046v1, §3.1).

Given leaf vectors l_i and node vectors n_j (one head's values or keys), the paper encodes every
node from the leaves and nodes of its subtree in three steps, all vectorised over the tree:

1. Interpolation F (+ hierarchical embeddings E): a tensor holding, for every node column j, the
   node vectors n_t (plus E[i, t]) in the rows of the leaves i of span j, and the leaf vector:
       A[i, t] = 1[l_i ∈ R(x_t)] (n_t + E[i, t])                                     Eq. (1), (4)
2. Upward cumulative average U along the path V^i_j from leaf i up to node j:
       C[i, j] = l_i + Σ_t path[i, j, t] A[i, t]                                      Eq. (2), sum
       Ŝ[i, j] = 1[l_i ∈ R(x_j)] C[i, j] / den[i, j],   den = |V^i_j| + 1 (paper)    Eq. (2), mean
3. Weighted aggregation V with one scalar weight per leaf, w = L u_s:
       n̂_j = Σ_i w_i Ŝ[i, j] / |L ∩ R(x_j)|                                          Eq. (3)

Equation numbers are those of docs/mechanisms/attention.tree.md (the paper's text was not
available to check its numbering; the definitions follow the specification, spec §2.4).

Axes: B batch, H heads, N leaves, M nodes, Dh head width. ``path`` (B, N, M, M) is static (see
attention.tree_input): the sum over the path is one batched matmul, ``path @ A``, no loop.

Backward (g for gradients; derived step by step in docs/mechanisms/attention.tree.md):

    gŜ[i, j] = w_i gn̂_j / |L ∩ R(x_j)|          gw_i = Σ_j <Ŝ[i, j], gn̂_j> / |L ∩ R(x_j)|
    gC = 1[l_i ∈ R(x_j)] gŜ / den
    gl_i = Σ_j gC[i, j]                           gA[i, t] = Σ_j path[i, j, t] gC[i, j]   (path^T @ gC)
    gn_t = Σ_i 1[l_i ∈ R(x_t)] gA[i, t]           gE[i, t] = 1[l_i ∈ R(x_t)] Σ_heads gA[i, t]

**Deviations** (options; the paper is the default):

* ``mean="code"``: the authors' code (``accumulate_upward``, spec §2.8 T2) adds the leaf to the
  numerator but divides by |V^i_j| only (the count of nodes), den = max(|V^i_j|, 1); the paper's
  average is over the leaf and the |V^i_j| nodes, den = |V^i_j| + 1.
* The code takes prefix sums over a bottom-up node list (cumsum) instead of the path tensor; both
  sum the same nodes when leaf i is in node j's span, and only those entries survive the mask.
* Span sizes are clamped to at least 1 (padded nodes), as in the code.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from ..backend import array_namespace
from .tree_input import TreeBatch, batch_trees, tree_from_static, tree_static
from ..random import generator, normal
from ..registry import Case, Mechanism, register
from ..validate import require_float, require_shape

PAPER = "Tree-structured Attention with Hierarchical Accumulation (Nguyen, Joty, Hoi, Socher, ICLR 2020)"


class AccumulationCache(NamedTuple):
    s_hat: Any  # (B, H, N, M, Dh) Ŝ
    w: Any  # (B, H, N)
    mask: Any  # (B, 1, N, M, 1) float, 1[l_i ∈ R(x_j)]
    path: Any  # (B, 1, N, M, M) float
    den: Any  # (B, 1, N, M, 1) float
    span: Any  # (B, 1, M, 1) float, max(|L ∩ R(x_j)|, 1)
    has_e: bool


def hierarchical_accumulation_forward(l: Any, n: Any, w: Any, tree: TreeBatch, *, e: Any | None = None,
                                      mean: str = "paper") -> tuple[Any, AccumulationCache]:
    """n̂ (B, H, M, Dh) from leaves l (B, H, N, Dh), nodes n (B, H, M, Dh), weights w (B, H, N), E (B, N, M, Dh)."""
    xp = array_namespace(l, n, w)
    b, nl, m = tree.membership.shape
    for name, a in (("l", l), ("n", n), ("w", w)):
        require_float(name, a)
    require_shape("l", l, ["batch", "heads", "leaves", "d_head"], [b, None, nl, None])
    h, dh = l.shape[1], l.shape[3]
    require_shape("n", n, ["batch", "heads", "nodes", "d_head"], [b, h, m, dh])
    require_shape("w", w, ["batch", "heads", "leaves"], [b, h, nl])
    if e is not None:
        require_float("e", e)
        require_shape("e", e, ["batch", "leaves", "nodes", "d_head"], [b, nl, m, dh])
    if mean not in ("paper", "code"):
        raise ValueError(f"mean must be 'paper' or 'code', got {mean!r}")
    dtype = l.dtype
    mask = xp.astype(tree.membership, dtype)[:, None, :, :, None]  # (B, 1, N, M, 1)
    path = xp.astype(tree.path, dtype)[:, None, ...]  # (B, 1, N, M, M)
    count = xp.astype(tree.path_len, dtype)[:, None, :, :, None]  # (B, 1, N, M, 1) |V^i_j|
    den = count + 1.0 if mean == "paper" else xp.maximum(count, xp.ones_like(count))  # (B, 1, N, M, 1)
    span = xp.astype(tree.span_len, dtype)  # (B, M)
    span = xp.maximum(span, xp.ones_like(span))[:, None, :, None]  # (B, 1, M, 1)

    a = n[:, :, None, :, :]  # (B, H, 1, M, Dh)
    if e is not None:
        a = a + e[:, None, ...]  # (B, H, N, M, Dh)  n_t + E[i, t]
    a = a * mask  # (B, H, N, M, Dh)                                              Eq. (1)
    c = l[:, :, :, None, :] + xp.matmul(path, a)  # (B, H, N, M, Dh)  l_i + Σ_{t ∈ V^i_j} A[i, t]
    s_hat = mask * c / den  # (B, H, N, M, Dh)                                   Eq. (2)
    n_hat = xp.sum(w[:, :, :, None, None] * s_hat, axis=2) / span  # (B, H, M, Dh)   Eq. (3)
    return n_hat, AccumulationCache(s_hat, w, mask, path, den, span, e is not None)


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


# Registered example: the accumulation alone, so its backward is checked in isolation.
EXAMPLE_TREES = ("(S (NP the cat) (VP sat (PP on mats)))", "(S (A x y) z)", "(S p q)")
HEADS, D_HEAD = 2, 6


def _example(seed: int, dtype: Any, xp) -> Case:
    rng = generator(seed)
    tree = batch_trees(EXAMPLE_TREES, xp=xp)
    b, nl, m = tree.membership.shape
    inputs = {"l": normal(rng, (b, HEADS, nl, D_HEAD), xp=xp, dtype=dtype),
              "n": normal(rng, (b, HEADS, m, D_HEAD), xp=xp, dtype=dtype),
              "w": normal(rng, (b, HEADS, nl), xp=xp, dtype=dtype),
              "e": normal(rng, (b, nl, m, D_HEAD), xp=xp, dtype=dtype, scale=0.5)}
    return Case(inputs=inputs, params={}, static=tree_static(tree))


def _make(mean: str):
    def forward(case: Case):
        x = case.inputs
        n_hat, cache = hierarchical_accumulation_forward(x["l"], x["n"], x["w"], tree_from_static(case.static),
                                                         e=x["e"], mean=mean)
        return {"n_hat": n_hat}, cache

    def backward(cache, cot):
        dl, dn, dw, de = hierarchical_accumulation_backward(cot["n_hat"], cache)
        return {"l": dl, "n": dn, "w": dw, "e": de}

    return forward, backward


_fwd, _bwd = _make("paper")
_code_fwd, _code_bwd = _make("code")
register(Mechanism("attention.tree.accumulation", PAPER, "attention", _example, _fwd, _bwd))
register(Mechanism("attention.tree.accumulation.code", PAPER + " - authors' code: mean over nodes only",
                   "attention", _example, _code_fwd, _code_bwd))
