"""Position-aware complex embeddings (Wang et al., ICLR 2020) and their complex Transformer layer.

Tiers: (a) finite-difference checks on numpy and array_api_strict; (b) an
independent PyTorch autograd model on complex tensors and an independent JAX
model, the latter compared after the documented conjugation (and shown to fail
without it); (c) a sympy proof of dL/dr, dL/dw, dL/dtheta and of the complex
weight rule, a complex-step check, and the paper's properties; (d) bad input.

The ``xp`` / ``backend_name`` fixtures come from ``conftest.py`` (numpy,
array_api_strict, and cupy where installed).
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import sympy as sp
import torch

from gradients.check import check_mechanism, random_cotangents
from gradients.complex import from_jax, numerical_wirtinger, to_jax, wirtinger
from gradients.numerical import complex_step_gradient
from reference.backend import namespace, to_numpy
from reference.embeddings.complex_layers import (
    complex_attention_forward,
    complex_linear_backward,
    complex_linear_forward,
)
from reference.embeddings.complex_order import complex_order_backward, complex_order_forward
from reference.registry import get

EMBEDDINGS = ["embeddings.complex_order", "embeddings.complex_order.shared_frequency",
              "embeddings.complex_order.no_initial_phase", "embeddings.complex_order.position_free"]
TRANSFORMERS = ["embeddings.complex_order.transformer", "embeddings.complex_order.transformer.hermitian"]


def assert_close(name, got, want, tol):
    got, want = np.asarray(got), np.asarray(want)
    assert got.shape == want.shape, f"{name}: shape {got.shape} != {want.shape}"
    err = np.abs(got - want)
    scale = max(1.0, float(np.max(np.abs(want))))
    worst = np.unravel_index(int(np.argmax(err)), err.shape) if err.size else ()
    assert float(np.max(err, initial=0.0)) <= tol * scale, (
        f"{name}: at {worst} got {got[worst]!r}, want {want[worst]!r} (abs error {err[worst]:.3g}, tol {tol * scale:.3g})")


# ------------------------------------------------------------------ (a) finite differences
@pytest.mark.parametrize("name", EMBEDDINGS)
def test_embedding_gradients_full(backend_name, name):
    report = check_mechanism(get(name), backend=backend_name)
    assert report.passed, report.table()


# Full mode; on array_api_strict (and for the Hermitian variant) a spread of elements per tensor keeps
# the suite fast, and strict runs the default variant only: the Hermitian one shares every code path but
# the score, which numpy covers. `python -m gradients check` covers every element of both.
@pytest.mark.parametrize("backend, name", [("numpy", TRANSFORMERS[0]), ("numpy", TRANSFORMERS[1]),
                                           ("array_api_strict", TRANSFORMERS[0])])
def test_transformer_gradients(backend, name):
    limit = None if (backend == "numpy" and name == TRANSFORMERS[0]) else 3
    report = check_mechanism(get(name), backend=backend, max_elements=limit)
    assert report.passed, report.table()




# ------------------------------------------------------------------ (b) torch and jax
def _torch_model(p, ids, targets, key_valid, positions, n_heads, score):
    """Written from the equations with torch complex tensors; no oracle code."""
    r, w, th = p["amplitude"][ids], p["frequency"][ids], p["initial_phase"][ids]
    z = torch.polar(r, w * positions[None, :, None] + th)  # r e^{i(w pos + theta)}
    b_, t_, d = z.shape
    dh = d // n_heads

    def heads(x):
        return x.reshape(b_, t_, n_heads, dh).transpose(1, 2)

    q, k, v = (heads(z @ p[f"w_{n}"] + p[f"b_{n}"]) for n in "qkv")
    if score == "modulus":
        a = (q @ k.transpose(-1, -2)).abs() / math.sqrt(dh)
    else:
        a = (q @ k.conj().transpose(-1, -2)).real / math.sqrt(dh)
    a = a.masked_fill(~key_valid[:, None, None, :], -1e9)
    o = torch.softmax(a, dim=-1).to(z.dtype) @ v
    att = o.transpose(1, 2).reshape(b_, t_, d) @ p["w_o"] + p["b_o"]

    def ln(x, g, b):
        f = torch.nn.functional.layer_norm
        return torch.complex(f(x.real, (d,), g, b, 1e-5), f(x.imag, (d,), g, b, 1e-5))

    z1 = ln(z + att, p["ln1_gamma"], p["ln1_beta"])
    hp = z1 @ p["w_1"] + p["b_1"]
    h = torch.complex(torch.relu(hp.real), torch.relu(hp.imag))
    z2 = ln(z1 + h @ p["w_2"] + p["b_2"], p["ln2_gamma"], p["ln2_beta"])
    logits = torch.cat([z2.real, z2.imag], dim=-1) @ p["w_out"] + p["b_out"]
    loss = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1),
                                             ignore_index=-100)
    return logits, loss


@pytest.mark.parametrize("name", TRANSFORMERS)
def test_torch_autograd_agrees(name):
    xp = namespace("numpy")
    m = get(name)
    case = m.example(3, xp.float64, xp)
    outputs, cache = m.forward(case)
    cot = random_cotangents(outputs, 3)
    grads = m.backward(cache, cot)
    tp = {k: torch.tensor(to_numpy(v), requires_grad=True) for k, v in case.params.items()}
    s = {k: torch.tensor(to_numpy(v)) for k, v in case.static.items()}
    logits, loss = _torch_model(tp, s["ids"], s["targets"], s["key_valid"], s["positions"], 2,
                                "modulus" if name == TRANSFORMERS[0] else "hermitian")
    assert_close("logits", logits.detach().numpy(), to_numpy(outputs["logits"]), 1e-10)
    assert_close("loss", loss.detach().numpy(), to_numpy(outputs["loss"]), 1e-10)
    total = (torch.tensor(to_numpy(cot["logits"])) * logits).sum() + float(to_numpy(cot["loss"])) * loss
    total.backward()
    for k, v in tp.items():  # torch's .grad of a complex leaf is the oracle convention: no conjugation
        assert_close(f"grad {k}", v.grad.numpy(), to_numpy(grads[k]), 1e-10)


@pytest.mark.parametrize("name", EMBEDDINGS)
def test_torch_autograd_agrees_embedding(name):
    """f = polar(r, w pos + theta) in torch; L = sum Re(conj(c) f), the checker's pairing."""
    xp = namespace("numpy")
    m = get(name)
    case = m.example(2, xp.float64, xp)
    outputs, cache = m.forward(case)
    cot = random_cotangents(outputs, 2)
    grads = m.backward(cache, cot)
    ids = torch.tensor(to_numpy(case.static["ids"]))
    pos = torch.tensor(to_numpy(case.static["positions"]))[None, :, None]
    tp = {k: torch.tensor(to_numpy(v), requires_grad=True) for k, v in case.params.items()}

    def rows(table):
        return table if table.ndim == 1 else table[ids]

    phi = torch.zeros(ids.shape + (tp["amplitude"].shape[1],), dtype=torch.float64)
    if "frequency" in tp:
        phi = phi + rows(tp["frequency"]) * pos
    if "initial_phase" in tp:
        phi = phi + rows(tp["initial_phase"])
    f = torch.polar(rows(tp["amplitude"]), phi)
    assert_close("embedding", f.detach().numpy(), to_numpy(outputs["embedding"]), 1e-12)
    (torch.conj(torch.tensor(to_numpy(cot["embedding"]))) * f).real.sum().backward()
    for k, v in tp.items():
        assert_close(f"grad {k}", v.grad.numpy(), to_numpy(grads[k]), 1e-10)


def test_one_line_conventions_torch_and_jax():
    """L = |z|^2 at z = 1 + 2i: PyTorch gives 2z, JAX gives 2 conj(z) (DESIGN.md, gradients.complex)."""
    jax = pytest.importorskip("jax")
    jax.config.update("jax_enable_x64", True)
    z = 1.0 + 2.0j
    t = torch.tensor(z, dtype=torch.complex128, requires_grad=True)
    (t.abs() ** 2).backward()
    assert complex(t.grad) == pytest.approx(2 * z), (complex(t.grad), 2 * z)
    g_jax = complex(jax.grad(lambda u: jax.numpy.abs(u) ** 2)(jax.numpy.asarray(z)))
    assert g_jax == pytest.approx(2 * np.conj(z)), (g_jax, 2 * np.conj(z))
    assert complex(from_jax(g_jax)) == pytest.approx(complex(t.grad))
    assert complex(to_jax(complex(t.grad))) == pytest.approx(g_jax)
    dz, dzbar = wirtinger(2 * z)  # (conj z, z)
    assert (dz, dzbar) == (pytest.approx(np.conj(z)), pytest.approx(z))
    num_dz, num_dzbar = numerical_wirtinger(lambda u: abs(u) ** 2, z)
    assert (num_dz, num_dzbar) == (pytest.approx(np.conj(z), abs=1e-8), pytest.approx(z, abs=1e-8))


def _jax_model(jnp, p, ids, targets, key_valid, positions, n_heads, score):
    """The same model in JAX (independent of the oracle and of the torch version)."""
    z = p["amplitude"][ids] * jnp.exp(1j * (p["frequency"][ids] * positions[None, :, None] + p["initial_phase"][ids]))
    b_, t_, d = z.shape
    dh = d // n_heads

    def heads(x):
        return jnp.transpose(jnp.reshape(x, (b_, t_, n_heads, dh)), (0, 2, 1, 3))

    q, k, v = (heads(z @ p[f"w_{n}"] + p[f"b_{n}"]) for n in "qkv")
    prod = q @ jnp.swapaxes(k, -1, -2) if score == "modulus" else q @ jnp.conj(jnp.swapaxes(k, -1, -2))
    a = (jnp.abs(prod) if score == "modulus" else jnp.real(prod)) / math.sqrt(dh)
    a = jnp.where(key_valid[:, None, None, :], a, -1e9)
    e = jnp.exp(a - jnp.max(a, axis=-1, keepdims=True))
    o = (e / jnp.sum(e, axis=-1, keepdims=True)) @ v
    att = jnp.reshape(jnp.transpose(o, (0, 2, 1, 3)), (b_, t_, d)) @ p["w_o"] + p["b_o"]

    def ln(x, g, b):
        def one(u):
            c = u - jnp.mean(u, axis=-1, keepdims=True)
            return g * c / jnp.sqrt(jnp.mean(c * c, axis=-1, keepdims=True) + 1e-5) + b
        return one(jnp.real(x)) + 1j * one(jnp.imag(x))

    z1 = ln(z + att, p["ln1_gamma"], p["ln1_beta"])
    hp = z1 @ p["w_1"] + p["b_1"]
    h = jnp.maximum(jnp.real(hp), 0.0) + 1j * jnp.maximum(jnp.imag(hp), 0.0)
    z2 = ln(z1 + h @ p["w_2"] + p["b_2"], p["ln2_gamma"], p["ln2_beta"])
    logits = jnp.concatenate([jnp.real(z2), jnp.imag(z2)], axis=-1) @ p["w_out"] + p["b_out"]
    valid = targets != -100
    logp = logits - jnp.max(logits, axis=-1, keepdims=True)
    logp = logp - jnp.log(jnp.sum(jnp.exp(logp), axis=-1, keepdims=True))
    picked = jnp.take_along_axis(logp, jnp.where(valid, targets, 0)[..., None], axis=-1)[..., 0]
    loss = -jnp.sum(jnp.where(valid, picked, 0.0)) / jnp.sum(valid)
    return logits, loss


@pytest.fixture(scope="module")
def jax_grads():
    jax = pytest.importorskip("jax")
    jax.config.update("jax_enable_x64", True)
    jnp = jax.numpy
    xp = namespace("numpy")
    m = get(TRANSFORMERS[0])
    case = m.example(5, xp.float64, xp)
    outputs, cache = m.forward(case)
    cot = random_cotangents(outputs, 5)
    grads = m.backward(cache, cot)
    s = {k: jnp.asarray(to_numpy(v)) for k, v in case.static.items()}
    c_logits, c_loss = jnp.asarray(cot["logits"]), float(cot["loss"])

    def scalar(p):
        logits, loss = _jax_model(jnp, p, s["ids"], s["targets"], s["key_valid"], s["positions"], 2, "modulus")
        return jnp.sum(c_logits * logits) + c_loss * loss

    g_jax = jax.jit(jax.grad(scalar))({k: jnp.asarray(to_numpy(v)) for k, v in case.params.items()})
    return case, grads, {k: np.asarray(v) for k, v in g_jax.items()}


def test_jax_agrees_after_conjugation(jax_grads):
    case, grads, g_jax = jax_grads
    for k in case.params:
        assert_close(f"grad {k}", np.asarray(from_jax(g_jax[k])), to_numpy(grads[k]), 1e-10)


def test_jax_without_conjugation_fails(jax_grads):
    """Forgetting the conjugation makes every complex weight's comparison fail (real ones still agree)."""
    case, grads, g_jax = jax_grads
    for k in case.params:
        if np.iscomplexobj(g_jax[k]):
            with pytest.raises(AssertionError):
                assert_close(f"grad {k}", g_jax[k], to_numpy(grads[k]), 1e-10)
        else:
            assert_close(f"grad {k}", g_jax[k], to_numpy(grads[k]), 1e-10)


# ------------------------------------------------------------------ (c) sympy, complex step, properties
def test_sympy_derives_amplitude_frequency_phase():
    """L = sum_tokens sum_k Re(c_k f_k)^2 with symbolic r, w, theta; oracle agrees to 1e-12."""
    V, D = 3, 2
    ids = np.array([[0, 2, 0, 1]])
    pos = np.array([0.0, 1.0, 2.5, 4.0])
    rng = np.random.default_rng(11)
    c = rng.standard_normal((1, 4, D)) + 1j * rng.standard_normal((1, 4, D))
    values = {n: rng.uniform(0.3, 1.3, (V, D)) for n in ("r", "w", "t")}
    sym = {n: sp.Matrix(V, D, lambda i, j: sp.Symbol(f"{n}_{i}{j}", real=True)) for n in values}
    fre, fim = sp.symbols("fre fim", real=True)
    loss = 0
    g = np.zeros((1, 4, D), dtype=complex)
    subs = {sym[n][i, j]: values[n][i, j] for n in values for i in range(V) for j in range(D)}
    for t, j in enumerate(ids[0]):
        for k in range(D):
            cc = complex(c[0, t, k])
            term = (sp.re(cc) * fre - sp.im(cc) * fim) ** 2  # Re(c f)^2 in the parts of f
            phi = sym["w"][j, k] * sp.nsimplify(pos[t]) + sym["t"][j, k]
            f_parts = {fre: sym["r"][j, k] * sp.cos(phi), fim: sym["r"][j, k] * sp.sin(phi)}
            loss += term.subs(f_parts)
            # incoming gradient g = dL/dRe f + i dL/dIm f, also derived by sympy
            g[0, t, k] = complex(sp.diff(term, fre).subs(f_parts).subs(subs)) + 1j * complex(
                sp.diff(term, fim).subs(f_parts).subs(subs))
    xp = namespace("numpy")
    _, cache = complex_order_forward(xp.asarray(ids), xp.asarray(values["r"]), xp.asarray(values["w"]),
                                     xp.asarray(values["t"]), positions=xp.asarray(pos))
    grads = complex_order_backward(xp.asarray(g), cache)
    for n, key in (("r", "amplitude"), ("w", "frequency"), ("t", "initial_phase")):
        want = np.array([[float(sp.diff(loss, sym[n][i, j]).subs(subs)) for j in range(D)] for i in range(V)])
        assert_close(f"d{key}", to_numpy(grads[key]), want, 1e-12)


def test_sympy_complex_weight_rule():
    """y = z W, L = sum Re(c y)^2: sympy's dL/dRe W + i dL/dIm W equals conj(z)^T g_y; g_z = g_y conj(W)^T."""
    rng = np.random.default_rng(2)
    n, i_, o_ = 2, 3, 2
    zv = rng.standard_normal((n, i_)) + 1j * rng.standard_normal((n, i_))
    wv = rng.standard_normal((i_, o_)) + 1j * rng.standard_normal((i_, o_))
    c = rng.standard_normal((n, o_)) + 1j * rng.standard_normal((n, o_))
    A = sp.Matrix(i_, o_, lambda a, b: sp.Symbol(f"A{a}{b}", real=True))
    Bm = sp.Matrix(i_, o_, lambda a, b: sp.Symbol(f"B{a}{b}", real=True))
    X = sp.Matrix(n, i_, lambda a, b: sp.Symbol(f"X{a}{b}", real=True))
    Y = sp.Matrix(n, i_, lambda a, b: sp.Symbol(f"Y{a}{b}", real=True))
    y = (X + sp.I * Y) * (A + sp.I * Bm)
    loss = sum(sp.re(sp.expand(complex(c[a, b]) * y[a, b])) ** 2 for a in range(n) for b in range(o_))
    subs = {**{A[a, b]: wv[a, b].real for a in range(i_) for b in range(o_)},
            **{Bm[a, b]: wv[a, b].imag for a in range(i_) for b in range(o_)},
            **{X[a, b]: zv[a, b].real for a in range(n) for b in range(i_)},
            **{Y[a, b]: zv[a, b].imag for a in range(n) for b in range(i_)}}
    yv = zv @ wv
    g_y = 2 * np.real(c * yv) * np.conj(c)  # dL/dRe y + i dL/dIm y for L = sum Re(c y)^2
    xp = namespace("numpy")
    _, cache = complex_linear_forward(xp.asarray(zv), xp.asarray(wv))
    dz, gw = complex_linear_backward(xp.asarray(g_y), cache)

    def grad(re_m, im_m, shape):
        return np.array([[complex(sp.diff(loss, re_m[a, b]).subs(subs)) + 1j * complex(sp.diff(loss, im_m[a, b]).subs(subs))
                          for b in range(shape[1])] for a in range(shape[0])])

    assert_close("dW", to_numpy(gw["w"]), grad(A, Bm, (i_, o_)), 1e-12)
    assert_close("dz", to_numpy(dz), grad(X, Y, (n, i_)), 1e-12)


@pytest.mark.parametrize("which", ["amplitude", "frequency", "initial_phase"])
def test_complex_step(which):
    """Complex step (exact to rounding) on L = sum Re(c f)^2 against the oracle's backward.

    The complex step needs a real-analytic function whose intermediates are real: abs and conj
    are not analytic, and f itself is complex, so a perturbation i h of w would mix with f's
    genuine imaginary part. Re(c f) = r (Re c cos phi - Im c sin phi), phi = w pos + theta,
    is analytic in r, w and theta with real intermediates, so that is the path we step along.
    """
    xp = namespace("numpy")
    rng = np.random.default_rng(4)
    ids = np.array([[0, 1, 0, 2, 1]])
    pos = np.arange(5.0)[None, :, None]
    names = ("amplitude", "frequency", "initial_phase")
    tables = {n: rng.uniform(0.3, 1.3, (3, 4)) for n in names}
    c = rng.standard_normal((1, 5, 4)) + 1j * rng.standard_normal((1, 5, 4))

    def loss_of(table):
        t = {**tables, which: table}
        r, w, th = (xp.take(t[n], xp.asarray(ids.reshape(-1)), axis=0).reshape(1, 5, 4) for n in names)
        phi = w * pos + th
        return xp.sum((r * (c.real * xp.cos(phi) - c.imag * xp.sin(phi))) ** 2)

    numeric = complex_step_gradient(loss_of, xp.asarray(tables[which]))
    f, cache = complex_order_forward(xp.asarray(ids), *(xp.asarray(tables[n]) for n in names),
                                     positions=xp.asarray(pos[0, :, 0]))
    g = 2 * np.real(c * to_numpy(f)) * np.conj(c)  # dL/dRe f + i dL/dIm f
    assert float(loss_of(xp.asarray(tables[which]))) == pytest.approx(float(np.sum(np.real(c * to_numpy(f)) ** 2)))
    assert_close(which, to_numpy(complex_order_backward(xp.asarray(g), cache)[which]), numeric, 1e-13)


def test_bounded_and_shift_is_rotation(xp):
    """|f| = r, and moving every word by Delta positions multiplies f by exp(i w Delta) (Property 1)."""
    rng = np.random.default_rng(0)
    ids = xp.asarray(rng.integers(0, 4, (2, 6)))
    r, w, th = (xp.asarray(rng.uniform(0.2, 1.0, (4, 3))) for _ in range(3))
    pos = xp.arange(6, dtype=xp.float64)
    f, _ = complex_order_forward(ids, r, w, th, positions=pos)
    f_shift, _ = complex_order_forward(ids, r, w, th, positions=pos + 3.0)
    r_rows = to_numpy(r)[to_numpy(ids)]
    w_rows = to_numpy(w)[to_numpy(ids)]
    assert_close("|f|", np.abs(to_numpy(f)), r_rows, 1e-14)
    assert_close("shift", to_numpy(f_shift), to_numpy(f) * np.exp(1j * w_rows * 3.0), 1e-13)


def test_transformer_sinusoidal_encoding_is_a_special_case():
    """Shared frequencies 10000^(-2k/D), r = 1, theta = 0: Re f and Im f are the cos/sin position encodings."""
    xp = namespace("numpy")
    t, d = 7, 4
    freq = 1.0 / 10000 ** (2 * np.arange(d) / (2 * d))
    f, _ = complex_order_forward(xp.zeros((1, t), dtype=xp.int64), xp.ones((1, d)), xp.asarray(freq),
                                 positions=xp.arange(t, dtype=xp.float64))
    angle = np.arange(t)[:, None] * freq[None, :]
    assert_close("cos", np.real(to_numpy(f))[0], np.cos(angle), 1e-15)
    assert_close("sin", np.imag(to_numpy(f))[0], np.sin(angle), 1e-15)


def test_frequency_gradient_is_position_times_phase_gradient():
    xp = namespace("numpy")
    rng = np.random.default_rng(1)
    r, w, th = (xp.asarray(rng.uniform(0.2, 1.0, (5, 2))) for _ in range(3))
    ids = xp.asarray(np.arange(5)[None, :])  # each word once, at position 3 * index
    pos = xp.asarray(3.0 * np.arange(5))
    _, cache = complex_order_forward(ids, r, w, th, positions=pos)
    g = complex_order_backward(xp.asarray(rng.standard_normal((1, 5, 2)) + 1j * rng.standard_normal((1, 5, 2))), cache)
    assert_close("dw", to_numpy(g["frequency"]), to_numpy(pos)[:, None] * to_numpy(g["initial_phase"]), 1e-14)


@pytest.mark.parametrize("score", ["modulus", "hermitian"])
def test_global_phase_leaves_attention_unchanged(score):
    """Adding alpha to every initial phase rotates all tokens by e^{i alpha}; with bias-free q/k maps both
    real scores (|q k^T| and Re(q k^H)) are unchanged, so the attention weights are too."""
    xp = namespace("numpy")
    m = get(TRANSFORMERS[0])
    case = m.example(0, xp.float64, xp)
    p = dict(case.params)
    p["b_q"], p["b_k"] = xp.zeros_like(p["b_q"]), xp.zeros_like(p["b_k"])
    z, _ = complex_order_forward(case.static["ids"], p["amplitude"], p["frequency"], p["initial_phase"])
    z_rot, _ = complex_order_forward(case.static["ids"], p["amplitude"], p["frequency"], p["initial_phase"] + 0.7)
    _, c1 = complex_attention_forward(z, p, n_heads=2, score=score)
    _, c2 = complex_attention_forward(z_rot, p, n_heads=2, score=score)
    if score == "modulus":
        assert not np.allclose(to_numpy(c1.s), to_numpy(c2.s))  # the product itself rotates by e^{2 i alpha}
    assert_close("attention", to_numpy(c2.softmax.p), to_numpy(c1.softmax.p), 1e-12)


def test_padding_does_not_leak():
    """Changing a padded token's word changes no real token's logits (masked keys, ignored targets)."""
    xp = namespace("numpy")
    m = get(TRANSFORMERS[0])
    case = m.example(0, xp.float64, xp)
    out1, _ = m.forward(case)
    ids = to_numpy(case.static["ids"]).copy()
    ids[-1, -1] = (ids[-1, -1] + 1) % 7
    out2, _ = m.forward(dataclasses.replace(case, static={**case.static, "ids": xp.asarray(ids)}))
    valid = to_numpy(case.static["key_valid"])
    assert_close("real-token logits", to_numpy(out2["logits"])[valid], to_numpy(out1["logits"])[valid], 1e-13)
    assert float(out2["loss"]) == pytest.approx(float(out1["loss"]), abs=1e-13)


def test_margin_check_catches_a_relu_flip():
    """The example's ReLU margin is asserted: a step big enough to flip a ReLU input raises."""
    xp = namespace("numpy")
    m = get(TRANSFORMERS[0])
    case = m.example(0, xp.float64, xp)
    m.margin_check(case)  # the example itself is fine
    b_1 = to_numpy(case.params["b_1"]) + 10.0  # every real part of z1 W1 + b1 becomes positive
    with pytest.raises(ValueError, match="changed sign"):
        m.margin_check(case.replace({"b_1": xp.asarray(b_1)}))


# ------------------------------------------------------------------ (d) bad input
def test_bad_input():
    xp = namespace("numpy")
    ids = xp.asarray([[0, 1, 2]])
    r = xp.ones((4, 3))
    with pytest.raises(ValueError, match="ids must lie in"):
        complex_order_forward(xp.asarray([[0, 4]]), r)
    with pytest.raises(ValueError, match=r"amplitude must have a non-empty shape \(vocab, dim\)"):
        complex_order_forward(ids, xp.ones((3,)))
    with pytest.raises(ValueError, match=r"frequency must have shape \(vocab, dim\)"):
        complex_order_forward(ids, r, xp.ones((5, 3)))
    with pytest.raises(ValueError, match=r"initial_phase must have shape \(dim\)"):
        complex_order_forward(ids, r, None, xp.ones((2,)))
    with pytest.raises(ValueError, match="positions must have shape"):
        complex_order_forward(ids, r, positions=xp.arange(4, dtype=xp.float64))
    with pytest.raises(TypeError, match="amplitude must be a real floating array"):
        complex_order_forward(ids, r + 0j)
    z = xp.ones((1, 3, 4)) + 0j
    params = {k: xp.ones((4, 4)) + 0j if k.startswith("w") else xp.zeros((4,)) + 0j
              for k in ("w_q", "b_q", "w_k", "b_k", "w_v", "b_v", "w_o", "b_o")}
    with pytest.raises(ValueError, match="score must be one of"):
        complex_attention_forward(z, params, n_heads=2, score="phase")
    with pytest.raises(ValueError, match="divisible by n_heads"):
        complex_attention_forward(z, params, n_heads=3)
    with pytest.raises(ValueError, match=r"z must have shape \(\.\.\., d_in\)"):
        complex_linear_forward(xp.ones((2, 5)) + 0j, xp.ones((4, 3)) + 0j)


# --- configurations, edges and bad input (issues 13, 17) ------------------------------------------------------

EDGE_CASES = [(name, label) for name in ["embeddings.complex_order", "embeddings.complex_order.shared_frequency",
                                         "embeddings.complex_order.no_initial_phase",
                                         "embeddings.complex_order.position_free",
                                         "embeddings.complex_order.transformer",
                                         "embeddings.complex_order.transformer.hermitian"]
              for label in get(name).edge_configs]


@pytest.mark.parametrize("name, label", EDGE_CASES)
@pytest.mark.parametrize("backend", ["numpy", "array_api_strict"])
def test_every_edge_configuration(name, label, backend):
    mechanism = get(name)
    report = check_mechanism(mechanism, backend=backend, mode="fast", config=mechanism.edge_configs[label])
    assert report.passed, report.table()


def test_a_configuration_without_relu_margin_is_one_clear_error():
    with pytest.raises(ValueError, match="ReLU inputs at least"):
        get("embeddings.complex_order.transformer").example(0, config={"batch": 16, "seq_len": 32, "d_ff": 64})


def _embedding_args():
    case = get("embeddings.complex_order").example(0)
    return {"ids": case.static["ids"], "amplitude": case.params["amplitude"], "frequency": case.params["frequency"],
            "initial_phase": case.params["initial_phase"], "positions": case.static["positions"]}


def _with_nan(x):
    y = np.array(to_numpy(x), copy=True)
    y.flat[0] = np.nan
    return namespace("numpy").asarray(y)


BAD = [
    ("positions_nan", "positions", _with_nan, ValueError, "positions contains NaN"),
    ("positions_inf", "positions", lambda x: x * np.inf, ValueError, "positions contains NaN"),
    ("amplitude_nan", "amplitude", _with_nan, ValueError, "amplitude contains NaN"),
    ("frequency_nan", "frequency", _with_nan, ValueError, "frequency contains NaN"),
    ("initial_phase_inf", "initial_phase", lambda x: x * np.inf, ValueError, "initial_phase contains NaN"),
    ("amplitude_list", "amplitude", lambda x: to_numpy(x).tolist(), TypeError, "amplitude must be an array"),
    ("positions_tuple", "positions", lambda x: tuple(to_numpy(x).tolist()), TypeError, "positions must be an array"),
    ("amplitude_int", "amplitude", lambda x: namespace("numpy").astype(x, namespace("numpy").int64), TypeError,
     "amplitude must be a real floating"),
    ("ids_float", "ids", lambda x: namespace("numpy").astype(x, namespace("numpy").float64), TypeError,
     "ids must be an integer"),
    ("ids_empty", "ids", lambda x: x[:, :0], ValueError, "ids must have a non-empty"),
    ("amplitude_empty", "amplitude", lambda x: x[:0], ValueError, "amplitude must have a non-empty"),
]


@pytest.mark.parametrize("label, argument, change, error, message", BAD, ids=[b[0] for b in BAD])
def test_bad_input_names_the_argument_parametrised(label, argument, change, error, message):
    args = _embedding_args()
    args[argument] = change(args[argument])
    with pytest.raises(error, match=message):
        complex_order_forward(args["ids"], args["amplitude"], args["frequency"], args["initial_phase"],
                              positions=args["positions"])


def test_attention_parameter_names_have_one_definition():
    from reference.embeddings import complex_layers
    from reference.nn import attention
    assert complex_layers.ATTENTION_PARAMS is attention.ATTENTION_PARAMS
