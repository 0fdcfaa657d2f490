"""Compressive Transformer: gradient checks, an independent torch implementation, stop-gradients, FIFO memory.

The torch layer below is written from the paper's Algorithms 1 and 2 (spec architecture.md §1.4-1.6)
with torch's own pooling and convolution operators, not from the oracle's code; its stop-gradients
are ``detach()``.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as tf

from gradients import check_mechanism
from gradients.check import random_cotangents
from gradients.compare import compare_torch
from reference.architecture.cases.compressive import VARIANTS
from reference.architecture.compressive import (
    CompressiveConfig,
    CompressiveState,
    compressive_layer_backward,
    compressive_layer_forward,
    compressive_rollout,
    init_compressive_layer,
    init_state,
    sample_memory,
    usage_counts,
)
from reference.architecture.compressive_functions import compress_forward, most_used_rows
from reference.backend import namespace, to_numpy
from reference.random import generator, normal
from reference.registry import get

NAMES = [f"architecture.compressive{suffix}" for suffix in VARIANTS]
MAIN = ("w_q", "b_q", "w_k", "b_k", "w_v", "b_v", "w_o", "b_o", "w_1", "b_1", "w_2", "b_2",
        "ln1_gamma", "ln1_beta", "ln2_gamma", "ln2_beta")


# --- (a) finite differences ---------------------------------------------------------------------

@pytest.mark.parametrize("backend", ["numpy", "array_api_strict"])
def test_every_element_conv_with_bias_and_dropout(backend):
    """Every element on NumPy; 24 evenly spaced elements a tensor on array_api_strict (~180 s for all)."""
    report = check_mechanism(get("architecture.compressive"), backend=backend, mode="full",
                             max_elements=None if backend == "numpy" else 24)
    assert report.passed, report.table()


@pytest.mark.parametrize("name", NAMES[1:])
def test_random_directions_every_compression_function(name):
    report = check_mechanism(get(name), backend="numpy", mode="fast")
    assert report.passed, report.table()


EDGES = [(name, label) for name in NAMES for label in get(name).edge_configs]


@pytest.mark.parametrize("name, label", EDGES)
def test_every_edge_configuration_random_directions(name, label):
    mechanism = get(name)
    report = check_mechanism(mechanism, backend="numpy", mode="fast", config=mechanism.edge_configs[label])
    assert report.passed, report.table()


@pytest.mark.parametrize("label", ["memory_shorter_than_segment", "algorithm1_short_memory", "odd_sizes"])
def test_edges_on_array_api_strict(label):
    mechanism = get("architecture.compressive.most_used" if label == "algorithm1_short_memory"
                    else "architecture.compressive.dilated")
    report = check_mechanism(mechanism, backend="array_api_strict", mode="fast", config=mechanism.edge_configs[label])
    assert report.passed, report.table()


def test_conv_runs_on_torch_through_array_api_compat():
    """Issue 15.2: the mechanism itself runs on torch tensors (``array.size`` is a method there)."""
    torch_xp = pytest.importorskip("array_api_compat.torch")
    mechanism = get("architecture.compressive.conv")
    ours = mechanism.run(mechanism.example(0))
    case = mechanism.example(0, torch_xp.float64, torch_xp)
    outputs, cache = mechanism.forward(case)
    grads = mechanism.backward(cache, {k: torch_xp.ones_like(v) for k, v in outputs.items()})
    assert isinstance(outputs["loss_attn"], torch.Tensor) and set(grads) >= {"h", "w_c"}
    for key in ours:
        np.testing.assert_allclose(outputs[key].numpy(), to_numpy(ours[key]), rtol=1e-12, atol=1e-14)


# --- (b) an independent torch implementation ------------------------------------------------------

def _t(a):
    return torch.from_numpy(np.array(to_numpy(a)))


def _ln(x, g, b, eps=1e-5):
    return tf.layer_norm(x, (x.shape[-1],), g, b, eps)


def _heads(x, n_heads):
    b, n, d = x.shape
    return x.reshape(b, n, n_heads, d // n_heads).transpose(1, 2)


def torch_ranking(usage, n_old, t, config):
    """Usage of each evicted row: the state's usage (zero for rows of h), averaged per segment in memory."""
    b, n_mem = usage.shape
    rows = torch.cat([usage, torch.zeros(b, t, dtype=usage.dtype)], dim=1)[:, :n_old]
    if config.usage == "sum":
        return rows
    segments = torch.tensor([math.ceil((n_mem - j) / t) if j < n_mem else 1 for j in range(n_old)], dtype=usage.dtype)
    return rows / segments


def torch_compress(old, p, usage, config, t=None):
    """f_c with torch's pooling and convolution; old (B, N, D)."""
    c, x = config.rate, old.transpose(1, 2)  # (B, D, N)
    if config.kind == "mean":
        return tf.avg_pool1d(x, c).transpose(1, 2)
    if config.kind == "max":
        return tf.max_pool1d(x, c).transpose(1, 2)
    if config.kind == "most_used":
        ranked = torch_ranking(usage, old.shape[1], t, config)
        top = torch.topk(ranked, old.shape[1] // c, dim=1).indices.sort(dim=1).values
        return torch.gather(old, 1, top[..., None].expand(-1, -1, old.shape[2]))
    weight = p["w_c"].permute(2, 1, 0)  # (D_out, D_in, K): tap r maps to W_r
    k = weight.shape[2]
    dilation = 1 if config.kind == "conv" else config.dilation
    n_out = old.shape[1] // c
    pad = max(0, (n_out - 1) * c + dilation * (k - 1) + 1 - old.shape[1])
    return tf.conv1d(tf.pad(x, (0, pad)), weight, p["b_c"], stride=c, dilation=dilation).transpose(1, 2)


def torch_layer(h, mem, cmem, p, usage, config, bias=None, drop=None, detach=True):
    """Algorithm 1 (one layer, post-LN) and Algorithm 2; returns y and L_attn."""
    nh, (b, t, d) = config.n_heads, h.shape
    drop = drop or {}
    z = torch.cat([cmem, mem, h], dim=1)
    s = z.shape[1]
    q = _heads(h @ p["w_q"] + p["b_q"], nh)
    k, v = _heads(z @ p["w_k"] + p["b_k"], nh), _heads(z @ p["w_v"] + p["b_v"], nh)
    scores = q @ k.transpose(-1, -2) / math.sqrt(d // nh)
    if bias is not None:
        scores = scores + bias
    visible = torch.arange(s)[None, :] <= torch.arange(t)[:, None] + (s - t)
    probs = torch.softmax(scores.masked_fill(~visible, -1e9), -1)
    probs = probs * drop["attn_probs"] if "attn_probs" in drop else probs
    a = (probs @ v).transpose(1, 2).reshape(b, t, d) @ p["w_o"] + p["b_o"]
    a = a * drop["attn"] if "attn" in drop else a
    a1 = _ln(h + a, p["ln1_gamma"], p["ln1_beta"])
    inner = tf.gelu(a1 @ p["w_1"] + p["b_1"])
    inner = inner * drop["ffn_inner"] if "ffn_inner" in drop else inner
    f = inner @ p["w_2"] + p["b_2"]
    f = f * drop["ffn"] if "ffn" in drop else f
    y = _ln(a1 + f, p["ln2_gamma"], p["ln2_beta"])
    sg = (lambda x: x.detach()) if detach else (lambda x: x)
    n_old = t if config.eviction == "fifo" else min(t, mem.shape[1])  # Alg. 1 reads m[:n_s]
    old = sg(torch.cat([mem, h], dim=1)[:, :n_old])
    w = {k_: sg(p[k_]) for k_ in ("w_q", "b_q", "w_k", "b_k", "w_v", "b_v")}
    q_r = _heads(sg(h) @ w["w_q"] + w["b_q"], nh)
    scale = 1.0 / math.sqrt(d // nh) if config.scale is None else config.scale

    def content_attention(x):
        kk, vv = _heads(x @ w["w_k"] + w["b_k"], nh), _heads(x @ w["w_v"] + w["b_v"], nh)
        return torch.softmax(q_r @ kk.transpose(-1, -2) * scale, -1) @ vv

    diff = content_attention(torch_compress(old, p, usage, config, t)) - content_attention(old)
    loss = (diff ** 2).sum() if config.reduction == "sum" else (diff ** 2).mean()
    return y, loss


TWIN_CASES = [(name, None) for name in NAMES] + EDGES


@pytest.mark.parametrize("name, label", TWIN_CASES)
def test_torch_autograd_agrees(name, label):
    mechanism = get(name)
    if label is not None:  # the same comparison at an edge configuration
        mechanism = dataclasses.replace(mechanism, defaults={**mechanism.defaults, **mechanism.edge_configs[label]})
    config = mechanism.make_config().layer()

    def fn(inputs, params, static):
        drop = {k: _t(v) for k, v in static["dropout"].items()} if "dropout" in static else None
        y, loss = torch_layer(inputs["h"], inputs["mem"], inputs["cmem"], params, static["usage"], config,
                              bias=inputs.get("bias"), drop=drop)
        return {"y": y, "loss_attn": loss}

    report = compare_torch(mechanism, fn, rtol=1e-10, atol=1e-12)
    assert report.passed, report.table()


# --- (c) paper properties -------------------------------------------------------------------------

def _setup(config, seed=3, xp=None, t=6, n_mem=7, n_cmem=5, d=4):
    xp = xp or namespace("numpy")
    rng = generator(seed)
    h = normal(rng, (2, t, d), xp=xp, dtype=xp.float64)
    state = sample_memory(rng, 2, n_mem, n_cmem, d, xp=xp, dtype=xp.float64)
    return h, state, init_compressive_layer(rng, d, 9, config, xp=xp, dtype=xp.float64)


@pytest.mark.parametrize("kind", ["conv", "dilated"])
def test_reconstruction_loss_sends_no_gradient_into_the_main_network(kind):
    """dL_attn reaches theta_c only; the LM side (y) never reaches theta_c."""
    config = CompressiveConfig(2, kind, 3)
    h, state, params = _setup(config)
    xp = namespace("numpy")
    out, cache = compressive_layer_forward(h, state, params, config)
    dh, dmem, dcmem, grads = compressive_layer_backward(xp.zeros_like(out.y), xp.asarray(1.0), cache)
    for name, g in [("h", dh), ("mem", dmem), ("cmem", dcmem)] + [(k, grads[k]) for k in MAIN]:
        assert np.all(to_numpy(g) == 0.0), f"L_attn leaked into {name}: max |g| = {np.abs(to_numpy(g)).max()}"
    assert np.abs(to_numpy(grads["w_c"])).max() > 1e-3, "L_attn must train the compression function"
    cot = random_cotangents({"y": out.y}, seed=1)["y"]
    _, _, _, grads = compressive_layer_backward(cot, xp.asarray(0.0), cache)
    assert np.all(to_numpy(grads["w_c"]) == 0.0) and np.all(to_numpy(grads["b_c"]) == 0.0), \
        "the layer output must not reach theta_c (memories are detached)"
    # The stop-gradients matter: without detach, torch's L_attn does depend on w_k and h.
    p = {k: _t(v).requires_grad_(True) for k, v in params.items()}
    th = _t(h).requires_grad_(True)
    _, loss = torch_layer(th, _t(state.mem), _t(state.cmem), p, _t(state.usage), config, detach=False)
    loss.backward()
    assert p["w_k"].grad.abs().max() > 1e-6 and th.grad.abs().max() > 1e-6, \
        f"live L_attn should depend on w_k and h: {p['w_k'].grad.abs().max()}, {th.grad.abs().max()}"


def test_identity_conv_reconstructs_exactly_and_mean_pool_is_a_conv():
    xp = namespace("numpy")
    config = CompressiveConfig(2, "conv", 1)
    h, state, params = _setup(config)
    params = {**params, "w_c": xp.asarray(np.eye(4)[None]), "b_c": xp.zeros(4, dtype=xp.float64)}
    out, _ = compressive_layer_forward(h, state, params, config)
    assert float(out.loss_attn) == 0.0, f"c = 1, W = I: L_attn = {float(out.loss_attn)}, expected 0"
    old = normal(generator(0), (2, 6, 4), xp=xp, dtype=xp.float64)
    mean, _ = compress_forward(old, {}, kind="mean", rate=3)
    conv, _ = compress_forward(old, {"w_c": xp.asarray(np.stack([np.eye(4) / 3] * 3)), "b_c": xp.zeros(4)},
                               kind="conv", rate=3)
    np.testing.assert_allclose(to_numpy(conv), to_numpy(mean), rtol=1e-14, atol=1e-15)


def test_fifo_memory_and_compressed_memory_over_segments():
    """With n_s | n_m, a row stays in memory n_m / n_s segments, then (mean-pooled) in the compressed
    memory n_cm / (n_s / c) segments (spec §1.9)."""
    xp = namespace("numpy")
    t, n_mem, n_cmem, rate = 3, 6, 2, 3
    config = CompressiveConfig(2, "mean", rate)
    rng = generator(5)
    params = init_compressive_layer(rng, 4, 9, config, xp=xp, dtype=xp.float64)
    segments = [normal(rng, (2, t, 4), xp=xp, dtype=xp.float64) for _ in range(6)]
    outputs, _ = compressive_rollout(segments, init_state(2, n_mem, n_cmem, 4, xp=xp, dtype=xp.float64),
                                              params, config)
    first = to_numpy(segments[0])
    for k, out in enumerate(outputs):  # after segment k
        mem, cmem = to_numpy(out.state.mem), to_numpy(out.state.cmem)
        in_mem = any(np.array_equal(mem[:, i:i + t], first) for i in range(n_mem - t + 1))
        assert in_mem == (k < n_mem // t), f"segment 0 in memory after segment {k}: {in_mem}"
        in_cmem = any(np.allclose(cmem[:, i], first.mean(axis=1), rtol=0, atol=1e-15) for i in range(n_cmem))
        expected = n_mem // t <= k < n_mem // t + n_cmem // (t // rate)
        assert in_cmem == expected, f"segment 0 compressed in cmem after segment {k}: {in_cmem}, expected {expected}"


def test_segments_carry_state_explicitly_and_match_step_by_step_calls():
    xp = namespace("numpy")
    config = CompressiveConfig(2, "most_used", 3)
    rng = generator(2)
    params = init_compressive_layer(rng, 4, 9, config, xp=xp, dtype=xp.float64)
    segments = [normal(rng, (2, 6, 4), xp=xp, dtype=xp.float64) for _ in range(4)]
    state = init_state(2, 7, 5, 4, xp=xp, dtype=xp.float64)
    outputs, _ = compressive_rollout(segments, state, params, config)
    for h, out in zip(segments, outputs):
        step, _ = compressive_layer_forward(h, state, params, config)
        np.testing.assert_array_equal(to_numpy(step.y), to_numpy(out.y))
        state = step.state
    assert np.all(to_numpy(outputs[-1].state.cmem) != 0.0), "after 4 segments the compressed memory is filled"


def test_causal_inside_the_segment_and_every_memory_visible():
    xp = namespace("numpy")
    config = CompressiveConfig(2, "conv", 3)
    h, state, params = _setup(config)
    out, _ = compressive_layer_forward(h, state, params, config)
    moved = to_numpy(h).copy()
    moved[:, 4:] += 1.0
    out2, _ = compressive_layer_forward(xp.asarray(moved), state, params, config)
    np.testing.assert_array_equal(to_numpy(out2.y)[:, :4], to_numpy(out.y)[:, :4])
    cm = to_numpy(state.cmem).copy()
    cm[:, 0] += 1.0
    out3, _ = compressive_layer_forward(h, state._replace(cmem=xp.asarray(cm)), params, config)
    assert np.abs(to_numpy(out3.y)[:, 0] - to_numpy(out.y)[:, 0]).max() > 1e-6, "query 0 must see the oldest slot"


def test_most_used_keeps_the_largest_usage_in_temporal_order(xp):
    usage = xp.asarray([[0.1, 0.9, 0.3, 0.8, 0.2, 0.7], [0.6, 0.5, 0.4, 0.3, 0.2, 0.1]], dtype=xp.float64)
    keep = to_numpy(most_used_rows(usage, 2))
    assert keep.tolist() == [[1, 3], [0, 1]], keep


# --- (d) bad input ----------------------------------------------------------------------------------

def test_bad_input_names_the_argument():
    xp = namespace("numpy")
    config = CompressiveConfig(2, "conv", 3)
    h, state, params = _setup(config)
    with pytest.raises(ValueError, match="divisible by rate=3"):
        compressive_layer_forward(h[:, :5], state, params, config)
    with pytest.raises(ValueError, match=r"state.mem must have shape"):
        compressive_layer_forward(h, state._replace(mem=state.mem[:, :, :3]), params, config)
    with pytest.raises(ValueError, match="kind must be one of"):
        CompressiveConfig(2, "median", 3)
    with pytest.raises(ValueError, match="keep must be given"):
        compress_forward(h, {}, kind="most_used", rate=3)
    with pytest.raises(ValueError, match=r"w_c must have shape"):
        compress_forward(h, {"w_c": xp.zeros((2, 4, 4)), "b_c": xp.zeros(4)}, kind="conv", rate=3)
    with pytest.raises(TypeError, match="h must be a real floating array"):
        compressive_layer_forward(xp.zeros((2, 6, 4), dtype=xp.int64), state, params, config)


def _bad(h, state, params, config, change):
    """One call with one argument replaced."""
    args = {"h": h, "state": state, "params": params, "config": config}
    for key, value in change.items():
        if key.startswith("state_"):
            args["state"] = args["state"]._replace(**{key[len("state_"):]: value})
        else:
            args[key] = value
    compressive_layer_forward(args["h"], args["state"], args["params"], args["config"])


def _nan(x):
    y = np.array(to_numpy(x), copy=True)
    y.flat[0] = np.nan
    return namespace("numpy").asarray(y)


BAD_INPUTS = [
    ("h_nan", lambda h, s: {"h": _nan(h)}, ValueError, "h contains NaN"),
    ("mem_nan", lambda h, s: {"state_mem": _nan(s.mem)}, ValueError, "state.mem contains NaN"),
    ("cmem_inf", lambda h, s: {"state_cmem": s.cmem * np.inf}, ValueError, "state.cmem contains NaN"),
    ("usage_nan", lambda h, s: {"state_usage": _nan(s.usage)}, ValueError, "state.usage contains NaN"),
    ("usage_negative", lambda h, s: {"state_usage": -s.usage}, ValueError, "state.usage must be non-negative"),
    ("h_list", lambda h, s: {"h": to_numpy(h).tolist()}, TypeError, "h must be an array"),
    ("mem_tuple", lambda h, s: {"state_mem": tuple(to_numpy(s.mem).tolist())}, TypeError, "state.mem must be an array"),
    ("h_int", lambda h, s: {"h": namespace("numpy").astype(h, namespace("numpy").int64)}, TypeError,
     "h must be a real floating"),
    ("usage_int", lambda h, s: {"state_usage": namespace("numpy").astype(s.usage, namespace("numpy").int64)},
     TypeError, "state.usage must be a real floating"),
    ("h_empty_batch", lambda h, s: {"h": h[:0], "state": s._replace(mem=s.mem[:0], cmem=s.cmem[:0],
                                                                     usage=s.usage[:0])},
     ValueError, "h must have a non-empty"),
    ("h_empty_segment", lambda h, s: {"h": h[:, :0]}, ValueError, "h must have a non-empty"),
    ("h_rank", lambda h, s: {"h": h[0]}, ValueError, "h must have shape"),
    ("state_tuple", lambda h, s: {"state": tuple(s)}, TypeError, "state must be a CompressiveState"),
]


@pytest.mark.parametrize("label, change, error, message", BAD_INPUTS, ids=[b[0] for b in BAD_INPUTS])
def test_bad_input_parametrised(label, change, error, message):
    config = CompressiveConfig(2, "most_used", 3)
    h, state, params = _setup(config)
    with pytest.raises(error, match=message):
        _bad(h, state, params, config, change(h, state))


@pytest.mark.parametrize("field, value", [("dilation", 0), ("rate", 0), ("rate", -3), ("n_heads", 0),
                                          ("kernel", 0), ("eviction", "lifo"), ("usage", "max"), ("eps", 0.0)])
def test_bad_configuration_names_the_field(field, value):
    base = {"n_heads": 2, "kind": "dilated", "rate": 3}
    with pytest.raises(ValueError, match=f"CompressiveConfig.{field}"):
        CompressiveConfig(**{**base, field: value})


def test_most_used_ranks_by_average_attention_not_summed():
    """§3.1 (paperswithcode's summary): memories are sorted by their *average* attention. With n_s = 6 not
    dividing n_m = 9, the three oldest slots summed two segments and the next three one, so the sum and the
    average pick different rows."""
    assert usage_counts(6, 9, 6) == [2.0, 2.0, 2.0, 1.0, 1.0, 1.0]
    xp = namespace("numpy")
    rng = generator(0)
    h = normal(rng, (1, 6, 4), xp=xp, dtype=xp.float64)
    usage = xp.asarray([[0.9, 0.9, 0.9, 0.5, 0.5, 0.5, 0.1, 0.1, 0.1]])
    state = CompressiveState(normal(rng, (1, 9, 4), xp=xp, dtype=xp.float64),
                             normal(rng, (1, 2, 4), xp=xp, dtype=xp.float64), usage)
    picked = {}
    for ranking in ("mean", "sum"):
        config = CompressiveConfig(2, "most_used", 2, usage=ranking)
        params = init_compressive_layer(generator(1), 4, 5, config, xp=xp, dtype=xp.float64)
        out, _ = compressive_layer_forward(h, state, params, config)
        picked[ranking] = to_numpy(out.compressed)[0]
    mem = to_numpy(state.mem)[0]
    np.testing.assert_array_equal(picked["mean"], mem[3:6])  # 0.5 per segment beats 0.45
    np.testing.assert_array_equal(picked["sum"], mem[0:3])  # 0.9 in total beats 0.5


def test_eviction_rules_differ_only_when_memory_is_shorter_than_the_segment():
    xp = namespace("numpy")
    rng = generator(4)
    h = normal(rng, (2, 6, 4), xp=xp, dtype=xp.float64)
    for n_mem, same in ((9, True), (3, False)):
        state = sample_memory(rng, 2, n_mem, 2, 4, xp=xp, dtype=xp.float64)
        outs = {}
        for rule in ("fifo", "algorithm1"):
            config = CompressiveConfig(2, "mean", 3, eviction=rule)
            params = init_compressive_layer(generator(1), 4, 5, config, xp=xp, dtype=xp.float64)
            outs[rule], _ = compressive_layer_forward(h, state, params, config)
        np.testing.assert_array_equal(to_numpy(outs["fifo"].state.mem), to_numpy(outs["algorithm1"].state.mem))
        old_fifo, old_alg = to_numpy(outs["fifo"].old_mem), to_numpy(outs["algorithm1"].old_mem)
        assert (old_fifo.shape == old_alg.shape and np.array_equal(old_fifo, old_alg)) == same
        if not same:  # Alg. 1: only m leaves; h's oldest three rows fall out uncompressed
            np.testing.assert_array_equal(old_alg, to_numpy(state.mem))
            np.testing.assert_array_equal(old_fifo, np.concatenate([to_numpy(state.mem), to_numpy(h)[:, :3]], 1))
