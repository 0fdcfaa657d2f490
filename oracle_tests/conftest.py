"""Shared fixtures and assertions for the oracle's test suite.

The ``xp`` fixture runs a test once per array backend (STYLE.md, tier (b)):
``numpy``, ``array_api_strict`` (the CPU stand-in that proves CuPy will work),
``torch`` (through array-api-compat, on cuda where present; skipped where torch
is absent) and ``cupy`` where it is importable (skipped otherwise)::

    def test_something(xp):
        x = xp.asarray([1.0, 2.0], dtype=xp.float64)

``backend_name`` is the same parameter as a string, for APIs that take a
backend by name (``check_mechanism(..., backend=backend_name)``).

Assertions in the style of SciPy's ``xp_assert_close``: they check the
namespace, dtype and shape before the values, and a failure message prints the
worst element with both numbers. Import them from a test file with::

    from conftest import xp_assert_close, assert_array_like
"""

from __future__ import annotations

import importlib.util
from typing import Any

import numpy as np
import pytest

from reference.backend import array_namespace, namespace, to_numpy

_HAS_CUPY = importlib.util.find_spec("cupy") is not None
_HAS_TORCH = importlib.util.find_spec("torch") is not None

#: Every backend the suite knows, torch and cupy skipped where absent.
BACKEND_PARAMS = [
    pytest.param("numpy", id="numpy"),
    pytest.param("array_api_strict", id="array_api_strict"),
    pytest.param("torch", id="torch", marks=pytest.mark.skipif(not _HAS_TORCH, reason="torch is not installed")),
    pytest.param("cupy", id="cupy", marks=pytest.mark.skipif(not _HAS_CUPY, reason="CuPy is not installed")),
]

#: The two CPU backends, for tests whose runtime must stay bounded.
CPU_BACKENDS = ["numpy", "array_api_strict"]


@pytest.fixture(params=BACKEND_PARAMS)
def backend_name(request: pytest.FixtureRequest) -> str:
    """The backend's name: "numpy", "array_api_strict", "torch" or "cupy"."""
    return request.param


@pytest.fixture
def xp(backend_name: str):
    """The array namespace of ``backend_name`` (reference.backend.namespace)."""
    return namespace(backend_name)


def _namespace_name(ns: Any) -> str:
    name = getattr(ns, "__name__", repr(ns))
    return name.replace("array_api_compat.", "")


def assert_array_like(actual: Any, *, xp: Any = None, dtype: Any = None, shape: tuple[int, ...] | None = None,
                      name: str = "array") -> None:
    """``actual`` lives in namespace ``xp`` and has ``dtype`` and ``shape`` (each checked when given)."""
    try:
        got_ns = array_namespace(actual)
    except TypeError:
        raise AssertionError(f"{name}: expected an array, got {type(actual).__name__}") from None
    if xp is not None and got_ns is not xp:
        raise AssertionError(f"{name}: namespace {_namespace_name(got_ns)}, expected {_namespace_name(xp)}")
    if dtype is not None and actual.dtype != dtype:
        raise AssertionError(f"{name}: dtype {actual.dtype}, expected {dtype}")
    if shape is not None and tuple(actual.shape) != tuple(shape):
        raise AssertionError(f"{name}: shape {tuple(actual.shape)}, expected {tuple(shape)}")


def xp_assert_close(actual: Any, desired: Any, *, rtol: float = 1e-12, atol: float = 0.0, xp: Any = None,
                    check_namespace: bool = True, check_dtype: bool = True, check_shape: bool = True,
                    name: str = "array") -> None:
    """``|actual - desired| <= atol + rtol * |desired|`` elementwise, after checking namespace, dtype and shape.

    ``desired`` may be an array of any backend (or a NumPy array / Python
    number when the namespace and dtype checks are switched off). ``xp``
    defaults to ``desired``'s namespace. The message names the worst element
    and prints both values and the error.
    """
    if check_namespace:
        want_ns = xp if xp is not None else array_namespace(desired)
        assert_array_like(actual, xp=want_ns, name=name)
    if check_dtype:
        if actual.dtype != desired.dtype:
            raise AssertionError(f"{name}: dtype {actual.dtype}, expected {desired.dtype}")
    a = np.asarray(to_numpy(actual)) if not np.isscalar(actual) else np.asarray(actual)
    d = np.asarray(to_numpy(desired)) if not np.isscalar(desired) else np.asarray(desired)
    if check_shape and a.shape != d.shape:
        raise AssertionError(f"{name}: shape {a.shape}, expected {d.shape}")
    a, d = np.broadcast_arrays(a, d)
    if a.size == 0:
        return
    err = np.abs(a.astype(np.complex128) - d.astype(np.complex128))
    allowed = atol + rtol * np.abs(d)
    nan_ok = np.isnan(a) & np.isnan(d)
    bad = ~((err <= allowed) | nan_ok)
    if np.any(bad):
        excess = np.where(bad, np.nan_to_num(err / np.maximum(allowed, 1e-300), nan=np.inf), -1.0)
        worst = np.unravel_index(int(np.argmax(excess)), a.shape)
        raise AssertionError(
            f"{name}: {int(np.sum(bad))} of {a.size} elements differ beyond atol={atol:g}, rtol={rtol:g}; "
            f"worst at {tuple(int(i) for i in worst)}: actual {a[worst].item()!r}, desired {d[worst].item()!r}, "
            f"abs error {float(err[worst]):.3g} (max abs error {float(np.nanmax(err)):.3g})")


def max_abs_diff(a: Any, b: Any) -> float:
    """max |a - b| on the host (for messages and recorded measurements)."""
    a, b = np.asarray(to_numpy(a)), np.asarray(to_numpy(b))
    return float(np.max(np.abs(a - b))) if a.size else 0.0
