"""Lite Transformer LSRA: gradient checks, an independent torch implementation, paper properties, bad input.

The torch layer below is written from the equations (spec attention.md §1.4), not from the oracle's
code: the convolution is torch's grouped ``conv1d`` (LightConv) or an ``unfold`` of the padded
sequence (DynamicConv), GLU is ``F.glu``, LayerNorm is ``F.layer_norm``.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as Fn

from gradients import check_mechanism
from gradients.compare import compare_torch
from reference.attention.cases.lsra import VARIANTS as CASE_VARIANTS
from reference.attention.cases.lsra import centre_relu_bias
from reference.attention.lsra import LSRAConfig, init_lsra, lsra_backward, lsra_forward
from reference.attention.lsra_conv import (
    dynamic_conv_forward,
    expand_heads,
    lightweight_conv_backward,
    lightweight_conv_forward,
)
from reference.backend import namespace, to_numpy
from reference.registry import get

VARIANTS = list(CASE_VARIANTS)
#: Layer hyperparameters at D = 10 (Da = 4, Ha = 2, Dc = 6, Hc = 3) for the property tests below.
CONFIGS = {
    "attention.lsra": LSRAConfig(4, 2, 3, 3, conv="lightweight", glu=True),
    "attention.lsra.dynamic": LSRAConfig(4, 2, 3, 3, conv="dynamic", glu=True),
}


def _np():
    return namespace("numpy")


# --- (a) finite differences -------------------------------------------------------------------

FULL_NUMPY = ["attention.lsra", "attention.lsra.dynamic", "attention.lsra.causal"]


@pytest.mark.parametrize("name", FULL_NUMPY)
def test_every_element_numpy(name):
    report = check_mechanism(get(name), backend="numpy", mode="full")
    assert report.passed, report.table()


# The option variants share the code paths above and pass full mode too (python -m gradients check);
# the suite checks them along random directions to keep its runtime bounded.
@pytest.mark.parametrize("name", [n for n in VARIANTS if n not in FULL_NUMPY])
def test_random_directions_numpy(name):
    report = check_mechanism(get(name), backend="numpy", mode="fast")
    assert report.passed, report.table()


def test_every_element_array_api_strict():
    """24 evenly spaced elements of each tensor (every element: ~65 s in CI; the CLI checks them all)."""
    report = check_mechanism(get("attention.lsra"), backend="array_api_strict", mode="full", max_elements=24)
    assert report.passed, report.table()


# Every variant passes full mode on array_api_strict too (python -m gradients check attention.lsra
# --backend array_api_strict, ~18 s each); the suite checks the others in random directions.
@pytest.mark.parametrize("name", [n for n in VARIANTS if n != "attention.lsra"])
def test_random_directions_array_api_strict(name):
    report = check_mechanism(get(name), backend="array_api_strict", mode="fast")
    assert report.passed, report.table()


# --- (b) an independent torch implementation ---------------------------------------------------

def torch_lsra(x, p, st, cfg: LSRAConfig):
    b, t, d = x.shape
    da, dc, ha, hc, k = cfg.d_attn, d - cfg.d_attn, cfg.n_attn_heads, cfg.n_conv_heads, cfg.kernel_size
    masks = st.get("dropout")
    drop = masks if masks is not None else {k: 1.0 for k in ("attn_probs", "weight", "branch", "ffn_inner", "ffn")}
    valid = st.get("valid")
    xa, xc = x[..., :da], x[..., da:]
    # Global branch: multi-head attention over the first da channels.
    dh = da // ha
    q = (xa @ p["w_q"] + p["b_q"]).view(b, t, ha, dh).transpose(1, 2)
    kk = (xa @ p["w_k"] + p["b_k"]).view(b, t, ha, dh).transpose(1, 2)
    v = (xa @ p["w_v"] + p["b_v"]).view(b, t, ha, dh).transpose(1, 2)
    allowed = torch.ones(b, 1, t, t, dtype=torch.bool)
    if valid is not None:
        allowed = allowed & valid[:, None, None, :]
    if cfg.causal:
        allowed = allowed & torch.tril(torch.ones(t, t, dtype=torch.bool))
    scores = (q @ kk.transpose(-1, -2)) / math.sqrt(dh)
    probs = torch.softmax(scores.masked_fill(~allowed, -1e9), -1) * drop["attn_probs"]
    a = (probs @ v).transpose(1, 2).reshape(b, t, da) @ p["w_o"] + p["b_o"]
    # Local branch.
    keep = None if valid is None else valid[..., None].to(x.dtype)
    if keep is not None and cfg.pad_mask_site == "branch_input":
        xc = xc * keep
    u = xc @ p["w_in"] + p["b_in"]
    z = Fn.glu(u, dim=-1) if cfg.glu else u
    if keep is not None and cfg.pad_mask_site == "pre_conv":
        z = z * keep
    left = k - 1 if cfg.causal else (k - 1) // 2  # even K: the extra tap on the right (fairseq padding_l)
    r = dc // hc
    head = torch.arange(dc) // r if cfg.head_layout == "contiguous" else torch.arange(dc) % hc
    if cfg.conv == "lightweight":
        w = torch.softmax(p["theta"], -1) * drop["weight"]  # (Hc, K)
        zt = Fn.pad(z.transpose(1, 2), (left, k - 1 - left))  # (B, Dc, T + K - 1)
        c = Fn.conv1d(zt, w[head][:, None, :], groups=dc).transpose(1, 2)
    else:
        w = torch.softmax((z @ p["w_gen"]).view(b, t, hc, k), -1) * drop["weight"]  # (B, T, Hc, K)
        windows = Fn.pad(z, (0, 0, left, k - 1 - left)).unfold(1, k, 1)  # (B, T, Dc, K)
        c = (windows * w[:, :, head, :]).sum(-1)
    yc = c @ p["w_out"] + p["b_out"]
    y = torch.cat([a, yc], -1) * drop["branch"]
    h1 = Fn.layer_norm(x + y, (d,), p["ln1_gamma"], p["ln1_beta"], eps=1e-5)
    f = (torch.relu(h1 @ p["w_1"] + p["b_1"]) * drop["ffn_inner"]) @ p["w_2"] + p["b_2"]
    return Fn.layer_norm(h1 + f * drop["ffn"], (d,), p["ln2_gamma"], p["ln2_beta"], eps=1e-5)


@pytest.mark.parametrize("name", VARIANTS)
def test_torch_autograd_agrees(name):
    config = get(name).make_config().layer()
    report = compare_torch(name, lambda i, p, s: {"y": torch_lsra(i["x"], p, s, config)}, rtol=1e-10)
    assert report.passed, report.table()
    assert max(r.max_rel_error for r in report.results if r.tensor.startswith("outputs")) < 1e-10


@pytest.mark.parametrize("name, label", [(n, label) for n in VARIANTS for label in get(n).edge_configs])
def test_torch_autograd_agrees_at_every_edge_configuration(name, label):
    mechanism = get(name)
    config = mechanism.make_config(mechanism.edge_configs[label])
    report = compare_torch(mechanism, lambda i, p, s: {"y": torch_lsra(i["x"], p, s, config.layer())},
                           config=config, rtol=1e-10)
    assert report.passed, report.table()


def test_relu_margin_holds_at_a_large_configuration():
    """The builder re-centres the FFN bias so that no ReLU input lies within the margin of its kink."""
    from reference.attention.cases.lsra import RELU_MARGIN
    mechanism = get("attention.lsra")
    case = mechanism.example(0, config={"batch": 4, "seq_len": 40, "d_model": 48, "d_attn": 24, "n_attn_heads": 4,
                                        "n_conv_heads": 4})
    _, cache = mechanism.forward(case)
    pre = to_numpy(cache.ffn.inner.x) @ to_numpy(case.params["w_1"]) + to_numpy(case.params["b_1"])
    assert np.abs(pre).min() >= RELU_MARGIN * 0.999
    assert 0.2 < (pre > 0).mean() < 0.9  # the kink is still used: not every unit is always on


def test_centre_relu_bias_picks_a_gap_near_the_median():
    pre = np.array([[-1.0], [-0.9], [0.0], [0.5], [0.52]])
    bias = centre_relu_bias(pre, 0.05)
    shifted = pre[:, 0] + bias[0]
    assert np.abs(shifted).min() >= 0.05 and (shifted > 0).sum() in (2, 3)


# --- (c) properties ----------------------------------------------------------------------------

def _rng_arrays(xp, seed, *shapes):
    rng = np.random.default_rng(seed)
    return [xp.asarray(rng.standard_normal(s)) for s in shapes]


def test_kernel_of_width_one_is_the_identity():
    xp = _np()
    z, theta = _rng_arrays(xp, 1, (2, 5, 6), (3, 1))
    out, _ = lightweight_conv_forward(z, theta, padding="centred")
    np.testing.assert_allclose(to_numpy(out), to_numpy(z), rtol=0, atol=1e-15)


def test_lightconv_equals_the_band_matrix_form():
    """C[:, c] = B_h(c) Z[:, c] with B_h[t, s] = W[h, s - t + P] (spec §1.4 step 2d, fairseq unfold path)."""
    xp = _np()
    z, theta = _rng_arrays(xp, 2, (2, 5, 6), (3, 4))
    for padding, left in (("centred", 1), ("causal", 3)):
        out, _ = lightweight_conv_forward(z, theta, padding=padding)
        w = np.exp(to_numpy(theta)) / np.exp(to_numpy(theta)).sum(-1, keepdims=True)
        band = np.zeros((3, 5, 5))
        for t in range(5):
            for s in range(5):
                if 0 <= s - t + left < 4:
                    band[:, t, s] = w[:, s - t + left]
        want = np.stack([band[c // 2] @ to_numpy(z)[:, :, c].T for c in range(6)], -1).transpose(1, 0, 2)
        np.testing.assert_allclose(to_numpy(out), want, rtol=1e-13, atol=1e-14, err_msg=padding)


@pytest.mark.parametrize("conv", ["lightweight", "dynamic"])
def test_causal_convolution_never_reads_the_future(conv):
    xp = _np()
    rng = np.random.default_rng(3)
    z = rng.standard_normal((2, 5, 6))
    z2 = z.copy()
    z2[:, 3:] += rng.standard_normal((2, 2, 6))
    theta = xp.asarray(rng.standard_normal((3, 7) if conv == "lightweight" else (6, 21)))
    outs = []
    for zz in (z, z2):
        if conv == "lightweight":
            outs.append(to_numpy(lightweight_conv_forward(xp.asarray(zz), theta, padding="causal")[0]))
        else:
            outs.append(to_numpy(dynamic_conv_forward(xp.asarray(zz), theta, n_heads=3, kernel_size=7,
                                                      padding="causal")[0]))
    np.testing.assert_array_equal(outs[0][:, :3], outs[1][:, :3])
    assert np.abs(outs[0][:, 3:] - outs[1][:, 3:]).max() > 1e-3


def test_causal_layer_never_reads_the_future():
    mech = get("attention.lsra.causal_dynamic")
    xp = _np()
    case = mech.example(0, xp.float64, xp)
    x = to_numpy(case.inputs["x"]).copy()
    y1 = to_numpy(mech.run(case)["y"])
    x[:, 4] += 1.0
    y2 = to_numpy(mech.run(case.replace({"x": xp.asarray(x)}))["y"])
    np.testing.assert_array_equal(y1[:, :4], y2[:, :4])


def test_softmax_kernel_gradient_sums_to_zero_over_taps():
    xp = _np()
    z, theta, dout = _rng_arrays(xp, 4, (2, 5, 6), (3, 4), (2, 5, 6))
    _, cache = lightweight_conv_forward(z, theta, padding="centred")
    _, dtheta = lightweight_conv_backward(dout, cache)
    assert np.abs(to_numpy(dtheta)).min() > 1e-6
    np.testing.assert_allclose(to_numpy(dtheta).sum(-1), 0.0, atol=1e-14)


def test_dynamic_conv_with_a_zero_generator_is_the_uniform_lightconv():
    xp = _np()
    (z,) = _rng_arrays(xp, 5, (2, 5, 6))
    dyn, _ = dynamic_conv_forward(z, xp.zeros((6, 12)), n_heads=3, kernel_size=4, padding="centred")
    light, _ = lightweight_conv_forward(z, xp.zeros((3, 4)), padding="centred")
    np.testing.assert_allclose(to_numpy(dyn), to_numpy(light), rtol=0, atol=1e-15)


def test_channel_to_head_layouts():
    """Contiguous (paper, fairseq TBC/CUDA): channel c uses head c // R; interleaved (LightweightConv1d): c mod H."""
    xp = _np()
    w = xp.asarray(np.arange(3.0)[:, None] * np.ones((3, 2)))  # head h's kernel is all h
    assert to_numpy(expand_heads(w, 6, "contiguous"))[:, 0].tolist() == [0, 0, 1, 1, 2, 2]
    assert to_numpy(expand_heads(w, 6, "interleaved"))[:, 0].tolist() == [0, 1, 2, 0, 1, 2]


def _padded_run(site: str, bump: bool):
    xp = _np()
    cfg = LSRAConfig(4, 2, 3, 3, conv="dynamic", glu=True, pad_mask_site=site)
    rng = np.random.default_rng(6)
    params = init_lsra(rng, 10, cfg, xp=xp, dtype=xp.float64)
    x = rng.standard_normal((2, 5, 10))
    if bump:
        x[1, 3:] += 5.0
    valid = xp.asarray([[True] * 5, [True] * 3 + [False] * 2])
    return to_numpy(lsra_forward(xp.asarray(x), params, cfg, valid=valid)[0])


def test_pre_conv_zeroing_keeps_padding_out_of_valid_positions():
    np.testing.assert_allclose(_padded_run("pre_conv", False)[1, :3], _padded_run("pre_conv", True)[1, :3],
                               rtol=0, atol=1e-14)


def test_branch_input_zeroing_of_the_code_leaks_padding_through_the_bias():
    """Spec D1: zeroing before the input linear leaves b_in (and its GLU) at padded rows, read by the conv.
    The padded rows' content cannot leak (they are zeroed), but the two sites give different valid outputs."""
    np.testing.assert_allclose(_padded_run("branch_input", False)[1, :3], _padded_run("branch_input", True)[1, :3],
                               rtol=0, atol=1e-14)
    diff = np.abs(_padded_run("branch_input", False)[1, :3] - _padded_run("pre_conv", False)[1, :3]).max()
    assert diff > 1e-3, f"branch_input and pre_conv agree at valid positions (max diff {diff:.3g})"


def test_parameter_count_of_the_wmt_embed200_encoder():
    """Spec §1.8: Lite Transformer WMT d=200 encoder (dynamic + GLU, 6 layers, K = 3, 7, 15, 31, 31, 31) = 958,600."""
    xp = _np()
    rng = np.random.default_rng(0)
    total = 0
    for k in (3, 7, 15, 31, 31, 31):
        cfg = LSRAConfig(100, 4, 4, k, conv="dynamic", glu=True)
        total += sum(int(np.prod(v.shape)) for v in init_lsra(rng, 200, cfg, xp=xp, dtype=xp.float64).values())
    assert total == 958_600, total


# --- (d) bad input -----------------------------------------------------------------------------

def _small():
    xp = _np()
    cfg = CONFIGS["attention.lsra"]
    params = init_lsra(np.random.default_rng(0), 10, cfg, xp=xp, dtype=xp.float64)
    return xp, cfg, params, xp.asarray(np.zeros((2, 5, 10)))


def test_bad_input_names_the_argument():
    xp, cfg, params, x = _small()
    with pytest.raises(ValueError, match="x must have shape"):
        lsra_forward(x[0], params, cfg)
    with pytest.raises(ValueError, match="valid must have shape"):
        lsra_forward(x, params, cfg, valid=xp.ones((2, 4), dtype=xp.bool))
    with pytest.raises(TypeError, match="valid must be a boolean"):
        lsra_forward(x, params, cfg, valid=xp.ones((2, 5)))
    with pytest.raises(ValueError, match="d_attn"):
        lsra_forward(x, params, cfg._replace(d_attn=10))
    with pytest.raises(ValueError, match="conv must be one of"):
        lsra_forward(x, params, cfg._replace(conv="depthwise"))
    with pytest.raises(ValueError, match=r"params\[.theta.\] must have shape"):
        lsra_forward(x, params, cfg._replace(kernel_size=5))
    with pytest.raises(ValueError, match="params is missing"):
        lsra_forward(x, {k: v for k, v in params.items() if k != "w_out"}, cfg)
    with pytest.raises(ValueError, match="divisible"):
        lightweight_conv_forward(xp.zeros((2, 5, 6)), xp.zeros((4, 3)), padding="causal")
    with pytest.raises(ValueError, match="weight_dropout must have shape"):
        lightweight_conv_forward(xp.zeros((2, 5, 6)), xp.zeros((3, 3)), padding="causal",
                                 weight_dropout=xp.ones((3, 2)))
    with pytest.raises(ValueError, match="w_gen must have shape"):
        dynamic_conv_forward(xp.zeros((2, 5, 6)), xp.zeros((6, 8)), n_heads=3, kernel_size=3, padding="centred")
    with pytest.raises(TypeError, match="x must be a real floating"):
        lsra_forward(xp.zeros((2, 5, 10), dtype=xp.int64), params, cfg)


def test_backward_keeps_namespace_dtype_and_shape(xp):
    cfg = CONFIGS["attention.lsra.dynamic"]
    rng = np.random.default_rng(1)
    params = init_lsra(rng, 10, cfg, xp=xp, dtype=xp.float64)
    x = xp.asarray(rng.standard_normal((2, 5, 10)))
    y, cache = lsra_forward(x, params, cfg)
    dx, grads = lsra_backward(xp.ones_like(y), cache)
    from conftest import assert_array_like
    assert_array_like(dx, xp=xp, dtype=xp.float64, shape=(2, 5, 10), name="dx")
    for key, value in params.items():
        assert_array_like(grads[key], xp=xp, dtype=xp.float64, shape=tuple(value.shape), name=key)
