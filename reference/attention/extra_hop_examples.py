"""Registered examples of Transformer-XH: one layer over an evidence graph, then the node head.

Sizes: N=6 nodes of T=3 tokens, D=4, H=2 in-sequence heads, Hh=2 hop heads (Dh=2), F=5 (small, so that
the full finite-difference check stays fast on array-api-strict).
The graph exercises every structural case (spec §4.7, §5):

    component {0, 1, 2}: 0 -> 1, 1 -> 0, 2 -> 1, 0 -> 2 and a self-loop 1 -> 1  (node 2 has in-degree 1)
    component {3, 4}:    3 -> 4  (node 3 has in-degree 0: a root)
    node 5:              isolated (zero hop message)

Nodes 2 and 4 end with a padded token. Registered names:

* ``attention.extra_hop``: the paper's hop (dot-product attention over neighbours, Variant B) inside
  the layer, softmax-over-nodes head;
* ``attention.extra_hop.gat``: the released code's GAT hop after the complete BERT layer (Variant A),
  per-node sigmoid BCE head. Its example is redrawn until every LeakyReLU and ReLU input of the hop
  is at least ``MARGIN`` away from its kink, so finite differences never straddle one.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..nn.encoder_layer import encoder_layer_forward, init_encoder_layer
from ..nn.linear import init_linear
from ..nn.attention import padding_mask
from ..random import generator, normal
from ..registry import Case, Mechanism, register
from .extra_hop import adjacency_from_edges, hop_margins
from .extra_hop_layer import node_head_backward, node_head_forward, xh_layer_backward, xh_layer_forward

PAPER = "Transformer-XH: Multi-Evidence Reasoning with eXtra Hop Attention (Zhao et al., ICLR 2020)"
N, T, D, H, HOP_HEADS, F = 6, 3, 4, 2, 2, 5
EDGES = [(0, 1), (1, 0), (2, 1), (0, 2), (1, 1), (3, 4)]
GOLD = 1
LABELS = [0.0, 1.0, 0.0, 0.0, 1.0, 0.0]
MARGIN = 0.02


def init_hop(rng: np.random.Generator, d_model: int, hop_heads: int, variant: str, *, xp, dtype) -> dict[str, Any]:
    """Hop parameters: w_h{q,k,v}, b_h{q,k,v} (paper) or w_fc, a_l, a_r, w_res (gat); and w_comb, b_comb."""
    params: dict[str, Any] = {}
    if variant == "paper":
        for name in "qkv":
            p = init_linear(rng, d_model, d_model, xp=xp, dtype=dtype)
            params[f"w_h{name}"], params[f"b_h{name}"] = p["w"], p["b"]
    else:
        dh = d_model // hop_heads
        params["w_fc"] = normal(rng, (dh, dh), xp=xp, dtype=dtype, scale=dh ** -0.5)
        params["a_l"] = normal(rng, (hop_heads, dh), xp=xp, dtype=dtype)
        params["a_r"] = normal(rng, (hop_heads, dh), xp=xp, dtype=dtype)
        params["w_res"] = normal(rng, (dh, dh), xp=xp, dtype=dtype, scale=dh ** -0.5)
    comb = init_linear(rng, 2 * d_model, d_model, xp=xp, dtype=dtype)
    params["w_comb"], params["b_comb"] = comb["w"], comb["b"]
    return params


def init_node_head(rng: np.random.Generator, d_model: int, *, xp, dtype) -> dict[str, Any]:
    p = init_linear(rng, d_model, 1, xp=xp, dtype=dtype)
    return {"w_node": p["w"], "b_node": p["b"]}


def _draw(rng: np.random.Generator, variant: str, xp, dtype) -> tuple[Any, dict[str, Any]]:
    x = normal(rng, (N, T, D), xp=xp, dtype=dtype)
    params = {**init_encoder_layer(rng, D, F, xp=xp, dtype=dtype),
              **init_hop(rng, D, HOP_HEADS, variant, xp=xp, dtype=dtype),
              **init_node_head(rng, D, xp=xp, dtype=dtype)}
    return x, params


def make_example(variant: str):
    head = "softmax" if variant == "paper" else "sigmoid"

    def example(seed: int, dtype: Any, xp) -> Case:
        rng = generator(seed)
        adjacency = adjacency_from_edges(xp.asarray(EDGES, dtype=xp.int64), N)  # (N, N)
        valid = xp.asarray([[True] * T] * 2 + [[True] * (T - 1) + [False]] + [[True] * T]
                           + [[True] * (T - 1) + [False]] + [[True] * T])  # (N, T)
        for _ in range(200):
            x, params = _draw(rng, variant, xp, dtype)
            if variant == "paper":
                break
            y0, _ = encoder_layer_forward(x, params, n_heads=H, mask=padding_mask(valid), eps=1e-12)
            if hop_margins(y0[:, 0, :], adjacency, params, n_heads=HOP_HEADS) >= MARGIN:
                break
        else:
            raise RuntimeError(f"no draw with hop margin >= {MARGIN}")
        static = {"adjacency": adjacency, "valid": valid, "gold": xp.asarray(GOLD, dtype=xp.int64),
                  "labels": xp.asarray(LABELS, dtype=dtype)}
        return Case(inputs={"x": x}, params=params, static=static)

    def forward(case: Case):
        st = case.static
        y, layer = xh_layer_forward(case.inputs["x"], st["adjacency"], case.params, n_heads=H, hop_heads=HOP_HEADS,
                                    valid=st["valid"], variant=variant)
        s, loss, head_cache = node_head_forward(y, case.params["w_node"], case.params["b_node"], kind=head,
                                                gold=st["gold"], labels=st["labels"])
        return {"y": y, "node_logits": s, "loss": loss}, (layer, head_cache)

    def backward(cache, cot):
        layer, head_cache = cache
        dy_head, grads_head = node_head_backward(cot["node_logits"], cot["loss"], head_cache, T)
        dx, grads = xh_layer_backward(cot["y"] + dy_head, layer)
        return {"x": dx, **grads, **grads_head}

    return example, forward, backward


register(Mechanism("attention.extra_hop", PAPER, "attention", *make_example("paper")))
register(Mechanism("attention.extra_hop.gat", PAPER, "attention", *make_example("gat")))
