"""Transformer-XH eXtra hop attention: gradient checks, independent torch implementations, graph properties.

The torch code below is written from the equations (spec attention.md §4.3, §4.4) with explicit loops
over destination nodes and their incoming edge lists, as a DGL message/reduce would run, not with the
oracle's adjacency-matrix masking.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as Fn

from gradients import check_gradients, check_mechanism
from gradients.compare import compare_torch
from reference.attention.cases.extra_hop import MIXED_EDGES
from reference.attention.extra_hop import adjacency_from_edges, extra_hop_backward, extra_hop_forward, init_hop
from reference.attention.extra_hop_layer import node_head_forward, xh_layer_forward
from reference.backend import namespace, to_numpy
from reference.registry import get

VARIANTS = ["attention.extra_hop", "attention.extra_hop.gat"]
EDGES = list(MIXED_EDGES)
HOP_HEADS = 2  # for the hop-only property tests below (d = 8)


def _np():
    return namespace("numpy")


# --- (a) finite differences -------------------------------------------------------------------

@pytest.mark.parametrize("name, backend", [(name, "numpy") for name in VARIANTS]
                         + [("attention.extra_hop", "array_api_strict")])
def test_every_element(name, backend):
    """Every element on NumPy; on array_api_strict 24 evenly spaced elements of each tensor (the strict
    namespace's portable erf makes every element cost ~200 s, `python -m gradients check` does them all)."""
    report = check_mechanism(get(name), backend=backend, mode="full",
                             max_elements=None if backend == "numpy" else 24)
    assert report.passed, report.table()


# Full mode passes on array_api_strict too (python -m gradients check attention.extra_hop.gat
# --backend array_api_strict, ~25 s); the suite checks random directions to bound its runtime.
def test_random_directions_of_the_code_variant_array_api_strict():
    report = check_mechanism(get("attention.extra_hop.gat"), backend="array_api_strict", mode="fast")
    assert report.passed, report.table()


# --- (b) independent torch implementations -----------------------------------------------------

def _incoming(adjacency):
    n = adjacency.shape[0]
    return [[u for u in range(n) if bool(adjacency[v, u])] for v in range(n)]


def torch_paper_hop(c, adjacency, p, heads):
    n, d = c.shape
    dh = d // heads
    q, k, v = (c @ p[f"w_h{s}"] + p[f"b_h{s}"] for s in "qkv")
    rows = []
    for dst, sources in enumerate(_incoming(adjacency)):
        if not sources:
            rows.append(torch.zeros(d, dtype=c.dtype))  # no neighbour: zero message
            continue
        parts = []
        for j in range(heads):
            sl = slice(j * dh, (j + 1) * dh)
            logits = torch.stack([q[dst, sl] @ k[u, sl] for u in sources]) / math.sqrt(dh)
            weights = torch.softmax(logits, 0)
            parts.append(sum(w * v[u, sl] for w, u in zip(weights, sources)))
        rows.append(torch.cat(parts))
    hhat = torch.stack(rows)
    return torch.cat([c, hhat], -1) @ p["w_comb"] + p["b_comb"]


def torch_gat_hop(c, adjacency, p, heads):
    n, d = c.shape
    dh = d // heads
    h = c.view(n, heads, dh)
    f = h @ p["w_fc"]  # (N, H, Dh)
    left = (f * p["a_l"]).sum(-1)  # (N, H) on the source
    right = (f * p["a_r"]).sum(-1)  # (N, H) on the destination
    rows = []
    for dst, sources in enumerate(_incoming(adjacency)):
        if sources:
            e = Fn.leaky_relu(torch.stack([left[u] + right[dst] for u in sources]), 0.2)  # (E_v, H)
            alpha = torch.softmax(e, 0)
            m = sum(alpha[i][:, None] * f[u] for i, u in enumerate(sources))
        else:
            m = torch.zeros(heads, dh, dtype=c.dtype)
        rows.append(torch.relu(h[dst] @ p["w_res"] + m).reshape(d))
    return torch.cat([torch.stack(rows), c], -1) @ p["w_comb"] + p["b_comb"]


def _mha(x, p, heads, valid):
    n, t, d = x.shape
    dh = d // heads
    q, k, v = ((x @ p[f"w_{s}"] + p[f"b_{s}"]).view(n, t, heads, dh).transpose(1, 2) for s in "qkv")
    scores = (q @ k.transpose(-1, -2) / math.sqrt(dh)).masked_fill(~valid[:, None, None, :], -1e9)
    return (torch.softmax(scores, -1) @ v).transpose(1, 2).reshape(n, t, d) @ p["w_o"] + p["b_o"]


def _ffn(x, p):
    return Fn.gelu(x @ p["w_1"] + p["b_1"]) @ p["w_2"] + p["b_2"]


def torch_xh(x, p, st, config):
    """Eq. (6): a post-LN BERT layer; Eq. (8): the hop merged into [CLS] is the layer's output; Eq. (9): the other
    tokens unchanged. The same placement for both hops."""
    d = x.shape[-1]
    ln = lambda z, g, b: Fn.layer_norm(z, (d,), p[g], p[b], eps=1e-12)  # noqa: E731
    adjacency, valid = st["adjacency"], st["valid"]
    h1 = ln(x + _mha(x, p, config.n_heads, valid), "ln1_gamma", "ln1_beta")
    y0 = ln(h1 + _ffn(h1, p), "ln2_gamma", "ln2_beta")
    hop = torch_paper_hop if config.hop == "paper" else torch_gat_hop
    y = torch.cat([hop(y0[:, 0], adjacency, p, config.hop_heads)[:, None], y0[:, 1:]], 1)
    s = (y[:, 0] @ p["w_node"] + p["b_node"]).reshape(-1)
    if config.head == "softmax":
        loss = -torch.log_softmax(s, 0)[int(st["gold"])]
    else:
        loss = Fn.binary_cross_entropy_with_logits(s, st["labels"])
    return {"y": y, "node_logits": s, "loss": loss}


@pytest.mark.parametrize("name, label", [(n, label) for n in VARIANTS for label in ("default", *get(n).edge_configs)])
def test_torch_autograd_agrees(name, label):
    mechanism = get(name)
    config = mechanism.make_config(mechanism.edge_configs.get(label))
    report = compare_torch(mechanism, lambda i, p, s: torch_xh(i["x"], p, s, config), config=config, rtol=1e-10)
    assert report.passed, report.table()


def test_non_hub_tokens_are_the_layers_own_output():
    """Eq. (9): rows t >= 1 of the layer's output equal nn.encoder_layer's; only row 0 carries the hop."""
    from reference.attention.extra_hop_layer import LAYER_PARAMS
    from reference.nn.attention import padding_mask
    from reference.nn.encoder_layer import encoder_layer_forward
    mechanism = get("attention.extra_hop")
    case = mechanism.example(0)
    y = to_numpy(mechanism.run(case)["y"])
    y0, _ = encoder_layer_forward(case.inputs["x"], {k: case.params[k] for k in LAYER_PARAMS}, n_heads=3,
                                  mask=padding_mask(case.static["valid"]), eps=1e-12)
    np.testing.assert_array_equal(y[:, 1:], to_numpy(y0)[:, 1:])
    assert np.abs(y[:, 0] - to_numpy(y0)[:, 0]).max() > 1e-3


# --- (c) graph properties ----------------------------------------------------------------------

def _hop_case(variant, seed=0, n=6, d=8):
    xp = _np()
    rng = np.random.default_rng(seed)
    params = init_hop(rng, d, HOP_HEADS, variant, xp=xp, dtype=xp.float64)
    c = xp.asarray(rng.standard_normal((n, d)))
    return xp, params, c


def _adj(xp, edges, n=6):
    if not edges:
        return xp.zeros((n, n), dtype=xp.bool)
    return adjacency_from_edges(xp.asarray(edges, dtype=xp.int64), n)


@pytest.mark.parametrize("variant", ["paper", "gat"])
def test_zero_in_degree_gets_a_zero_message(variant):
    """Isolated nodes and roots: paper c' = [c | 0] W + b; code c' = [ReLU(h W_res) | c] W + b (not the identity)."""
    xp, params, c = _hop_case(variant)
    out = to_numpy(extra_hop_forward(c, _adj(xp, []), params, n_heads=HOP_HEADS, variant=variant)[0])
    cn, w, b = to_numpy(c), to_numpy(params["w_comb"]), to_numpy(params["b_comb"])
    if variant == "paper":
        want = np.concatenate([cn, np.zeros_like(cn)], -1) @ w + b
    else:
        h = cn.reshape(6, HOP_HEADS, -1) @ to_numpy(params["w_res"])
        want = np.concatenate([np.maximum(h, 0).reshape(6, -1), cn], -1) @ w + b
    np.testing.assert_allclose(out, want, rtol=1e-13, atol=1e-14)
    with_edges = to_numpy(extra_hop_forward(c, _adj(xp, EDGES), params, n_heads=HOP_HEADS, variant=variant)[0])
    np.testing.assert_allclose(with_edges[[3, 5]], want[[3, 5]], rtol=1e-13, atol=1e-14)  # root 3, isolated 5


@pytest.mark.parametrize("variant", ["paper", "gat"])
def test_node_permutation_equivariance(variant):
    xp, params, c = _hop_case(variant, seed=1)
    perm = np.array([4, 2, 5, 0, 3, 1])
    inverse = np.argsort(perm)
    out = to_numpy(extra_hop_forward(c, _adj(xp, EDGES), params, n_heads=HOP_HEADS, variant=variant)[0])
    moved = [(int(inverse[u]), int(inverse[v])) for u, v in EDGES]
    c_perm = xp.asarray(to_numpy(c)[perm])
    out_perm = to_numpy(extra_hop_forward(c_perm, _adj(xp, moved), params, n_heads=HOP_HEADS, variant=variant)[0])
    np.testing.assert_allclose(out_perm, out[perm], rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("variant", ["paper", "gat"])
def test_adding_an_edge_changes_only_its_destination(variant):
    xp, params, c = _hop_case(variant, seed=2)
    base = to_numpy(extra_hop_forward(c, _adj(xp, EDGES), params, n_heads=HOP_HEADS, variant=variant)[0])
    more = to_numpy(extra_hop_forward(c, _adj(xp, EDGES + [(5, 2)]), params, n_heads=HOP_HEADS, variant=variant)[0])
    changed = np.abs(more - base).max(-1) > 1e-12
    assert changed.tolist() == [False, False, True, False, False, False], changed
    no_loop = to_numpy(extra_hop_forward(c, _adj(xp, [e for e in EDGES if e != (1, 1)]), params,
                                         n_heads=HOP_HEADS, variant=variant)[0])
    assert (np.abs(no_loop - base).max(-1) > 1e-12).tolist() == [False, True, False, False, False, False]


@pytest.mark.parametrize("name", VARIANTS)
def test_components_do_not_interact(name):
    """A Transformer-XH layer moves information only along edges: component {3, 4} and node 5 cannot see {0, 1, 2}."""
    mech = get(name)
    xp = _np()
    case = mech.example(0, xp.float64, xp)
    x = to_numpy(case.inputs["x"]).copy()
    y1 = to_numpy(mech.run(case)["y"])
    x[:3] += 0.5
    y2 = to_numpy(mech.run(case.replace({"x": xp.asarray(x)}))["y"])
    np.testing.assert_array_equal(y1[3:], y2[3:])
    assert np.abs(y1[:3] - y2[:3]).max() > 1e-3


def test_information_flows_one_hop_per_layer():
    """Node 2 -> 1 -> 0: one layer lets node 1 see node 2 but not node 0 (0 receives only from 1)."""
    xp, params, c = _hop_case("paper", seed=3)
    chain = _adj(xp, [(2, 1), (1, 0)])
    base = to_numpy(extra_hop_forward(c, chain, params, n_heads=HOP_HEADS)[0])
    bumped = to_numpy(c).copy()
    bumped[2] += 1.0
    out = to_numpy(extra_hop_forward(xp.asarray(bumped), chain, params, n_heads=HOP_HEADS)[0])
    moved = np.abs(out - base).max(-1) > 1e-12
    assert moved.tolist() == [False, True, True, False, False, False], moved


def test_hop_gradient_of_the_code_variant_sums_w_fc_over_heads():
    """W_fc and W_res are shared by every head: their gradient is the sum of per-head contributions (spec §4.3),
    checked element by element against finite differences by the checker."""
    xp, params, c = _hop_case("gat", seed=4)
    adj = _adj(xp, EDGES)

    def fn(arrays):
        return extra_hop_forward(arrays["c"], adj, {**params, **arrays}, n_heads=HOP_HEADS, variant="gat")[0]

    def grad_fn(arrays, cot):
        dc, grads = extra_hop_backward(cot, extra_hop_forward(arrays["c"], adj, {**params, **arrays},
                                                              n_heads=HOP_HEADS, variant="gat")[1])
        return {"c": dc, "w_fc": grads["w_fc"], "w_res": grads["w_res"]}

    report = check_gradients(fn, grad_fn, {"c": c, "w_fc": params["w_fc"], "w_res": params["w_res"]}, mode="full",
                             name="gat hop")
    assert report.passed, report.table()


def test_parameter_counts_at_bert_base_width():
    """Spec §4.9: per hop layer, code (GAT) 9,728 + merge 1,180,416 = 1,190,144; paper (with biases) 2,952,192."""
    xp = _np()
    rng = np.random.default_rng(0)
    count = lambda p: sum(int(np.prod(v.shape)) for v in p.values())  # noqa: E731
    assert count(init_hop(rng, 768, 12, "gat", xp=xp, dtype=xp.float64)) == 1_190_144
    assert count(init_hop(rng, 768, 12, "paper", xp=xp, dtype=xp.float64)) == 2_952_192


def test_softmax_head_probabilities_sum_to_one_over_nodes():
    xp = _np()
    y = xp.asarray(np.random.default_rng(6).standard_normal((6, 3, 8)))
    w, b = xp.asarray(np.ones((8, 1))), xp.asarray([0.5])
    s, loss, _ = node_head_forward(y, w, b, kind="softmax", gold=xp.asarray(2))
    sn = to_numpy(s)
    want = -(sn[2] - np.log(np.exp(sn).sum()))
    assert abs(float(to_numpy(loss)) - want) < 1e-13, (float(to_numpy(loss)), want)


# --- (d) bad input -----------------------------------------------------------------------------

def test_bad_input_names_the_argument():
    xp, params, c = _hop_case("paper")
    adj = _adj(xp, EDGES)
    with pytest.raises(ValueError, match="adjacency must have shape"):
        extra_hop_forward(c, adj[:5], params, n_heads=HOP_HEADS)
    with pytest.raises(TypeError, match="adjacency must be a boolean"):
        extra_hop_forward(c, xp.astype(adj, xp.float64), params, n_heads=HOP_HEADS)
    with pytest.raises(ValueError, match="divisible"):
        extra_hop_forward(c, adj, params, n_heads=3)
    with pytest.raises(ValueError, match="variant must be one of"):
        extra_hop_forward(c, adj, params, n_heads=HOP_HEADS, variant="gcn")
    with pytest.raises(ValueError, match="params is missing"):
        extra_hop_forward(c, adj, params, n_heads=HOP_HEADS, variant="gat")
    with pytest.raises(ValueError, match="edges must lie in"):
        adjacency_from_edges(xp.asarray([[0, 6]], dtype=xp.int64), 6)
    with pytest.raises(ValueError, match="edges must have shape"):
        adjacency_from_edges(xp.asarray([0, 1], dtype=xp.int64), 6)
    with pytest.raises(ValueError, match="x must have shape"):
        xh_layer_forward(c, adj, params, n_heads=2, hop_heads=HOP_HEADS)
    with pytest.raises(ValueError, match="gold"):
        node_head_forward(xp.zeros((6, 3, 8)), xp.zeros((8, 1)), xp.zeros((1,)), kind="softmax")
    with pytest.raises(ValueError, match="w_node must have shape"):
        node_head_forward(xp.zeros((6, 3, 8)), xp.zeros((8,)), xp.zeros((1,)), kind="sigmoid", labels=xp.zeros(6))
