"""Tree-structured attention with hierarchical accumulation (Nguyen, Joty, Hoi, Socher, ICLR 2020, arXiv:2002.08046v1).

The encoder self-attention of the Tree Transformer: leaves L (tokens) and nodes N (constituents)
are one sequence Z = [L; N] of T = N + M positions. Per head, with hierarchical accumulation H
(attention.tree_accumulation) and hierarchical embeddings E (embeddings.hierarchical):

    Q = Z W_q + b_q,   K = Z W_k + b_k,   V = Z W_v + b_v          (split into K_L, K_N, V_L, V_N)
    w = act(L u_s + b_s)                  one aggregation weight per leaf and head  (§3.1, w = L u_s)
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

Backward: the output projection, the masked-softmax VJP (nn.attention), then the
accumulation VJP for V̂_N and K̂_N (attention.tree_accumulation), whose gradients flow into V_L,
V_N, K_L, K_N, w (→ u_s, b_s, L) and E (→ both tables), then the three input projections.

Defaults and what they cite. The paper's body could not be read (only its introduction is stored,
findings.md), so every default is the authors' code, nxphi47/tree_transformer
``nstack_merge_tree_attention.py`` with the line numbers recorded in findings.md, as configured by its
README recipe (``dwnstack_merge2seq_node_iwslt_onvalue_base_upmean_mean_...``); the spec's reading of the
paper is the named option set ``PAPER_RECALLED_OPTIONS`` (``attention.tree.paper_recalled``):

* ``accumulate="value"``: the recipe's ``MergeStackNodesOnValueAttention`` (spec T3) accumulates values
  only and scores node keys raw; ``"affinity_value"`` (the parent class) accumulates affinities too.
* ``up_norm="mean"``, ``agg_norm="mean"``: the recipe's ``upmean_mean`` (attention.tree_accumulation); the
  class defaults ``wnstack_up_norm = wnstack_norm = 'none'`` (l.408-409) are ``"none"``
  (``attention.tree.class_defaults``).
* ``proj_act="none"``: ``dwstack_proj_act`` defaults to ``'none'`` (``_build_layer``, l.444); ``"sigmoid"``
  and ``"tanh"`` (l.469-472, the ``..._dsigmoid`` / ``..._dtanh`` architectures) squash w = act(L u_s + b_s).
* ``vertical="code"``, ``layout="interleave"``: hierarchical embedding index and layout (spec T1, T6;
  embeddings.hierarchical); added to the values only (l.808, l.932), never to the accumulated keys
  (l.791, l.802 pass ``None``), as here.
* ``b_s``: the code's aggregation projection ``dwstack_linear`` has a bias (l.467).

**Deviations**:

* Padded query rows get zero attention weights (output b_o), as in the code's NaN → 0: the mask is
  passed to nn.attention both as the score mask and as a 0/1 multiplier of the weights (its
  ``dropout_mask`` slot), so a row with no allowed key has P = 0.
* No attention dropout here.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from ..backend import array_namespace
from ..embeddings.hierarchical import (
    HierarchicalCache,
    hierarchical_embedding_backward,
    hierarchical_embedding_forward,
    init_hierarchical,
)
from ..nn.attention import SDPACache, init_attention, merge_heads, sdpa_backward, sdpa_forward, split_heads
from ..nn.linear import LinearCache, init_linear, linear_backward, linear_forward
from ..nn.losses import sigmoid
from ..objectives.subtree_masking import padding_mask_tree, subtree_mask
from ..validate import require_params, require_shape
from .tree_accumulation import AccumulationCache, hierarchical_accumulation_backward, hierarchical_accumulation_forward
from .tree_input import TreeBatch, require_tree_states

TREE_PARAMS = ("w_q", "b_q", "w_k", "b_k", "w_v", "b_v", "w_o", "b_o", "u_s", "b_s")
PROJ_ACTS = ("none", "sigmoid", "tanh")
CODE_OPTIONS = {"accumulate": "value", "up_norm": "mean", "agg_norm": "mean", "vertical": "code",
                "layout": "interleave", "proj_act": "none"}
PAPER_RECALLED_OPTIONS = {"accumulate": "affinity_value", "up_norm": "paper_recalled", "agg_norm": "mean",
                          "vertical": "paper_recalled", "layout": "concat", "proj_act": "none"}


class TreeAttentionCache(NamedTuple):
    q_proj: LinearCache
    k_proj: LinearCache
    v_proj: LinearCache
    w_proj: LinearCache
    embedding: HierarchicalCache | None
    proj_act: str
    w: Any  # (B, H, N) aggregation weights after the activation
    value_acc: AccumulationCache
    key_acc: AccumulationCache | None
    attention: SDPACache
    out_proj: LinearCache
    n_heads: int
    n_leaves: int


def tree_attention_forward(x_leaves: Any, x_nodes: Any, params: dict[str, Any], tree: TreeBatch, *, n_heads: int,
                           accumulate: str = "value", up_norm: str = "mean", agg_norm: str = "mean",
                           vertical: str = "code", layout: str = "interleave", proj_act: str = "none",
                           mask: str = "subtree") -> tuple[Any, TreeAttentionCache]:
    """Y (B, N + M, D), leaves first. params: TREE_PARAMS, plus e_vertical, e_horizontal for embeddings."""
    b, n, m, d = require_tree_states(x_leaves, x_nodes, tree, n_heads)
    xp = array_namespace(x_leaves, x_nodes)
    require_params(params, TREE_PARAMS + (("e_vertical", "e_horizontal") if "e_vertical" in params else ()))
    require_shape("params['u_s']", params["u_s"], ["d_model", "heads"], [d, n_heads])
    if accumulate not in ("affinity_value", "value"):
        raise ValueError(f"accumulate must be 'affinity_value' or 'value', got {accumulate!r}")
    if proj_act not in PROJ_ACTS:
        raise ValueError(f"proj_act must be one of {PROJ_ACTS}, got {proj_act!r}")
    if mask not in ("subtree", "all"):
        raise ValueError(f"mask must be 'subtree' or 'all', got {mask!r}")

    z = xp.concat([x_leaves, x_nodes], axis=1)  # (B, T, D)
    q, qc = linear_forward(z, params["w_q"], params["b_q"])  # (B, T, D)
    k, kc = linear_forward(z, params["w_k"], params["b_k"])  # (B, T, D)
    v, vc = linear_forward(z, params["w_v"], params["b_v"])  # (B, T, D)
    q, k, v = split_heads(q, n_heads), split_heads(k, n_heads), split_heads(v, n_heads)  # (B, H, T, Dh)
    w, wc = linear_forward(x_leaves, params["u_s"], params["b_s"])  # (B, N, H)   w = L u_s
    if proj_act == "sigmoid":
        w = sigmoid(w)
    elif proj_act == "tanh":
        w = xp.tanh(w)
    w = xp.permute_dims(w, (0, 2, 1))  # (B, H, N)

    e, ec = None, None
    if "e_vertical" in params:
        e, ec = hierarchical_embedding_forward(params["e_vertical"], params["e_horizontal"], tree,
                                               vertical=vertical, layout=layout)  # (B, N, M, Dh)  Eq. (4)
    norms = {"up_norm": up_norm, "agg_norm": agg_norm}
    v_hat, vac = hierarchical_accumulation_forward(v[:, :, :n, :], v[:, :, n:, :], w, tree, e=e,
                                                   **norms)  # (B, H, M, Dh)  Eq. (1)-(3)
    keys, kac = k, None
    if accumulate == "affinity_value":
        k_hat, kac = hierarchical_accumulation_forward(k[:, :, :n, :], k[:, :, n:, :], w, tree,
                                                       **norms)  # (B, H, M, Dh)
        keys = xp.concat([k[:, :, :n, :], k_hat], axis=2)  # (B, H, T, Dh)
    values = xp.concat([v[:, :, :n, :], v_hat], axis=2)  # (B, H, T, Dh)
    allowed = subtree_mask(tree) if mask == "subtree" else padding_mask_tree(tree)  # (B, T, T)
    keep = xp.astype(allowed[:, None, :, :], q.dtype)  # (B, 1, T, T) 0/1: rows with no allowed key get P = 0
    heads, ac = sdpa_forward(q, keys, values, mask=allowed[:, None, :, :], dropout_mask=keep)  # (B, H, T, Dh)  Eq. (5)
    y, oc = linear_forward(merge_heads(heads), params["w_o"], params["b_o"])  # (B, T, D)  Eq. (5)
    return y, TreeAttentionCache(qc, kc, vc, wc, ec, proj_act, w, vac, kac, ac, oc, n_heads, n)


def tree_attention_backward(dy: Any, cache: TreeAttentionCache) -> tuple[Any, Any, dict[str, Any]]:
    """Returns dx_leaves, dx_nodes and grads over TREE_PARAMS (and the embedding tables, when used)."""
    xp = array_namespace(dy)
    n = cache.n_leaves
    dheads, g_o = linear_backward(dy, cache.out_proj)  # (B, T, D)
    dq, dkeys, dvalues, _ = sdpa_backward(split_heads(dheads, cache.n_heads), cache.attention)  # (B, H, T, Dh)
    # values = [V_L; V̂_N],  V̂_N = H(V_L, V_N; w, E)
    dvl_acc, dvn, dw, de = hierarchical_accumulation_backward(dvalues[:, :, n:, :], cache.value_acc)
    dv = xp.concat([dvalues[:, :, :n, :] + dvl_acc, dvn], axis=2)  # (B, H, T, Dh)
    dk = dkeys
    if cache.key_acc is not None:  # keys = [K_L; K̂_N],  K̂_N = H(K_L, K_N; w, 0)
        dkl_acc, dkn, dw_k, _ = hierarchical_accumulation_backward(dkeys[:, :, n:, :], cache.key_acc)
        dk = xp.concat([dkeys[:, :, :n, :] + dkl_acc, dkn], axis=2)  # (B, H, T, Dh)
        dw = dw + dw_k
    if cache.proj_act == "sigmoid":  # w = sigmoid(u): dw/du = w (1 - w)
        dw = dw * cache.w * (1.0 - cache.w)
    elif cache.proj_act == "tanh":  # w = tanh(u): dw/du = 1 - w^2
        dw = dw * (1.0 - cache.w * cache.w)
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
