"""Bad input at the public forwards of LSRA, Transformer-XH, tree attention, hierarchical embeddings and subtree
masking (issue 17): each error names the argument the user passed."""

from __future__ import annotations

import numpy as np
import pytest

from reference.attention.extra_hop import extra_hop_forward, init_hop
from reference.attention.extra_hop_layer import node_head_forward, xh_layer_forward
from reference.attention.lsra import LSRAConfig, init_lsra, lsra_forward
from reference.attention.tree import init_tree_attention, tree_attention_forward
from reference.attention.tree_accumulation import hierarchical_accumulation_forward
from reference.attention.tree_input import batch_trees, parse_tree
from reference.backend import namespace
from reference.embeddings.hierarchical import hierarchical_embedding_forward
from reference.nn.encoder_layer import init_encoder_layer
from reference.objectives.subtree_masking import subtree_attention_forward, subtree_mask

XP = namespace("numpy")
RNG = np.random.default_rng(0)
LSRA_CFG = LSRAConfig(4, 2, 3, 3)
LSRA_PARAMS = init_lsra(RNG, 10, LSRA_CFG, xp=XP, dtype=XP.float64)
X_LSRA = RNG.standard_normal((2, 5, 10))
ADJ = np.eye(3, dtype=bool)
HOP_PARAMS = init_hop(RNG, 8, 2, "paper", xp=XP, dtype=XP.float64)
XH_PARAMS = {**init_encoder_layer(RNG, 8, 5, xp=XP, dtype=XP.float64), **HOP_PARAMS}
X_XH = RNG.standard_normal((3, 4, 8))
TB = batch_trees(["(S (NP the cat) (VP sat))"], xp=XP)
TREE_PARAMS = init_tree_attention(RNG, 8, 2, xp=XP, dtype=XP.float64, n_vertical=3, n_horizontal=4)
XL, XN = RNG.standard_normal((1, 3, 8)), RNG.standard_normal((1, 3, 8))
EV, EH = RNG.standard_normal((3, 2)), RNG.standard_normal((4, 2))


def nan_at(a, index=0):
    a = np.array(a, dtype=np.float64)
    a.flat[index] = np.nan
    return a


def lsra(x=X_LSRA, params=LSRA_PARAMS, config=LSRA_CFG, **kw):
    return lsra_forward(x, params, config, **kw)


def xh(x=X_XH, adjacency=ADJ, params=XH_PARAMS, **kw):
    return xh_layer_forward(x, adjacency, params, n_heads=2, hop_heads=2, **kw)


def tree(x_leaves=XL, x_nodes=XN, params=TREE_PARAMS, tree=TB, **kw):
    return tree_attention_forward(x_leaves, x_nodes, params, tree, n_heads=2, **kw)


def subtree(x_leaves=XL, x_nodes=XN, params=TREE_PARAMS, tree=TB):
    return subtree_attention_forward(x_leaves, x_nodes, {k: params[k] for k in
                                                         ("w_q", "b_q", "w_k", "b_k", "w_v", "b_v", "w_o", "b_o")},
                                     tree, n_heads=2)


CASES = {
    # LSRA
    "lsra x NaN": (lambda: lsra(x=nan_at(X_LSRA)), ValueError, "x contains NaN"),
    "lsra x inf": (lambda: lsra(x=np.full((2, 5, 10), np.inf)), ValueError, "x contains NaN or infinite"),
    "lsra x list": (lambda: lsra(x=X_LSRA.tolist()), TypeError, "x must be an array"),
    "lsra x int": (lambda: lsra(x=X_LSRA.astype(np.int64)), TypeError, "x must be a real floating"),
    "lsra x empty": (lambda: lsra(x=np.zeros((0, 5, 10))), ValueError, "x must be non-empty"),
    "lsra x rank": (lambda: lsra(x=X_LSRA[0]), ValueError, r"x must have shape \(batch, seq, d_model\)"),
    "lsra theta NaN": (lambda: lsra(params={**LSRA_PARAMS, "theta": nan_at(LSRA_PARAMS["theta"])}), ValueError,
                       r"params\['theta'\] contains NaN"),
    "lsra w_q int": (lambda: lsra(params={**LSRA_PARAMS, "w_q": np.zeros((4, 4), dtype=np.int64)}), TypeError,
                     r"params\['w_q'\] must be a real floating"),
    "lsra params list": (lambda: lsra(params=list(LSRA_PARAMS.values())), TypeError, "params must be a dict"),
    "lsra valid int": (lambda: lsra(valid=np.ones((2, 5), dtype=np.int64)), TypeError, "valid must be a boolean"),
    "lsra valid rank": (lambda: lsra(valid=np.ones((2, 5, 1), dtype=bool)), ValueError,
                        r"valid must have shape \(batch, seq\) = \(2, 5\), got \(2, 5, 1\)"),
    "lsra dropout site": (lambda: lsra(dropout={"attn": np.ones(1)}), ValueError, "dropout has unknown site"),
    "lsra dropout NaN": (lambda: lsra(dropout={"ffn": nan_at(np.ones((2, 5, 10)))}), ValueError,
                         r"dropout\['ffn'\] contains NaN"),
    "lsra config tuple": (lambda: lsra(config=(4, 2, 3, 3)), TypeError, "config must be an LSRAConfig"),
    "lsra heads 0": (lambda: lsra(config=LSRA_CFG._replace(n_attn_heads=0)), ValueError, "config.n_attn_heads"),
    # Transformer-XH
    "xh x NaN": (lambda: xh(x=nan_at(X_XH)), ValueError, "x contains NaN"),
    "xh x list": (lambda: xh(x=X_XH.tolist()), TypeError, "x must be an array"),
    "xh x empty": (lambda: xh(x=np.zeros((3, 0, 8))), ValueError, "x must be non-empty"),
    "xh adjacency int": (lambda: xh(adjacency=ADJ.astype(np.int64)), TypeError, "adjacency must be a boolean"),
    "xh adjacency rank": (lambda: xh(adjacency=ADJ[0]), ValueError, r"adjacency must have shape .* got \(3,\)"),
    "xh w_hq NaN": (lambda: xh(params={**XH_PARAMS, "w_hq": nan_at(XH_PARAMS["w_hq"])}), ValueError,
                    r"params\['w_hq'\] contains NaN"),
    "xh missing": (lambda: xh(params={k: v for k, v in XH_PARAMS.items() if k != "w_comb"}), ValueError,
                   "params is missing"),
    "xh valid rank": (lambda: xh(valid=np.ones((3,), dtype=bool)), ValueError, "valid must have shape"),
    "hop c NaN": (lambda: extra_hop_forward(nan_at(X_XH[:, 0]), ADJ, HOP_PARAMS, n_heads=2), ValueError,
                  "c contains NaN"),
    "head gold float": (lambda: node_head_forward(X_XH, np.ones((8, 1)), np.zeros(1), gold=np.asarray(1.0)), TypeError,
                        "gold must be an integer"),
    "head gold range": (lambda: node_head_forward(X_XH, np.ones((8, 1)), np.zeros(1), gold=np.asarray(3)), ValueError,
                        r"gold must lie in \[0, 3\)"),
    "head labels range": (lambda: node_head_forward(X_XH, np.ones((8, 1)), np.zeros(1), kind="sigmoid",
                                                    labels=np.asarray([0.0, 2.0, 1.0])), ValueError,
                          r"labels must lie in \[0, 1\]"),
    "head y NaN": (lambda: node_head_forward(nan_at(X_XH), np.ones((8, 1)), np.zeros(1), gold=np.asarray(0)),
                   ValueError, "y contains NaN"),
    # tree attention, accumulation, embeddings, subtree masking
    "tree x_leaves NaN": (lambda: tree(x_leaves=nan_at(XL)), ValueError, "x_leaves contains NaN"),
    "tree x_nodes inf": (lambda: tree(x_nodes=np.full(XN.shape, np.inf)), ValueError, "x_nodes contains NaN"),
    "tree x_leaves list": (lambda: tree(x_leaves=XL.tolist()), TypeError, "x_leaves must be an array"),
    "tree x_nodes int": (lambda: tree(x_nodes=XN.astype(np.int64)), TypeError, "x_nodes must be a real floating"),
    "tree x_leaves rank": (lambda: tree(x_leaves=XL[0]), ValueError,
                           r"x_leaves must have shape \(batch, leaves, d_model\) = \(1, 3, \?\), got \(3, 8\)"),
    "tree membership int": (lambda: tree(tree=TB._replace(membership=np.asarray(TB.membership, dtype=np.int64))),
                            TypeError, "tree.membership must be a boolean"),
    "tree path rank": (lambda: tree(tree=TB._replace(path=np.asarray(TB.path)[0])), ValueError,
                       "tree.path must have shape"),
    "tree not a batch": (lambda: tree(tree=["(S a b)"]), TypeError, "tree must be a TreeBatch"),
    "tree u_s NaN": (lambda: tree(params={**TREE_PARAMS, "u_s": nan_at(TREE_PARAMS["u_s"])}), ValueError,
                     r"params\['u_s'\] contains NaN"),
    "tree e_vertical NaN": (lambda: tree(params={**TREE_PARAMS, "e_vertical": nan_at(TREE_PARAMS["e_vertical"])}),
                            ValueError, r"params\['e_vertical'\] contains NaN"),
    "accumulation w NaN": (lambda: hierarchical_accumulation_forward(np.zeros((1, 2, 3, 4)), np.zeros((1, 2, 3, 4)),
                                                                     nan_at(np.zeros((1, 2, 3))), TB), ValueError,
                           "w contains NaN"),
    "embedding table NaN": (lambda: hierarchical_embedding_forward(nan_at(EV), EH, TB), ValueError,
                            "e_vertical contains NaN"),
    "embedding table list": (lambda: hierarchical_embedding_forward(EV, EH.tolist(), TB), TypeError,
                             "e_horizontal must be an array"),
    "embedding table empty": (lambda: hierarchical_embedding_forward(np.zeros((0, 2)), EH, TB), ValueError,
                              "e_vertical must have at least one row"),
    "subtree x_leaves NaN": (lambda: subtree(x_leaves=nan_at(XL)), ValueError, "x_leaves contains NaN"),
    "subtree mask tree": (lambda: subtree_mask({"membership": TB.membership}), TypeError, "tree must be a TreeBatch"),
    "batch one string": (lambda: batch_trees("(S a b)", xp=XP), TypeError, "trees must be a sequence"),
    "batch empty": (lambda: batch_trees([], xp=XP), ValueError, "trees must hold at least one tree"),
    "parse not a string": (lambda: parse_tree(["(S a)"]), TypeError, "tree must be a bracketed string"),
}


@pytest.mark.parametrize("label", list(CASES))
def test_bad_input_names_the_argument(label):
    call, error, message = CASES[label]
    with pytest.raises(error, match=message):
        call()
