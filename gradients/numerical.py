"""Numerical differentiation of a scalar function of arrays, on any backend.

All functions here take ``f`` returning a Python float (the scalar loss
``L = <c, F(x)>`` built by :mod:`gradients.check`) and perturb one array at a
time. Perturbed arrays are built on the host and moved back to the array's
own namespace, so ``f`` always sees arrays of the namespace and dtype it was
given.

Step sizes are relative: element ``i`` is moved by ``h * max(1, |x_i|)``.

* ``central``: (f(x+h) - f(x-h)) / 2h, error O(h^2).
* ``richardson``: (4 D(h/2) - D(h)) / 3 from two central differences, error
  O(h^4); the default, because it reaches ~1e-11 relative error in float64
  where a plain central difference stalls near 1e-9.
* ``complex_step``: Im f(x + ih) / h, exact to rounding for real-analytic f
  (no subtraction, so h can be 1e-30).
* ``directional``: the derivative of f along a direction v, for the fast
  random-projection checks.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from reference.backend import array_namespace, from_numpy, to_numpy

__all__ = ["numerical_gradient", "directional_derivative", "complex_step_gradient", "default_step", "NOISE_GAIN"]

Scalar = Callable[[Any], float]

#: How much each method amplifies a rounding error ``d`` of each evaluation of f, in units of d / h:
#: central |d+ - d-| / 2h <= d / h; Richardson (4 D(h/2) - D(h)) / 3 <= (4 * 2d/h + d/h) / 3 = 3 d / h.
NOISE_GAIN = {"central": 1.0, "richardson": 3.0}

#: Relative steps. The error of a difference quotient is truncation plus rounding: central
#: h^2/6 |f3| + eps |f| / h (f3 the third derivative), smallest at h ~ eps^(1/3); Richardson
#: ~h^4 |f5| + 3 eps |f| / h, smallest at h ~ eps^(1/5) (f's derivatives taken of order |f| per unit of a
#: relative step). Rounded: central 6e-6 (float64: eps^(1/3) = 6.1e-6), 5e-3 (float32: 4.9e-3), 0.1
#: (float16: 0.099), 0.2 (bfloat16: 0.20); Richardson 1e-3 (float64: eps^(1/5) = 7.4e-4) and 2e-2 (float32:
#: 4.1e-2, halved so that the larger of its two steps reaches no farther toward a ReLU kink or a bucket
#: boundary than it always has).
_STEPS = {
    "central": {"float64": 6e-6, "float32": 5e-3, "float16": 0.1, "bfloat16": 0.2},
    "richardson": {"float64": 1e-3, "float32": 2e-2, "float16": 0.25, "bfloat16": 0.35},
}


def default_step(dtype: Any, method: str) -> float:
    """The relative step for ``method`` in ``dtype`` (``_STEPS`` says where each number comes from)."""
    if method not in _STEPS:
        raise ValueError(f"method must be 'central' or 'richardson', got {method!r}")
    name = str(dtype).split(".")[-1].strip("'>")  # numpy.float64, <class 'numpy.float32'>, torch.bfloat16
    return _STEPS[method][{"complex128": "float64", "complex64": "float32"}.get(name, name)]


def _derivative(f: Scalar, x: Any, direction: np.ndarray, h: float, method: str) -> float:
    """d/dt f(x + t * direction) at t = 0, by a central difference or Richardson extrapolation."""
    xp = array_namespace(x)
    base = to_numpy(x)

    def at(t: float) -> float:
        return f(from_numpy(base + t * direction, xp, x.dtype))

    def central(step: float) -> float:
        return (at(step) - at(-step)) / (2 * step)

    if method == "central":
        return central(h)
    if method == "richardson":
        return (4 * central(h / 2) - central(h)) / 3
    raise ValueError(f"method must be 'central' or 'richardson', got {method!r}")


def numerical_gradient(f: Scalar, x: Any, *, h: float | None = None, method: str = "richardson",
                       indices: list[tuple[int, ...]] | None = None) -> np.ndarray:
    """The gradient of scalar ``f`` at ``x``, element by element, as a NumPy array.

    For a complex ``x`` the result is ``dL/dRe(x) + i dL/dIm(x)`` (the oracle's
    convention, DESIGN.md), from perturbing real and imaginary parts separately.
    ``indices`` restricts the work to some elements (others are NaN).
    """
    host = to_numpy(x)
    h = default_step(x.dtype, method) if h is None else h
    is_complex = np.iscomplexobj(host)
    grad = np.full(host.shape, np.nan, dtype=host.dtype)
    for idx in indices if indices is not None else list(np.ndindex(*host.shape)):
        scale = h * max(1.0, float(abs(host[idx])))
        unit = np.zeros(host.shape, dtype=host.dtype)
        unit[idx] = 1.0
        value: complex = _derivative(f, x, unit, scale, method)
        if is_complex:
            unit[idx] = 1j
            value = value + 1j * _derivative(f, x, unit, scale, method)
        grad[idx] = value
    return grad


def directional_derivative(f: Scalar, x: Any, direction: np.ndarray, *, h: float | None = None,
                           method: str = "richardson") -> float:
    """d/dt f(x + t v) at t = 0 for a host direction ``v`` of x's shape (real part only for complex x)."""
    h = default_step(x.dtype, method) if h is None else h
    host = to_numpy(x)
    scale = h * max(1.0, float(np.max(np.abs(host))) if host.size else 1.0)
    return _derivative(f, x, np.asarray(direction), scale, method)


def complex_step_gradient(f: Callable[[Any], Any], x: Any, *, h: float = 1e-30) -> np.ndarray:
    """The gradient of a real-analytic scalar ``f`` at real ``x`` by the complex step.

    ``f`` must accept a complex array and return a complex scalar whose
    imaginary part carries the derivative: dL/dx_i = Im f(x + i h e_i) / h.
    No subtraction happens, so the result is exact to rounding. ``f`` must use
    only analytic operations (no abs, no comparisons on the perturbed value).
    """
    xp = array_namespace(x)
    host = to_numpy(x).astype(np.complex128)
    grad = np.empty(host.shape, dtype=np.float64)
    for idx in np.ndindex(*host.shape):
        bumped = host.copy()
        bumped[idx] += 1j * h
        grad[idx] = complex(f(from_numpy(bumped, xp, xp.complex128))).imag / h
    return grad
