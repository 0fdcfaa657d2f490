"""The gradient checker catches broken backward passes and names the broken tensor.

Each deliberately broken backward below is a building block's correct backward
with one realistic mistake: a dropped term, a transposed weight gradient, a
sign flip, a gradient off by 0.1 %, a missing gradient, a wrong dtype. Both
modes (full: every element; fast: random directions) must fail on each and
name exactly the broken tensor, and pass on the correct backward. The command
line must exit 1 on a broken registered mechanism and 0 on good ones.

Also the numerical differentiation itself (gradients.numerical): Richardson
extrapolation beats a central difference by orders of magnitude, the complex
step is exact to rounding, and complex inputs get dL/dRe + i dL/dIm.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path
from typing import Callable

import numpy as np
import pytest

from gradients.__main__ import main as gradients_main
from gradients.check import check_mechanism
from gradients.numerical import complex_step_gradient, numerical_gradient
from reference import registry
from reference.backend import array_namespace, to_numpy
from reference.nn.layer_norm import init_layer_norm, layer_norm_backward, layer_norm_forward
from reference.nn.linear import init_linear, linear_backward, linear_forward
from reference.nn.softmax import softmax_backward, softmax_forward
from reference.random import generator, normal
from reference.registry import Case, Mechanism

ROOT = Path(__file__).resolve().parents[1]
MODES = ["full", "fast"]


# ---------------------------------------------------------------- broken mechanisms


def _ln_example(seed, dtype, xp):
    rng = generator(seed)
    return Case(inputs={"x": normal(rng, (2, 3, 5), xp=xp, dtype=dtype)}, params=init_layer_norm(rng, 5, xp=xp, dtype=dtype))


def _ln_forward(case):
    y, cache = layer_norm_forward(case.inputs["x"], case.params["gamma"], case.params["beta"])
    return {"y": y}, cache


def _ln_good(cache, cot):
    dx, grads = layer_norm_backward(cot["y"], cache)
    return {"x": dx, **grads}


def _ln_dropped_term(cache, cot):
    """Layer norm backward without the -xhat * mean(g * xhat) term (the variance path)."""
    xp = array_namespace(cot["y"])
    xhat, inv_std, gamma = cache
    g = cot["y"] * gamma
    dx = (g - xp.mean(g, axis=-1, keepdims=True)) * inv_std
    _, grads = layer_norm_backward(cot["y"], cache)
    return {"x": dx, **grads}


def _linear_example(d_in: int, d_out: int):
    def example(seed, dtype, xp):
        rng = generator(seed)
        return Case(inputs={"x": normal(rng, (2, 3, d_in), xp=xp, dtype=dtype)},
                    params=init_linear(rng, d_in, d_out, xp=xp, dtype=dtype))
    return example


def _linear_forward(case):
    y, cache = linear_forward(case.inputs["x"], case.params["w"], case.params["b"])
    return {"y": y}, cache


def _linear_good(cache, cot):
    dx, grads = linear_backward(cot["y"], cache)
    return {"x": dx, **grads}


def _linear_transposed_dw(cache, cot):
    xp = array_namespace(cot["y"])
    out = _linear_good(cache, cot)
    return {**out, "w": xp.matrix_transpose(out["w"])}


def _linear_missing_db(cache, cot):
    out = _linear_good(cache, cot)
    del out["b"]
    return out


def _linear_wrong_dtype_dx(cache, cot):
    xp = array_namespace(cot["y"])
    out = _linear_good(cache, cot)
    return {**out, "x": xp.astype(out["x"], xp.float32)}


def _linear_scaled_db(cache, cot):
    out = _linear_good(cache, cot)
    return {**out, "b": out["b"] * 1.001}


def _softmax_example(seed, dtype, xp):
    return Case(inputs={"z": normal(generator(seed), (2, 3, 5), xp=xp, dtype=dtype, scale=2.0)}, params={})


def _softmax_forward(case):
    p, cache = softmax_forward(case.inputs["z"])
    return {"p": p}, cache


def _softmax_sign_flip(cache, cot):
    return {"z": -softmax_backward(cot["p"], cache)}


def _mech(name: str, example: Callable, forward: Callable, backward: Callable) -> Mechanism:
    return Mechanism(f"nn.test_{name}", "test", "nn", example, forward, backward)


SQUARE, WIDE = _linear_example(5, 5), _linear_example(5, 7)

# (mechanism, the tensor that must be named, words the failure's description must contain)
BROKEN = {
    "layer_norm_dropped_term": (_mech("ln_dropped", _ln_example, _ln_forward, _ln_dropped_term), "x", "gradient of x"),
    "transposed_square_weight": (_mech("lin_t_sq", SQUARE, _linear_forward, _linear_transposed_dw), "w", "gradient of w"),
    "transposed_wide_weight": (_mech("lin_t_wide", WIDE, _linear_forward, _linear_transposed_dw), "w", "shape (7, 5)"),
    "softmax_sign_flip": (_mech("sm_sign", _softmax_example, _softmax_forward, _softmax_sign_flip), "z", "gradient of z"),
    "bias_scaled_1.001": (_mech("lin_scaled", WIDE, _linear_forward, _linear_scaled_db), "b", "gradient of b"),
    "missing_bias_gradient": (_mech("lin_missing", WIDE, _linear_forward, _linear_missing_db), "b", "no gradient for 'b'"),
    "float32_input_gradient": (_mech("lin_dtype", WIDE, _linear_forward, _linear_wrong_dtype_dx), "x", "dtype"),
}

GOOD = {
    "layer_norm": _mech("ln_good", _ln_example, _ln_forward, _ln_good),
    "linear_square": _mech("lin_good_sq", SQUARE, _linear_forward, _linear_good),
    "linear_wide": _mech("lin_good_wide", WIDE, _linear_forward, _linear_good),
}


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("case_name", list(BROKEN))
def test_broken_backward_is_caught_and_named(case_name: str, mode: str, backend_name: str) -> None:
    mechanism, tensor, words = BROKEN[case_name]
    report = check_mechanism(mechanism, backend=backend_name, mode=mode)
    assert not report.passed, f"{case_name} ({mode} mode) was not caught:\n{report.table()}"
    failed = [r.tensor for r in report.failures]
    assert failed == [tensor], f"{case_name} ({mode}): failures name {failed}, expected [{tensor!r}]\n{report.table()}"
    message = report.failures[0].describe()
    assert words in message, f"{case_name} ({mode}): {message!r} does not say {words!r}"
    assert tensor in message and mechanism.name in message
    assert "FAIL" in report.table()


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("good", list(GOOD))
def test_correct_backward_passes(good: str, mode: str) -> None:
    report = check_mechanism(GOOD[good], mode=mode)
    assert report.passed, report.table()


def _linear_scaled_db_10pc(cache, cot):
    out = _linear_good(cache, cot)
    return {**out, "b": out["b"] * 1.1}


#: In float32 the rtol is 3e-2, so the 0.1 % bias error is below what a float32 check resolves (a 10 % one is not),
#: and a float32 gradient is right there.
BROKEN_FLOAT32 = {k: v for k, v in BROKEN.items() if k not in ("bias_scaled_1.001", "float32_input_gradient")} | {
    "bias_scaled_1.1": (_mech("lin_scaled_10", WIDE, _linear_forward, _linear_scaled_db_10pc), "b", "gradient of b"),
}


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("case_name", list(BROKEN_FLOAT32))
def test_broken_backward_is_caught_in_float32(case_name: str, mode: str) -> None:
    """The float32 floors and steps come from the measured rounding noise; they must not hide a real bug."""
    mechanism, tensor, words = BROKEN_FLOAT32[case_name]
    report = check_mechanism(mechanism, dtype="float32", mode=mode)
    assert [r.tensor for r in report.failures] == [tensor], f"{case_name} ({mode}, float32):\n{report.table()}"
    assert words in report.failures[0].describe()


#: Mechanisms in which every tensor in turn gets a wrong gradient (a few, with small, medium and complex tensors).
PLANTED = ["nn.attention", "attention.lsh", "nn.encoder_layer", "embeddings.complex_order"]


def _planted(mechanism: Mechanism, tensor: str) -> Mechanism:
    """The mechanism with ``tensor``'s gradient 0.1 % too large (or, where it is zero by structure, 1e-6 of the
    largest gradient's size added): the smallest realistic slip, which fast mode must still catch."""
    def backward(cache, cot):
        grads = dict(mechanism.backward(cache, cot))
        xp = array_namespace(grads[tensor])
        largest = max(float(np.max(np.abs(to_numpy(g)))) for g in grads.values())
        g = grads[tensor]
        if float(np.max(np.abs(to_numpy(g)))) > 1e-8 * largest:
            grads[tensor] = g * 1.001
        else:
            grads[tensor] = g + 1e-6 * largest * xp.ones_like(g)
        return grads

    return dataclasses.replace(mechanism, name=f"{mechanism.name}_planted", backward=backward)


@pytest.mark.parametrize("name", PLANTED)
def test_fast_mode_catches_a_bug_in_every_single_tensor(name: str) -> None:
    """One direction per tensor is enough: a wrong gradient of any one tensor fails that tensor, and only it."""
    mechanism = registry.get(name)
    good = check_mechanism(mechanism, mode="fast")
    assert good.passed, good.table()
    for tensor in [r.tensor for r in good.results]:
        report = check_mechanism(_planted(mechanism, tensor), mode="fast")
        failed = [r.tensor for r in report.failures]
        assert failed == [tensor], f"{name}: bug planted in {tensor}, failures name {failed}\n{report.table()}"


def test_evaluation_count() -> None:
    """Fast mode: the base point, the backward's forward, the noise measurement, and 2 per tensor (central)."""
    mechanism = GOOD["linear_wide"]
    fast = check_mechanism(mechanism, mode="fast")
    assert fast.evaluations == 3 + 2 * 3, fast.evaluations
    full = check_mechanism(mechanism, mode="full")
    elements = 2 * 3 * 5 + 5 * 7 + 7  # x, w, b
    assert full.evaluations == 3 + 4 * elements, full.evaluations
    assert f"{full.evaluations} forward evaluations" in full.table()


def test_scaled_gradient_error_is_measured() -> None:
    """A gradient 0.1 % too large shows a relative error of 1e-3, not just 'failed'."""
    report = check_mechanism(BROKEN["bias_scaled_1.001"][0], mode="full")
    (failure,) = report.failures
    assert failure.max_rel_error == pytest.approx(1e-3 / 1.001, rel=1e-4), failure.describe()
    assert failure.analytic == pytest.approx(1.001 * failure.numeric, rel=1e-9), failure.describe()


# ---------------------------------------------------------------- the command line


def test_cli_exits_1_and_names_the_tensor(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    """In-process, with a broken mechanism added to the registry for this test only."""
    mechanism = BROKEN["layer_norm_dropped_term"][0]
    monkeypatch.setitem(registry._REGISTRY, mechanism.name, mechanism)
    assert gradients_main(["check", mechanism.name]) == 1
    captured = capsys.readouterr()
    assert "FAIL" in captured.out
    assert f"FAILED: {mechanism.name}: gradient of x" in captured.err, captured.err
    assert gradients_main(["check", mechanism.name, "--mode", "fast"]) == 1


def test_cli_exits_0_for_good_mechanisms(capsys: pytest.CaptureFixture) -> None:
    assert gradients_main(["check", "nn.linear", "nn.layer_norm", "nn.softmax"]) == 0
    captured = capsys.readouterr()
    assert "FAIL" not in captured.out and captured.err == ""


_SUBPROCESS = """
import sys
from reference.registry import Mechanism, register, get
from reference.nn.linear import linear_backward
from reference.backend import array_namespace
good = get("nn.linear")
def backward(cache, cot):
    dx, grads = linear_backward(cot["y"], cache)
    xp = array_namespace(dx)
    return {"x": dx, "w": -grads["w"], "b": grads["b"]}
register(Mechanism("nn.test_broken_linear", "test", "nn", good.example, good.forward, backward))
from gradients.__main__ import main
sys.exit(main(["check", *sys.argv[1:]]))
"""


def _run(args: list[str]) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-c", _SUBPROCESS, *args], capture_output=True, text=True, cwd=ROOT,
                          env=env, timeout=120)


def test_cli_subprocess_exit_status() -> None:
    """A real process: exit 1 naming the tensor for a registered broken mechanism, exit 0 for good ones."""
    bad = _run(["nn.test_broken_linear", "nn.linear"])
    assert bad.returncode == 1, bad.stdout + bad.stderr
    assert "FAILED: nn.test_broken_linear: gradient of w" in bad.stderr, bad.stderr
    assert "nn.test_broken_linear: gradient of x" not in bad.stderr
    good = _run(["nn.linear"])
    assert good.returncode == 0, good.stdout + good.stderr


# ---------------------------------------------------------------- gradients.numerical


def test_richardson_beats_central_on_sin() -> None:
    xp = pytest.importorskip("array_api_compat.numpy")
    x = xp.asarray(np.linspace(-2.0, 2.5, 7))
    exact = np.cos(to_numpy(x))

    def f(a):
        return float(np.sum(np.sin(to_numpy(a))))

    for h in (1e-2, 1e-3):
        central = np.max(np.abs(numerical_gradient(f, x, method="central", h=h) - exact))
        richardson = np.max(np.abs(numerical_gradient(f, x, method="richardson", h=h) - exact))
        assert richardson * 100 <= central, f"h={h}: central error {central:.3g}, Richardson error {richardson:.3g}"
    # Each at its default step: Richardson reaches ~1e-12, the central difference stalls near 1e-10.
    central = np.max(np.abs(numerical_gradient(f, x, method="central") - exact))
    richardson = np.max(np.abs(numerical_gradient(f, x, method="richardson") - exact))
    print(f"default steps: central error {central:.2e}, Richardson error {richardson:.2e}")
    assert richardson < 1e-11, f"Richardson error {richardson:.3g}"
    assert richardson < central, f"central error {central:.3g}, Richardson error {richardson:.3g}"


def test_complex_step_is_exact(xp) -> None:
    x = xp.asarray(np.linspace(-1.5, 2.0, 6), dtype=xp.float64)

    def f(a):  # analytic: sin(a) exp(a), summed
        return xp.sum(xp.sin(a) * xp.exp(a))

    host = to_numpy(x)
    exact = np.cos(host) * np.exp(host) + np.sin(host) * np.exp(host)
    grad = complex_step_gradient(f, x)
    err = np.max(np.abs(grad - exact) / np.maximum(np.abs(exact), 1.0))
    assert err <= 1e-14, f"complex step error {err:.3g}: got {grad}, exact {exact}"


def test_complex_input_gradient_is_dre_plus_i_dim(xp) -> None:
    """L = sum(x^2 y + sin x + y) with z = x + i y: the gradient is (2xy + cos x) + i (x^2 + 1)."""
    rng = np.random.default_rng(0)
    host = rng.standard_normal(5) + 1j * rng.standard_normal(5)
    z = xp.asarray(host, dtype=xp.complex128)

    def f(a):
        x, y = xp.real(a), xp.imag(a)
        return float(xp.sum(x * x * y + xp.sin(x) + y))

    x, y = host.real, host.imag
    exact = (2 * x * y + np.cos(x)) + 1j * (x * x + 1)
    grad = numerical_gradient(f, z)
    assert grad.dtype == np.complex128
    err = np.max(np.abs(grad - exact))
    assert err < 1e-9, f"complex gradient error {err:.3g}: got {grad}, expected {exact}"
    assert np.max(np.abs(grad.real - exact.real)) < 1e-9 and np.max(np.abs(grad.imag - exact.imag)) < 1e-9
