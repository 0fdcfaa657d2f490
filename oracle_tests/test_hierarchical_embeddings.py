"""embeddings.hierarchical: finite differences, an independent torch implementation, properties, bad input.

The torch version reads each index from the tree's parent links and spans with plain loops
(spec attention.md §2.1, §2.3), not from the oracle's incidence tensors.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from gradients import check_mechanism
from reference.attention.tree_input import batch_trees, parse_tree
from reference.backend import namespace, to_numpy
from reference.embeddings.hierarchical import hierarchical_embedding_backward, hierarchical_embedding_forward
from reference.registry import get

TREES = {"chain": ["(S (A (B (C x y))))"], "flat": ["(S a b c d e)"], "right": ["(S a (X b (Y c (Z d (W e f)))))"],
         "batch": ["(S (NP the cat) (VP sat (PP on mats)))", "(S (A (B (C x y))))", "(S a (X b (Y c d)))"]}
VARIANTS = {"paper_recalled": ("paper_recalled", "concat"), "code": ("code", "interleave")}


@pytest.mark.parametrize("backend", ["numpy", "array_api_strict"])
@pytest.mark.parametrize("name", ["embeddings.hierarchical", "embeddings.hierarchical.paper_recalled"])
def test_every_element(name, backend):
    report = check_mechanism(get(name), backend=backend, mode="full")
    assert report.passed, report.table()


def torch_hierarchical(trees, ev, eh, n_pad, m_pad, vertical, layout):
    width = ev.shape[1]
    out = torch.zeros(len(trees), n_pad, m_pad, 2 * width, dtype=ev.dtype)
    rows = []
    for tree in trees:
        grid = []
        for i in range(n_pad):
            line = []
            for j in range(m_pad):
                chain = tree.ancestors(tree.leaf_parent[i]) if i < tree.n else []
                if j >= tree.m or j not in chain:
                    line.append(torch.zeros(2 * width, dtype=ev.dtype))
                    continue
                count_v = chain.index(j) + 1 if vertical == "paper_recalled" else len(tree.ancestors(j))
                count_h = i - tree.spans[j][0] + 1
                v, h = ev[min(count_v, ev.shape[0]) - 1], eh[min(count_h, eh.shape[0]) - 1]
                line.append(torch.cat([v, h]) if layout == "concat" else torch.stack([h, v], -1).reshape(-1))
            grid.append(torch.stack(line))
        rows.append(torch.stack(grid))
    return out + torch.stack(rows)


@pytest.mark.parametrize("variant", list(VARIANTS))
@pytest.mark.parametrize("shape", list(TREES))
def test_torch_agrees(shape, variant):
    vertical, layout = VARIANTS[variant]
    rng = np.random.default_rng(7)
    trees = [parse_tree(t) for t in TREES[shape]]
    tb = batch_trees(trees, xp=namespace("numpy"))
    b, n, m = tb.membership.shape
    ev, eh = rng.standard_normal((3, 2)), rng.standard_normal((4, 2))  # small tables: clamps are hit
    e, cache = hierarchical_embedding_forward(ev, eh, tb, vertical=vertical, layout=layout)
    cot = rng.standard_normal(e.shape)
    grads = hierarchical_embedding_backward(cot, cache)
    tv, th = torch.tensor(ev, requires_grad=True), torch.tensor(eh, requires_grad=True)
    et = torch_hierarchical(trees, tv, th, n, m, vertical, layout)
    (et * torch.from_numpy(cot)).sum().backward()
    for key, a, want in (("e", to_numpy(e), et.detach().numpy()), ("e_vertical", grads["e_vertical"], tv.grad.numpy()),
                         ("e_horizontal", grads["e_horizontal"], th.grad.numpy())):
        err = np.abs(np.asarray(a) - want)
        k = np.unravel_index(np.argmax(err), err.shape)
        assert err[k] <= 1e-10, f"{key}{list(k)}: oracle {np.asarray(a)[k]!r}, torch {want[k]!r}"


def test_indices_paper_versus_code_and_zero_outside_spans():
    xp = namespace("numpy")
    tb = batch_trees(["(S (NP1 a b) (VP c (NP2 d (PP e f))))"], xp=xp)
    ev = np.arange(1.0, 6.0)[:, None]  # row r holds r + 1: the embedding reads back the 1-based index
    eh = 10.0 * np.arange(1.0, 8.0)[:, None]
    e_paper, _ = hierarchical_embedding_forward(ev, eh, tb, vertical="paper_recalled", layout="concat")
    e_code, _ = hierarchical_embedding_forward(ev, eh, tb, vertical="code", layout="interleave")
    mem = np.asarray(tb.membership)[0]
    np.testing.assert_array_equal(e_paper[0, ..., 0], np.asarray(tb.path_len)[0])  # |V^i_j|
    np.testing.assert_array_equal(e_paper[0, ..., 1], 10 * np.asarray(tb.horizontal)[0])  # |H^i_j|
    np.testing.assert_array_equal(e_code[0, ..., 0], 10 * np.asarray(tb.horizontal)[0])  # interleaved: h first
    depth1 = np.asarray(tb.depth1)[0]
    np.testing.assert_array_equal(e_code[0, ..., 1], depth1)
    for j in range(5):  # the code's vertical index does not depend on the leaf
        assert len(set(depth1[mem[:, j], j])) == 1
    assert np.all(e_paper[0][~mem] == 0) and np.all(e_code[0][~mem] == 0)


def test_rows_never_read_get_no_gradient():
    xp = namespace("numpy")
    tb = batch_trees(["(S a b)"], xp=xp)  # one node: |V| = 1, |H| in {1, 2}
    ev, eh = np.ones((4, 3)), np.ones((5, 3))
    e, cache = hierarchical_embedding_forward(ev, eh, tb)
    g = hierarchical_embedding_backward(np.ones(e.shape), cache)
    np.testing.assert_array_equal(g["e_vertical"][:, 0], [2, 0, 0, 0])
    np.testing.assert_array_equal(g["e_horizontal"][:, 0], [1, 1, 0, 0, 0])


@pytest.mark.parametrize("kwargs, err, match", [
    ({"ev": np.ones((3, 2)), "eh": np.ones((3, 3))}, ValueError, r"e_horizontal must have shape \(n_horizontal, width\)"),
    ({"ev": np.ones(3)}, ValueError, r"e_vertical must have shape"),
    ({"ev": np.ones((3, 2), dtype=np.int64)}, TypeError, "e_vertical must be a real floating array"),
    ({"layout": "stack"}, ValueError, "layout must be"),
    ({"vertical": "depth"}, ValueError, "vertical must be"),
])
def test_bad_input(kwargs, err, match):
    tb = batch_trees(["(S a b)"], xp=namespace("numpy"))
    a = {"ev": np.ones((3, 2)), "eh": np.ones((3, 2)), "layout": "concat", "vertical": "paper_recalled", **kwargs}
    with pytest.raises(err, match=match):
        hierarchical_embedding_forward(a["ev"], a["eh"], tb, vertical=a["vertical"], layout=a["layout"])
