"""objectives.subtree_masking: finite differences, an independent torch implementation, mask properties, bad input.

The torch version decides, for each query position, which keys it may see by walking the tree's
parent links (spec attention.md §2.4 step 6), and runs a softmax over those keys only.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from gradients import check_mechanism
from reference.attention.tree_input import batch_trees, parse_tree
from reference.backend import namespace, to_numpy
from reference.nn.attention import init_attention
from reference.objectives.subtree_masking import (
    padding_mask_tree,
    subtree_attention_backward,
    subtree_attention_forward,
    subtree_mask,
)
from reference.registry import get

TREES = {"chain": ["(S (A (B (C x y))))"], "flat": ["(S a b c d e)"], "right": ["(S a (X b (Y c (Z d (W e f)))))"],
         "batch": ["(S (NP the cat) (VP sat (PP on mats)))", "(S (A (B (C x y))))", "(S a (X b (Y c d)))"]}


def test_every_element_numpy():
    report = check_mechanism(get("objectives.subtree_masking"), backend="numpy", mode="full")
    assert report.passed, report.table()


def test_elements_array_api_strict():  # 12 elements of each tensor
    report = check_mechanism(get("objectives.subtree_masking"), backend="array_api_strict", mode="full",
                             max_elements=12)
    assert report.passed, report.table()


def _keys(tree, n_pad, m_pad, qpos, leaf_queries="leaves"):
    if qpos < n_pad:
        if qpos >= tree.n:
            return []
        return list(range(tree.n)) + ([n_pad + t for t in range(tree.m)] if leaf_queries == "all" else [])
    j = qpos - n_pad
    if j >= tree.m:
        return []
    s, e = tree.spans[j]
    return list(range(s, e + 1)) + [n_pad + t for t in range(tree.m) if j in tree.ancestors(t)]


def torch_subtree_attention(trees, xl, xn, p, heads):
    b, n_pad, d = xl.shape
    m_pad, dh = xn.shape[1], d // heads
    z = torch.cat([xl, xn], 1)
    q, k, v = ((z @ p[f"w_{s}"] + p[f"b_{s}"]).reshape(b, -1, heads, dh) for s in "qkv")  # (B, T, H, Dh)
    out = []
    for bi, tree in enumerate(trees):
        rows = []
        for qpos in range(n_pad + m_pad):
            keys = _keys(tree, n_pad, m_pad, qpos)
            if not keys:
                rows.append(torch.zeros(d, dtype=xl.dtype))
                continue
            idx = torch.tensor(keys)
            s = (k[bi, idx] * q[bi, qpos][None]).sum(-1) / math.sqrt(dh)  # (S, H)
            a = torch.softmax(s, 0)
            rows.append((a[:, :, None] * v[bi, idx]).sum(0).reshape(d))
        out.append(torch.stack(rows))
    return torch.stack(out) @ p["w_o"] + p["b_o"]


@pytest.mark.parametrize("shape", list(TREES))
def test_torch_agrees(shape):
    xp = namespace("numpy")
    rng = np.random.default_rng(11)
    trees = [parse_tree(t) for t in TREES[shape]]
    tb = batch_trees(trees, xp=xp)
    b, n, m = tb.membership.shape
    d, h = 6, 3
    xl, xn = rng.standard_normal((b, n, d)), rng.standard_normal((b, m, d))
    params = {k: np.asarray(v) + 0.1 * rng.standard_normal(np.shape(v))
              for k, v in init_attention(rng, d, xp=xp, dtype=xp.float64).items()}
    y, cache = subtree_attention_forward(xl, xn, params, tb, n_heads=h)
    cot = rng.standard_normal(y.shape)
    dxl, dxn, grads = subtree_attention_backward(cot, cache)
    leaves = {"x_leaves": torch.tensor(xl, requires_grad=True), "x_nodes": torch.tensor(xn, requires_grad=True)}
    tp = {k: torch.tensor(v, requires_grad=True) for k, v in params.items()}
    yt = torch_subtree_attention(trees, leaves["x_leaves"], leaves["x_nodes"], tp, h)
    (yt * torch.from_numpy(cot)).sum().backward()
    got = {"y": to_numpy(y), "x_leaves": dxl, "x_nodes": dxn, **grads}
    want = {"y": yt.detach().numpy(), **{k: t.grad.numpy() for k, t in {**leaves, **tp}.items()}}
    for key in want:
        a, w = np.asarray(got[key]), want[key]
        err = np.abs(a - w)
        idx = np.unravel_index(np.argmax(err), err.shape)
        assert err[idx] <= 1e-10 * max(1.0, float(np.max(np.abs(w)))), f"{key}{list(idx)}: oracle {a[idx]!r}, torch {w[idx]!r}"


def test_spec_node_to_node_mask():
    """Spec §2.1 worked example: row = query node, column = key node (spec order PP NP2 VP NP1 S)."""
    tb = batch_trees(["(S (NP1 a b) (VP c (NP2 d (PP e f))))"], xp=namespace("numpy"))
    order = [1, 2, 3, 0, 4]
    mask = np.asarray(subtree_mask(tb))[0, 6:, 6:][np.ix_(order, order)].astype(int)
    np.testing.assert_array_equal(mask, [[1, 0, 0, 0, 0], [1, 1, 0, 0, 0], [1, 1, 1, 0, 0], [0, 0, 0, 1, 0],
                                         [1, 1, 1, 1, 1]])
    full = np.asarray(subtree_mask(tb))[0]
    assert full[:6, :6].all() and not full[:6, 6:].any()  # leaves see every leaf and no node
    np.testing.assert_array_equal(full[6:, :6], np.asarray(tb.membership)[0].T)  # nodes see their span's leaves
    assert np.asarray(subtree_mask(tb, leaf_queries="all"))[0, :6].all()


def test_padding_rows_are_empty_and_pass_no_gradient():
    xp = namespace("numpy")
    rng = np.random.default_rng(3)
    tb = batch_trees(["(S (A x y) z)", "(S p q)"], xp=xp)  # second tree: 1 padded leaf, 1 padded node
    mask = np.asarray(subtree_mask(tb))
    assert not mask[1, 2].any() and not mask[1, 4].any() and not mask[1, :, 2].any() and not mask[1, :, 4].any()
    np.testing.assert_array_equal(np.asarray(padding_mask_tree(tb))[1].sum(), 9)  # 3 valid positions squared
    params = {k: np.asarray(v) for k, v in init_attention(rng, 4, xp=xp, dtype=xp.float64).items()}
    params["b_o"] = rng.standard_normal(4)
    xl, xn = rng.standard_normal((2, 3, 4)), rng.standard_normal((2, 2, 4))
    y, cache = subtree_attention_forward(xl, xn, params, tb, n_heads=2)
    np.testing.assert_array_equal(y[1, 2], params["b_o"])
    np.testing.assert_array_equal(y[1, 4], params["b_o"])
    dxl, dxn, _ = subtree_attention_backward(rng.standard_normal(y.shape), cache)
    assert np.all(dxl[1, 2] == 0) and np.all(dxn[1, 1] == 0)


def test_masked_keys_do_not_leak():
    xp = namespace("numpy")
    rng = np.random.default_rng(8)
    tb = batch_trees(["(S (NP the cat) (VP sat (PP on mats)))"], xp=xp)  # VP (node 2) spans leaves 2..4
    params = {k: np.asarray(v) for k, v in init_attention(rng, 4, xp=xp, dtype=xp.float64).items()}
    xl, xn = rng.standard_normal((1, 5, 4)), rng.standard_normal((1, 4, 4))
    y, _ = subtree_attention_forward(xl, xn, params, tb, n_heads=2)
    xl2, xn2 = xl.copy(), xn.copy()
    xl2[0, :2] += 1.0
    xn2[0, [0, 3]] += 1.0
    y2, _ = subtree_attention_forward(xl2, xn2, params, tb, n_heads=2)
    np.testing.assert_array_equal(y2[0, 5 + 2], y[0, 5 + 2])
    np.testing.assert_array_equal(y2[0, 5 + 1], y[0, 5 + 1])
    assert np.max(np.abs(y2[0, 5 + 3] - y[0, 5 + 3])) > 1e-3


@pytest.mark.parametrize("change, err, match", [
    ({"xl": np.ones((1, 4, 4))}, ValueError, r"x_leaves must have shape \(batch, leaves, d_model\)"),
    ({"xn": np.ones((1, 2, 3))}, ValueError, r"x_nodes must have shape \(batch, nodes, d_model\)"),
    ({"heads": 3}, ValueError, "divisible by n_heads"),
    ({"leaf_queries": "none"}, ValueError, "leaf_queries must be"),
    ({"xl": np.ones((1, 3, 4), dtype=np.int64)}, TypeError, "x_leaves must be a real floating array"),
])
def test_bad_input(change, err, match):
    xp = namespace("numpy")
    tb = batch_trees(["(S (A x y) z)"], xp=xp)
    params = {k: np.asarray(v) for k, v in init_attention(np.random.default_rng(0), 4, xp=xp, dtype=xp.float64).items()}
    a = {"xl": np.ones((1, 3, 4)), "xn": np.ones((1, 2, 4)), "heads": 2, "leaf_queries": "leaves", **change}
    with pytest.raises(err, match=match):
        subtree_attention_forward(a["xl"], a["xn"], params, tb, n_heads=a["heads"], leaf_queries=a["leaf_queries"])
