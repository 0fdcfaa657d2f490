"""Tree-structured attention with hierarchical accumulation (Nguyen, Joty, Hoi, Socher, ICLR 2020, arXiv:2002.08046v1).

The encoder self-attention of the Tree Transformer: leaves L (tokens) and nodes N (constituents)
are one sequence Z = [L; N] of T = N + M positions. Per head, with hierarchical accumulation H
(attention.tree_accumulation) and hierarchical embeddings E (embeddings.hierarchical):

    Q = Z W_q + b_q,   K = Z W_k + b_k,   V = Z W_v + b_v          (split into K_L, K_N, V_L, V_N)
    w = L u_s + b_s                       one aggregation weight per leaf and head  (§3.1, w = L u_s)
    V̂_N = H(V_L, V_N; w, E)               accumulated node values                     Eq. (1)-(3), (4)
    K̂_N = H(K_L, K_N; w, 0)               accumulated node keys (affinity accumulation, §3.2)
    S = Q [K_L; K̂_N]^T / sqrt(Dh) + mu    mu: subtree mask (objectives.subtree_masking)      Eq. (5)
    O = softmax(S) [V_L; V̂_N],   Y = concat_heads(O) W_o + b_o

Equation numbers are those of docs/mechanisms/attention.tree.md (the paper's own text could not be
re-read to confirm its numbering; the definitions follow spec attention.md §2.4-2.5).

Accumulating the affinities Q_N K_N^T of the node queries (as the authors' parent class
``MergeStackNodesOnAffinityValueAttention`` does on the score matrix, treating each query's scores
as features) equals Q_N K̂_N^T, because H is linear in its two inputs for a fixed tree (spec §2.5);
the keys are accumulated once. Leaf queries use the accumulated keys too; under the subtree mask
they never see nodes, so this changes nothing there.

Axes: B batch, H heads, N leaves, M nodes, T = N + M, D model width, Dh = D / H.
Symbols → names: W^Q, W^K, W^V, W^O → ``w_q, w_k, w_v, w_o``; u_s → ``u_s`` (D, H) (one column per
head) and its bias ``b_s`` (H,); e^v, e^h → ``e_vertical, e_horizontal``; n̂ → ``v_hat``.

Backward: the output projection, the masked-softmax VJP (objectives.subtree_masking), then the
accumulation VJP for V̂_N and K̂_N (attention.tree_accumulation), whose gradients flow into V_L,
V_N, K_L, K_N, w (→ u_s, b_s, L) and E (→ both tables), then the three input projections.

**Deviations** (``variant="code"`` selects all of the authors' README recipe choices):

* ``accumulate="value"``: the README recipe (``MergeStackNodesOnValueAttention``, T3) accumulates
  values only and scores node keys raw; default ``"affinity_value"`` (affinities and values).
* ``mean="code"``: upward average divides by the node count only (T2).
* ``vertical="code"``, ``layout="interleave"``: hierarchical embedding index and layout (T1, T6).
* ``b_s``: the code's aggregation projection has a bias; the paper's w = L u_s has none (set b_s = 0).
* Padded query rows get zero attention weights (output b_o), as in the code's NaN → 0.
* No attention dropout here (a dropout mask would multiply P; see nn.attention).
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

from ..backend import array_namespace
from ..embeddings.hierarchical import (HierarchicalCache, hierarchical_embedding_backward,
                                       hierarchical_embedding_forward, init_hierarchical)
from ..nn.attention import init_attention, merge_heads, split_heads
from ..nn.linear import LinearCache, init_linear, linear_backward, linear_forward
from ..objectives.subtree_masking import (MaskedSDPACache, masked_attention_backward, masked_attention_forward,
                                          padding_mask_tree, subtree_mask)
from ..random import generator, normal
from ..registry import Case, Mechanism, register
from ..validate import require_shape
from .tree_accumulation import AccumulationCache, hierarchical_accumulation_backward, hierarchical_accumulation_forward
from .tree_input import TreeBatch, batch_trees, require_tree_states, tree_from_static, tree_static

PAPER = "Tree-structured Attention with Hierarchical Accumulation (Nguyen, Joty, Hoi, Socher, ICLR 2020)"
TREE_PARAMS = ("w_q", "b_q", "w_k", "b_k", "w_v", "b_v", "w_o", "b_o", "u_s", "b_s")
PAPER_OPTIONS = {"accumulate": "affinity_value", "mean": "paper", "vertical": "paper", "layout": "concat"}
CODE_OPTIONS = {"accumulate": "value", "mean": "code", "vertical": "code", "layout": "interleave"}


class TreeAttentionCache(NamedTuple):
    q_proj: LinearCache
    k_proj: LinearCache
    v_proj: LinearCache
    w_proj: LinearCache
    embedding: HierarchicalCache | None
    value_acc: AccumulationCache
    key_acc: AccumulationCache | None
    attention: MaskedSDPACache
    out_proj: LinearCache
    n_heads: int
    n_leaves: int


def tree_attention_forward(x_leaves: Any, x_nodes: Any, params: dict[str, Any], tree: TreeBatch, *, n_heads: int,
                           accumulate: str = "affinity_value", mean: str = "paper", vertical: str = "paper",
                           layout: str = "concat", mask: str = "subtree") -> tuple[Any, TreeAttentionCache]:
    """Y (B, N + M, D), leaves first. params: TREE_PARAMS, plus e_vertical, e_horizontal for embeddings."""
    xp = array_namespace(x_leaves, x_nodes)
    b, n, m, d = require_tree_states(x_leaves, x_nodes, tree, n_heads)
    missing = [k for k in TREE_PARAMS if k not in params]
    if missing:
        raise ValueError(f"params is missing {missing}")
    require_shape("u_s", params["u_s"], ["d_model", "heads"], [d, n_heads])
    if accumulate not in ("affinity_value", "value"):
        raise ValueError(f"accumulate must be 'affinity_value' or 'value', got {accumulate!r}")
    if mask not in ("subtree", "all"):
        raise ValueError(f"mask must be 'subtree' or 'all', got {mask!r}")

    z = xp.concat([x_leaves, x_nodes], axis=1)  # (B, T, D)
    q, qc = linear_forward(z, params["w_q"], params["b_q"])  # (B, T, D)
    k, kc = linear_forward(z, params["w_k"], params["b_k"])  # (B, T, D)
    v, vc = linear_forward(z, params["w_v"], params["b_v"])  # (B, T, D)
    q, k, v = split_heads(q, n_heads), split_heads(k, n_heads), split_heads(v, n_heads)  # (B, H, T, Dh)
    w, wc = linear_forward(x_leaves, params["u_s"], params["b_s"])  # (B, N, H)   w = L u_s
    w = xp.permute_dims(w, (0, 2, 1))  # (B, H, N)

    e, ec = None, None
    if "e_vertical" in params:
        e, ec = hierarchical_embedding_forward(params["e_vertical"], params["e_horizontal"], tree,
                                               vertical=vertical, layout=layout)  # (B, N, M, Dh)  Eq. (4)
    v_hat, vac = hierarchical_accumulation_forward(v[:, :, :n, :], v[:, :, n:, :], w, tree, e=e,
                                                   mean=mean)  # (B, H, M, Dh)
    keys, kac = k, None
    if accumulate == "affinity_value":
        k_hat, kac = hierarchical_accumulation_forward(k[:, :, :n, :], k[:, :, n:, :], w, tree,
                                                       mean=mean)  # (B, H, M, Dh)
        keys = xp.concat([k[:, :, :n, :], k_hat], axis=2)  # (B, H, T, Dh)
    values = xp.concat([v[:, :, :n, :], v_hat], axis=2)  # (B, H, T, Dh)
    allowed = subtree_mask(tree) if mask == "subtree" else padding_mask_tree(tree)  # (B, T, T)
    heads, ac = masked_attention_forward(q, keys, values, allowed[:, None, :, :],
                                         scale=1.0 / math.sqrt(d // n_heads))  # (B, H, T, Dh)  Eq. (5)
    y, oc = linear_forward(merge_heads(heads), params["w_o"], params["b_o"])  # (B, T, D)
    return y, TreeAttentionCache(qc, kc, vc, wc, ec, vac, kac, ac, oc, n_heads, n)


def tree_attention_backward(dy: Any, cache: TreeAttentionCache) -> tuple[Any, Any, dict[str, Any]]:
    """Returns dx_leaves, dx_nodes and grads over TREE_PARAMS (and the embedding tables, when used)."""
    xp = array_namespace(dy)
    n = cache.n_leaves
    dheads, g_o = linear_backward(dy, cache.out_proj)  # (B, T, D)
    dq, dkeys, dvalues = masked_attention_backward(split_heads(dheads, cache.n_heads), cache.attention)
    # values = [V_L; V̂_N],  V̂_N = H(V_L, V_N; w, E)
    dvl_acc, dvn, dw, de = hierarchical_accumulation_backward(dvalues[:, :, n:, :], cache.value_acc)
    dv = xp.concat([dvalues[:, :, :n, :] + dvl_acc, dvn], axis=2)  # (B, H, T, Dh)
    dk = dkeys
    if cache.key_acc is not None:  # keys = [K_L; K̂_N],  K̂_N = H(K_L, K_N; w, 0)
        dkl_acc, dkn, dw_k, _ = hierarchical_accumulation_backward(dkeys[:, :, n:, :], cache.key_acc)
        dk = xp.concat([dkeys[:, :, :n, :] + dkl_acc, dkn], axis=2)  # (B, H, T, Dh)
        dw = dw + dw_k
    dx_w, g_s = linear_backward(xp.permute_dims(dw, (0, 2, 1)), cache.w_proj)  # (B, N, D)
    dz_q, g_q = linear_backward(merge_heads(dq), cache.q_proj)  # (B, T, D)
    dz_k, g_k = linear_backward(merge_heads(dk), cache.k_proj)  # (B, T, D)
    dz_v, g_v = linear_backward(merge_heads(dv), cache.v_proj)  # (B, T, D)
    dz = dz_q + dz_k + dz_v  # (B, T, D)
    grads = {"u_s": g_s["w"], "b_s": g_s["b"]}
    for s, g in (("q", g_q), ("k", g_k), ("v", g_v), ("o", g_o)):
        grads[f"w_{s}"], grads[f"b_{s}"] = g["w"], g["b"]
    if cache.embedding is not None:
        grads.update(hierarchical_embedding_backward(de, cache.embedding))
    return dz[:, :n, :] + dx_w, dz[:, n:, :], grads


def init_tree_attention(rng, d_model: int, n_heads: int, *, xp, dtype, n_vertical: int | None = None,
                        n_horizontal: int | None = None) -> dict[str, Any]:
    """Attention weights, the aggregation projection (u_s, b_s), and optional hierarchical tables."""
    params = init_attention(rng, d_model, xp=xp, dtype=dtype)
    s = init_linear(rng, d_model, n_heads, xp=xp, dtype=dtype)
    params["u_s"], params["b_s"] = s["w"], s["b"]
    if n_vertical is not None:
        params.update(init_hierarchical(rng, n_vertical, n_horizontal, d_model // n_heads // 2, xp=xp, dtype=dtype))
    return params


#: B = 3 trees (n = 5, 3, 2 leaves; m = 4, 2, 1 nodes), D = 12, H = 2, Dh = 6: pairwise distinct.
EXAMPLE_TREES = ("(S (NP the cat) (VP sat (PP on mats)))", "(S (A x y) z)", "(S p q)")
D_MODEL, N_HEADS = 12, 2


def _example(seed: int, dtype: Any, xp) -> Case:
    rng = generator(seed)
    tree = batch_trees(EXAMPLE_TREES, xp=xp)
    b, n, m = tree.membership.shape
    inputs = {"x_leaves": normal(rng, (b, n, D_MODEL), xp=xp, dtype=dtype),
              "x_nodes": normal(rng, (b, m, D_MODEL), xp=xp, dtype=dtype)}
    # Vertical table of 3 rows < the deepest path (4 nodes): the clamp is exercised.
    params = init_tree_attention(rng, D_MODEL, N_HEADS, xp=xp, dtype=dtype, n_vertical=3, n_horizontal=7)
    return Case(inputs=inputs, params=params, static=tree_static(tree))


def _make(options: dict[str, str], mask: str = "subtree"):
    def forward(case: Case):
        y, cache = tree_attention_forward(case.inputs["x_leaves"], case.inputs["x_nodes"], case.params,
                                          tree_from_static(case.static), n_heads=N_HEADS, mask=mask, **options)
        return {"y": y}, cache

    def backward(cache, cot):
        dx_l, dx_n, grads = tree_attention_backward(cot["y"], cache)
        return {"x_leaves": dx_l, "x_nodes": dx_n, **grads}

    return forward, backward


_fwd, _bwd = _make(PAPER_OPTIONS)
_code_fwd, _code_bwd = _make(CODE_OPTIONS)
register(Mechanism("attention.tree", PAPER, "attention", _example, _fwd, _bwd))
register(Mechanism("attention.tree.code", PAPER + " - authors' README recipe (values only, code mean and embeddings)",
                   "attention", _example, _code_fwd, _code_bwd))
