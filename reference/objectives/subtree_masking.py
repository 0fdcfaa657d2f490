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
gradient. The oracle never writes -inf: the attention is nn.attention's, with the mask as its score
mask (masked scores are MASKED_SCORE) and again as a 0/1 multiplier of the weights (its
``dropout_mask`` slot), so the one masked attention of the oracle serves here and in attention.tree.

Axes: B batch, H heads, N leaves, M nodes, T = N + M, D model width, Dh = D / H.

Backward of the masked attention (P0 = softmax(where(mask, S, MASKED_SCORE)), P = P0 * mask):

    dV = P^T dO,   dP = dO V^T,   dS = where(mask, P0 * (dP - rowsum(P0 * dP)), 0)   (dP masked first)
    dQ = scale dS K,   dK = scale dS^T Q

Defaults and what they cite: the node rule is the paper's §3.2 as recalled by the spec (its body could
not be read, findings.md); what leaf queries see, ``leaf_queries="leaves"``, is the authors' code
(nxphi47/tree_transformer, ``build_mask_leaves_subtree``, spec §2.4 step 6, T4); ``"all"`` is an option.

**Deviations**: none beyond the reading above.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from ..attention.tree_input import TreeBatch, require_tree, require_tree_states
from ..backend import array_namespace
from ..nn.attention import ATTENTION_PARAMS, SDPACache, merge_heads, sdpa_backward, sdpa_forward, split_heads
from ..nn.linear import LinearCache, linear_backward, linear_forward
from ..validate import require_params


def subtree_mask(tree: TreeBatch, *, leaf_queries: str = "leaves") -> Any:
    """(B, T, T) bool, True = may attend; rows and columns are [leaves; nodes]."""
    require_tree(tree)
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
    require_tree(tree)
    xp = array_namespace(tree.leaf_valid)
    valid = xp.concat([tree.leaf_valid, tree.node_valid], axis=1)  # (B, T)
    return valid[:, :, None] & valid[:, None, :]  # (B, T, T)


class SubtreeAttentionCache(NamedTuple):
    q_proj: LinearCache
    k_proj: LinearCache
    v_proj: LinearCache
    attention: SDPACache
    out_proj: LinearCache
    n_heads: int
    n_leaves: int


def subtree_attention_forward(x_leaves: Any, x_nodes: Any, params: dict[str, Any], tree: TreeBatch, *, n_heads: int,
                              leaf_queries: str = "leaves") -> tuple[Any, SubtreeAttentionCache]:
    """Multi-head self-attention over Z = [leaves; nodes] (B, T, D) under the subtree mask."""
    b, n, m, d = require_tree_states(x_leaves, x_nodes, tree, n_heads)
    xp = array_namespace(x_leaves, x_nodes)
    require_params(params, ATTENTION_PARAMS)
    z = xp.concat([x_leaves, x_nodes], axis=1)  # (B, T, D)
    q, qc = linear_forward(z, params["w_q"], params["b_q"])  # (B, T, D)
    k, kc = linear_forward(z, params["w_k"], params["b_k"])  # (B, T, D)
    v, vc = linear_forward(z, params["w_v"], params["b_v"])  # (B, T, D)
    mask = subtree_mask(tree, leaf_queries=leaf_queries)[:, None, :, :]  # (B, 1, T, T)  mu(q, k)
    keep = xp.astype(mask, q.dtype)  # (B, 1, T, T) 0/1 weight multiplier: rows with no allowed key get P = 0
    heads, ac = sdpa_forward(split_heads(q, n_heads), split_heads(k, n_heads), split_heads(v, n_heads), mask=mask,
                             dropout_mask=keep)  # (B, H, T, Dh)  Eq. (5)
    y, oc = linear_forward(merge_heads(heads), params["w_o"], params["b_o"])  # (B, T, D)
    return y, SubtreeAttentionCache(qc, kc, vc, ac, oc, n_heads, n)


def subtree_attention_backward(dy: Any, cache: SubtreeAttentionCache) -> tuple[Any, Any, dict[str, Any]]:
    """Returns dx_leaves, dx_nodes, grads over w_q, b_q, ..., w_o, b_o."""
    dheads, g_o = linear_backward(dy, cache.out_proj)  # (B, T, D)
    dq, dk, dv, _ = sdpa_backward(split_heads(dheads, cache.n_heads), cache.attention)  # (B, H, T, Dh)
    dz_q, g_q = linear_backward(merge_heads(dq), cache.q_proj)
    dz_k, g_k = linear_backward(merge_heads(dk), cache.k_proj)
    dz_v, g_v = linear_backward(merge_heads(dv), cache.v_proj)
    dz = dz_q + dz_k + dz_v  # (B, T, D)
    grads = {}
    for s, g in (("q", g_q), ("k", g_k), ("v", g_v), ("o", g_o)):
        grads[f"w_{s}"], grads[f"b_{s}"] = g["w"], g["b"]
    return dz[:, :cache.n_leaves, :], dz[:, cache.n_leaves:, :], grads
