"""Subtree masking of Tree-structured attention (Nguyen, Joty, Hoi, Socher, ICLR 2020, arXiv:2002.08046v1, §3.2).

Leaves and nodes are stacked as one sequence Z = [L; N] of T = N + M positions (leaves first).
Subtree masking lets a node query see only what lies in its own subtree, so that node
representations are built bottom-up:

    mu(q, k) = 0        if k ∈ R(q)  (k is a leaf of q's span, or q itself, or a descendant node)
             = -inf     otherwise                                                (§3.2, subtree masking)
    Att(q) = Σ_k softmax_k(q·k / sqrt(Dh) + mu(q, k)) v_k

Leaf queries attend to every (non-padded) leaf and to no node: the encoder mask ``LEAVES_SUBTREE``
of the authors' code (``build_mask_leaves_subtree``, spec §2.4 step 6, T4). ``leaf_queries="all"``
lets leaves see every node too, and :func:`padding_mask_tree` is the code's ``ALL_ALL`` (padding only).

A query row with no allowed key (a padded position) gets all-zero attention weights (the code
turns the NaN of an all -inf row into 0), hence a zero output before the output projection and no
gradient. The oracle never writes -inf: masked scores are MASKED_SCORE and the weights are then
multiplied by the mask.

Axes: B batch, H heads, N leaves, M nodes, T = N + M, D model width, Dh = D / H.

Backward of the masked attention (P0 = softmax(where(mask, S, MASKED_SCORE)), P = P0 * mask):

    dV = P^T dO,   dP = dO V^T,   dS = where(mask, P0 * (dP - rowsum(P0 * dP)), 0)   (dP masked first)
    dQ = scale dS K,   dK = scale dS^T Q

**Deviations**: the paper's text (as far as it could be checked; see the docs page) states the node
rule; what leaf queries may see is taken from the authors' code (leaves only).
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

from ..attention.tree_input import TreeBatch, batch_trees, require_tree_states, tree_from_static, tree_static
from ..backend import MASKED_SCORE, array_namespace
from ..nn.attention import ATTENTION_PARAMS, init_attention, merge_heads, split_heads
from ..nn.linear import LinearCache, linear_backward, linear_forward
from ..nn.softmax import SoftmaxCache, softmax_backward, softmax_forward
from ..random import generator, normal
from ..registry import Case, Mechanism, register
from ..validate import require_bool

PAPER = "Tree-structured Attention with Hierarchical Accumulation (Nguyen, Joty, Hoi, Socher, ICLR 2020)"


def subtree_mask(tree: TreeBatch, *, leaf_queries: str = "leaves") -> Any:
    """(B, T, T) bool, True = may attend; rows and columns are [leaves; nodes]."""
    xp = array_namespace(tree.membership)
    if leaf_queries not in ("leaves", "all"):
        raise ValueError(f"leaf_queries must be 'leaves' or 'all', got {leaf_queries!r}")
    lv, nv = tree.leaf_valid, tree.node_valid  # (B, N), (B, M)
    leaf_leaf = lv[:, :, None] & lv[:, None, :]  # (B, N, N)
    leaf_node = lv[:, :, None] & nv[:, None, :]  # (B, N, M)
    if leaf_queries == "leaves":
        leaf_node = xp.zeros_like(leaf_node)
    node_leaf = xp.permute_dims(tree.membership, (0, 2, 1))  # (B, M, N)  l_i ∈ R(x_j)
    node_node = tree.subtree  # (B, M, M)  x_t ∈ R(x_j)
    top = xp.concat([leaf_leaf, leaf_node], axis=2)  # (B, N, T)
    bottom = xp.concat([node_leaf, node_node], axis=2)  # (B, M, T)
    return xp.concat([top, bottom], axis=1)  # (B, T, T)


def padding_mask_tree(tree: TreeBatch) -> Any:
    """(B, T, T) bool: every valid query sees every valid key (the code's ALL_ALL)."""
    xp = array_namespace(tree.leaf_valid)
    valid = xp.concat([tree.leaf_valid, tree.node_valid], axis=1)  # (B, T)
    return valid[:, :, None] & valid[:, None, :]  # (B, T, T)


class MaskedSDPACache(NamedTuple):
    q: Any  # (B, H, T, Dh)
    k: Any  # (B, H, S, Dh)
    v: Any  # (B, H, S, Dv)
    softmax: SoftmaxCache  # p0: (B, H, T, S)
    p: Any  # (B, H, T, S) p0 * mask
    mask: Any  # bool (B, 1, T, S)
    scale: float


def masked_attention_forward(q: Any, k: Any, v: Any, mask: Any, *, scale: float) -> tuple[Any, MaskedSDPACache]:
    """Attention over allowed keys only; rows with no allowed key give zero weights."""
    xp = array_namespace(q, k, v)
    require_bool("mask", mask)
    scores = xp.matmul(q, xp.matrix_transpose(k)) * scale  # (B, H, T, S)
    scores = xp.where(mask, scores, xp.asarray(MASKED_SCORE, dtype=scores.dtype))  # + mu(q, k)
    p0, sm = softmax_forward(scores, axis=-1)  # (B, H, T, S)
    p = p0 * xp.astype(mask, p0.dtype)  # (B, H, T, S) zero rows stay zero
    return xp.matmul(p, v), MaskedSDPACache(q, k, v, sm, p, mask, scale)  # (B, H, T, Dv)


def masked_attention_backward(dout: Any, cache: MaskedSDPACache) -> tuple[Any, Any, Any]:
    """Returns dq, dk, dv."""
    xp = array_namespace(dout)
    q, k, v, sm, p, mask, scale = cache
    dv = xp.matmul(xp.matrix_transpose(p), dout)  # (B, H, S, Dv)
    dp = xp.matmul(dout, xp.matrix_transpose(v)) * xp.astype(mask, dout.dtype)  # (B, H, T, S)
    dscores = softmax_backward(dp, sm)  # (B, H, T, S)
    dscores = xp.where(mask, dscores, xp.zeros_like(dscores))
    dq = xp.matmul(dscores, k) * scale  # (B, H, T, Dh)
    dk = xp.matmul(xp.matrix_transpose(dscores), q) * scale  # (B, H, S, Dh)
    return dq, dk, dv


class SubtreeAttentionCache(NamedTuple):
    q_proj: LinearCache
    k_proj: LinearCache
    v_proj: LinearCache
    attention: MaskedSDPACache
    out_proj: LinearCache
    n_heads: int
    n_leaves: int


def subtree_attention_forward(x_leaves: Any, x_nodes: Any, params: dict[str, Any], tree: TreeBatch, *, n_heads: int,
                              leaf_queries: str = "leaves") -> tuple[Any, SubtreeAttentionCache]:
    """Multi-head self-attention over Z = [leaves; nodes] (B, T, D) under the subtree mask."""
    xp = array_namespace(x_leaves, x_nodes)
    b, n, m, d = require_tree_states(x_leaves, x_nodes, tree, n_heads)
    z = xp.concat([x_leaves, x_nodes], axis=1)  # (B, T, D)
    q, qc = linear_forward(z, params["w_q"], params["b_q"])  # (B, T, D)
    k, kc = linear_forward(z, params["w_k"], params["b_k"])  # (B, T, D)
    v, vc = linear_forward(z, params["w_v"], params["b_v"])  # (B, T, D)
    mask = subtree_mask(tree, leaf_queries=leaf_queries)[:, None, :, :]  # (B, 1, T, T)
    heads, ac = masked_attention_forward(split_heads(q, n_heads), split_heads(k, n_heads), split_heads(v, n_heads),
                                         mask, scale=1.0 / math.sqrt(d // n_heads))  # (B, H, T, Dh)
    y, oc = linear_forward(merge_heads(heads), params["w_o"], params["b_o"])  # (B, T, D)
    return y, SubtreeAttentionCache(qc, kc, vc, ac, oc, n_heads, n)


def subtree_attention_backward(dy: Any, cache: SubtreeAttentionCache) -> tuple[Any, Any, dict[str, Any]]:
    """Returns dx_leaves, dx_nodes, grads over w_q, b_q, ..., w_o, b_o."""
    dheads, g_o = linear_backward(dy, cache.out_proj)  # (B, T, D)
    dq, dk, dv = masked_attention_backward(split_heads(dheads, cache.n_heads), cache.attention)
    dz_q, g_q = linear_backward(merge_heads(dq), cache.q_proj)
    dz_k, g_k = linear_backward(merge_heads(dk), cache.k_proj)
    dz_v, g_v = linear_backward(merge_heads(dv), cache.v_proj)
    dz = dz_q + dz_k + dz_v  # (B, T, D)
    grads = {}
    for s, g in (("q", g_q), ("k", g_k), ("v", g_v), ("o", g_o)):
        grads[f"w_{s}"], grads[f"b_{s}"] = g["w"], g["b"]
    return dz[:, :cache.n_leaves, :], dz[:, cache.n_leaves:, :], grads


#: Same trees as embeddings.hierarchical (n = 5, 3, 2 leaves; m = 4, 2, 1 nodes), padded.
EXAMPLE_TREES = ("(S (NP the cat) (VP sat (PP on mats)))", "(S (A x y) z)", "(S p q)")
D_MODEL, N_HEADS = 12, 2  # Dh = 6; B = 3, N = 5, M = 4: pairwise distinct


def _example(seed: int, dtype: Any, xp) -> Case:
    rng = generator(seed)
    tree = batch_trees(EXAMPLE_TREES, xp=xp)
    b, n, m = tree.membership.shape
    return Case(inputs={"x_leaves": normal(rng, (b, n, D_MODEL), xp=xp, dtype=dtype),
                        "x_nodes": normal(rng, (b, m, D_MODEL), xp=xp, dtype=dtype)},
                params=init_attention(rng, D_MODEL, xp=xp, dtype=dtype), static=tree_static(tree))


def _forward(case: Case):
    params = {k: case.params[k] for k in ATTENTION_PARAMS}
    y, cache = subtree_attention_forward(case.inputs["x_leaves"], case.inputs["x_nodes"], params,
                                         tree_from_static(case.static), n_heads=N_HEADS)
    return {"y": y}, cache


def _backward(cache, cot):
    dx_l, dx_n, grads = subtree_attention_backward(cot["y"], cache)
    return {"x_leaves": dx_l, "x_nodes": dx_n, **grads}


register(Mechanism("objectives.subtree_masking", PAPER, "objectives", _example, _forward, _backward))
