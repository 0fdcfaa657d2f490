"""Registered cases of tree-structured attention and of its hierarchical accumulation alone.

Default trees: B = 3 trees of n = 5, 3, 2 leaves and m = 4, 2, 1 nodes (padded to N = 5, M = 4), D = 12,
H = 2 heads of Dh = 6: pairwise distinct. Trees are bracket strings, so a user checks their own through
the Python API (``mechanism.example(0, config={"trees": ("(S (NP a b) c)",)})``, ``compare_torch(...,
config=...)``); the command line's comma-separated tuples cannot carry bracketed trees.

Registered names (defaults cite the authors' code; see reference.attention.tree):

* ``attention.tree``: the README recipe (values accumulated, ``upmean_mean``, the code's embeddings);
* ``attention.tree.paper_recalled``: the spec's reading of the paper (affinities and values, average over
  the leaf and the path, path-length embeddings), a reading from memory;
* ``attention.tree.class_defaults``: the class defaults ``wnstack_up_norm = wnstack_norm = 'none'``;
* ``attention.tree.accumulation`` (code norms) and ``attention.tree.accumulation.paper_recalled``: the
  accumulation alone, so its backward is checked in isolation.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ...config import Config, option
from ...embeddings.hierarchical import LAYOUTS, VERTICALS
from ...random import generator, normal
from ...registry import Case, Mechanism, register
from ..tree import (
    CODE_OPTIONS,
    PAPER_RECALLED_OPTIONS,
    PROJ_ACTS,
    init_tree_attention,
    tree_attention_backward,
    tree_attention_forward,
)
from ..tree_accumulation import (
    AGG_NORMS,
    UP_NORMS,
    hierarchical_accumulation_backward,
    hierarchical_accumulation_forward,
)
from ..tree_input import batch_trees, tree_from_static, tree_static

PAPER = "Tree-structured Attention with Hierarchical Accumulation (Nguyen, Joty, Hoi, Socher, ICLR 2020)"
TREES = ("(S (NP the cat) (VP sat (PP on mats)))", "(S (A x y) z)", "(S p q)")

#: Tree shapes that expose real bugs, shared by every tree mechanism's edge configurations.
TREE_EDGES = {
    "one_node_tree": {"trees": ("(S x)",)},
    "deep_chain": {"trees": ("(A (B (C (D (E (F x))))))", "(S a b)")},
    "deep_right_branching": {"trees": ("(A a (B b (C c (D d (E e f)))))",)},
    "flat_tree": {"trees": ("(S a b c d e f g)", "(S x y)")},
    "collapsed_unary_chains": {"trees": ("(S (NP (N cat)) (VP (V sat) (NP (D the) (N mat))))", "(S (X (Y a b)))"),
                               "collapse": True},
    "odd_sizes": {"trees": ("(S (A a b c) (B d (C e f g)) h)", "(S (X p q) r s t)", "(S u v w)", "(S (Y k l) m)",
                            "(R z)")},
}


def tree_batch(config: Any, xp) -> Any:
    return batch_trees(list(config.trees), xp=xp, collapse=config.collapse)


@dataclass(frozen=True)
class TreeAttentionConfig(Config):
    title = "tree-structured attention over a batch of bracketed constituency trees"
    trees: tuple[str, ...] = option(TREES, "the batch: bracketed trees such as '(S (NP the cat) (VP sat))'")
    collapse: bool = option(False, "apply the authors' preprocessing (drop pre-terminals, collapse unary chains)")
    d_model: int = option(12, "width D", minimum=1)
    n_heads: int = option(2, "heads H (divides d_model)", minimum=1)
    accumulate: str = option("value", "what is accumulated (code: values only)", choices=("value", "affinity_value"))
    up_norm: str = option("mean", "upward divisor (code: node count)", choices=UP_NORMS)
    agg_norm: str = option("mean", "aggregation divisor (code: span size)", choices=AGG_NORMS)
    vertical: str = option("code", "vertical embedding index", choices=VERTICALS)
    layout: str = option("interleave", "embedding halves layout", choices=LAYOUTS)
    proj_act: str = option("none", "activation of the aggregation weights (dwstack_proj_act)", choices=PROJ_ACTS)
    mask: str = option("subtree", "subtree masking or padding only (the code's ALL_ALL)", choices=("subtree", "all"))
    embeddings: bool = option(True, "hierarchical embeddings added to the accumulated values")
    n_vertical: int = option(3, "rows of the vertical table (fewer than the deepest path: the clamp runs)", minimum=1)
    n_horizontal: int = option(7, "rows of the horizontal table", minimum=1)

    def validate(self) -> None:
        if not self.trees:
            raise ValueError("TreeAttentionConfig.trees must hold at least one tree")
        if self.d_model % self.n_heads:
            raise ValueError(f"TreeAttentionConfig.d_model={self.d_model} must be divisible by n_heads={self.n_heads}")
        if self.embeddings and (self.d_model // self.n_heads) % 2:
            raise ValueError(f"TreeAttentionConfig: embeddings need an even head width, got d_model / n_heads = "
                             f"{self.d_model // self.n_heads} (set embeddings=False or change d_model, n_heads)")


def build(seed: int, dtype: Any, xp, config: TreeAttentionConfig) -> Case:
    rng = generator(seed)
    tree = tree_batch(config, xp)
    b, n, m = tree.membership.shape
    inputs = {"x_leaves": normal(rng, (b, n, config.d_model), xp=xp, dtype=dtype),
              "x_nodes": normal(rng, (b, m, config.d_model), xp=xp, dtype=dtype)}
    tables = {"n_vertical": config.n_vertical, "n_horizontal": config.n_horizontal} if config.embeddings else {}
    params = init_tree_attention(rng, config.d_model, config.n_heads, xp=xp, dtype=dtype, **tables)
    return Case(inputs=inputs, params=params, static=tree_static(tree))


def forward(case: Case):
    c = case.config
    y, cache = tree_attention_forward(case.inputs["x_leaves"], case.inputs["x_nodes"], case.params,
                                      tree_from_static(case.static), n_heads=c.n_heads, accumulate=c.accumulate,
                                      up_norm=c.up_norm, agg_norm=c.agg_norm, vertical=c.vertical, layout=c.layout,
                                      proj_act=c.proj_act, mask=c.mask)
    return {"y": y}, cache


def backward(cache, cot):
    dx_l, dx_n, grads = tree_attention_backward(cot["y"], cache)
    return {"x_leaves": dx_l, "x_nodes": dx_n, **grads}


def intermediates(cache) -> dict[str, Any]:
    """In forward order: aggregation weights w (B, H, N), accumulated values (B, H, M, Dh), attention (B, H, T, T)."""
    return {"w": cache.w, "s_hat_values": cache.value_acc.s_hat, "attention_probs": cache.attention.p_dropped}


EDGE_CONFIGS = {
    **TREE_EDGES,
    "proj_sigmoid": {"proj_act": "sigmoid"},
    "proj_tanh": {"proj_act": "tanh"},
    "padding_mask_only": {"mask": "all"},
    "no_embeddings": {"embeddings": False, "d_model": 15, "n_heads": 5},
    "one_head": {"n_heads": 1},
    "sqrt_norms": {"up_norm": "sqrt_mean", "agg_norm": "sqrt_mean"},
}
EDGE_CONFIGS["odd_sizes"] = {**TREE_EDGES["odd_sizes"], "d_model": 14, "n_heads": 7}
OTHER_EDGES = ("one_node_tree", "deep_chain", "odd_sizes", "proj_tanh")

#: A batch of sentence-length trees at a realistic width (IWSLT-like: D = 256, 4 heads).
REALISTIC = {"trees": tuple("(S (NP " + " ".join(f"w{i}{k}" for k in range(6)) + ") (VP (V v" + str(i) + ") (NP "
                            + " ".join(f"u{i}{k}" for k in range(8)) + ")))" for i in range(8)),
             "d_model": 256, "n_heads": 4}

register(Mechanism("attention.tree", PAPER + " - the authors' README recipe", "attention", build, forward, backward,
                   config=TreeAttentionConfig, edge_configs=EDGE_CONFIGS, realistic=REALISTIC,
                   intermediates=intermediates))
register(Mechanism("attention.tree.paper_recalled", PAPER + " - the spec's reading of the paper (from memory)",
                   "attention", build, forward, backward, config=TreeAttentionConfig, defaults=PAPER_RECALLED_OPTIONS,
                   edge_configs={k: EDGE_CONFIGS[k] for k in OTHER_EDGES}, realistic=REALISTIC,
                   intermediates=intermediates))
register(Mechanism("attention.tree.class_defaults", PAPER + " - the class defaults (no normalisation)", "attention",
                   build, forward, backward, config=TreeAttentionConfig,
                   defaults={**CODE_OPTIONS, "up_norm": "none", "agg_norm": "none"},
                   edge_configs={k: EDGE_CONFIGS[k] for k in OTHER_EDGES}, realistic=REALISTIC,
                   intermediates=intermediates))


@dataclass(frozen=True)
class AccumulationConfig(Config):
    title = "the hierarchical accumulation alone, on random leaf, node, weight and embedding inputs"
    trees: tuple[str, ...] = option(TREES, "the batch: bracketed trees")
    collapse: bool = option(False, "apply the authors' preprocessing")
    n_heads: int = option(2, "heads H", minimum=1)
    d_head: int = option(6, "head width Dh", minimum=1)
    up_norm: str = option("mean", "upward divisor (code: node count)", choices=UP_NORMS)
    agg_norm: str = option("mean", "aggregation divisor (code: span size)", choices=AGG_NORMS)
    embeddings: bool = option(True, "an embedding input e (B, N, M, Dh)")

    def validate(self) -> None:
        if not self.trees:
            raise ValueError("AccumulationConfig.trees must hold at least one tree")


def build_accumulation(seed: int, dtype: Any, xp, config: AccumulationConfig) -> Case:
    rng = generator(seed)
    tree = tree_batch(config, xp)
    b, n, m = tree.membership.shape
    h, dh = config.n_heads, config.d_head
    inputs = {"l": normal(rng, (b, h, n, dh), xp=xp, dtype=dtype), "n": normal(rng, (b, h, m, dh), xp=xp, dtype=dtype),
              "w": normal(rng, (b, h, n), xp=xp, dtype=dtype)}
    if config.embeddings:
        inputs["e"] = normal(rng, (b, n, m, dh), xp=xp, dtype=dtype, scale=0.5)
    return Case(inputs=inputs, params={}, static=tree_static(tree))


def forward_accumulation(case: Case):
    x = case.inputs
    n_hat, cache = hierarchical_accumulation_forward(x["l"], x["n"], x["w"], tree_from_static(case.static),
                                                     e=x.get("e"), up_norm=case.config.up_norm,
                                                     agg_norm=case.config.agg_norm)
    return {"n_hat": n_hat}, cache


def backward_accumulation(cache, cot):
    dl, dn, dw, de = hierarchical_accumulation_backward(cot["n_hat"], cache)
    return {"l": dl, "n": dn, "w": dw, **({"e": de} if de is not None else {})}


ACCUMULATION_EDGES = {**TREE_EDGES, "no_embeddings": {"embeddings": False}, "no_norms": {"up_norm": "none",
                                                                                        "agg_norm": "none"},
                      "sqrt_norms": {"up_norm": "sqrt_mean", "agg_norm": "sqrt_mean"}, "one_head": {"n_heads": 1}}

register(Mechanism("attention.tree.accumulation", PAPER + " - accumulation, the code's norms", "attention",
                   build_accumulation, forward_accumulation, backward_accumulation, config=AccumulationConfig,
                   edge_configs=ACCUMULATION_EDGES))
register(Mechanism("attention.tree.accumulation.paper_recalled", PAPER + " - accumulation, the recalled paper's mean",
                   "attention", build_accumulation, forward_accumulation, backward_accumulation,
                   config=AccumulationConfig, defaults={"up_norm": "paper_recalled"},
                   edge_configs={k: ACCUMULATION_EDGES[k] for k in ("one_node_tree", "deep_chain")}))
