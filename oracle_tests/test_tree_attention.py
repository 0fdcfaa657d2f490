"""attention.tree: finite differences, an independent torch implementation, paper properties, bad input.

The torch model below is written from the paper's equations (spec attention.md §2.1-2.5) with
explicit loops over each tree's nodes, leaves and root paths (read from the parent links), so it
shares nothing with the oracle's vectorised path tensors.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from gradients import check_mechanism
from reference.attention.tree import (
    CODE_OPTIONS,
    PAPER_RECALLED_OPTIONS,
    init_tree_attention,
    tree_attention_backward,
    tree_attention_forward,
)
from reference.attention.tree_accumulation import hierarchical_accumulation_forward
from reference.attention.tree_input import Tree, batch_trees, parse_tree
from reference.backend import namespace, to_numpy
from reference.registry import get, select

NAMES = [m.name for m in select(["attention.tree"])]

CHAIN = "(S (A (B (C x y))))"  # unary chain: four nodes with the same span
FLAT = "(S a b c d e)"
RIGHT = "(S a (X b (Y c (Z d (W e f)))))"  # deep right-branching
EXAMPLE = "(S (NP the cat) (VP sat (PP on mats)))"


# --- (a) finite differences ------------------------------------------------------------------

@pytest.mark.parametrize("name", NAMES)
def test_every_element_numpy(name):
    report = check_mechanism(get(name), backend="numpy", mode="full")
    assert report.passed, report.table()


# array_api_strict is ~4x slower: 12 evenly spread elements of each tensor, first and last included
# (the every-element run is `python -m gradients check attention.tree --backend array_api_strict`).
@pytest.mark.parametrize("name", ["attention.tree", "attention.tree.paper_recalled", "attention.tree.accumulation"])
def test_elements_array_api_strict(name):
    report = check_mechanism(get(name), backend="array_api_strict", mode="full", max_elements=12)
    assert report.passed, report.table()


# --- (b) independent torch implementation ------------------------------------------------------

def _chain(tree: Tree, i: int) -> list[int]:
    """Nodes from leaf i's lowest node up to the root."""
    return tree.ancestors(tree.leaf_parent[i])


def _embedding(tree, i, j, ev, eh, opts):
    chain = _chain(tree, i)
    count_v = chain.index(j) + 1 if opts["vertical"] == "paper_recalled" else len(tree.ancestors(j))
    count_h = i - tree.spans[j][0] + 1
    v = ev[min(count_v, ev.shape[0]) - 1]
    h = eh[min(count_h, eh.shape[0]) - 1]
    return torch.cat([v, h]) if opts["layout"] == "concat" else torch.stack([h, v], -1).reshape(-1)


def _accumulate(tree, l, n, w, m_pad, opts, ev=None, eh=None):
    """n̂ (H, M, Dh) for one tree: l (H, N, Dh), n (H, M, Dh), w (N, H)."""
    rows = []
    for j in range(m_pad):
        if j >= tree.m:
            rows.append(torch.zeros_like(n[:, 0]))
            continue
        s, e = tree.spans[j]
        total = 0.0
        for i in range(s, e + 1):
            chain = _chain(tree, i)
            path = chain[:chain.index(j) + 1]
            num = l[:, i] + sum(n[:, t] + (0.0 if ev is None else _embedding(tree, i, t, ev, eh, opts)) for t in path)
            den = {"paper_recalled": len(path) + 1, "mean": max(len(path), 1), "none": 1,
                   "sqrt_mean": max(math.sqrt(len(path)), 1.0)}[opts["up_norm"]]
            total = total + w[i][:, None] * num / den
        span = e - s + 1
        rows.append(total / {"mean": span, "none": 1, "sqrt_mean": math.sqrt(span)}[opts["agg_norm"]])
    return torch.stack(rows, 1)


def _allowed(tree, n_pad, m_pad, mask):
    """Key positions each query position may see, as lists (leaves 0..n_pad-1, then nodes)."""
    out = []
    for qpos in range(n_pad + m_pad):
        keys = []
        is_leaf, idx = qpos < n_pad, qpos if qpos < n_pad else qpos - n_pad
        valid = idx < (tree.n if is_leaf else tree.m)
        if valid and mask == "all":
            keys = list(range(tree.n)) + [n_pad + t for t in range(tree.m)]
        elif valid and is_leaf:
            keys = list(range(tree.n))
        elif valid:
            s, e = tree.spans[idx]
            keys = list(range(s, e + 1)) + [n_pad + t for t in range(tree.m) if idx in tree.ancestors(t)]
        out.append(keys)
    return out


def torch_tree_attention(trees, xl, xn, p, heads, opts, mask="subtree"):
    b, n_pad, d = xl.shape
    m_pad = xn.shape[1]
    dh = d // heads
    z = torch.cat([xl, xn], 1)

    def proj(name):
        return (z @ p[f"w_{name}"] + p[f"b_{name}"]).reshape(b, n_pad + m_pad, heads, dh).permute(0, 2, 1, 3)

    q, k, v = proj("q"), proj("k"), proj("v")
    w = xl @ p["u_s"] + p["b_s"]  # (B, N, H)
    w = {"none": w, "sigmoid": torch.sigmoid(w), "tanh": torch.tanh(w)}[opts.get("proj_act", "none")]
    outs = []
    for bi, tree in enumerate(trees):
        ev, eh = p.get("e_vertical"), p.get("e_horizontal")
        v_hat = _accumulate(tree, v[bi, :, :n_pad], v[bi, :, n_pad:], w[bi], m_pad, opts, ev, eh)
        keys = k[bi]
        if opts["accumulate"] == "affinity_value":
            keys = torch.cat([k[bi, :, :n_pad], _accumulate(tree, k[bi, :, :n_pad], k[bi, :, n_pad:], w[bi], m_pad,
                                                            opts)], 1)
        values = torch.cat([v[bi, :, :n_pad], v_hat], 1)
        rows = []
        for qpos, allowed in enumerate(_allowed(tree, n_pad, m_pad, mask)):
            if not allowed:
                rows.append(torch.zeros(heads, dh, dtype=xl.dtype))
                continue
            idx = torch.tensor(allowed)
            att = torch.softmax((keys[:, idx] @ q[bi, :, qpos, :, None])[..., 0] / math.sqrt(dh), -1)  # (H, S)
            rows.append((att[:, :, None] * values[:, idx]).sum(1))
        outs.append(torch.stack(rows, 1))  # (H, T, Dh)
    o = torch.stack(outs).permute(0, 2, 1, 3).reshape(b, n_pad + m_pad, d)
    return o @ p["w_o"] + p["b_o"]


def _run_both(trees_text, opts, *, heads=2, d=8, seed=0, mask="subtree", embeddings=True):
    xp = namespace("numpy")
    rng = np.random.default_rng(seed)
    trees = [parse_tree(t) for t in trees_text]
    tb = batch_trees(trees, xp=xp)
    b, n, m = tb.membership.shape
    xl, xn = rng.standard_normal((b, n, d)), rng.standard_normal((b, m, d))
    params = init_tree_attention(rng, d, heads, xp=xp, dtype=xp.float64,
                                 **({"n_vertical": 3, "n_horizontal": 4} if embeddings else {}))
    params = {k: np.asarray(v) for k, v in params.items()}
    params["b_s"] = rng.standard_normal(heads)  # non-zero biases everywhere
    for s in "qkvo":
        params[f"b_{s}"] = rng.standard_normal(d) * 0.1
    y, cache = tree_attention_forward(xl, xn, params, tb, n_heads=heads, mask=mask, **opts)
    cot = rng.standard_normal(y.shape)
    dxl, dxn, grads = tree_attention_backward(cot, cache)
    leaves = {"x_leaves": torch.tensor(xl, requires_grad=True), "x_nodes": torch.tensor(xn, requires_grad=True)}
    tp = {k: torch.tensor(v, requires_grad=True) for k, v in params.items()}
    yt = torch_tree_attention(trees, leaves["x_leaves"], leaves["x_nodes"], tp, heads, opts, mask)
    (yt * torch.from_numpy(cot)).sum().backward()
    got = {"y": to_numpy(y), "x_leaves": to_numpy(dxl), "x_nodes": to_numpy(dxn), **{k: to_numpy(g) for k, g in grads.items()}}
    want = {"y": yt.detach().numpy(), **{k: t.grad.numpy() for k, t in {**leaves, **tp}.items()}}
    return got, want


def _assert_agree(got, want, tol=1e-10):
    assert set(got) == set(want), (sorted(got), sorted(want))
    for key in want:
        a, b = got[key], want[key]
        assert a.shape == b.shape, f"{key}: oracle shape {a.shape}, torch {b.shape}"
        err = np.abs(a - b)
        k = np.unravel_index(np.argmax(err), err.shape)
        scale = max(1.0, float(np.max(np.abs(b))))
        assert err[k] <= tol * scale, f"{key}{list(k)}: oracle {a[k]!r}, torch {b[k]!r} (abs error {err[k]:.3g})"


CLASS_DEFAULTS = {**CODE_OPTIONS, "up_norm": "none", "agg_norm": "none", "proj_act": "tanh"}


@pytest.mark.parametrize("options", [PAPER_RECALLED_OPTIONS, CODE_OPTIONS, CLASS_DEFAULTS],
                         ids=["paper_recalled", "code", "class_defaults_tanh"])
@pytest.mark.parametrize("trees", [[CHAIN], [FLAT], [RIGHT], [EXAMPLE, CHAIN, FLAT, RIGHT]],
                         ids=["chain", "flat", "right_branching", "batch"])
def test_torch_agrees(trees, options):
    got, want = _run_both(trees, options)
    _assert_agree(got, want)


def test_torch_agrees_all_mask_without_embeddings():
    got, want = _run_both([EXAMPLE, RIGHT], PAPER_RECALLED_OPTIONS, mask="all", embeddings=False, heads=4, seed=3)
    _assert_agree(got, want)


@pytest.mark.parametrize("name, label", [(n, label) for n in ("attention.tree", "attention.tree.paper_recalled",
                                                                   "attention.tree.class_defaults")
                                          for label in ("default", *get(n).edge_configs)])
def test_registered_cases_through_compare_torch(name, label):
    from gradients.compare import compare_torch

    mech = get(name)
    config = mech.make_config(mech.edge_configs.get(label))
    trees = [parse_tree(t, collapse=config.collapse) for t in config.trees]
    opts = {k: getattr(config, k) for k in CODE_OPTIONS}

    def fn(inputs, params, static):
        return {"y": torch_tree_attention(trees, inputs["x_leaves"], inputs["x_nodes"], params, config.n_heads, opts,
                                          config.mask)}

    report = compare_torch(mech, fn, config=config)
    assert report.passed, report.table()


# --- (c) paper properties ----------------------------------------------------------------------

def test_spec_worked_example_tensors():
    """Spec §2.1: membership, horizontal index, code vertical index and path counts of the 6-leaf tree."""
    tb = batch_trees(["(S (NP1 a b) (VP c (NP2 d (PP e f))))"], xp=namespace("numpy"))
    order = [1, 2, 3, 0, 4]  # ours (post-order) NP1 PP NP2 VP S  ->  spec's PP NP2 VP NP1 S
    mem = np.asarray(tb.membership)[0][:, order].astype(int)
    np.testing.assert_array_equal(mem, [[0, 0, 0, 1, 1], [0, 0, 0, 1, 1], [0, 0, 1, 0, 1], [0, 1, 1, 0, 1],
                                        [1, 1, 1, 0, 1], [1, 1, 1, 0, 1]])
    np.testing.assert_array_equal(np.asarray(tb.horizontal)[0][:, order],
                                  [[0, 0, 0, 1, 1], [0, 0, 0, 2, 2], [0, 0, 1, 0, 3], [0, 1, 2, 0, 4],
                                   [1, 2, 3, 0, 5], [2, 3, 4, 0, 6]])
    np.testing.assert_array_equal(np.asarray(tb.depth1)[0][:, order],
                                  [[0, 0, 0, 2, 1], [0, 0, 0, 2, 1], [0, 0, 2, 0, 1], [0, 3, 2, 0, 1],
                                   [4, 3, 2, 0, 1], [4, 3, 2, 0, 1]])
    np.testing.assert_array_equal(np.asarray(tb.path_len)[0][:, order],
                                  [[0, 0, 0, 1, 2], [0, 0, 0, 1, 2], [0, 0, 1, 0, 2], [0, 1, 2, 0, 3],
                                   [1, 2, 3, 0, 4], [1, 2, 3, 0, 4]])
    np.testing.assert_array_equal(np.asarray(tb.span_len)[0][order], [2, 3, 4, 2, 6])


@pytest.mark.parametrize("text", ["(S (NP (DT the) (NN cat)) (VP (VBD sat) (PP (IN on) (NP (DT the) (NN mat)))))",
                                  "(ROOT (S (NP (PRP I)) (VP (VBP see) (NP (NNS cats)))))", "(S (X (Y a b) c) d)"])
def test_binarized_parse_has_n_minus_1_nodes_after_collapse(text):
    tree = parse_tree(text, collapse=True)
    assert tree.m == tree.n - 1, (tree.n, tree.m, tree.labels)


def test_affinity_accumulation_equals_key_accumulation():
    """Spec §2.5: accumulating each node query's scores over (leaves, nodes) equals Q_N K̂_N^T."""
    xp = namespace("numpy")
    rng = np.random.default_rng(1)
    tb = batch_trees([EXAMPLE, RIGHT], xp=xp)
    b, n, m = tb.membership.shape
    h, dh, t = 2, 3, 4
    q = rng.standard_normal((b, h, t, dh))
    kl, kn, w = rng.standard_normal((b, h, n, dh)), rng.standard_normal((b, h, m, dh)), rng.standard_normal((b, h, n))
    k_hat, _ = hierarchical_accumulation_forward(kl, kn, w, tb)
    scores_l = np.swapaxes(q @ np.swapaxes(kl, -1, -2), -1, -2)  # (B, H, N, T): the scores as features
    scores_n = np.swapaxes(q @ np.swapaxes(kn, -1, -2), -1, -2)  # (B, H, M, T)
    acc_scores, _ = hierarchical_accumulation_forward(scores_l, scores_n, w, tb)  # (B, H, M, T)
    np.testing.assert_allclose(np.swapaxes(acc_scores, -1, -2), q @ np.swapaxes(k_hat, -1, -2), rtol=1e-12, atol=1e-12)


def test_upward_average_includes_the_leaf_in_the_paper_mean_only():
    """Flat tree, zero node vector: recalled paper n̂ = Σ w_i l_i / (2 n), code n̂ = Σ w_i l_i / n, class default
    (no norms) n̂ = Σ w_i l_i."""
    xp = namespace("numpy")
    rng = np.random.default_rng(2)
    tb = batch_trees([FLAT], xp=xp)
    l, w = rng.standard_normal((1, 1, 5, 3)), rng.standard_normal((1, 1, 5))
    nodes = np.zeros((1, 1, 1, 3))
    paper, _ = hierarchical_accumulation_forward(l, nodes, w, tb, up_norm="paper_recalled")
    code, _ = hierarchical_accumulation_forward(l, nodes, w, tb)
    bare, _ = hierarchical_accumulation_forward(l, nodes, w, tb, up_norm="none", agg_norm="none")
    want = (w[0, 0] @ l[0, 0]) / 5
    np.testing.assert_allclose(paper[0, 0, 0], want / 2, rtol=1e-13)
    np.testing.assert_allclose(code[0, 0, 0], want, rtol=1e-13)
    np.testing.assert_allclose(bare[0, 0, 0], want * 5, rtol=1e-13)


def _forward_np(xl, xn, params, tb, **kw):
    y, _ = tree_attention_forward(xl, xn, params, tb, n_heads=2, **kw)
    return np.asarray(y)


CLASS_DEFAULTS = {**CODE_OPTIONS, "up_norm": "none", "agg_norm": "none", "proj_act": "tanh"}


@pytest.mark.parametrize("options", [PAPER_RECALLED_OPTIONS, CODE_OPTIONS, CLASS_DEFAULTS],
                         ids=["paper_recalled", "code", "class_defaults_tanh"])
def test_a_node_sees_only_its_subtree_and_leaves_never_see_nodes(options):
    xp = namespace("numpy")
    rng = np.random.default_rng(4)
    tree = parse_tree(EXAMPLE)  # nodes NP(0) PP(1) VP(2) S(3); VP spans leaves 2..4, subtree {PP, VP}
    tb = batch_trees([tree], xp=xp)
    xl, xn = rng.standard_normal((1, 5, 8)), rng.standard_normal((1, 4, 8))
    params = {k: np.asarray(v) for k, v in init_tree_attention(rng, 8, 2, xp=xp, dtype=xp.float64, n_vertical=3,
                                                               n_horizontal=4).items()}
    y = _forward_np(xl, xn, params, tb, **options)
    xl2, xn2 = xl.copy(), xn.copy()
    xl2[0, :2] += rng.standard_normal((2, 8))  # leaves outside VP's span
    xn2[0, [0, 3]] += rng.standard_normal((2, 8))  # nodes outside VP's subtree
    y2 = _forward_np(xl2, xn2, params, tb, **options)
    vp, pp = 5 + 2, 5 + 1
    np.testing.assert_array_equal(y2[0, [vp, pp]], y[0, [vp, pp]])
    assert np.max(np.abs(y2[0, 5 + 3] - y[0, 5 + 3])) > 1e-3  # the root sees the change
    y3 = _forward_np(xl, xn + rng.standard_normal(xn.shape), params, tb, **options)
    np.testing.assert_array_equal(y3[0, :5], y[0, :5])  # leaf outputs never depend on nodes


def test_node_order_does_not_matter():
    """Any bottom-up order (here the authors' reversed breadth-first order) gives the same node outputs."""
    xp = namespace("numpy")
    rng = np.random.default_rng(5)
    post = parse_tree(EXAMPLE)  # NP PP VP S
    perm = [1, 2, 0, 3]  # new order PP VP NP S: new node k is old node perm[k]
    inv = [perm.index(j) for j in range(4)]
    bfs = Tree(post.leaves, tuple(post.labels[j] for j in perm),
               tuple(-1 if post.parent[j] < 0 else inv[post.parent[j]] for j in perm),
               tuple(inv[j] for j in post.leaf_parent), tuple(post.spans[j] for j in perm))
    xl, xn = rng.standard_normal((1, 5, 8)), rng.standard_normal((1, 4, 8))
    params = {k: np.asarray(v) for k, v in init_tree_attention(rng, 8, 2, xp=xp, dtype=xp.float64, n_vertical=4,
                                                               n_horizontal=5).items()}
    y1 = _forward_np(xl, xn, params, batch_trees([post], xp=xp))
    y2 = _forward_np(xl, xn[:, perm], params, batch_trees([bfs], xp=xp))
    np.testing.assert_allclose(y2[0, :5], y1[0, :5], rtol=1e-13, atol=1e-13)
    np.testing.assert_allclose(y2[0, 5:], y1[0, 5:][perm], rtol=1e-13, atol=1e-13)


def _random_tree(rng, n_leaves, depth=0):
    """A random bracket string with n_leaves tokens, unary chains and flat nodes included."""
    if n_leaves == 1 and rng.random() < 0.5:
        return f"w{rng.integers(100)}"
    if rng.random() < 0.15 and depth < 6:
        return f"(U {_random_tree(rng, n_leaves, depth + 1)})"  # a unary node
    k = int(rng.integers(1, min(n_leaves, 3) + 1))
    cuts = np.sort(rng.choice(np.arange(1, n_leaves), size=k - 1, replace=False)) if k > 1 else []
    sizes = np.diff([0, *cuts, n_leaves])
    return "(X " + " ".join(_random_tree(rng, int(s), depth + 1) for s in sizes) + ")"


@pytest.mark.parametrize("mean", ["paper_recalled", "mean", "none", "sqrt_mean"])
def test_accumulation_on_random_trees_matches_explicit_paths(mean):
    """30 random trees (unary chains, flat and deep nodes) in batches of 3: the vectorised path
    tensor equals an explicit walk up each leaf's ancestors."""
    xp = namespace("numpy")
    rng = np.random.default_rng(12)
    for _ in range(10):
        trees = [parse_tree(f"(R {_random_tree(rng, int(rng.integers(1, 8)))})") for _ in range(3)]
        tb = batch_trees(trees, xp=xp)
        b, n, m = tb.membership.shape
        l, nodes, w = rng.standard_normal((b, 2, n, 3)), rng.standard_normal((b, 2, m, 3)), rng.standard_normal((b, 2, n))
        agg = "mean" if mean == "paper_recalled" else mean
        got, _ = hierarchical_accumulation_forward(l, nodes, w, tb, up_norm=mean, agg_norm=agg)
        opts = {"up_norm": mean, "agg_norm": agg}
        for bi, tree in enumerate(trees):
            want = _accumulate(tree, torch.from_numpy(l[bi]), torch.from_numpy(nodes[bi]),
                               torch.from_numpy(w[bi].T), m, opts).numpy()
            np.testing.assert_allclose(np.asarray(got)[bi], want, rtol=1e-12, atol=1e-12,
                                       err_msg=" ".join(tree.labels))


# --- (d) bad input -----------------------------------------------------------------------------

def _small():
    xp = namespace("numpy")
    rng = np.random.default_rng(0)
    tb = batch_trees([EXAMPLE], xp=xp)
    params = {k: np.asarray(v) for k, v in init_tree_attention(rng, 8, 2, xp=xp, dtype=xp.float64).items()}
    return rng.standard_normal((1, 5, 8)), rng.standard_normal((1, 4, 8)), params, tb


@pytest.mark.parametrize("change, match", [
    (lambda a: {**a, "xl": a["xl"][:, :4]}, r"x_leaves must have shape \(batch, leaves, d_model\)"),
    (lambda a: {**a, "xn": a["xn"][..., :6]}, r"x_nodes must have shape \(batch, nodes, d_model\)"),
    (lambda a: {**a, "kw": {"accumulate": "keys"}}, "accumulate must be"),
    (lambda a: {**a, "kw": {"up_norm": "median"}}, "up_norm must be"),
    (lambda a: {**a, "kw": {"agg_norm": "median"}}, "agg_norm must be"),
    (lambda a: {**a, "kw": {"proj_act": "relu"}}, "proj_act must be"),
    (lambda a: {**a, "kw": {"mask": "causal"}}, "mask must be"),
    (lambda a: {**a, "heads": 3}, "divisible by n_heads"),
    (lambda a: {**a, "params": {k: v for k, v in a["params"].items() if k != "u_s"}}, "missing"),
])
def test_bad_input(change, match):
    xl, xn, params, tb = _small()
    a = change({"xl": xl, "xn": xn, "params": params, "kw": {}, "heads": 2})
    with pytest.raises(ValueError, match=match):
        tree_attention_forward(a["xl"], a["xn"], a["params"], tb, n_heads=a["heads"], **a["kw"])


def test_integer_input_is_a_type_error():
    xl, xn, params, tb = _small()
    with pytest.raises(TypeError, match="x_leaves must be a real floating array"):
        tree_attention_forward(xl.astype(np.int64), xn, params, tb, n_heads=2)


@pytest.mark.parametrize("text, match", [
    ("", "empty"), ("S a b", "must start with '\\('"), ("(S (NP the cat) (VP sat)", "unbalanced"),
    ("(S a))", "unbalanced"), ("(S (NP) a)", "empty constituent"), ("((S a b))", "without a label"),
    ("(S a) (T b)", "after the root"), ("(S a b))(", "after the root"),
])
def test_malformed_tree(text, match):
    with pytest.raises(ValueError, match=match):
        parse_tree(text)


@pytest.mark.parametrize("fields, match", [
    ({"parent": (1, 0)}, "root"), ({"parent": (1, 2, 1, -1), "labels": ("A", "B", "C", "S"), "spans": ((0, 1),) * 4}, "cycle"),
    ({"spans": ((0, 0), (0, 1))}, "has span"), ({"leaf_parent": (0, 5)}, "leaf_parent"),
])
def test_inconsistent_hand_made_tree(fields, match):
    good = dict(leaves=("a", "b"), labels=("A", "S"), parent=(1, -1), leaf_parent=(0, 0), spans=((0, 1), (0, 1)))
    batch_trees([Tree(**good)], xp=namespace("numpy"))  # the unchanged tree is fine
    with pytest.raises(ValueError, match=match):
        batch_trees([Tree(**{**good, **fields})], xp=namespace("numpy"))


def test_tree_must_be_a_string():
    with pytest.raises(TypeError, match="bracketed string"):
        parse_tree(["S", "a"])


def test_a_5000_level_tree_parses_and_batches_without_recursion():
    """Issue 17.5: parsing, collapsing, checking and batching are iterative."""
    import sys
    deep = "(A " * 5000 + "x" + ")" * 5000
    assert sys.getrecursionlimit() < 5000 * 2
    tree = parse_tree(deep)
    assert (tree.n, tree.m) == (1, 5000) and tree.parent[0] == 1 and tree.parent[-1] == -1
    assert parse_tree(deep, collapse=True).m == 1
    spine = "".join(f"(A w{i} " for i in range(5000)) + "x" + ")" * 5000  # 5,000 nested spans of shrinking size
    assert parse_tree(spine).spans[-1] == (0, 5000)
    tb = batch_trees([deep], xp=namespace("numpy"))
    assert tb.path.shape == (1, 1, 5000, 5000)
    assert int(np.asarray(tb.path_len)[0, 0, -1]) == 5000 and int(np.asarray(tb.depth1)[0, 0, 0]) == 5000
