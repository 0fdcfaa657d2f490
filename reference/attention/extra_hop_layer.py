"""A Transformer-XH layer (in-sequence attention + eXtra hop attention) and its node-level prediction head.

Zhao et al., "Transformer-XH", ICLR 2020 (the layer and node prediction as the spec recalls them); code
microsoft/Transformer-XH ``model.py`` ``TransformerXHEncoder.forward`` and ``Trainer.py``; spec attention.md
§4.2-§4.5. The hop itself is :mod:`reference.attention.extra_hop`.

Axes: N nodes (one graph's evidence sequences, the batch axis), T tokens, D width, F FFN width,
H in-sequence heads, Hh hop heads. Token 0 of every sequence ([CLS]) carries the hop.

Variant "paper" (default; the hop sits inside the layer, between attention and FFN):

    A  = MHA(X, X; padding mask)                        in-sequence attention of every token
    H1 = LN1(X + A)
    H1[:, 0] <- hop(H1[:, 0]; graph)                    [h ; hhat] merged by the paper's Linear
    Y  = LN2(H1 + FFN_gelu(H1))

Variant "gat" (the released code; the hop follows the complete BERT layer, spec X2):

    Y0 = BERTLayer(X)                                   nn.encoder_layer (post-LN, GELU)
    Y  = Y0 with Y[:, 0] <- gat_hop(Y0[:, 0]; graph)    not layer-normalised again

Node head, s_tau = Y[tau, 0] w_node + b_node (N,):

    paper ("softmax"): P(tau) = softmax_tau(s); loss = -log P(gold)      one relevant node among N
    code ("sigmoid"):  loss = mean_tau BCE(sigmoid(s_tau), label_tau)    (Trainer.py, spec X6)

Backward: the head's loss VJP, then (paper) LN2' and FFN' on every token, the hop's VJP on row 0
only (the other rows pass through), LN1', MHA' (query and key/value paths summed); (gat) the hop's
VJP on row 0, then nn.encoder_layer's backward.

**Deviations**: the code's BERT pooler (tanh) before the node linear and its dropout are left out
(the paper's head is a linear layer on the first token); no dropout inside the layer (the checks run
in eval mode; the code's hop dropouts are inactive anyway, spec X4); LayerNorm eps is BERT's 1e-12.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from ..backend import array_namespace
from ..nn.attention import ATTENTION_PARAMS, MHACache, mha_backward, mha_forward, padding_mask
from ..nn.encoder_layer import LN_PARAMS, EncoderLayerCache, encoder_layer_backward, encoder_layer_forward
from ..nn.feed_forward import FFN_PARAMS, FeedForwardCache, feed_forward_backward, feed_forward_forward
from ..nn.layer_norm import LayerNormCache, layer_norm_backward, layer_norm_forward
from ..nn.losses import cross_entropy_backward, cross_entropy_forward, sigmoid_bce_backward, sigmoid_bce_forward
from ..validate import require_bool, require_float, require_shape
from .extra_hop import (GAT_HOP_PARAMS, PAPER_HOP_PARAMS, VARIANTS, GATHopCache, PaperHopCache, extra_hop_backward,
                        extra_hop_forward)

HEADS = ("softmax", "sigmoid")
LAYER_PARAMS = (*ATTENTION_PARAMS, *FFN_PARAMS, *LN_PARAMS)


class XHLayerCache(NamedTuple):
    variant: str
    attention: MHACache | None  # paper variant
    ln1: LayerNormCache | None  # paper variant
    ffn: FeedForwardCache | None  # paper variant
    ln2: LayerNormCache | None  # paper variant
    encoder: EncoderLayerCache | None  # gat variant
    hop: PaperHopCache | GATHopCache


class NodeHeadCache(NamedTuple):
    kind: str
    first: Any  # (N, D) first-token states
    w_node: Any  # (D, 1)
    loss: Any  # CrossEntropyCache or BCECache


def _select(params: dict[str, Any], names: tuple[str, ...]) -> dict[str, Any]:
    missing = [name for name in names if name not in params]
    if missing:
        raise ValueError(f"params is missing {missing}")
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
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
    mask = None
    if valid is not None:
        require_bool("valid", valid)
        require_shape("valid", valid, ["nodes", "seq"], [x.shape[0], x.shape[1]])
        mask = padding_mask(valid)  # (N, 1, 1, T)
    hop_names = PAPER_HOP_PARAMS if variant == "paper" else GAT_HOP_PARAMS
    layer, hop_params = _select(params, LAYER_PARAMS), _select(params, hop_names)
    if variant == "gat":
        y0, encoder = encoder_layer_forward(x, layer, n_heads=n_heads, mask=mask, activation="gelu", eps=eps)
        first, hop = extra_hop_forward(y0[:, 0, :], adjacency, hop_params, n_heads=hop_heads, variant="gat")  # (N, D)
        return _replace_first(y0, first), XHLayerCache(variant, None, None, None, None, encoder, hop)
    a, attention = mha_forward(x, x, {k: layer[k] for k in ATTENTION_PARAMS}, n_heads=n_heads, mask=mask)  # (N, T, D)
    h1, ln1 = layer_norm_forward(x + a, layer["ln1_gamma"], layer["ln1_beta"], eps=eps)  # (N, T, D)
    first, hop = extra_hop_forward(h1[:, 0, :], adjacency, hop_params, n_heads=hop_heads, variant="paper")  # (N, D)
    h1 = _replace_first(h1, first)  # (N, T, D)
    f, ffn = feed_forward_forward(h1, {k: layer[k] for k in FFN_PARAMS}, activation="gelu")  # (N, T, D)
    y, ln2 = layer_norm_forward(h1 + f, layer["ln2_gamma"], layer["ln2_beta"], eps=eps)  # (N, T, D)
    return y, XHLayerCache(variant, attention, ln1, ffn, ln2, None, hop)


def xh_layer_backward(dy: Any, cache: XHLayerCache) -> tuple[Any, dict[str, Any]]:
    """Returns dx (N, T, D) and the gradients of the layer's and the hop's parameters."""
    if cache.variant == "gat":
        dfirst, grads_hop = extra_hop_backward(dy[:, 0, :], cache.hop)  # (N, D)
        dx, grads = encoder_layer_backward(_replace_first(dy, dfirst), cache.encoder)
        return dx, {**grads, **grads_hop}
    ds2, grads_ln2 = layer_norm_backward(dy, cache.ln2)  # d(H1 + f)
    dh1_ffn, grads_ffn = feed_forward_backward(ds2, cache.ffn)
    dh1 = ds2 + dh1_ffn  # (N, T, D) gradient of the merged H1
    dfirst, grads_hop = extra_hop_backward(dh1[:, 0, :], cache.hop)  # (N, D) the hop replaced row 0
    ds1, grads_ln1 = layer_norm_backward(_replace_first(dh1, dfirst), cache.ln1)  # d(X + A)
    dx_q, dx_kv, grads_attn = mha_backward(ds1, cache.attention)
    grads = {**grads_attn, **grads_ffn, **grads_hop, "ln1_gamma": grads_ln1["gamma"], "ln1_beta": grads_ln1["beta"],
             "ln2_gamma": grads_ln2["gamma"], "ln2_beta": grads_ln2["beta"]}
    return ds1 + dx_q + dx_kv, grads


def node_head_forward(y: Any, w_node: Any, b_node: Any, *, kind: str = "softmax", gold: Any | None = None,
                      labels: Any | None = None) -> tuple[Any, Any, NodeHeadCache]:
    """Node logits s (N,) from token 0 of y (N, T, D) and the loss: softmax over nodes with ``gold`` (0-d int),
    or per-node sigmoid BCE with ``labels`` (N,) float in [0, 1]. Returns (s, loss, cache)."""
    xp = array_namespace(y)
    if kind not in HEADS:
        raise ValueError(f"kind must be one of {HEADS}, got {kind!r}")
    require_shape("w_node", w_node, ["d_model", "1"], [y.shape[-1], 1])
    require_shape("b_node", b_node, ["1"], [1])
    first = y[:, 0, :]  # (N, D)
    s = xp.reshape(xp.matmul(first, w_node) + b_node, (y.shape[0],))  # (N,)
    if kind == "softmax":
        if gold is None:
            raise ValueError("gold (0-d integer node index) is required for kind='softmax'")
        loss, loss_cache = cross_entropy_forward(s[None, :], xp.reshape(gold, (1,)))  # over the N nodes
    else:
        if labels is None:
            raise ValueError("labels (N,) in [0, 1] are required for kind='sigmoid'")
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
