"""A Transformer-XH layer (in-sequence Transformer layer + eXtra hop attention) and its node-level prediction head.

Zhao et al., "Transformer-XH", ICLR 2020 (OpenReview r1eIiCNYwS), page 4, Eq. (6)-(9) as recorded in
spec findings.md ("Transformer-XH: where the hop merges", [paper]); code microsoft/Transformer-XH at
``953d8d4``, ``transformer-xh/model/model.py`` ``TransformerXHEncoder.forward`` (about l.130-164) and
``Trainer.py``. The hop itself is :mod:`reference.attention.extra_hop`.

Axes: N nodes (one graph's evidence sequences, the batch axis), T tokens, D width, F FFN width,
H in-sequence heads, Hh hop heads. Token 0 of every sequence ([CLS], the hub) carries the hop.

Both hops sit at the same place, after the complete Transformer layer:

    Y0 = TransformerLayer(X; padding mask)              nn.encoder_layer (post-LN, GELU)        Eq. (6)
    Y[:, 0] = hop(Y0[:, 0]; graph)                      merged [CLS] = the layer's output        Eq. (8)
    Y[:, t] = Y0[:, t] for t >= 1                       non-hub tokens unchanged                 Eq. (9)

hop = "paper" (default): dot-product attention over the neighbours' [CLS] with separate projections and
the paper's merge Linear([h ; hhat]) (page 4, Eq. 8: "the new representation of layer l"); non-hub tokens
see the hop through the next layer's in-sequence attention (Eq. 6). hop = "gat" (the released code,
``model.py`` l.130-150 and ``GraphAttention`` l.21-85): a GAT on the [CLS] rows merged as [g | c], placed
after the whole BERT layer, not layer-normalised again (spec X2). Both placements are the same; only the
hop differs.

Defaults and what they cite: the placement after the complete layer: paper page 4, Eq. (8)-(9) (and
``model.py`` l.130-150 for the code); GELU, post-LN, eps = 1e-12: BERT, which the authors' code
initialises from (``model.py`` builds ``BertLayer``); the softmax-over-nodes head: the paper's node
prediction (spec §4.5, [paper, recalled], so ``kind="sigmoid"``, ``Trainer.py`` l.36-64, is an option).

Still unread in the paper (so the choices are named here, not cited): whether the hop of layer l reads
layer l's or layer l-1's [CLS] (the oracle reads layer l's output, like the code); the 1/sqrt(d) scale of
the hop scores (the oracle uses 1/sqrt(D/Hh) per hop head); whether a node's own [CLS] counts as a
neighbour (the oracle adds no self-edge: a self-loop is an ordinary edge of ``adjacency``).

An earlier version of the oracle merged the hop between the attention sub-layer and the FFN; no source
supports that placement (findings.md), so it was removed.

Node head, s_tau = Y[tau, 0] w_node + b_node (N,):

    "softmax": P(tau) = softmax_tau(s); loss = -log P(gold)      one relevant node among N
    "sigmoid": loss = mean_tau BCE(sigmoid(s_tau), label_tau)    (Trainer.py, spec X6)

Backward: the head's loss VJP; the hop's VJP on row 0 only (rows t >= 1 pass through); then
nn.encoder_layer's backward with the row-0 cotangent replaced by the hop's input gradient.

**Deviations**: the code's BERT pooler (tanh) before the node linear and its dropout are left out
(the paper's head is a linear layer on the first token); no dropout inside the layer (the checks run
in eval mode; the code's hop dropouts are inactive anyway, spec X4).
"""

from __future__ import annotations

from typing import Any, NamedTuple

from ..backend import array_namespace
from ..nn.attention import ATTENTION_PARAMS, padding_mask
from ..nn.encoder_layer import LN_PARAMS, EncoderLayerCache, encoder_layer_backward, encoder_layer_forward
from ..nn.feed_forward import FFN_PARAMS
from ..nn.linear import init_linear
from ..nn.losses import cross_entropy_backward, cross_entropy_forward, sigmoid_bce_backward, sigmoid_bce_forward
from ..validate import require_bool, require_finite, require_float, require_int, require_params, require_shape
from .extra_hop import (
    GAT_HOP_PARAMS,
    PAPER_HOP_PARAMS,
    VARIANTS,
    GATHopCache,
    PaperHopCache,
    extra_hop_backward,
    extra_hop_forward,
)

HEADS = ("softmax", "sigmoid")
LAYER_PARAMS = (*ATTENTION_PARAMS, *FFN_PARAMS, *LN_PARAMS)


class XHLayerCache(NamedTuple):
    encoder: EncoderLayerCache
    hop: PaperHopCache | GATHopCache


class NodeHeadCache(NamedTuple):
    kind: str
    first: Any  # (N, D) first-token states
    w_node: Any  # (D, 1)
    loss: Any  # CrossEntropyCache or BCECache


def _select(params: dict[str, Any], names: tuple[str, ...]) -> dict[str, Any]:
    return {name: params[name] for name in names}


def _replace_first(rows: Any, first: Any) -> Any:
    """rows (N, T, D) with token 0 replaced by first (N, D)."""
    xp = array_namespace(rows)
    return xp.concat([first[:, None, :], rows[:, 1:, :]], axis=1)  # (N, T, D)


def xh_layer_forward(x: Any, adjacency: Any, params: dict[str, Any], *, n_heads: int, hop_heads: int,
                     valid: Any | None = None, variant: str = "paper", eps: float = 1e-12) -> tuple[Any, XHLayerCache]:
    """x (N, T, D) node sequences, adjacency (N, N) bool [v, u] = edge u -> v, valid (N, T) bool or None."""
    require_float("x", x)
    require_shape("x", x, ["nodes", "seq", "d_model"], [None, None, None])
    if 0 in x.shape:
        raise ValueError(f"x must be non-empty (nodes, seq, d_model all >= 1), got shape {tuple(x.shape)}")
    require_finite("x", x)
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
    if n_heads < 1 or x.shape[2] % n_heads:
        raise ValueError(f"d_model={x.shape[2]} must be divisible by n_heads={n_heads} (>= 1)")
    mask = None
    if valid is not None:
        require_bool("valid", valid)
        require_shape("valid", valid, ["nodes", "seq"], [x.shape[0], x.shape[1]])
        mask = padding_mask(valid)  # (N, 1, 1, T)
    hop_names = PAPER_HOP_PARAMS if variant == "paper" else GAT_HOP_PARAMS
    require_params(params, (*LAYER_PARAMS, *hop_names))
    layer, hop_params = _select(params, LAYER_PARAMS), _select(params, hop_names)
    y0, encoder = encoder_layer_forward(x, layer, n_heads=n_heads, mask=mask, activation="gelu",
                                        eps=eps)  # (N, T, D)  Eq. (6)
    first, hop = extra_hop_forward(y0[:, 0, :], adjacency, hop_params, n_heads=hop_heads,
                                   variant=variant)  # (N, D)  Eq. (8) merged [CLS]
    return _replace_first(y0, first), XHLayerCache(encoder, hop)  # (N, T, D)  Eq. (9) other tokens unchanged


def xh_layer_backward(dy: Any, cache: XHLayerCache) -> tuple[Any, dict[str, Any]]:
    """Returns dx (N, T, D) and the gradients of the layer's and the hop's parameters."""
    dfirst, grads_hop = extra_hop_backward(dy[:, 0, :], cache.hop)  # (N, D) the hop replaced row 0
    dx, grads = encoder_layer_backward(_replace_first(dy, dfirst), cache.encoder)  # (N, T, D)
    return dx, {**grads, **grads_hop}


def node_head_forward(y: Any, w_node: Any, b_node: Any, *, kind: str = "softmax", gold: Any | None = None,
                      labels: Any | None = None) -> tuple[Any, Any, NodeHeadCache]:
    """Node logits s (N,) from token 0 of y (N, T, D) and the loss: softmax over nodes with ``gold`` (0-d int),
    or per-node sigmoid BCE with ``labels`` (N,) float in [0, 1]. Returns (s, loss, cache)."""
    xp = array_namespace(y)
    if kind not in HEADS:
        raise ValueError(f"kind must be one of {HEADS}, got {kind!r}")
    require_float("y", y)
    require_shape("y", y, ["nodes", "seq", "d_model"], [None, None, None])
    require_finite("y", y)
    for name, a, axes, want in (("w_node", w_node, ["d_model", "1"], [y.shape[-1], 1]), ("b_node", b_node, ["1"], [1])):
        require_float(name, a)
        require_shape(name, a, axes, want)
        require_finite(name, a)
    first = y[:, 0, :]  # (N, D)
    s = xp.reshape(xp.matmul(first, w_node) + b_node, (y.shape[0],))  # (N,)
    if kind == "softmax":
        if gold is None:
            raise ValueError("gold (0-d integer node index) is required for kind='softmax'")
        require_int("gold", gold)
        require_shape("gold", gold, [], [])
        if not 0 <= int(gold) < y.shape[0]:
            raise ValueError(f"gold must lie in [0, {y.shape[0]}) (a node index), got {int(gold)}")
        loss, loss_cache = cross_entropy_forward(s[None, :], xp.reshape(gold, (1,)))  # over the N nodes
    else:
        if labels is None:
            raise ValueError("labels (N,) in [0, 1] are required for kind='sigmoid'")
        require_float("labels", labels)
        require_shape("labels", labels, ["nodes"], [y.shape[0]])
        if not bool(xp.all((labels >= 0) & (labels <= 1))):
            raise ValueError("labels must lie in [0, 1] (NaN is refused)")
        loss, loss_cache = sigmoid_bce_forward(s, labels)
    return s, loss, NodeHeadCache(kind, first, w_node, loss_cache)


def node_head_backward(ds: Any, dloss: Any, cache: NodeHeadCache, seq_len: int) -> tuple[Any, dict[str, Any]]:
    """Gradients for the logits' and the loss's cotangents; returns dy (N, T, D) and {w_node, b_node}."""
    xp = array_namespace(ds)
    if cache.kind == "softmax":
        ds = ds + cross_entropy_backward(dloss, cache.loss)[0, ...]  # (N,)
    else:
        ds = ds + sigmoid_bce_backward(dloss, cache.loss)  # (N,)
    dfirst = ds[:, None] * xp.reshape(cache.w_node, (1, -1))  # (N, D)
    grads = {"w_node": xp.matmul(xp.matrix_transpose(cache.first), ds[:, None]), "b_node": xp.sum(ds, keepdims=True)}
    n, d = dfirst.shape
    dy = xp.concat([dfirst[:, None, :], xp.zeros((n, seq_len - 1, d), dtype=ds.dtype)], axis=1)  # (N, T, D)
    return dy, grads


def init_node_head(rng, d_model: int, *, xp, dtype) -> dict[str, Any]:
    """The node linear: w_node (D, 1), b_node (1,)."""
    p = init_linear(rng, d_model, 1, xp=xp, dtype=dtype)
    return {"w_node": p["w"], "b_node": p["b"]}
