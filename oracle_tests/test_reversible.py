"""Reversible layers: gradient checks, reversible = stored backward, exact reconstruction, chunked FFN,
memory, an independent torch autograd stack (bad input: test_lsh_reversible_bad_input.py).

The torch stack below is written from Y1 = X1 + F(X2), Y2 = X2 + G(Y1) (spec architecture.md §2.3) with
ordinary autograd; it shares no code with reference/architecture/reversible*.py.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from test_lsh import torch_lsh

from benchmarks.reversible_memory import ff_chunk_peak_mib, peak_mib
from gradients import check_mechanism
from reference.architecture.cases.reversible import FULL_EDGES, LSH_EDGES, unflatten_params
from reference.architecture.reversible import (
    init_reversible_layers,
    reversible_backward,
    reversible_forward,
    reversible_inverse,
    sample_reversible_tapes,
    stored_backward,
    stored_forward,
)
from reference.architecture.reversible_blocks import (
    LayerTape,
    ReversibleConfig,
    chunked_feed_forward_forward,
    chunked_feed_forward_vjp,
)
from reference.backend import namespace, to_numpy
from reference.nn.feed_forward import feed_forward_backward, feed_forward_forward, init_feed_forward
from reference.random import random_cotangents
from reference.registry import get

NAMES = ["architecture.reversible", "architecture.reversible.lsh"]
FULL = get("architecture.reversible").make_config().runtime()
LSH = get("architecture.reversible.lsh").make_config().runtime()


def _stack(config, n_layers, *, batch=2, seq=8, d_model=4, d_ff=7, rate=0.1, seed=0, xp=None):
    xp = xp or namespace("numpy")
    rng = np.random.default_rng(seed)
    x = xp.asarray(rng.standard_normal((batch, seq, d_model)))
    layers = init_reversible_layers(rng, n_layers, d_model, d_ff, config, xp=xp, dtype=xp.float64)
    tapes = sample_reversible_tapes(rng, n_layers, batch, seq, d_model, d_ff, config, rate=rate, xp=xp,
                                    dtype=xp.float64)
    return x, layers, tapes


# --- (a) finite differences -------------------------------------------------------------------

@pytest.mark.parametrize("name", NAMES)
def test_gradient_check_full_numpy(name):
    report = check_mechanism(get(name), backend="numpy", mode="full")
    assert report.passed, report.table()
    assert max(r.max_rel_error for r in report.results) < 1e-8, report.table()  # relative: |dx| reaches ~24 here


# array_api_strict: random directions (the CLI checks every element)
@pytest.mark.parametrize("name", NAMES)
def test_gradient_check_array_api_strict(name):
    report = check_mechanism(get(name), backend="array_api_strict", mode="fast")
    assert report.passed, report.table()


@pytest.mark.parametrize("name,label", [("architecture.reversible", k) for k in FULL_EDGES]
                         + [("architecture.reversible.lsh", k) for k in LSH_EDGES])
def test_edges_on_array_api_strict(name, label):
    mech = get(name)
    report = check_mechanism(mech, backend="array_api_strict", mode="fast", config=mech.edge_configs[label])
    assert report.passed, report.table()


def test_intermediates_are_each_layers_hidden_states():
    mech = get("architecture.reversible")
    case = mech.example()
    _, stored = stored_forward(case.inputs["x"], unflatten_params(case.params, 3), case.static["tapes"], FULL)
    outputs, cache = mech.forward(case)
    inter = mech.intermediates(cache)
    assert list(inter) == [f"l{n}.y{s}" for n in range(3) for s in (1, 2)]
    np.testing.assert_allclose(inter["l0.y1"], stored.inputs[1][0], rtol=1e-12, atol=1e-13)
    assert np.array_equal(inter["l2.y2"], outputs["y2"])


# --- (c) properties: reversible backward = stored backward; reconstruction ----------------------

@pytest.mark.parametrize("config", [FULL, LSH], ids=["full", "lsh"])
def test_reversible_gradients_equal_stored_activation_gradients(xp, config):
    x, layers, tapes = _stack(config, 4, xp=xp)
    (y1, y2), cache = reversible_forward(x, layers, tapes, config)
    (s1, s2), stored = stored_forward(x, layers, cache.tapes, config)  # same buckets
    assert float(np.max(np.abs(to_numpy(y1) - to_numpy(s1)))) == 0.0
    rng = np.random.default_rng(9)
    d1, d2 = (xp.asarray(rng.standard_normal(tuple(y1.shape))) for _ in range(2))
    dx, grads = reversible_backward(d1, d2, cache)
    dx_s, grads_s = stored_backward(d1, d2, stored)
    np.testing.assert_allclose(to_numpy(dx), to_numpy(dx_s), rtol=1e-10, atol=1e-12)
    for n, (g, gs) in enumerate(zip(grads, grads_s)):
        assert set(g) == set(gs) == set(config.layer_params())
        for k in g:
            np.testing.assert_allclose(to_numpy(g[k]), to_numpy(gs[k]), rtol=1e-10, atol=1e-12, err_msg=f"l{n}.{k}")


def test_exact_mode_reconstructs_64_layers_bit_for_bit():
    config = ReversibleConfig(n_heads=2, n_ff_chunks=2, activation="gelu_tanh", exact_bits=32)
    x, layers, tapes = _stack(config, 64, seq=5, d_model=6, d_ff=5)
    (y1, y2), cache = reversible_forward(x, layers, tapes, config)
    _, stored = stored_forward(x, layers, tapes, config)
    rebuilt = reversible_inverse(cache.y1, cache.y2, layers, cache.tapes, config)
    assert cache.y1.dtype == np.int64
    for n, ((a1, a2), (b1, b2)) in enumerate(zip(rebuilt, stored.inputs)):
        assert np.array_equal(a1, b1) and np.array_equal(a2, b2), f"layer {n}: max diff {np.abs(a1 - b1).max()}"
    # Straight-through gradients: reversible equals stored backprop of the same quantised network, exactly.
    d1, d2 = np.ones_like(y1), np.full_like(y2, 0.5)
    dx, grads = reversible_backward(d1, d2, cache)
    dx_s, grads_s = stored_backward(d1, d2, stored)
    assert np.array_equal(dx, dx_s)
    assert all(np.array_equal(g[k], gs[k]) for g, gs in zip(grads, grads_s) for k in g)


def test_float64_reconstruction_drift_is_rounding_level_at_64_layers():
    config = ReversibleConfig(n_heads=2, n_ff_chunks=2, activation="gelu_tanh")
    x, layers, tapes = _stack(config, 64, seq=5, d_model=6, d_ff=5)
    _, cache = reversible_forward(x, layers, tapes, config)
    _, stored = stored_forward(x, layers, tapes, config)
    rebuilt = reversible_inverse(cache.y1, cache.y2, layers, cache.tapes, config)
    err = max(float(np.max(np.abs(a - b))) for (a, _), (b, _) in zip(rebuilt, stored.inputs))
    assert 0.0 < err < 1e-11, err  # not exact (float addition is not invertible), but close


def test_replaying_a_different_dropout_mask_breaks_reconstruction_and_gradients():
    x, layers, tapes = _stack(FULL, 3)
    (y1, y2), cache = reversible_forward(x, layers, tapes, FULL)
    d1, d2 = np.ones_like(y1), np.ones_like(y2)
    dx, _ = reversible_backward(d1, d2, cache)
    wrong = list(cache.tapes)
    wrong[1] = wrong[1]._replace(ff_out=wrong[1].ff_out[:, ::-1])  # a different mask in the backward
    dx_wrong, _ = reversible_backward(d1, d2, cache._replace(tapes=wrong))
    assert float(np.max(np.abs(dx - dx_wrong))) > 1e-3
    rebuilt = reversible_inverse(cache.y1, cache.y2, layers, wrong, FULL)
    assert float(np.max(np.abs(rebuilt[0][0] - x))) > 1e-3


@pytest.mark.parametrize("n_chunks", [1, 2, 3, 8])
def test_chunked_feed_forward_equals_unchunked(xp, n_chunks):
    rng = np.random.default_rng(2)
    x = xp.asarray(rng.standard_normal((2, 8, 5)))
    params = init_feed_forward(rng, 5, 7, xp=xp, dtype=xp.float64)
    mask = xp.asarray((rng.uniform(size=(2, 8, 7)) > 0.2) / 0.8)
    y, cache = chunked_feed_forward_forward(x, params, n_chunks=n_chunks, dropout_mask=mask)
    y_ref, cache_ref = feed_forward_forward(x, params, dropout_mask=mask)
    np.testing.assert_allclose(to_numpy(y), to_numpy(y_ref), rtol=1e-12, atol=1e-14)
    dy = xp.asarray(rng.standard_normal((2, 8, 5)))
    _, dx, g = chunked_feed_forward_vjp(dy, cache)
    dx_ref, g_ref = feed_forward_backward(dy, cache_ref)
    np.testing.assert_allclose(to_numpy(dx), to_numpy(dx_ref), rtol=1e-12, atol=1e-14)
    for k in g_ref:
        np.testing.assert_allclose(to_numpy(g[k]), to_numpy(g_ref[k]), rtol=1e-12, atol=1e-14, err_msg=k)


def _peak_backward_mib(pair, n_layers):
    config = ReversibleConfig(n_heads=2, n_ff_chunks=1, activation="gelu_tanh")
    x, layers, tapes = _stack(config, n_layers, batch=2, seq=64, d_model=16, d_ff=64, rate=0.0)
    return peak_mib(*pair, x, layers, tapes, config)


def test_reversible_backward_memory_is_flat_in_depth_stored_grows():
    rev = [_peak_backward_mib((reversible_forward, reversible_backward), n) for n in (2, 8)]
    sto = [_peak_backward_mib((stored_forward, stored_backward), n) for n in (2, 8)]
    assert rev[1] < 1.3 * rev[0], rev  # flat (parameter gradients grow, activations do not)
    assert sto[1] > 2.5 * sto[0], sto  # stored activations grow with depth


def test_feed_forward_chunks_bound_the_peak():
    """Issue 16.6: B=1, T=1024, D=32, F=4096, 2 layers, float64: 8 chunks at most half the peak of 1."""
    one, eight = ff_chunk_peak_mib(1), ff_chunk_peak_mib(8)
    assert eight <= 0.5 * one, (one, eight)


# --- (b) an independent torch implementation ---------------------------------------------------

def _t(a):
    return torch.from_numpy(np.array(to_numpy(a)))


def _ln(x, g, b):
    mu = x.mean(-1, keepdim=True)
    return (x - mu) / torch.sqrt(((x - mu) ** 2).mean(-1, keepdim=True) + 1e-5) * g + b


def _gelu_tanh(h):
    return 0.5 * h * (1 + torch.tanh(math.sqrt(2 / math.pi) * (h + 0.044715 * h ** 3)))


def _torch_stack(x, layers, tapes, n_heads, lsh=None, causal=False):
    x1 = x2 = x
    for p, tape in zip(layers, tapes):
        h = _ln(x2, p["ln_a.gamma"], p["ln_a.beta"])
        b, t, d = h.shape
        if lsh is None:
            q, k, v = (torch.reshape(h @ p[f"w_{s}"] + p[f"b_{s}"], (b, t, n_heads, d // n_heads)).transpose(1, 2)
                       for s in "qkv")
            s = q @ k.transpose(-1, -2) / math.sqrt(d // n_heads)
            if causal:
                s = s.masked_fill(torch.ones(t, t, dtype=torch.bool).triu(1), -1e9)
            att = torch.softmax(s, -1) * tape.attn_probs
            a = (att @ v).transpose(1, 2).reshape(b, t, d) @ p["w_o"] + p["b_o"]
        else:  # the independent torch LSH attention of test_lsh.py, with the forward's buckets
            a = torch_lsh(h, p["w_qk"], p["w_v"], p["w_o"], tape.buckets, n_heads=n_heads, causal=causal,
                          across=False, **lsh)
        y1 = x1 + a * tape.attn_out  # Y1 = X1 + F(X2)
        h = _ln(y1, p["ln_f.gamma"], p["ln_f.beta"])
        f = (_gelu_tanh(h @ p["w_1"] + p["b_1"]) * tape.ff_hidden) @ p["w_2"] + p["b_2"]
        y2 = x2 + f * tape.ff_out  # Y2 = X2 + G(Y1)
        x1, x2 = y1, y2
    return x1, x2


@pytest.mark.parametrize("name,label", [(n, None) for n in NAMES] + [("architecture.reversible", "causal"),
                                                                     ("architecture.reversible.lsh", "causal")])
def test_agrees_with_torch_autograd(name, label):
    mech = get(name)
    case = mech.example(0, np.float64, namespace("numpy"), mech.edge_configs[label] if label else None)
    outputs, cache = mech.forward(case)
    cot = random_cotangents(outputs)
    grads = mech.backward(cache, cot)
    leaves = {k: _t(v).requires_grad_(True) for k, v in case.differentiable.items()}
    layers = unflatten_params({k: v for k, v in leaves.items() if k != "x"}, case.config.n_layers)
    tapes = [LayerTape(*(None if a is None else _t(a) for a in tape)) for tape in case.static["tapes"]]
    c = case.config
    lsh = None if c.attention == "full" else dict(n_buckets=c.n_buckets, chunk_len=c.chunk_len)
    y1, y2 = _torch_stack(leaves["x"], layers, tapes, c.n_heads, lsh, causal=c.causal)
    ((y1 * _t(cot["y1"])).sum() + (y2 * _t(cot["y2"])).sum()).backward()
    for name, got in (("y1", y1), ("y2", y2)):
        np.testing.assert_allclose(got.detach().numpy(), outputs[name], rtol=1e-10, atol=1e-12, err_msg=name)
    for k, leaf in leaves.items():
        scale = max(1.0, float(np.abs(grads[k]).max()))
        np.testing.assert_allclose(leaf.grad.numpy(), grads[k], rtol=1e-10, atol=1e-10 * scale, err_msg=k)
