"""Property-based tests of the building blocks over random shapes and seeds (hypothesis).

Each property is a statement of the mathematics, not of the code: softmax rows
are distributions; layer norm's output before the affine map has mean 0 and
variance var / (var + eps); a backward is the adjoint of the forward's
derivative (the dot-product VJP identity <dy, J dx> = <J^T dy, dx>); an
embedding's gradient accumulates over repeated ids; causal attention and a
causal convolution never look ahead; padded keys and ignored targets neither
leak into outputs nor receive gradient.

Sizes are small and pairwise free (batch 1-3, seq 1-6, width 1-7); examples are
capped (max_examples 25, no deadline) to keep the file fast.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import CPU_BACKENDS
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from reference.backend import namespace, to_numpy
from reference.nn.attention import causal_mask, init_attention, mha_backward, mha_forward, padding_mask
from reference.nn.conv1d import depthwise_conv1d_backward, depthwise_conv1d_forward
from reference.nn.embedding import embedding_backward, embedding_forward
from reference.nn.layer_norm import layer_norm_backward, layer_norm_forward
from reference.nn.linear import linear_backward, linear_forward
from reference.nn.losses import IGNORE_INDEX, cross_entropy_backward, cross_entropy_forward
from reference.nn.softmax import log_softmax_forward, softmax_backward, softmax_forward

SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
batch = st.integers(1, 3)
seq = st.integers(1, 6)
width = st.integers(1, 7)
seeds = st.integers(0, 2**32 - 1)


def _arr(xp, host):
    return xp.asarray(np.asarray(host, dtype=np.float64), dtype=xp.float64)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@SETTINGS
@given(b=batch, t=seq, n=width, seed=seeds, scale=st.sampled_from([0.1, 1.0, 30.0, 1e3]))
def test_softmax_rows_are_distributions(backend, b, t, n, seed, scale) -> None:
    xp = namespace(backend)
    z = np.random.default_rng(seed).standard_normal((b, t, n)) * scale
    p, _ = softmax_forward(_arr(xp, z))
    p = to_numpy(p)
    assert np.all(p >= 0.0) and np.all(p <= 1.0), f"probabilities outside [0, 1]: min {p.min()}, max {p.max()}"
    rows = p.sum(axis=-1)
    assert np.max(np.abs(rows - 1.0)) <= 1e-14, f"a row sums to {rows.flat[np.argmax(np.abs(rows - 1))]!r}"
    log_p, _ = log_softmax_forward(_arr(xp, z))
    # log p = z - logsumexp(z) cancels: its absolute rounding error grows like eps * |z|.
    spread = float(np.max(np.abs(z))) if z.size else 0.0
    assert np.max(np.abs(np.exp(to_numpy(log_p)) - p)) <= 1e-15 * (1.0 + spread)
    # Softmax is invariant to a shift of each row, so its backward sums to zero along the row.
    dz = softmax_backward(_arr(xp, np.random.default_rng(seed + 1).standard_normal((b, t, n))),
                          softmax_forward(_arr(xp, z))[1])
    assert np.max(np.abs(to_numpy(dz).sum(axis=-1))) <= 1e-13


@SETTINGS
@given(b=batch, t=seq, n=st.integers(2, 7), seed=seeds, eps=st.sampled_from([1e-12, 1e-5]),
       shift=st.sampled_from([0.0, 5.0, -300.0]))
def test_layer_norm_normalises(b, t, n, seed, eps, shift) -> None:
    xp = namespace("numpy")
    x = np.random.default_rng(seed).standard_normal((b, t, n)) + shift
    ones, zeros = _arr(xp, np.ones(n)), _arr(xp, np.zeros(n))
    y = to_numpy(layer_norm_forward(_arr(xp, x), ones, zeros, eps=eps)[0])
    var = x.var(axis=-1)
    # Centring cancels: rounding error of (x - mu) / std grows like eps * |x| / std (the row's conditioning).
    cond = 1.0 + np.max(np.abs(x), axis=-1) / np.sqrt(var + eps)
    mean_err = np.abs(y.mean(axis=-1))
    assert np.all(mean_err <= 1e-14 * cond), f"mean {y.mean(axis=-1)}, conditioning {cond}"
    expected_var = var / (var + eps)
    var_err = np.abs(y.var(axis=-1) - expected_var)
    assert np.all(var_err <= 1e-14 * cond), f"variance {y.var(axis=-1)}, expected var/(var+eps) = {expected_var}"


def _dot(a, b) -> float:
    return float(np.sum(to_numpy(a) * to_numpy(b)))


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@SETTINGS
@given(b=batch, t=seq, d_in=width, d_out=width, seed=seeds)
def test_linear_backward_is_the_adjoint(backend, b, t, d_in, d_out, seed) -> None:
    """<dy, J (dx, dw, db)> = <dx, gx> + <dw, gw> + <db, gb>, J (dx, dw, db) = dx w + x dw + db (linear map)."""
    xp = namespace(backend)
    rng = np.random.default_rng(seed)
    x, w, bias = (_arr(xp, rng.standard_normal(s)) for s in ((b, t, d_in), (d_in, d_out), (d_out,)))
    dx, dw, db = (_arr(xp, rng.standard_normal(s)) for s in ((b, t, d_in), (d_in, d_out), (d_out,)))
    dy = _arr(xp, rng.standard_normal((b, t, d_out)))
    _, cache = linear_forward(x, w, bias)
    gx, grads = linear_backward(dy, cache)
    jvp = xp.matmul(dx, w) + xp.matmul(x, dw) + db
    lhs = _dot(dy, jvp)
    rhs = _dot(dx, gx) + _dot(dw, grads["w"]) + _dot(db, grads["b"])
    assert abs(lhs - rhs) <= 1e-12 * max(1.0, abs(lhs)), f"<dy, J v> = {lhs!r}, <J^T dy, v> = {rhs!r}"


@SETTINGS
@given(b=batch, t=seq, n=st.integers(1, 7), seed=seeds, eps=st.sampled_from([1e-12, 1e-5]))
def test_layer_norm_backward_is_the_adjoint(b, t, n, seed, eps) -> None:
    """The VJP identity against the forward-mode derivative, derived independently of the backward:

    c = x - mean x, s = (mean c^2 + eps)^(-1/2), xhat = c s  gives
    d xhat = s (dc - xhat mean(xhat dc)),   dy = dgamma xhat + gamma d xhat + dbeta.
    (A finite-difference JVP is not used: layer norm of two nearly equal values is too steep.)
    """
    xp = namespace("numpy")
    rng = np.random.default_rng(seed)
    x, gamma, beta = rng.standard_normal((b, t, n)), 1 + 0.1 * rng.standard_normal(n), rng.standard_normal(n)
    vx, vg, vb = rng.standard_normal((b, t, n)), rng.standard_normal(n), rng.standard_normal(n)
    dy = rng.standard_normal((b, t, n))
    c = x - x.mean(-1, keepdims=True)
    inv = 1.0 / np.sqrt((c * c).mean(-1, keepdims=True) + eps)
    xhat = c * inv
    dc = vx - vx.mean(-1, keepdims=True)
    dxhat = inv * (dc - xhat * (xhat * dc).mean(-1, keepdims=True))
    jvp = vg * xhat + gamma * dxhat + vb
    _, cache = layer_norm_forward(_arr(xp, x), _arr(xp, gamma), _arr(xp, beta), eps=eps)
    gx, grads = layer_norm_backward(_arr(xp, dy), cache)
    lhs = float(np.sum(dy * jvp))
    rhs = _dot(vx, gx) + _dot(vg, grads["gamma"]) + _dot(vb, grads["beta"])
    magnitude = float(np.sum(np.abs(dy * jvp)) + np.sum(np.abs(vx * to_numpy(gx))))  # the sums' own size
    assert abs(lhs - rhs) <= 1e-13 * max(1.0, magnitude), f"<dy, J v> = {lhs!r}, <J^T dy, v> = {rhs!r}"


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@SETTINGS
@given(b=batch, t=seq, e=width, vocab=st.integers(1, 7), seed=seeds)
def test_embedding_gradient_accumulates(backend, b, t, e, vocab, seed) -> None:
    xp = namespace(backend)
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, vocab, (b, t))
    table = rng.standard_normal((vocab, e))
    dy = rng.standard_normal((b, t, e))
    y, cache = embedding_forward(xp.asarray(ids), _arr(xp, table))
    assert np.array_equal(to_numpy(y), table[ids])
    dtable = to_numpy(embedding_backward(_arr(xp, dy), cache))
    expected = np.zeros((vocab, e))
    for pos in np.ndindex(b, t):
        expected[ids[pos]] += dy[pos]
    assert np.max(np.abs(dtable - expected)) <= 1e-13, f"dtable {dtable}, expected {expected} for ids {ids}"
    unused = np.setdiff1d(np.arange(vocab), ids)
    assert np.all(dtable[unused] == 0.0), f"unused ids {unused} received gradient"


@SETTINGS
@given(b=batch, t=st.integers(2, 6), heads=st.integers(1, 3), dh=st.integers(1, 3), cut=st.integers(0, 5),
       seed=seeds)
def test_causal_attention_never_looks_ahead(b, t, heads, dh, cut, seed) -> None:
    """Changing tokens after position ``cut`` leaves outputs at positions <= cut unchanged, and a
    cotangent on those outputs sends no gradient to the later tokens."""
    cut = cut % (t - 1)
    xp = namespace("numpy")
    rng = np.random.default_rng(seed)
    d = heads * dh
    params = init_attention(rng, d, xp=xp, dtype=xp.float64)
    x = rng.standard_normal((b, t, d))
    x2 = x.copy()
    x2[:, cut + 1:] = rng.standard_normal((b, t - cut - 1, d)) * 3
    mask = causal_mask(t, xp=xp)
    y, cache = mha_forward(_arr(xp, x), _arr(xp, x), params, n_heads=heads, mask=mask)
    y2, _ = mha_forward(_arr(xp, x2), _arr(xp, x2), params, n_heads=heads, mask=mask)
    early = np.max(np.abs(to_numpy(y)[:, :cut + 1] - to_numpy(y2)[:, :cut + 1]))
    assert early <= 1e-14, f"outputs at positions <= {cut} moved by {early:.3g} when later tokens changed"
    assert np.max(np.abs(to_numpy(y)[:, cut + 1:] - to_numpy(y2)[:, cut + 1:])) > 1e-6, "later outputs must move"
    dy = np.zeros((b, t, d))
    dy[:, :cut + 1] = rng.standard_normal((b, cut + 1, d))
    dx_q, dx_kv, _ = mha_backward(_arr(xp, dy), cache)
    later = np.max(np.abs(to_numpy(dx_q + dx_kv)[:, cut + 1:]))
    assert later == 0.0, f"later tokens received gradient {later:.3g} from earlier outputs"


@SETTINGS
@given(b=batch, t=seq, s=st.integers(2, 6), heads=st.integers(1, 2), dh=st.integers(1, 3), seed=seeds)
def test_padded_keys_neither_leak_nor_receive_gradient(b, t, s, heads, dh, seed) -> None:
    xp = namespace("numpy")
    rng = np.random.default_rng(seed)
    d = heads * dh
    params = init_attention(rng, d, xp=xp, dtype=xp.float64)
    valid = rng.uniform(size=(b, s)) < 0.6
    valid[:, 0] = True  # no fully masked row
    x_q, x_kv = rng.standard_normal((b, t, d)), rng.standard_normal((b, s, d))
    x_kv2 = np.where(valid[..., None], x_kv, 100.0 * rng.standard_normal((b, s, d)))
    mask = padding_mask(xp.asarray(valid))
    y, cache = mha_forward(_arr(xp, x_q), _arr(xp, x_kv), params, n_heads=heads, mask=mask)
    y2, _ = mha_forward(_arr(xp, x_q), _arr(xp, x_kv2), params, n_heads=heads, mask=mask)
    assert np.max(np.abs(to_numpy(y) - to_numpy(y2))) <= 1e-13, "padded keys changed the output"
    _, dx_kv, _ = mha_backward(_arr(xp, rng.standard_normal((b, t, d))), cache)
    leaked = np.abs(to_numpy(dx_kv))[~valid]
    assert leaked.size == 0 or leaked.max() == 0.0, f"padded keys received gradient {leaked.max():.3g}"


@SETTINGS
@given(b=batch, t=st.integers(2, 6), c=width, k=st.integers(1, 4), cut=st.integers(0, 5), seed=seeds)
def test_causal_convolution_never_looks_ahead(b, t, c, k, cut, seed) -> None:
    cut = cut % (t - 1)
    xp = namespace("numpy")
    rng = np.random.default_rng(seed)
    x, w, bias = rng.standard_normal((b, t, c)), rng.standard_normal((c, k)), rng.standard_normal(c)
    x2 = x.copy()
    x2[:, cut + 1:] += 1.0
    y, cache = depthwise_conv1d_forward(_arr(xp, x), _arr(xp, w), _arr(xp, bias), padding="causal")
    y2, _ = depthwise_conv1d_forward(_arr(xp, x2), _arr(xp, w), _arr(xp, bias), padding="causal")
    assert np.array_equal(to_numpy(y)[:, :cut + 1], to_numpy(y2)[:, :cut + 1]), "causal conv looked ahead"
    dy = np.zeros((b, t, c))
    dy[:, :cut + 1] = rng.standard_normal((b, cut + 1, c))
    dx, _ = depthwise_conv1d_backward(_arr(xp, dy), cache)
    assert np.all(to_numpy(dx)[:, cut + 1:] == 0.0), "later inputs received gradient from earlier outputs"


@SETTINGS
@given(b=batch, t=seq, v=st.integers(2, 7), seed=seeds)
def test_ignored_targets_do_not_count(b, t, v, seed) -> None:
    xp = namespace("numpy")
    rng = np.random.default_rng(seed)
    logits = rng.standard_normal((b, t, v)) * 2
    targets = rng.integers(0, v, (b, t))
    ignored = rng.uniform(size=(b, t)) < 0.4
    ignored.flat[0] = False
    targets = np.where(ignored, IGNORE_INDEX, targets)
    logits2 = np.where(ignored[..., None], rng.standard_normal((b, t, v)) * 50, logits)
    loss, cache = cross_entropy_forward(_arr(xp, logits), xp.asarray(targets))
    loss2, _ = cross_entropy_forward(_arr(xp, logits2), xp.asarray(targets))
    keep = ~ignored
    z = logits[keep]
    lse = np.log(np.sum(np.exp(z - z.max(-1, keepdims=True)), -1)) + z.max(-1)
    expected = np.mean(lse - z[np.arange(len(z)), targets[keep]])
    assert abs(float(loss) - expected) <= 1e-13 * max(1, abs(expected)), f"loss {float(loss)!r}, expected {expected!r}"
    assert float(loss) == float(loss2), "ignored positions changed the loss"
    dlogits = to_numpy(cross_entropy_backward(xp.asarray(1.0, dtype=xp.float64), cache))
    assert np.all(dlogits[ignored] == 0.0), "ignored positions received gradient"
    assert np.max(np.abs(dlogits.sum(-1))) <= 1e-15, "each valid row's gradient p - onehot sums to zero"
