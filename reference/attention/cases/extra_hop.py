"""Registered cases of Transformer-XH: one layer over an evidence graph, then the node head.

Defaults: N=6 nodes of T=4 tokens, D=15, H=3 in-sequence heads, Hh=5 hop heads (Dh=3), F=7 (small, so
that the full finite-difference check stays fast on array-api-strict). The "mixed" graph exercises every
structural case (spec §4.7, §5):

    component {0, 1, 2}: 0 -> 1, 1 -> 0, 2 -> 1, 0 -> 2 and a self-loop 1 -> 1  (node 2 has in-degree 1)
    component {3, 4}:    3 -> 4  (node 3 has in-degree 0: a root)
    nodes 5, 6, ...:     isolated (zero hop message)

(edges touching a node >= n_nodes are dropped). The other graphs: "complete" (every u -> v with u != v, the
FEVER graphs, spec §4.1), "chain" (0 -> 1 -> ... -> N-1), "empty" (no edge), "self_loops" (v -> v only).
Even nodes v > 0 end with ``n_padded`` padded tokens. Registered names:

* ``attention.extra_hop``: the paper's hop (dot-product attention over neighbours) after the layer,
  softmax-over-nodes head;
* ``attention.extra_hop.gat``: the released code's GAT hop, per-node sigmoid BCE head. Its case is redrawn
  until every LeakyReLU and ReLU input of the hop is at least ``relu_margin`` from its kink, so finite
  differences never straddle one; a configuration too large for that raises one ValueError.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ...config import Config, option
from ...nn.attention import padding_mask
from ...nn.encoder_layer import encoder_layer_forward, init_encoder_layer
from ...random import generator, normal
from ...registry import Case, Mechanism, register
from ..extra_hop import VARIANTS, adjacency_from_edges, hop_margins, init_hop
from ..extra_hop_layer import (
    HEADS,
    init_node_head,
    node_head_backward,
    node_head_forward,
    xh_layer_backward,
    xh_layer_forward,
)

PAPER = "Transformer-XH: Multi-Evidence Reasoning with eXtra Hop Attention (Zhao et al., ICLR 2020)"
GRAPHS = ("mixed", "complete", "chain", "empty", "self_loops")
MIXED_EDGES = ((0, 1), (1, 0), (2, 1), (0, 2), (1, 1), (3, 4))
DRAWS = 200


@dataclass(frozen=True)
class ExtraHopConfig(Config):
    title = "one Transformer-XH layer over a graph of n_nodes sequences, then the node head"
    n_nodes: int = option(6, "nodes N (evidence sequences; the batch axis of the layer)", minimum=1)
    seq_len: int = option(4, "tokens T per node (token 0 is the [CLS] hub)", minimum=1)
    d_model: int = option(15, "width D", minimum=1)
    n_heads: int = option(3, "in-sequence attention heads H (divides d_model)", minimum=1)
    hop_heads: int = option(5, "hop heads Hh (divides d_model)", minimum=1)
    d_ff: int = option(7, "FFN hidden width F", minimum=1)
    hop: str = option("paper", "hop kind: the paper's dot-product attention or the code's GAT", choices=VARIANTS)
    head: str = option("softmax", "node head: softmax over nodes or per-node sigmoid BCE", choices=HEADS)
    graph: str = option("mixed", "edge pattern (see the module docstring)", choices=GRAPHS)
    n_padded: int = option(1, "padded tokens at the end of every even node v > 0", minimum=0)
    relu_margin: float = option(0.02, "GAT hop: least |input| of every LeakyReLU and ReLU (0: no redraw; "
                                "not for gradient checks)", minimum=0.0)

    def validate(self) -> None:
        for field in ("n_heads", "hop_heads"):
            if self.d_model % getattr(self, field):
                raise ValueError(f"ExtraHopConfig.d_model={self.d_model} must be divisible by "
                                 f"{field}={getattr(self, field)}")
        if self.n_padded > self.seq_len:
            raise ValueError(f"ExtraHopConfig.n_padded={self.n_padded} must be <= seq_len={self.seq_len}")


def graph_edges(graph: str, n: int) -> list[tuple[int, int]]:
    """(source, destination) pairs of the named edge pattern on n nodes."""
    if graph == "mixed":
        return [(u, v) for u, v in MIXED_EDGES if u < n and v < n]
    if graph == "complete":
        return [(u, v) for u in range(n) for v in range(n) if u != v]
    if graph == "chain":
        return [(v, v + 1) for v in range(n - 1)]
    if graph == "self_loops":
        return [(v, v) for v in range(n)]
    return []


def _static(config: ExtraHopConfig, xp, dtype) -> dict[str, Any]:
    n, t = config.n_nodes, config.seq_len
    edges = graph_edges(config.graph, n)
    adjacency = (adjacency_from_edges(xp.asarray(edges, dtype=xp.int64), n) if edges
                 else xp.zeros((n, n), dtype=xp.bool))  # (N, N) [v, u]
    padded = [v > 0 and v % 2 == 0 for v in range(n)]
    valid = xp.asarray([[not (padded[v] and k >= t - config.n_padded) for k in range(t)] for v in range(n)])  # (N, T)
    return {"adjacency": adjacency, "valid": valid, "gold": xp.asarray(min(1, n - 1), dtype=xp.int64),
            "labels": xp.asarray([1.0 if v in (1, 4) else 0.0 for v in range(n)], dtype=dtype)}


def build(seed: int, dtype: Any, xp, config: ExtraHopConfig) -> Case:
    rng = generator(seed)
    n, t, d = config.n_nodes, config.seq_len, config.d_model
    static = _static(config, xp, dtype)
    for _ in range(DRAWS):
        x = normal(rng, (n, t, d), xp=xp, dtype=dtype)
        params = {**init_encoder_layer(rng, d, config.d_ff, xp=xp, dtype=dtype),
                  **init_hop(rng, d, config.hop_heads, config.hop, xp=xp, dtype=dtype),
                  **init_node_head(rng, d, xp=xp, dtype=dtype)}
        if config.hop == "paper" or config.relu_margin == 0:
            break
        y0, _ = encoder_layer_forward(x, params, n_heads=config.n_heads, mask=padding_mask(static["valid"]),
                                      eps=1e-12)
        if hop_margins(y0[:, 0, :], static["adjacency"], params, n_heads=config.hop_heads) >= config.relu_margin:
            break
    else:
        raise ValueError(f"attention.extra_hop.gat: no draw in {DRAWS} keeps every LeakyReLU and ReLU input of the "
                         f"hop at least relu_margin={config.relu_margin} from its kink at this configuration "
                         f"({n} nodes x {d} channels); use a smaller graph or width (relu_margin=0 skips the redraw, "
                         "but finite differences may then straddle a kink)")
    return Case(inputs={"x": x}, params=params, static=static)


def forward(case: Case):
    st, config = case.static, case.config
    y, layer = xh_layer_forward(case.inputs["x"], st["adjacency"], case.params, n_heads=config.n_heads,
                                hop_heads=config.hop_heads, valid=st["valid"], variant=config.hop)
    s, loss, head_cache = node_head_forward(y, case.params["w_node"], case.params["b_node"], kind=config.head,
                                            gold=st["gold"], labels=st["labels"])
    return {"y": y, "node_logits": s, "loss": loss}, (layer, head_cache)


def backward(cache, cot):
    layer, head_cache = cache
    dy_head, grads_head = node_head_backward(cot["node_logits"], cot["loss"], head_cache, cot["y"].shape[1])
    dx, grads = xh_layer_backward(cot["y"] + dy_head, layer)
    return {"x": dx, **grads, **grads_head}


def intermediates(cache) -> dict[str, Any]:
    """In forward order: the layer's in-sequence attention probabilities, H1 (after LN1), the hop's weights."""
    layer, _ = cache
    hop = layer.hop
    hop_probs = hop.attention.softmax.p if hasattr(hop, "attention") else hop.softmax.p
    return {"attention_probs": layer.encoder.attention.attention.softmax.p, "h1": layer.encoder.ffn.inner.x,
            "hop_probs": hop_probs}


EDGE_CONFIGS = {
    "one_node": {"n_nodes": 1},
    "length_1": {"seq_len": 1, "n_padded": 0},
    "fully_padded_node": {"n_padded": 4},
    "complete_graph": {"graph": "complete"},
    "deep_chain": {"n_nodes": 7, "graph": "chain"},
    "no_edges": {"graph": "empty"},
    "self_loops_only": {"graph": "self_loops"},
    "sigmoid_head": {"head": "sigmoid"},
    "one_head_each": {"n_heads": 1, "hop_heads": 1},
    "odd_sizes": {"n_nodes": 7, "seq_len": 5, "d_model": 21, "n_heads": 7, "hop_heads": 3, "d_ff": 11},
}
GAT_EDGES = ("one_node", "fully_padded_node", "complete_graph", "no_edges", "odd_sizes")

#: A HotpotQA-like graph at a realistic width (BERT-base would be D=768, T=300: too slow for a float64 check).
REALISTIC = {"n_nodes": 8, "seq_len": 64, "d_model": 128, "n_heads": 4, "hop_heads": 4, "d_ff": 512,
             "graph": "complete", "n_padded": 16}

register(Mechanism("attention.extra_hop", PAPER, "attention", build, forward, backward, config=ExtraHopConfig,
                   edge_configs=EDGE_CONFIGS, realistic=REALISTIC, intermediates=intermediates))
register(Mechanism("attention.extra_hop.gat", PAPER + " - the released code's GAT hop", "attention", build, forward,
                   backward, config=ExtraHopConfig, defaults={"hop": "gat", "head": "sigmoid"},
                   edge_configs={k: EDGE_CONFIGS[k] for k in GAT_EDGES},
                   realistic={**REALISTIC, "relu_margin": 0.0}, intermediates=intermediates))
