"""Low-precision error budgets (issue 15.1): the other side in float32/bfloat16/float16 against the float64
oracle, judged by the oracle's own algorithm in the same precision (gradients/budget.py)."""

from __future__ import annotations

import numpy as np
import pytest

from gradients.budget import Budget, BudgetResult, judge_budget
from gradients.compare import compare_torch

torch = pytest.importorskip("torch")

#: Issue 15's done-when size: T=512, D=256, 4 heads (batch 1 keeps it fast); three padded keys.
LARGE = {"batch": 1, "seq_len": 512, "kv_len": 512, "d_model": 256, "n_heads": 4, "n_padded": 3,
         "dropout": 0.0, "score_bias": False}
SMALL = {"batch": 2, "seq_len": 33, "kv_len": 17, "d_model": 64, "n_heads": 8, "n_padded": 0}


def attention(inputs, params, static, config, *, skew=None):
    """A correct multi-head attention in PyTorch, in whatever dtype it is given (skew: scale one weight's gradient)."""
    p = dict(params)
    if skew is not None:
        name, factor = skew  # forward value unchanged (w + 0), gradient of w times factor
        w = p[name]
        p[name] = w + ((factor - 1) * w - ((factor - 1) * w).detach())
    x_q, x_kv = inputs["x_q"], inputs["x_kv"]
    b, t, d = x_q.shape
    s, h = x_kv.shape[1], config.n_heads

    def heads(x, w, bias, n):
        return (x @ p[w] + p[bias]).reshape(b, n, h, d // h).transpose(1, 2)

    q, k, v = heads(x_q, "w_q", "b_q", t), heads(x_kv, "w_k", "b_k", s), heads(x_kv, "w_v", "b_v", s)
    scores = q @ k.transpose(-1, -2) / (d // h) ** 0.5
    if "bias" in inputs:
        scores = scores + inputs["bias"]
    scores = scores.masked_fill(~static["mask"], torch.finfo(scores.dtype).min)
    probs = torch.softmax(scores, dim=-1)
    if "dropout" in static:
        probs = probs * static["dropout"]
    return {"y": (probs @ v).transpose(1, 2).reshape(b, t, d) @ p["w_o"] + p["b_o"]}


@pytest.fixture(scope="module")
def float32_reports():
    good = compare_torch("nn.attention", attention, config=LARGE, dtype="float32")
    skewed = compare_torch("nn.attention", lambda i, p, s, c: attention(i, p, s, c, skew=("w_v", 1 + 1e-3)),
                           config=LARGE, dtype="float32")
    return good, skewed


def test_correct_float32_attention_passes_the_budget(float32_reports):
    good, _ = float32_reports
    assert good.passed, good.table()
    assert all(isinstance(r, BudgetResult) for r in good.results)
    assert good.results[0].shape == (1, 512, 256)
    for r in good.results:
        assert 0 < r.yardstick_error < 1e-3 and r.max_abs_error <= r.allowed
        assert r.ratio < 2.0, r.describe()  # a correct float32 code errs about as much as the yardstick
    table = good.table()
    assert "yardstick err" in table and "ratio" in table and "other side float32" in table


def test_one_weight_gradient_off_by_1e_3_relative_fails_and_is_named(float32_reports):
    _, skewed = float32_reports
    assert [r.tensor for r in skewed.failures] == ["grads.w_v"], skewed.table()
    failure = skewed.failures[0]
    assert failure.ratio > 10
    message = failure.describe()
    assert "grads.w_v" in message and "breaks the budget" in message and "yardstick" in message


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_half_precisions_are_accepted_and_budgeted(dtype):
    report = compare_torch("nn.attention", attention, config=SMALL, dtype=dtype)
    assert report.passed, report.table()
    assert report.dtype == dtype and all(r.yardstick_error > 0 for r in report.results)
    skewed = compare_torch("nn.attention", lambda i, p, s, c: attention(i, p, s, c, skew=("w_o", 1.5)),
                           config=SMALL, dtype=dtype)
    assert [r.tensor for r in skewed.failures] == ["grads.w_o"], skewed.table()


def test_the_other_side_must_run_in_the_dtype_asked_for():
    report = compare_torch("nn.attention", lambda i, p, s, c: {k: v.double() for k, v in
                                                                  attention(i, p, s, c).items()},
                           config=SMALL, dtype="float32")
    assert report.failures[0].tensor == "outputs.y"
    assert "dtype float64, the comparison runs at float32" in report.failures[0].note


def test_float16_with_a_padding_mask_says_why_the_yardstick_cannot_run():
    with pytest.raises(ValueError, match="MASKED_SCORE.*overflows"):
        compare_torch("nn.attention", attention, config={**SMALL, "n_padded": 2}, dtype="float16")


def test_unknown_dtype_is_refused():
    with pytest.raises(ValueError, match="bfloat16"):
        compare_torch("nn.linear", lambda i, p, s: i["x"] @ p["w"] + p["b"], dtype="int8")


def test_the_rule():
    ref = np.array([1.0, -2.0, 0.5])
    yard = ref + np.array([1e-7, 0.0, 0.0])
    eps = 2.0 ** -23
    at_limit = judge_budget("m", "outputs.y", ref, yard, ref + np.array([2e-7 + 2 * eps, 0, 0]), "float32", Budget())
    assert at_limit.passed and at_limit.allowed == pytest.approx(2e-7 + 2 * eps)  # floor: eps * max(1, |ref|) = 2 eps
    over = judge_budget("m", "outputs.y", ref, yard, ref + np.array([0, 3e-7 + 2 * eps, 0]), "float32", Budget())
    assert not over.passed and over.worst == "(1,)"
    grads = judge_budget("m", "grads.w", ref, yard, ref + np.array([0, 2.9e-7, 0]), "float32", Budget())
    assert grads.passed and grads.k == 3  # gradients: k = 3
    exact = judge_budget("m", "grads.b", ref, ref, ref + 1e-7, "float32", Budget())
    assert exact.passed and exact.ratio == np.inf  # the floor absorbs rounding where the yardstick is exact
    assert not judge_budget("m", "outputs.y", ref, yard, ref * np.nan, "float32", Budget()).passed
    ids = np.array([1, 2, 3])
    assert judge_budget("m", "outputs.ids", ids, np.array([1, 2, 4]), np.array([1, 5, 3]), "float32", Budget()).passed
    assert not judge_budget("m", "outputs.ids", ids, ids, np.array([1, 5, 3]), "float32", Budget()).passed
