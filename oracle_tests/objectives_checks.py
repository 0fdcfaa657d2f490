"""Cheap array-api-strict checks shared by the objectives' test files.

The full finite-difference check on array-api-strict takes about a minute per objective (the CLI
``python -m gradients check NAME --backend array_api_strict`` runs it). The suite instead proves
the strict path two cheaper ways: (1) its outputs and gradients equal NumPy's, whose gradients the
full check verifies element by element; (2) one joint dot-product test on strict itself: for a
random direction v over every tensor at once, <grad, v> equals the directional derivative of
L = sum_k <c_k, F_k> by Richardson-extrapolated central differences.
"""

from __future__ import annotations

import numpy as np

from gradients.check import random_cotangents
from reference.backend import from_numpy, namespace, to_numpy
from reference.registry import get


def _run(name: str, backend: str):
    xp = namespace(backend)
    mech = get(name)
    case = mech.example(0, xp.float64, xp)
    outputs, cache = mech.forward(case)
    cot = random_cotangents(outputs, 0)
    return mech, case, outputs, cot, mech.backward(cache, cot)


def assert_strict_matches_numpy(name: str) -> float:
    """Outputs and gradients on array-api-strict equal NumPy's to 1e-12 relative; returns the worst."""
    _, _, out_np, _, grads_np = _run(name, "numpy")
    _, _, out_st, _, grads_st = _run(name, "array_api_strict")
    worst = 0.0
    for label, a, b in [*(("outputs." + k, out_np[k], out_st[k]) for k in out_np),
                        *(("grads." + k, grads_np[k], grads_st[k]) for k in grads_np)]:
        a, b = to_numpy(a).astype(np.float64), to_numpy(b).astype(np.float64)
        scale = max(1.0, float(np.max(np.abs(a)))) if a.size else 1.0
        err = float(np.max(np.abs(a - b))) / scale if a.size else 0.0
        assert err <= 1e-12, f"{name}: {label} differs between numpy and array_api_strict by {err:.3g} (relative)"
        worst = max(worst, err)
    return worst


def assert_joint_directional_derivative(name: str, backend: str = "array_api_strict", h: float = 1e-4) -> float:
    """<grad, v> equals d/dt L(x + t v) for one random direction over every differentiable tensor."""
    xp = namespace(backend)
    mech, case, outputs, cot, grads = _run(name, backend)
    rng = np.random.default_rng(11)
    base = {k: to_numpy(v) for k, v in case.differentiable.items()}
    direction = {k: rng.standard_normal(v.shape) for k, v in base.items()}

    def loss(t: float) -> float:
        moved = {k: from_numpy(base[k] + t * direction[k], xp, xp.float64) for k in base}
        out = mech.run(case.replace(moved))
        return sum(float(np.sum(to_numpy(out[k]) * to_numpy(c))) for k, c in cot.items())

    def central(step: float) -> float:
        return (loss(step) - loss(-step)) / (2 * step)

    numeric = (4 * central(h / 2) - central(h)) / 3
    analytic = sum(float(np.sum(to_numpy(grads[k]) * direction[k])) for k in base)
    rel = abs(analytic - numeric) / max(abs(analytic), abs(numeric), 1e-30)
    assert rel < 1e-7, f"{name} [{backend}]: <grad, v> = {analytic!r}, directional derivative {numeric!r} ({rel:.3g})"
    return rel
