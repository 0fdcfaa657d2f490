"""Registered cases of the hierarchical embeddings of tree-structured attention.

Defaults: the trees of attention.tree (B = 3, N = 5, M = 4), tables of 3 and 4 rows (fewer than the largest
counts 3 and 5, so the clamp runs) of width W = 2 (a head of Dh = 4). Registered names:

* ``embeddings.hierarchical``: the authors' code (depth index, interleaved halves);
* ``embeddings.hierarchical.paper_recalled``: the spec's reading of the paper (path length, [v; h]).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ...attention.cases.tree import TREE_EDGES, TREES, tree_batch
from ...attention.tree_input import tree_from_static, tree_static
from ...config import Config, option
from ...random import generator
from ...registry import Case, Mechanism, register
from ..hierarchical import (
    LAYOUTS,
    VERTICALS,
    hierarchical_embedding_backward,
    hierarchical_embedding_forward,
    init_hierarchical,
)

PAPER = "Tree-structured Attention with Hierarchical Accumulation (Nguyen, Joty, Hoi, Socher, ICLR 2020)"


@dataclass(frozen=True)
class HierarchicalConfig(Config):
    title = "hierarchical embeddings E (B, N, M, 2W) of a batch of bracketed trees"
    trees: tuple[str, ...] = option(TREES, "the batch: bracketed trees")
    collapse: bool = option(False, "apply the authors' preprocessing")
    n_vertical: int = option(3, "rows of the vertical table", minimum=1)
    n_horizontal: int = option(4, "rows of the horizontal table", minimum=1)
    width: int = option(2, "table width W (half a head)", minimum=1)
    vertical: str = option("code", "vertical index: the code's depth or the recalled path length", choices=VERTICALS)
    layout: str = option("interleave", "halves layout: the code's interleave or the recalled concat", choices=LAYOUTS)

    def validate(self) -> None:
        if not self.trees:
            raise ValueError("HierarchicalConfig.trees must hold at least one tree")


def build(seed: int, dtype: Any, xp, config: HierarchicalConfig) -> Case:
    rng = generator(seed)
    return Case(inputs={}, params=init_hierarchical(rng, config.n_vertical, config.n_horizontal, config.width, xp=xp,
                                                    dtype=dtype),
                static=tree_static(tree_batch(config, xp)))


def forward(case: Case):
    e, cache = hierarchical_embedding_forward(case.params["e_vertical"], case.params["e_horizontal"],
                                              tree_from_static(case.static), vertical=case.config.vertical,
                                              layout=case.config.layout)
    return {"e": e}, cache


def backward(cache, cot):
    return hierarchical_embedding_backward(cot["e"], cache)


EDGE_CONFIGS = {**TREE_EDGES, "one_row_tables": {"n_vertical": 1, "n_horizontal": 1},
                "large_tables": {"n_vertical": 9, "n_horizontal": 11, "width": 3}}
RECALLED_EDGES = ("one_node_tree", "deep_chain", "odd_sizes")

register(Mechanism("embeddings.hierarchical", PAPER + " - the authors' code: depth index, interleaved", "embeddings",
                   build, forward, backward, config=HierarchicalConfig, edge_configs=EDGE_CONFIGS,
                   realistic={"n_vertical": 50, "n_horizontal": 100, "width": 32}))
register(Mechanism("embeddings.hierarchical.paper_recalled", PAPER + " - the spec's reading of the paper (from memory)",
                   "embeddings", build, forward, backward, config=HierarchicalConfig,
                   defaults={"vertical": "paper_recalled", "layout": "concat"},
                   edge_configs={k: EDGE_CONFIGS[k] for k in RECALLED_EDGES}))
