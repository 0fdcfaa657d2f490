"""Depth-Adaptive Transformer: gradient checks, an independent torch implementation, paper properties.

The torch model below is written from the equations of the paper (spec
architecture.md §4), not from the oracle's code: decoder blocks, copying of
exited states, exit classifiers, the decoding loss and the three halting losses.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from gradients import check_mechanism
from gradients.check import random_cotangents
from reference.architecture.depth_adaptive import (
    DepthAdaptiveConfig,
    confidence_decode,
    depth_adaptive_backward,
    depth_adaptive_forward,
    greedy_decode,
)
from reference.architecture.depth_adaptive_halting import (
    exit_scores,
    first_exit,
    geometric_halting_grad,
    geometric_log_q,
    halting_backward,
    oracle_depths,
)
from reference.architecture.depth_adaptive_params import init_depth_adaptive
from reference.backend import namespace, to_numpy
from reference.registry import get, select

VARIANTS = [m.name for m in select(["architecture.depth_adaptive"])]


# --- (a) finite differences -------------------------------------------------------------------

def test_every_element_of_the_aligned_token_halting_model_numpy():
    report = check_mechanism(get("architecture.depth_adaptive"), backend="numpy", mode="full")
    assert report.passed, report.table()
    assert max(r.max_abs_error for r in report.results) < 1e-9


# array_api_strict runs the copy-heavy mixed variant: the others share its code path (blocks, copying,
# classifiers) and add only halting heads built from the same standard functions; strict is ~6x slower.
@pytest.mark.parametrize("name, backend", [(name, "numpy") for name in VARIANTS] + [
    ("architecture.depth_adaptive.mixed", "array_api_strict")])
def test_random_directions(name, backend):
    report = check_mechanism(get(name), backend=backend, mode="fast")
    assert report.passed, report.table()


# --- (b) an independent torch implementation ---------------------------------------------------

def _t(a):
    return torch.from_numpy(np.array(to_numpy(a)))


def _layer_norm(x, g, b, eps=1e-5):
    mu = x.mean(-1, keepdim=True)
    var = ((x - mu) ** 2).mean(-1, keepdim=True)
    return (x - mu) / torch.sqrt(var + eps) * g + b


def _mha(xq, xkv, p, prefix, heads, mask):
    b, t, d = xq.shape
    s = xkv.shape[1]
    dh = d // heads

    def proj(x, name, n):
        return (x @ p[f"{prefix}w_{name}"] + p[f"{prefix}b_{name}"]).reshape(b, n, heads, dh).transpose(1, 2)

    q, k, v = proj(xq, "q", t), proj(xkv, "k", s), proj(xkv, "v", s)
    scores = q @ k.transpose(-1, -2) / math.sqrt(dh)
    scores = scores.masked_fill(~mask, -1e9)
    out = torch.softmax(scores, -1) @ v
    return out.transpose(1, 2).reshape(b, t, d) @ p[f"{prefix}w_o"] + p[f"{prefix}b_o"]


def _block(x, s, p, heads, causal, src_mask):
    h1 = _layer_norm(x + _mha(x, x, p, "self_", heads, causal), p["ln1_gamma"], p["ln1_beta"])
    h2 = _layer_norm(h1 + _mha(h1, s, p, "cross_", heads, src_mask), p["ln2_gamma"], p["ln2_beta"])
    f = torch.nn.functional.gelu(h2 @ p["w_1"] + p["b_1"], approximate="tanh") @ p["w_2"] + p["b_2"]
    return _layer_norm(h2 + f, p["ln3_gamma"], p["ln3_beta"])


def torch_depth_adaptive(source, params, static, config):
    n_layers = config.n_layers
    prev, targets = static["prev_tokens"].long(), static["targets"].long()
    valid = static["target_valid"].to(source.dtype)
    b, t = prev.shape
    causal = torch.tril(torch.ones(t, t, dtype=torch.bool))
    src_mask = static["source_valid"][:, None, None, :]
    h = params["embed"][prev] + params["pos"][:t]
    exits = static["exits"].long()
    states = []
    for n in range(1, n_layers + 1):
        block = {k.split(".", 1)[1]: v for k, v in params.items() if k.startswith(f"block{n}.")}
        h = torch.where((exits >= n)[..., None], _block(h, source, block, config.n_heads, causal, src_mask), h)
        states.append(h)
    count = valid.sum().clamp(min=1.0)
    loss_dec = 0.0
    for n in range(1, n_layers + 1):
        suffix = "" if config.shared_classifier else str(n)
        log_p = torch.log_softmax(states[n - 1] @ params[f"exit{suffix}.w"] + params[f"exit{suffix}.b"], -1)
        ll = log_p.gather(-1, targets[..., None])[..., 0]
        loss_dec = loss_dec - (static["omega"][..., n - 1] * valid * ll).sum() / count
    out = {"loss_dec": loss_dec}
    if config.halting is None:
        out["loss"] = loss_dec
        return out
    target = static["halting_targets"].long() - 1
    if config.halting == "token":
        log_q = torch.log_softmax(states[0] @ params["halt.w"] + params["halt.b"], -1)
        loss_exit = -(valid * log_q.gather(-1, target[..., None])[..., 0]).sum() / count
    elif config.halting == "geometric":
        chi = [torch.sigmoid(states[n] @ params["halt.w"][:, 0] + params["halt.b"][0]) for n in range(n_layers - 1)]
        q = []
        for n in range(n_layers):  # q(n) = chi_n prod_{k<n} (1 - chi_k), q(N) = prod (1 - chi_k)
            stay = torch.ones_like(chi[0])
            for k in range(n):
                stay = stay * (1 - chi[k])
            q.append(stay * chi[n] if n < n_layers - 1 else stay)
        log_q = torch.log(torch.stack(q, -1))
        loss_exit = -(valid * log_q.gather(-1, target[..., None])[..., 0]).sum() / count
    else:
        keep = static["source_valid"].to(source.dtype)[..., None]
        mean = (source * keep).sum(1) / keep.sum(1)
        z = torch.tanh(mean @ params["halt.w1"] + params["halt.b1"]) @ params["halt.w2"] + params["halt.b2"]
        loss_exit = -torch.log_softmax(z, -1).gather(-1, target[:, None])[:, 0].sum() / b
    out["loss_exit"] = loss_exit
    out["loss"] = loss_dec + config.alpha * loss_exit
    return out


EDGES = [(name, label) for name in VARIANTS for label in get(name).edge_configs]


@pytest.mark.parametrize("name, label", EDGES)
def test_every_edge_configuration_random_directions(name, label):
    mechanism = get(name)
    report = check_mechanism(mechanism, backend="numpy", mode="fast", config=mechanism.edge_configs[label])
    assert report.passed, report.table()


@pytest.mark.parametrize("label", ["depth_1", "fully_padded_row"])
def test_edges_on_array_api_strict(label):
    mechanism = get("architecture.depth_adaptive.sequence")
    report = check_mechanism(mechanism, backend="array_api_strict", mode="fast", config=mechanism.edge_configs[label])
    assert report.passed, report.table()


@pytest.mark.parametrize("name, label", [(name, None) for name in VARIANTS] + EDGES)
def test_torch_autograd_agrees(name, label):
    mechanism = get(name)
    config = mechanism.make_config(mechanism.edge_configs.get(label)).model()
    xp = namespace("numpy")
    case = mechanism.example(0, xp.float64, xp, mechanism.edge_configs.get(label))
    outputs, cache = mechanism.forward(case)
    cot = random_cotangents(outputs, seed=3)
    grads = mechanism.backward(cache, cot)

    source = _t(case.inputs["source"]).requires_grad_()
    params = {k: _t(v).requires_grad_() for k, v in case.params.items()}
    static = {k: _t(v) for k, v in case.static.items()}
    torch_out = torch_depth_adaptive(source, params, static, config)
    total = sum(float(to_numpy(cot[k])) * torch_out[k] for k in cot)
    total.backward()
    for key in outputs:
        ours, theirs = float(to_numpy(outputs[key])), torch_out[key].item()
        assert abs(ours - theirs) < 1e-10, f"{name} {key}: oracle {ours!r}, torch {theirs!r}"
    for key, tensor in [("source", source), *params.items()]:
        diff = np.max(np.abs(to_numpy(grads[key]) - tensor.grad.numpy()))
        assert diff < 1e-10, f"{name} gradient of {key}: max |oracle - torch| = {diff:.3g}"


# --- (c) properties of the paper ---------------------------------------------------------------

def test_geometric_exit_distribution_sums_to_one_and_matches_the_product_form():
    xp = namespace("numpy")
    a = xp.asarray(np.random.default_rng(1).normal(size=(3, 4)) * 3)
    q = np.exp(to_numpy(geometric_log_q(a)))
    np.testing.assert_allclose(q.sum(-1), 1.0, rtol=0, atol=1e-14)
    chi = 1 / (1 + np.exp(-to_numpy(a)))
    expected_q2 = chi[:, 2] * (1 - chi[:, 0]) * (1 - chi[:, 1])
    np.testing.assert_allclose(q[:, 2], expected_q2, rtol=1e-13)


def test_geometric_halting_gradient_is_the_per_unit_binary_cross_entropy():
    # With a Dirac target at n*, dL/da_k = chi_k - [k == n*] for k <= n*, and 0 above (spec §4.8).
    xp = namespace("numpy")
    a = np.random.default_rng(2).normal(size=(5,))
    n_star = 3  # 1-based, of N = 6
    target = np.zeros(6)
    target[n_star - 1] = 1.0
    grad = to_numpy(geometric_halting_grad(xp.asarray(a), xp.asarray(target)))
    chi = 1 / (1 + np.exp(-a))
    bce = np.where(np.arange(1, 6) < n_star, chi, np.where(np.arange(1, 6) == n_star, chi - 1, 0.0))
    np.testing.assert_allclose(grad, bce, rtol=0, atol=1e-15)


def test_oracle_ties_go_to_the_smallest_depth_and_lambda_pushes_down():
    xp = namespace("numpy")
    scores = xp.asarray([[[0.0, 0.0, 0.0], [-1.0, -0.5, -0.5]]])
    valid = xp.asarray([[True, True]])
    assert to_numpy(oracle_depths(scores, valid, kind="token")).tolist() == [[1, 2]]
    assert to_numpy(oracle_depths(scores, valid, kind="token", lam=100.0)).tolist() == [[1, 1]]
    assert to_numpy(oracle_depths(scores, valid, kind="sequence")).tolist() == [2]


def test_rbf_smoothing_with_tiny_sigma_equals_the_unsmoothed_oracle():
    xp = namespace("numpy")
    scores = xp.asarray(np.random.default_rng(3).normal(size=(2, 5, 4)))
    valid = xp.asarray(np.array([[1, 1, 1, 1, 0], [1, 1, 1, 1, 1]], dtype=bool))
    plain = to_numpy(oracle_depths(scores, valid, kind="token"))
    tiny = to_numpy(oracle_depths(scores, valid, kind="token", sigma=1e-3))
    np.testing.assert_array_equal(plain, tiny)
    assert plain[0, 4] == 4, "a padded token gets exit N"


def _small_model(seed=0, halting=None, shared=True):
    xp = namespace("numpy")
    config = DepthAdaptiveConfig(n_layers=3, n_heads=2, halting=halting, shared_classifier=shared,
                                 activation="gelu_tanh")
    rng = np.random.default_rng(seed)
    params = init_depth_adaptive(rng, config, vocab=7, d_model=4, d_ff=5, max_len=6, xp=xp, dtype=xp.float64)
    source = xp.asarray(rng.normal(size=(2, 3, 4)))
    tokens = xp.asarray(rng.integers(0, 7, (2, 6)))
    static = {"prev_tokens": tokens[:, :-1], "targets": tokens[:, 1:],
              "target_valid": xp.ones((2, 5), dtype=xp.bool), "source_valid": xp.ones((2, 3), dtype=xp.bool)}
    return xp, config, params, source, static


def test_copying_makes_upper_blocks_irrelevant_to_an_exited_token():
    xp, config, params, source, static = _small_model()
    exits = xp.asarray([[1, 3, 2, 3, 1], [3, 3, 3, 3, 3]])
    omega = xp.astype(exits[..., None] == xp.arange(1, 4), xp.float64)
    _, cache = depth_adaptive_forward(source, params, exits=exits, omega=omega, config=config, **static)
    # Block 3's parameters cannot change a token that left at block 1 or 2, nor anything before it.
    bumped = dict(params)
    for k in params:
        if k.startswith("block3."):
            bumped[k] = params[k] + 0.3
    _, other = depth_adaptive_forward(source, bumped, exits=exits, omega=omega, config=config, **static)
    states, moved = to_numpy(cache.states), to_numpy(other.states)
    exited = to_numpy(exits)[0] < 3
    np.testing.assert_array_equal(states[0, exited, 2], moved[0, exited, 2])
    np.testing.assert_array_equal(states[0, exited, 2], states[0, exited, to_numpy(exits)[0, exited] - 1])
    assert not np.allclose(states[1, :, 2], moved[1, :, 2]), "full-depth tokens must see block 3"


def test_detach_stops_the_halting_gradient_at_the_states_only():
    xp, config, params, source, static = _small_model(halting="token")
    n = config.n_layers
    static.update(exits=xp.full((2, 5), n, dtype=xp.int64), omega=xp.ones((2, 5, n), dtype=xp.float64) / n,
                  halting_targets=xp.asarray([[1, 2, 3, 1, 2], [3, 3, 1, 2, 1]]))
    detached = DepthAdaptiveConfig(**{**config.__dict__, "detach": True})
    cot = {"loss": xp.asarray(1.0)}
    _, grads_live = depth_adaptive_backward(cot, depth_adaptive_forward(source, params, config=config, **static)[1])
    _, grads_cut = depth_adaptive_backward(cot, depth_adaptive_forward(source, params, config=detached, **static)[1])
    _, grads_dec = depth_adaptive_backward({"loss_dec": xp.asarray(1.0)},
                                           depth_adaptive_forward(source, params, config=config, **static)[1])
    for k in grads_live:
        if k.startswith("halt."):
            np.testing.assert_array_equal(to_numpy(grads_cut[k]), to_numpy(grads_live[k]))
        else:  # with detach, the main network sees only the decoding loss
            np.testing.assert_allclose(to_numpy(grads_cut[k]), to_numpy(grads_dec[k]), rtol=0, atol=1e-15)
    assert not np.allclose(to_numpy(grads_live["block1.w_1"]), to_numpy(grads_cut["block1.w_1"]))


def test_confidence_decoding_is_reproduced_by_the_training_forward():
    xp, config, params, source, static = _small_model(seed=4)
    thresholds = xp.asarray([0.3, 0.35])
    exits, prediction = confidence_decode(source, params, prev_tokens=static["prev_tokens"],
                                          source_valid=static["source_valid"], thresholds=thresholds, config=config)
    exits_np = to_numpy(exits)
    assert len(np.unique(exits_np)) > 1, f"the example should exit at several depths, got {exits_np}"
    omega = xp.ones((2, 5, 3), dtype=xp.float64) / 3
    _, cache = depth_adaptive_forward(source, params, exits=exits, omega=omega, config=config, **static)
    p = to_numpy(cache.p)  # (B, T, N, V)
    confident = p.max(-1)
    # The exit is the first block whose confidence passes its threshold (strictly), as first_exit says.
    np.testing.assert_array_equal(to_numpy(first_exit(xp.asarray(confident), thresholds)), exits_np)
    chosen = np.take_along_axis(p.argmax(-1), exits_np[..., None] - 1, axis=-1)[..., 0]
    np.testing.assert_array_equal(chosen, to_numpy(prediction))


def test_exit_scores_correctness_is_zero_one():
    xp, config, params, source, static = _small_model()
    n = config.n_layers
    _, cache = depth_adaptive_forward(source, params, exits=xp.full((2, 5), n, dtype=xp.int64),
                                      omega=xp.ones((2, 5, n), dtype=xp.float64) / n, config=config, **static)
    c = to_numpy(exit_scores(cache.p, static["targets"], kind="correctness"))
    assert set(np.unique(c)) <= {0.0, 1.0}


# --- (d) bad input -----------------------------------------------------------------------------

def test_bad_input_names_the_argument():
    xp, config, params, source, static = _small_model()
    omega = xp.ones((2, 5, 3), dtype=xp.float64) / 3
    with pytest.raises(ValueError, match="exits"):
        depth_adaptive_forward(source, params, exits=xp.full((2, 5), 4, dtype=xp.int64), omega=omega,
                               config=config, **static)
    with pytest.raises(ValueError, match="omega"):
        depth_adaptive_forward(source, params, exits=xp.full((2, 5), 3, dtype=xp.int64), omega=omega[..., :2],
                               config=config, **static)
    with pytest.raises(TypeError, match="source"):
        depth_adaptive_forward(xp.astype(source, xp.int64), params, exits=xp.full((2, 5), 3, dtype=xp.int64),
                               omega=omega, config=config, **static)
    with pytest.raises(ValueError, match="halting"):
        DepthAdaptiveConfig(n_layers=3, n_heads=2, halting="poisson")
    with pytest.raises(ValueError, match="halting_targets"):
        depth_adaptive_forward(source, params, exits=xp.full((2, 5), 3, dtype=xp.int64), omega=omega,
                               config=DepthAdaptiveConfig(n_layers=3, n_heads=2, halting="token"), **static)


def torch_greedy(source, params, source_valid, thresholds, config, bos, steps):
    """Independent greedy decoder: one token per step, each running blocks until its confidence passes."""
    b = source.shape[0]
    src_mask = source_valid[:, None, None, :]
    layers = []  # per position: its inputs to every block (copied states for exited tokens)
    tokens, exits = [], []
    prev = torch.full((b,), bos, dtype=torch.long)
    for t in range(steps):
        h = params["embed"][prev] + params["pos"][t]  # (B, D)
        inputs, running = [], torch.ones(b, dtype=torch.bool)
        exit_t, token_t = torch.full((b,), config.n_layers), torch.zeros(b, dtype=torch.long)
        for n in range(1, config.n_layers + 1):
            inputs.append(h)
            history = torch.stack([layer[n - 1] for layer in layers] + [h], dim=1)  # (B, t + 1, D)
            block = {k.split(".", 1)[1]: v for k, v in params.items() if k.startswith(f"block{n}.")}
            causal = torch.tril(torch.ones(t + 1, t + 1, dtype=torch.bool))
            full = _block(history, source, block, config.n_heads, causal, src_mask)[:, -1]
            h = torch.where(running[:, None], full, h)
            suffix = "" if config.shared_classifier else str(n)
            p = torch.softmax(h @ params[f"exit{suffix}.w"] + params[f"exit{suffix}.b"], -1)
            leave = running if n == config.n_layers else running & (p.max(-1).values > thresholds[n - 1])
            exit_t = torch.where(leave & (n < config.n_layers), torch.full_like(exit_t, n), exit_t)
            token_t = torch.where(leave, p.argmax(-1), token_t)
            running = running & ~leave
        layers.append(inputs)
        tokens.append(token_t)
        exits.append(exit_t)
        prev = token_t
    return torch.stack(tokens, 1), torch.stack(exits, 1)


@pytest.mark.parametrize("shared", [True, False])
def test_greedy_decoding_agrees_with_an_independent_torch_decoder(shared):
    """Issue 16.9: the paper's use of the exits, autoregressive and greedy, with confidence thresholds."""
    xp, config, params, source, static = _small_model(seed=4, shared=shared)
    thresholds = xp.asarray([0.3, 0.35])
    tokens, exits = greedy_decode(source, params, bos=0, steps=5, source_valid=static["source_valid"],
                                  thresholds=thresholds, config=config)
    with torch.no_grad():
        theirs, their_exits = torch_greedy(_t(source), {k: _t(v) for k, v in params.items()},
                                           _t(static["source_valid"]), _t(thresholds), config, 0, 5)
    np.testing.assert_array_equal(to_numpy(tokens), theirs.numpy())
    np.testing.assert_array_equal(to_numpy(exits), their_exits.numpy())
    assert len(np.unique(to_numpy(exits))) > 1, "the example should exit at several depths"
    # Feeding the generated tokens back, the teacher-forced scorer reproduces the same exits.
    prefix = xp.concat([xp.zeros((2, 1), dtype=xp.int64), tokens[:, :-1]], axis=1)
    forced, _ = confidence_decode(source, params, prev_tokens=prefix, source_valid=static["source_valid"],
                                  thresholds=thresholds, config=config)
    np.testing.assert_array_equal(to_numpy(forced), to_numpy(exits))


def test_halting_backward_is_pure_and_returns_a_typed_record():
    xp, config, params, source, static = _small_model(halting="geometric")
    n = config.n_layers
    static.update(exits=xp.full((2, 5), n, dtype=xp.int64), omega=xp.ones((2, 5, n), dtype=xp.float64) / n,
                  halting_targets=xp.asarray([[1, 2, 3, 1, 2], [3, 3, 1, 2, 1]]))
    cfg = DepthAdaptiveConfig(n_layers=3, n_heads=2, halting="geometric", activation="gelu_tanh")
    _, cache = depth_adaptive_forward(source, params, config=cfg, **static)
    before = dict(cache.halting.params)
    first = halting_backward(xp.asarray(1.0), cache.halting)
    second = halting_backward(xp.asarray(1.0), cache.halting)
    assert set(first.params) == {"halt.w", "halt.b"} and first.dsource is None
    assert tuple(first.dstates.shape) == tuple(cache.states.shape)
    for k in first.params:
        np.testing.assert_array_equal(to_numpy(first.params[k]), to_numpy(second.params[k]))
    assert cache.halting.params.keys() == before.keys()
    assert halting_backward(xp.asarray(1.0), cache.halting, detach=True).dstates is None


def _call(xp, config, params, source_, static, change):
    n = config.n_layers
    args = {"exits": xp.full((2, 5), n, dtype=xp.int64), "omega": xp.ones((2, 5, n), dtype=xp.float64) / n,
            **static, "source": source_, "config": config, **change}
    depth_adaptive_forward(args.pop("source"), params, **args)


def _nan(x):
    y = np.array(to_numpy(x), copy=True)
    y.flat[0] = np.nan
    return namespace("numpy").asarray(y)


TOKEN = DepthAdaptiveConfig(n_layers=3, n_heads=2, halting="token", activation="gelu_tanh")
SEQ = DepthAdaptiveConfig(n_layers=3, n_heads=2, halting="sequence", activation="gelu_tanh")
TARGETS = np.array([[1, 2, 3, 1, 2], [3, 3, 1, 2, 1]])
BAD = [
    ("omega_nan", {}, lambda xp, s: {"omega": _nan(xp.ones((2, 5, 3)) / 3)}, ValueError, "omega contains NaN"),
    ("omega_negative", {}, lambda xp, s: {"omega": xp.asarray(np.tile([1.5, -0.5, 0.0], (2, 5, 1)))}, ValueError,
     "omega rows must be non-negative"),
    ("omega_not_summing_to_1", {}, lambda xp, s: {"omega": xp.ones((2, 5, 3))}, ValueError, "sum to 1"),
    ("omega_int", {}, lambda xp, s: {"omega": xp.ones((2, 5, 3), dtype=xp.int64)}, TypeError,
     "omega must be a real floating"),
    ("source_nan", {}, lambda xp, s: {"source": _nan(s)}, ValueError, "source contains NaN"),
    ("source_list", {}, lambda xp, s: {"source": to_numpy(s).tolist()}, TypeError, "source must be an array"),
    ("halting_targets_float", {"config": TOKEN}, lambda xp, s: {"halting_targets": xp.asarray(TARGETS * 1.0)},
     TypeError, "halting_targets must be an integer"),
    ("halting_targets_negative", {"config": TOKEN}, lambda xp, s: {"halting_targets": xp.asarray(-TARGETS)},
     ValueError, r"halting_targets - 1 must lie in"),
    ("halting_targets_too_large", {"config": TOKEN}, lambda xp, s: {"halting_targets": xp.asarray(TARGETS + 3)},
     ValueError, r"halting_targets - 1 must lie in"),
    ("halting_targets_rank", {"config": SEQ}, lambda xp, s: {"halting_targets": xp.asarray(TARGETS)}, ValueError,
     r"halting_targets must have shape \(batch\)"),
    ("prev_tokens_empty", {}, lambda xp, s: {"prev_tokens": xp.zeros((2, 0), dtype=xp.int64)}, ValueError,
     "prev_tokens must have a non-empty"),
    ("source_valid_int", {}, lambda xp, s: {"source_valid": xp.ones((2, 3), dtype=xp.int64)}, TypeError,
     "source_valid must be a boolean"),
]


@pytest.mark.parametrize("label, fixed, change, error, message", BAD, ids=[b[0] for b in BAD])
def test_bad_input_parametrised(label, fixed, change, error, message):
    xp, config, params, source, static = _small_model()
    with pytest.raises(error, match=message):
        _call(xp, fixed.get("config", config), params, source, static, change(xp, source))


@pytest.mark.parametrize("kwargs, message", [({"n_layers": 0, "n_heads": 2}, "n_layers"),
                                             ({"n_layers": 3, "n_heads": 0}, "n_heads"),
                                             ({"n_layers": 1, "n_heads": 2, "halting": "geometric"}, "n_layers >= 2"),
                                             ({"n_layers": 3, "n_heads": 2, "alpha": float("nan")}, "alpha")])
def test_bad_configuration_names_the_field(kwargs, message):
    with pytest.raises(ValueError, match=message):
        DepthAdaptiveConfig(**kwargs)
