"""Registered cases of subtree masking: multi-head attention over [leaves; nodes] under the subtree mask.

Defaults: the trees of attention.tree (B = 3, N = 5, M = 4), D = 12, H = 2 (Dh = 6): pairwise distinct.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ...attention.cases.tree import TREE_EDGES, TREES, tree_batch
from ...attention.tree_input import tree_from_static, tree_static
from ...config import Config, option
from ...nn.attention import ATTENTION_PARAMS, init_attention
from ...random import generator, normal
from ...registry import Case, Mechanism, register
from ..subtree_masking import subtree_attention_backward, subtree_attention_forward

PAPER = "Tree-structured Attention with Hierarchical Accumulation (Nguyen, Joty, Hoi, Socher, ICLR 2020)"


@dataclass(frozen=True)
class SubtreeMaskingConfig(Config):
    title = "attention over [leaves; nodes] of a batch of bracketed trees under the subtree mask"
    trees: tuple[str, ...] = option(TREES, "the batch: bracketed trees")
    collapse: bool = option(False, "apply the authors' preprocessing")
    d_model: int = option(12, "width D", minimum=1)
    n_heads: int = option(2, "heads H (divides d_model)", minimum=1)
    leaf_queries: str = option("leaves", "what leaf queries see: leaves only (the code) or every node too",
                               choices=("leaves", "all"))

    def validate(self) -> None:
        if not self.trees:
            raise ValueError("SubtreeMaskingConfig.trees must hold at least one tree")
        if self.d_model % self.n_heads:
            raise ValueError(f"SubtreeMaskingConfig.d_model={self.d_model} must be divisible by n_heads={self.n_heads}")


def build(seed: int, dtype: Any, xp, config: SubtreeMaskingConfig) -> Case:
    rng = generator(seed)
    tree = tree_batch(config, xp)
    b, n, m = tree.membership.shape
    return Case(inputs={"x_leaves": normal(rng, (b, n, config.d_model), xp=xp, dtype=dtype),
                        "x_nodes": normal(rng, (b, m, config.d_model), xp=xp, dtype=dtype)},
                params=init_attention(rng, config.d_model, xp=xp, dtype=dtype), static=tree_static(tree))


def forward(case: Case):
    params = {k: case.params[k] for k in ATTENTION_PARAMS}
    y, cache = subtree_attention_forward(case.inputs["x_leaves"], case.inputs["x_nodes"], params,
                                         tree_from_static(case.static), n_heads=case.config.n_heads,
                                         leaf_queries=case.config.leaf_queries)
    return {"y": y}, cache


def backward(cache, cot):
    dx_l, dx_n, grads = subtree_attention_backward(cot["y"], cache)
    return {"x_leaves": dx_l, "x_nodes": dx_n, **grads}


def intermediates(cache) -> dict[str, Any]:
    """The masked attention probabilities (B, H, T, T), zero rows for padded queries."""
    return {"attention_probs": cache.attention.p_dropped}


EDGE_CONFIGS = {**TREE_EDGES, "leaf_queries_all": {"leaf_queries": "all"}, "one_head": {"n_heads": 1}}
EDGE_CONFIGS["odd_sizes"] = {**TREE_EDGES["odd_sizes"], "d_model": 15, "n_heads": 5}

register(Mechanism("objectives.subtree_masking", PAPER, "objectives", build, forward, backward,
                   config=SubtreeMaskingConfig, edge_configs=EDGE_CONFIGS, intermediates=intermediates,
                   realistic={"d_model": 256, "n_heads": 4}))
