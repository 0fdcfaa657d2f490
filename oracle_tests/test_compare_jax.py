"""compare_jax: jax.vjp in float64 (x64 for the call, then restored), JAX's complex convention converted."""

from __future__ import annotations

import numpy as np
import pytest

from gradients.compare_jax import compare_jax, sweep_jax
from reference.registry import Case, Mechanism, get

jax = pytest.importorskip("jax")
jnp = jax.numpy

MHA_CONFIG = {"batch": 3, "seq_len": 33, "kv_len": 17, "d_model": 64, "n_heads": 8, "n_padded": 5,
              "dropout": 0.0, "score_bias": False}


def jax_mha(inputs, params, static, config, softmax_axis=-1):
    """An independent multi-head attention in JAX (weights (D_in, D_out))."""
    x_q, x_kv = inputs["x_q"], inputs["x_kv"]
    b, t, d = x_q.shape
    s, h = x_kv.shape[1], config.n_heads

    def heads(x, w, bias, n):
        return (x @ params[w] + params[bias]).reshape(b, n, h, d // h).transpose(0, 2, 1, 3)

    q, k, v = heads(x_q, "w_q", "b_q", t), heads(x_kv, "w_k", "b_k", s), heads(x_kv, "w_v", "b_v", s)
    scores = q @ k.transpose(0, 1, 3, 2) / jnp.sqrt(d // h)
    if "bias" in inputs:
        scores = scores + inputs["bias"]
    scores = jnp.where(static["mask"], scores, jnp.finfo(scores.dtype).min)
    p = jax.nn.softmax(scores, axis=softmax_axis)
    if "dropout" in static:
        p = p * static["dropout"]
    return {"y": (p @ v).transpose(0, 2, 1, 3).reshape(b, t, d) @ params["w_o"] + params["b_o"]}


def test_jax_mha_at_the_issue_configuration_passes_and_restores_x64():
    before = jax.config.read("jax_enable_x64")
    report = compare_jax("nn.attention", jax_mha, config=MHA_CONFIG)
    assert report.passed, report.table()
    assert jax.config.read("jax_enable_x64") == before
    assert report.results[0].shape == (3, 33, 64)
    assert any("real leaves only" in n for n in report.notes) and any("jax_enable_x64" in n for n in report.notes)


def test_jax_softmax_over_the_wrong_axis_fails_naming_the_tensor():
    report = compare_jax("nn.attention", lambda i, p, s, c: jax_mha(i, p, s, c, softmax_axis=-2), config=MHA_CONFIG)
    assert report.failures and report.failures[0].tensor == "outputs.y", report.table()


def test_jax_closure_over_its_own_weights_is_reported_as_no_gradient_reached():
    # The model keeps its own copy of w_o (equal values, so the forward agrees) instead of using params.
    own_w_o = get("nn.attention").example(0, config=MHA_CONFIG).params["w_o"]  # a float64 NumPy copy

    def closed_over(inputs, params, static, config):
        return jax_mha(inputs, {**params, "w_o": own_w_o}, static, config)

    report = compare_jax("nn.attention", closed_over, config=MHA_CONFIG)
    assert [r.tensor for r in report.failures] == ["grads.w_o"], report.table()
    assert "no gradient reached params.w_o" in report.failures[0].note
    assert "stop_gradient" in report.failures[0].note
    cut = compare_jax("nn.attention", lambda i, p, s, c: jax_mha(i, {**p, "b_q": jax.lax.stop_gradient(p["b_q"])},
                                                                   s, c), config=MHA_CONFIG)
    assert [r.tensor for r in cut.failures] == ["grads.b_q"] and "no gradient reached" in cut.failures[0].note


def test_jax_with_the_users_own_weights():
    rng = np.random.default_rng(5)
    w_o = jnp.asarray(rng.standard_normal((64, 64)) / 8)
    report = compare_jax("nn.attention", jax_mha, config=MHA_CONFIG, params={"w_o": w_o})
    assert report.passed, report.table()
    with pytest.raises(ValueError, match=r"params.w_o has shape \(64,\)"):
        compare_jax("nn.attention", jax_mha, config=MHA_CONFIG, params={"w_o": w_o[0]})


def test_sweep_jax_over_edge_configurations():
    # Two of the edge configurations (each new shape costs JAX a trace; sweep_torch's test runs them all).
    edges = get("nn.attention").edge_configs
    report = sweep_jax("nn.attention", jax_mha, configs={k: edges[k] for k in ("key_1", "odd_sizes")}, seeds=(0,))
    assert report.passed, report.table()
    assert {r.mechanism for r in report.results} == {"nn.attention[key_1]", "nn.attention[odd_sizes]"}


def _complex_build(seed, dtype, xp):
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((2, 3)) + 1j * rng.standard_normal((2, 3))
    return Case(inputs={"z": xp.asarray(z, dtype=xp.complex128)},
                params={"w": xp.asarray(rng.standard_normal((3,)), dtype=xp.float64)})


def _complex_forward(case):
    z, w = case.inputs["z"], case.params["w"]
    return {"u": z * w, "s": (z * np.conj(z)).real * w}, (z, w)


def _complex_backward(cache, cot):
    # L = Re sum(conj(cu) z w) + sum(cs |z|^2 w); gradients dL/dRe + i dL/dIm (the oracle's convention).
    z, w = cache
    cu, cs = cot["u"], cot["s"]
    return {"z": cu * w + 2 * cs * w * z,
            "w": np.sum(np.real(np.conj(cu) * z), axis=0) + np.sum(cs * np.real(z * np.conj(z)), axis=0)}


COMPLEX = Mechanism("nn.compare_jax_complex_test", "test", "nn", _complex_build, _complex_forward, _complex_backward)


def test_complex_gradients_are_converted_from_jax_convention():
    fn = lambda i, p, s: {"u": i["z"] * p["w"], "s": (i["z"] * jnp.conj(i["z"])).real * p["w"]}  # noqa: E731
    report = compare_jax(COMPLEX, fn)
    assert report.passed, report.table()
    assert any("converted from JAX's convention" in n and "from_jax" in n and "(z)" in n for n in report.notes)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_jax_in_low_precision_is_budgeted(dtype):
    small = {**MHA_CONFIG, "batch": 2}
    report = compare_jax("nn.attention", jax_mha, config=small, dtype=dtype)
    assert report.passed, report.table()
    assert "yardstick err" in report.table() and report.dtype == dtype
    if dtype == "float32":  # (each bfloat16 compilation costs XLA on a CPU several seconds)
        wrong = compare_jax("nn.attention", lambda i, p, s, c: jax_mha(i, p, s, c, softmax_axis=-2), config=small,
                            dtype=dtype)
        assert wrong.failures[0].tensor == "outputs.y", wrong.table()
