"""compare_torch at the user's configuration, with the user's arrays; sweeps; a report that cannot mislead."""

from __future__ import annotations

import numpy as np
import pytest

from gradients.compare import compare_torch, sweep_torch, user_case
from reference.backend import array_namespace
from reference.registry import Case, Mechanism, get

torch = pytest.importorskip("torch")
nn = torch.nn

#: Issue 13's done-when configuration: B=3, T=33, S=17, D=64, H=8, five padded keys in the first row.
MHA_CONFIG = {"batch": 3, "seq_len": 33, "kv_len": 17, "d_model": 64, "n_heads": 8, "n_padded": 5,
              "dropout": 0.0, "score_bias": False}


def torch_mha(inputs, params, static, *, n_heads, softmax_dim=-1, scale_width=None):
    """An independent multi-head attention in PyTorch (weights (D_in, D_out), head h owns channels [h Dh, (h+1) Dh))."""
    x_q, x_kv = inputs["x_q"], inputs["x_kv"]
    b, t, d = x_q.shape
    s = x_kv.shape[1]

    def heads(x, w, bias, n):
        return (x @ params[w] + params[bias]).reshape(b, n, n_heads, d // n_heads).transpose(1, 2)

    q, k, v = heads(x_q, "w_q", "b_q", t), heads(x_kv, "w_k", "b_k", s), heads(x_kv, "w_v", "b_v", s)
    scores = q @ k.transpose(-1, -2) / (scale_width or d // n_heads) ** 0.5
    if "bias" in inputs:
        scores = scores + inputs["bias"]
    scores = scores.masked_fill(~static["mask"], torch.finfo(scores.dtype).min)
    p = torch.softmax(scores, dim=softmax_dim)
    if "dropout" in static:
        p = p * static["dropout"]
    return {"y": (p @ v).transpose(1, 2).reshape(b, t, d) @ params["w_o"] + params["b_o"]}


def torch_module_weights(module):
    """nn.MultiheadAttention's weights in the oracle's layout (weights are (d_in, d_out): the transpose)."""
    w_q, w_k, w_v = module.in_proj_weight.detach().chunk(3)
    b_q, b_k, b_v = module.in_proj_bias.detach().chunk(3)
    return {"w_q": w_q.T, "w_k": w_k.T, "w_v": w_v.T, "b_q": b_q, "b_k": b_k, "b_v": b_v,
            "w_o": module.out_proj.weight.detach().T, "b_o": module.out_proj.bias.detach()}


def module_state(params):
    """The oracle's parameters as nn.MultiheadAttention's state (the inverse of torch_module_weights)."""
    return {"in_proj_weight": torch.cat([params["w_q"].T, params["w_k"].T, params["w_v"].T]),
            "in_proj_bias": torch.cat([params["b_q"], params["b_k"], params["b_v"]]),
            "out_proj.weight": params["w_o"].T, "out_proj.bias": params["b_o"]}


def make_module():
    torch.manual_seed(0)
    return nn.MultiheadAttention(64, 8, batch_first=True, dtype=torch.float64).eval()


def run_module(module, inputs, params, static):
    """The module differentiated at the given tensors: torch.func.functional_call keeps the graph."""
    y, _ = torch.func.functional_call(module, module_state(params), (inputs["x_q"], inputs["x_kv"], inputs["x_kv"]),
                                      {"key_padding_mask": ~static["mask"][:, 0, 0, :], "need_weights": False})
    return {"y": y}


def test_independent_mha_at_the_issue_configuration_passes():
    report = compare_torch("nn.attention", lambda i, p, s: torch_mha(i, p, s, n_heads=8), config=MHA_CONFIG)
    assert report.passed, report.table()
    assert [r.tensor for r in report.results][:3] == ["outputs.y", "grads.x_q", "grads.x_kv"]
    assert report.results[0].shape == (3, 33, 64)
    assert max(r.max_rel_error for r in report.results if r.tensor != "grads.b_k") < 1e-9


def test_softmax_over_the_wrong_axis_fails_naming_the_tensor():
    report = compare_torch("nn.attention", lambda i, p, s: torch_mha(i, p, s, n_heads=8, softmax_dim=-2),
                           config=MHA_CONFIG)
    failed = [r.tensor for r in report.failures]
    assert failed[0] == "outputs.y", report.table()
    assert "grads.w_q" in failed and "outputs.y" in report.failures[0].describe()


def test_torch_module_with_its_own_weights_passes():
    module = make_module()
    report = compare_torch("nn.attention", lambda i, p, s: run_module(module, i, p, s), config=MHA_CONFIG,
                           params=torch_module_weights(module))
    assert report.passed, report.table()
    case = user_case("nn.attention", config=MHA_CONFIG, params=torch_module_weights(module))
    np.testing.assert_array_equal(case.params["w_o"], module.out_proj.weight.detach().T.numpy())


def test_weight_wrapped_in_nn_parameter_is_reported_as_no_gradient_reached():
    module = make_module()

    def wrapped(inputs, params, static):
        # The common mistake: copying the given weight into the module cuts autograd's graph.
        module.out_proj.weight = nn.Parameter(params["w_o"].T)
        y, _ = module(inputs["x_q"], inputs["x_kv"], inputs["x_kv"], key_padding_mask=~static["mask"][:, 0, 0, :],
                      need_weights=False)
        return {"y": y}

    report = compare_torch("nn.attention", wrapped, config=MHA_CONFIG, params=torch_module_weights(make_module()))
    failed = {r.tensor: r for r in report.failures}
    assert "grads.w_o" in failed, report.table()
    message = failed["grads.w_o"].describe()
    assert "no gradient reached params.w_o" in message and "nn.Parameter" in message
    assert "functional_call" in message and "other 0.0" not in message
    assert "outputs.y" not in failed  # the forward is right: only the graph is cut


def test_no_grad_and_detach_are_named():
    def under_no_grad(inputs, params, static):
        with torch.no_grad():
            return torch_mha(inputs, params, static, n_heads=8)

    report = compare_torch("nn.attention", under_no_grad, config=MHA_CONFIG)
    assert [r.tensor for r in report.failures] == [r.tensor for r in report.results if r.tensor.startswith("grads.")]
    assert all("no output the oracle differentiates carried autograd's graph" in r.note for r in report.failures)

    def detached_input(inputs, params, static):
        return torch_mha({**inputs, "x_q": inputs["x_q"].detach()}, params, static, n_heads=8)

    report = compare_torch("nn.attention", detached_input, config=MHA_CONFIG)
    assert [r.tensor for r in report.failures] == ["grads.x_q"]
    assert "no gradient reached inputs.x_q" in report.failures[0].note


def test_missing_unexpected_shape_and_dtype_are_named():
    linear = lambda i, p, s: i["x"] @ p["w"] + p["b"]  # noqa: E731
    report = compare_torch("nn.linear", lambda i, p, s: {"z": linear(i, p, s)})
    notes = {r.tensor: r.note for r in report.failures}
    assert "missing" in notes["outputs.y"] and "unexpected output" in notes["outputs.z"]
    report = compare_torch("nn.linear", lambda i, p, s: {"y": linear(i, p, s)[:, :1]})
    assert "shape (2, 1, 7), the oracle's is (2, 3, 7)" in report.failures[0].note
    report = compare_torch("nn.linear", lambda i, p, s: {"y": linear(i, p, s).float()})
    assert report.failures[0].tensor == "outputs.y"
    assert "dtype float32, the comparison runs at float64" in report.failures[0].note
    assert "dtype='float32'" in report.failures[0].note


def test_user_arrays_are_checked_against_the_configuration():
    with pytest.raises(ValueError, match=r"params.w_q has shape \(64, 32\); nn.attention at .* needs \(64, 64\)"):
        user_case("nn.attention", config=MHA_CONFIG, params={"w_q": np.zeros((64, 32))})
    with pytest.raises(ValueError, match="params has no entry w_qk; its entries are"):
        user_case("nn.attention", config=MHA_CONFIG, params={"w_qk": np.zeros((64, 64))})
    with pytest.raises(ValueError, match=r"static.mask has shape \(3, 17\);.*needs \(3, 1, 1, 17\)"):
        user_case("nn.attention", config=MHA_CONFIG, static={"mask": np.ones((3, 17), bool)})
    with pytest.raises(ValueError, match="static.mask has dtype float64"):
        user_case("nn.attention", config=MHA_CONFIG, static={"mask": np.ones((3, 1, 1, 17))})
    with pytest.raises(ValueError, match="n_heads"):
        user_case("nn.attention", config={"d_model": 64, "n_heads": 7})


def test_user_static_mask_and_inputs_reach_the_oracle():
    valid = np.ones((3, 1, 1, 17), bool)
    valid[2, ..., 9:] = False  # the user's own padding: third row, keys 9..16
    x_q = torch.randn(3, 33, 64, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    fn = lambda i, p, s: torch_mha(i, p, s, n_heads=8)  # noqa: E731
    report = compare_torch("nn.attention", fn, config=MHA_CONFIG, static={"mask": valid}, inputs={"x_q": x_q})
    assert report.passed, report.table()
    # The oracle ran with the user's mask: a function that ignores it and uses the sampled one fails.
    sampled = get("nn.attention").example(0, config=MHA_CONFIG).static["mask"]
    stale = compare_torch("nn.attention", lambda i, p, s: fn(i, p, {**s, "mask": torch.from_numpy(sampled)}),
                          config=MHA_CONFIG, static={"mask": valid})
    assert "outputs.y" in [r.tensor for r in stale.failures]


def test_sweep_runs_every_edge_configuration_and_names_the_failing_one():
    mechanism = get("nn.attention")

    def fn(inputs, params, static, config):  # a fourth parameter receives the configuration
        return torch_mha(inputs, params, static, n_heads=config.n_heads)

    report = sweep_torch("nn.attention", fn, seeds=(0, 1))
    labels = {r.mechanism for r in report.results}
    assert labels == {f"nn.attention[{k}]" for k in ["default", *mechanism.edge_configs]}, labels
    assert report.passed, report.table()
    assert all(r.worst.startswith("seed ") for r in report.results)

    def model_width_scale(inputs, params, static, config):  # 1/sqrt(D) for 1/sqrt(D/H): wrong unless H = 1
        return torch_mha(inputs, params, static, n_heads=config.n_heads, scale_width=config.d_model)

    broken = sweep_torch("nn.attention", model_width_scale, seeds=(0,))
    expected = {f"nn.attention[{k}]" for k, v in {"default": {}, **mechanism.edge_configs}.items()
                if mechanism.make_config(v).n_heads > 1 and mechanism.make_config(v).kv_len > 1}  # one key: p = 1
    assert {r.mechanism for r in broken.failures} == expected, broken.table()


def test_sweep_over_given_configs_with_a_base():
    fn = lambda i, p, s: torch_mha(i, p, s, n_heads=8)  # noqa: E731
    report = sweep_torch("nn.attention", fn, configs={"short": {"seq_len": 2}, "bad": {"n_heads": 7}},
                         seeds=(0,), config=MHA_CONFIG)
    assert {r.mechanism for r in report.results} == {"nn.attention[short]"} and report.passed, report.table()
    assert any("skipped nn.attention[bad]" in n and "n_heads" in n for n in report.notes)
    with pytest.raises(TypeError, match="sampled arrays"):
        sweep_torch("nn.attention", fn, params={})


# ------------------------------------------------------------------ intermediates (issue 14.4)

def _mlp_build(seed, dtype, xp):
    rng = np.random.default_rng(seed)
    return Case(inputs={"x": xp.asarray(rng.standard_normal((2, 3)), dtype=dtype)},
                params={"w1": xp.asarray(rng.standard_normal((3, 5)), dtype=dtype),
                        "w2": xp.asarray(rng.standard_normal((5, 7)), dtype=dtype)})


def _mlp_forward(case):
    x, w1, w2 = case.inputs["x"], case.params["w1"], case.params["w2"]
    xp = array_namespace(x)
    h = x @ w1  # (2, 5)
    a = xp.tanh(h)  # (2, 5)
    return {"y": a @ w2}, (x, w1, w2, h, a)


def _mlp_backward(cache, cot):
    x, w1, w2, h, a = cache
    da = cot["y"] @ array_namespace(w2).matrix_transpose(w2)
    dh = da * (1 - a ** 2)
    xp = array_namespace(x)
    t = xp.matrix_transpose
    return {"x": dh @ t(w1), "w1": t(x) @ dh, "w2": t(a) @ cot["y"]}


MLP = Mechanism("nn.compare_test_mlp", "test", "nn", _mlp_build, _mlp_forward, _mlp_backward,
                intermediates=lambda cache: {"h": cache[3], "a": cache[4]})


def test_intermediates_name_the_first_that_disagrees():
    def mlp(inputs, params, static, act=torch.tanh):
        h = inputs["x"] @ params["w1"]
        a = act(h)
        return {"y": a @ params["w2"], "intermediates": {"h": h, "a": a}}

    good = compare_torch(MLP, mlp, intermediates=True)
    assert good.passed and [r.tensor for r in good.results][:2] == ["intermediates.h", "intermediates.a"], good.table()
    bad = compare_torch(MLP, lambda i, p, s: mlp(i, p, s, act=torch.sigmoid), intermediates=True)
    assert bad.first_disagreement == "intermediates.a", bad.table()
    assert "first intermediate that disagrees (forward order): intermediates.a" in bad.table()
    # Without intermediates=True the entry is ignored; asking for them without giving them is named.
    assert [r.tensor for r in compare_torch(MLP, mlp).results] == ["outputs.y", "grads.x", "grads.w1", "grads.w2"]
    missing = compare_torch(MLP, lambda i, p, s: {"y": mlp(i, p, s)["y"]}, intermediates=True)
    assert "no 'intermediates' entry" in missing.failures[0].note and "['h', 'a']" in missing.failures[0].note
    typo = compare_torch(MLP, lambda i, p, s: {**mlp(i, p, s), "intermediates": {"hidden": i["x"]}}, intermediates=True)
    assert "unexpected" in typo.failures[0].note


def test_intermediates_are_budgeted_in_low_precision():
    def mlp(inputs, params, static, scale=1.0):
        h = inputs["x"] @ params["w1"] * scale
        a = torch.tanh(h)
        return {"y": a @ params["w2"], "intermediates": {"h": h, "a": a}}

    good = compare_torch(MLP, mlp, intermediates=True, dtype="float32")
    assert good.passed and good.results[0].tensor == "intermediates.h", good.table()
    assert good.results[0].yardstick_error >= 0 and "yardstick err" in good.table()
    bad = compare_torch(MLP, lambda i, p, s: mlp(i, p, s, scale=1 + 1e-4), intermediates=True, dtype="float32")
    assert bad.first_disagreement == "intermediates.h", bad.table()
