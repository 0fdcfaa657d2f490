"""Every registered building block (``nn.*``) against finite differences, in float64.

For each mechanism and each CPU backend:

* full mode (every element, Richardson-extrapolated central differences) passes,
  and the worst relative error is below 1e-7 (printed, and recorded in the
  test's ``user_properties`` so ``--junitxml`` keeps the measurement);
* fast mode (random directions, the dot-product VJP test) passes;
* every gradient exists and keeps its input's shape, dtype and namespace.

The names come from the registry, so a new building block is checked the
moment it registers.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import CPU_BACKENDS, assert_array_like

from gradients.check import check_mechanism, random_cotangents
from reference.backend import namespace, to_numpy
from reference.registry import all_mechanisms

NN_NAMES = [name for name in all_mechanisms() if name.startswith("nn.")]
WORST_REL = 1e-7
#: Full mode on NumPy checks every element. array-api-strict is 10-50x slower (the portable erf
#: series inside GELU costs ~560 array operations a call), so there a mechanism gets a budget of
#: about STRICT_BUDGET elements spread evenly over its tensors (at least one each), and
#: test_strict_matches_numpy proves every output and gradient element equal to NumPy's, whose
#: full check covers every element. `python -m gradients check --backend array_api_strict`
#: remains the exhaustive run on that backend.
STRICT_BUDGET = 32


def _max_elements(name: str, backend: str) -> int | None:
    if backend == "numpy":
        return None
    case = all_mechanisms()[name].example(0, namespace("numpy").float64, namespace("numpy"))
    return max(1, STRICT_BUDGET // len(case.differentiable))


def test_building_blocks_are_registered() -> None:
    for name in ("nn.linear", "nn.layer_norm", "nn.gelu", "nn.gelu_tanh", "nn.relu", "nn.softmax",
                 "nn.log_softmax", "nn.dropout", "nn.embedding"):
        assert name in NN_NAMES, f"{name} is not registered; registered: {NN_NAMES}"


def _gradient_scales(name: str, backend: str) -> dict[str, float]:
    """max |analytic gradient| per tensor, with the cotangents the checker uses (seed 0)."""
    xp = namespace(backend)
    mechanism = all_mechanisms()[name]
    case = mechanism.example(0, xp.float64, xp)
    outputs, cache = mechanism.forward(case)
    grads = mechanism.backward(cache, random_cotangents(outputs, seed=0))
    return {k: float(np.max(np.abs(to_numpy(grads[k])))) if grads[k].size else 0.0 for k in case.differentiable}


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("name", NN_NAMES)
def test_full_mode(name: str, backend: str, record_property) -> None:
    """Full mode passes; the worst relative error is below 1e-7.

    Two relative errors are measured. ``normwise``: each tensor's max abs
    error over the mechanism's largest gradient element (well defined even
    for a gradient that is exactly zero). ``elementwise``: the checker's
    per-element relative error, over tensors whose gradient is not
    structurally zero (attention's key bias ``b_k`` shifts every score of a
    row equally, so softmax cancels it and its exact gradient is 0; there the
    finite differences measure only rounding noise near 1e-12).
    """
    report = check_mechanism(all_mechanisms()[name], backend=backend, dtype="float64", mode="full",
                             max_elements=_max_elements(name, backend))
    assert report.results, f"{name}: nothing was checked"
    assert report.passed, "\n".join(f.describe() for f in report.failures) + "\n" + report.table()
    scales = _gradient_scales(name, backend)
    overall = max(scales.values())
    assert overall > 0, f"{name}: every gradient is zero, the check proves nothing"
    normwise = max(report.results, key=lambda r: r.max_abs_error)
    normwise_rel = normwise.max_abs_error / overall
    nonzero = [r for r in report.results if scales[r.tensor] > 1e-6 * overall]
    elementwise = max(nonzero, key=lambda r: r.max_rel_error)
    zero = sorted(set(scales) - {r.tensor for r in nonzero})
    record_property("worst_rel_error_normwise", normwise_rel)
    record_property("worst_rel_error_elementwise", elementwise.max_rel_error)
    print(f"{name} [{backend}]: normwise rel error {normwise_rel:.2e} ({normwise.tensor}), elementwise rel error "
          f"{elementwise.max_rel_error:.2e} ({elementwise.tensor} at {elementwise.worst}), max abs error "
          f"{normwise.max_abs_error:.2e}" + (f", structurally zero: {zero}" if zero else ""))
    assert normwise_rel < WORST_REL, (f"{name} [{backend}]: normwise relative error {normwise_rel:.3g} >= "
                                      f"{WORST_REL:g} ({normwise.describe()}; gradient scale {overall:.3g})")
    assert elementwise.max_rel_error < WORST_REL, (
        f"{name} [{backend}]: elementwise relative error {elementwise.max_rel_error:.3g} >= {WORST_REL:g} "
        f"({elementwise.describe()})")


@pytest.mark.parametrize("name", NN_NAMES)
def test_fast_mode(name: str) -> None:
    """The random-direction (dot-product VJP) mode passes too (NumPy; the mode is backend-agnostic)."""
    report = check_mechanism(all_mechanisms()[name], backend="numpy", dtype="float64", mode="fast", seed=3)
    assert report.passed, "\n".join(f.describe() for f in report.failures) + "\n" + report.table()


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("name", NN_NAMES)
def test_gradients_keep_shape_dtype_namespace(name: str, backend: str) -> None:
    xp = namespace(backend)
    mechanism = all_mechanisms()[name]
    case = mechanism.example(0, xp.float64, xp)
    outputs, cache = mechanism.forward(case)
    for out_name, out in outputs.items():
        assert_array_like(out, xp=xp, name=f"{name} output {out_name}")
    grads = mechanism.backward(cache, random_cotangents(outputs, seed=1))
    expected = case.differentiable
    assert set(grads) >= set(expected), f"{name}: backward returned {sorted(grads)}, needs {sorted(expected)}"
    for tensor, x in expected.items():
        assert_array_like(grads[tensor], xp=xp, dtype=x.dtype, shape=tuple(x.shape), name=f"{name} d{tensor}")


@pytest.mark.parametrize("name", NN_NAMES)
def test_strict_matches_numpy(name: str) -> None:
    """array-api-strict gives NumPy's outputs and gradients (same example, same cotangents) to 1e-12."""
    mechanism = all_mechanisms()[name]
    results = {}
    for backend in CPU_BACKENDS:
        xp = namespace(backend)
        case = mechanism.example(0, xp.float64, xp)
        outputs, cache = mechanism.forward(case)
        grads = mechanism.backward(cache, random_cotangents(outputs, seed=5))
        results[backend] = {**{f"output {k}": v for k, v in outputs.items()},
                            **{f"d{k}": grads[k] for k in case.differentiable}}
    for key, want in results["numpy"].items():
        got = to_numpy(results["array_api_strict"][key])
        want = to_numpy(want)
        assert got.shape == want.shape, f"{name} {key}: shape {got.shape} on array_api_strict, {want.shape} on numpy"
        if got.size and got.dtype.kind == "f":
            diff = np.abs(got - want)
            worst = np.unravel_index(int(np.argmax(diff)), diff.shape)
            assert diff[worst] <= 1e-12 * max(1.0, float(np.max(np.abs(want)))), (
                f"{name} {key} at {tuple(map(int, worst))}: array_api_strict {got[worst]!r}, numpy {want[worst]!r}")
        else:
            assert np.array_equal(got, want), f"{name} {key}: array_api_strict and numpy differ"
