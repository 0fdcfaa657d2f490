"""Compare another implementation with the oracle: PyTorch, a NumPy callable, or fixture files.

The report is the gradient checker's (:class:`~gradients.check.Report`), one
row per tensor, named as in the fixtures: ``outputs.y`` for a forward output,
``grads.w`` for a gradient. In each row ``analytic`` is the other
implementation's value and ``numeric`` the oracle's (so ``describe()`` prints
both numbers of the worst element).

An element passes when::

    |actual - expected| <= rtol * |expected| + atol * max(1, scale)

where ``scale`` is the largest ``|expected|`` of the tensor (the gradient
checker's rule: ``atol`` is relative to the tensor's size). Integer and
boolean tensors (bucket ids, decisions) must be equal exactly.

Gradients are those of ``L = sum_k Re(sum(conj(c_k) * F_k))`` with the oracle's
random cotangents ``c_k`` (:func:`gradients.check.random_cotangents`), so a
complex gradient is ``dL/dRe(z) + i dL/dIm(z)``: exactly what PyTorch leaves in
``.grad`` for a real ``L``. No conjugation is needed in either direction.

Entry points:

* :func:`compare_torch`: a PyTorch function of the mechanism's example,
  differentiated by autograd.
* :func:`compare_arrays`: two dicts of arrays.
* :func:`compare_with_fixture`: a NumPy callable (or the oracle itself) against
  a golden fixture written by ``python -m reference export``.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np

from reference.backend import dtype_of, namespace, to_numpy
from reference.fixtures import Fixture, load_fixture
from reference.registry import Mechanism, get, oracle_run
from reference.tolerances import COMPARE_TOLERANCES

from .check import Report, TensorResult, random_cotangents

__all__ = ["COMPARE_TOLERANCES", "ComparisonResult", "compare_arrays", "compare_torch", "compare_with_fixture"]



class ComparisonResult(TensorResult):
    """A :class:`TensorResult` whose message says "oracle" and "other" instead of "numeric" and "analytic"."""

    def describe(self) -> str:
        if self.note:
            return f"{self.mechanism}: {self.tensor}: {self.note}"
        return (f"{self.mechanism}: {self.tensor}{list(self.shape)} at {self.worst}: "
                f"other {self.analytic!r}, oracle {self.numeric!r} "
                f"(abs error {self.max_abs_error:.3g}, rel error {self.max_rel_error:.3g})")


def _dtype_key(arrays: Mapping[str, Any]) -> str:
    for value in arrays.values():
        host = to_numpy(value)
        if host.dtype.kind in "fc":
            return "float32" if host.dtype.itemsize <= 4 or host.dtype == np.complex64 else "float64"
    return "float64"


def _scalar(v: Any) -> float | complex | int | bool:
    if isinstance(v, (np.bool_, bool)):
        return bool(v)
    if np.iscomplexobj(v):
        return complex(v)
    if isinstance(v, (np.integer, int)):
        return int(v)
    return float(v)


def _compare_one(name: str, tensor: str, expected: Any, actual: Any, rtol: float, atol: float) -> ComparisonResult:
    e, a = to_numpy(expected), np.asarray(to_numpy(actual))
    shape = tuple(e.shape)

    def fail(note: str) -> ComparisonResult:
        return ComparisonResult(name, tensor, shape, math.inf, math.inf, "-", None, None, False, note)

    if tuple(a.shape) != shape:
        return fail(f"shape {tuple(a.shape)}, the oracle's is {shape}")
    if e.size == 0:
        return ComparisonResult(name, tensor, shape, 0.0, 0.0, "-", None, None, True)
    labels = list(np.ndindex(*shape)) or [()]
    if e.dtype.kind in "biu":  # discrete results must agree exactly
        if a.dtype.kind not in "biuf" or not np.all(np.isfinite(a.astype(np.float64))):
            return fail(f"dtype {a.dtype}, the oracle's is {e.dtype}")
        wrong = (a != e).reshape(-1)
        worst = int(np.argmax(wrong))
        n_wrong = int(np.sum(wrong))
        err = float(np.max(np.abs(a.astype(np.float64) - e.astype(np.float64))))
        return ComparisonResult(name, tensor, shape, err, err, str(labels[worst]), _scalar(a.reshape(-1)[worst]),
                                _scalar(e.reshape(-1)[worst]), n_wrong == 0,
                                "" if n_wrong == 0 else f"{n_wrong} discrete values differ, first at "
                                f"{labels[worst]}: other {a.reshape(-1)[worst]!r}, oracle {e.reshape(-1)[worst]!r}")
    wide = np.complex128 if (np.iscomplexobj(e) or np.iscomplexobj(a)) else np.float64
    e, a = e.astype(wide).reshape(-1), a.astype(wide).reshape(-1)
    both_finite = np.isfinite(e) & np.isfinite(a)
    same_special = ~both_finite & ((e == a) | (np.isnan(e) & np.isnan(a)))
    err = np.where(both_finite, np.abs(a - e), 0.0)
    scale = max(1.0, float(np.max(np.abs(np.where(np.isfinite(e), e, 0.0)))))
    allowed = rtol * np.abs(np.where(both_finite, e, 0.0)) + atol * scale
    badness = np.where(err == 0.0, 0.0, err / np.maximum(allowed, np.finfo(np.float64).tiny))
    badness = np.where(both_finite | same_special, badness, np.inf)
    worst = int(np.argmax(badness))
    rel = err / np.maximum(np.maximum(np.abs(np.where(both_finite, e, 0)), np.abs(np.where(both_finite, a, 0))),
                           atol * scale if atol > 0 else np.finfo(np.float64).tiny)
    passed = bool(np.all(badness <= 1.0))
    note = "" if np.all(both_finite | same_special) else "non-finite value where the oracle differs"
    return ComparisonResult(name, tensor, shape, float(np.max(err)), float(np.max(rel)), str(labels[worst]),
                            _scalar(a[worst]), _scalar(e[worst]), passed, note)


def compare_arrays(name: str, expected: Mapping[str, Any], actual: Mapping[str, Any], *,
                   rtol: float | None = None, atol: float | None = None, prefix: str = "") -> Report:
    """Compare ``actual`` with the oracle's ``expected``, tensor by tensor.

    Every name of ``expected`` must be in ``actual`` with the same shape; extra
    names in ``actual`` are ignored. Defaults: :data:`COMPARE_TOLERANCES` for the
    dtype of ``expected``. ``prefix`` is prepended to tensor names in the report
    (``"outputs."``, ``"grads."``).
    """
    dtype = _dtype_key(expected)
    tol = COMPARE_TOLERANCES[dtype]
    rtol = tol["rtol"] if rtol is None else rtol
    atol = tol["atol"] if atol is None else atol
    report = Report(mode="compare", backend="numpy", dtype=dtype)
    for tensor, value in expected.items():
        label = prefix + tensor
        if tensor not in actual or actual[tensor] is None:
            shape = tuple(to_numpy(value).shape)
            report.results.append(ComparisonResult(name, label, shape, math.inf, math.inf, "-", None, None, False,
                                                   f"missing from the other implementation "
                                                   f"(it gave {sorted(actual)})"))
            continue
        report.results.append(_compare_one(name, label, value, actual[tensor], rtol, atol))
    return report


def _oracle_run(mechanism: Mechanism, seed: int, dtype: str, config: Any = None):
    """The oracle's case, outputs, cotangents and gradients on NumPy."""
    xp = namespace("numpy")
    run = oracle_run(mechanism, mechanism.example(seed, dtype_of(xp, dtype), xp, config), seed)
    return run.case, run.outputs, run.cotangents, run.grads


def _host(t: Any) -> np.ndarray:
    """A torch tensor as a NumPy array (lazy conjugation and negation resolved first)."""
    return t.detach().resolve_conj().resolve_neg().cpu().numpy()


def compare_torch(mechanism_or_name: Mechanism | str,
                  torch_fn: Callable[[dict[str, Any], dict[str, Any], dict[str, Any]], Any], *,
                  seed: int = 0, dtype: str = "float64", rtol: float | None = None,
                  atol: float | None = None) -> Report:
    """Run ``torch_fn`` on the mechanism's seeded example and compare outputs and autograd gradients.

    ``torch_fn(inputs, params, static)`` receives dicts of torch tensors (inputs
    and params are leaves with ``requires_grad=True``; static arrays become
    tensors, also inside lists, tuples and dicts; other
    values are passed as they are) and returns a dict of output tensors keyed
    like the oracle's outputs (or one tensor when the oracle has one output).
    The loss ``sum_k Re(sum(conj(c_k) * out_k))`` with the oracle's cotangents is
    backpropagated by autograd; a leaf that receives no gradient counts as zero.
    """
    import torch

    mechanism = get(mechanism_or_name) if isinstance(mechanism_or_name, str) else mechanism_or_name
    case, outputs, cotangents, grads = _oracle_run(mechanism, seed, dtype)

    def tensor(value: Any, leaf: bool) -> Any:
        t = torch.from_numpy(np.array(to_numpy(value), copy=True))
        return t.requires_grad_(True) if leaf and (t.is_floating_point() or t.is_complex()) else t

    def convert(value: Any) -> Any:
        if hasattr(value, "shape") and hasattr(value, "dtype") and not isinstance(value, np.generic):
            return tensor(value, False)
        if isinstance(value, (list, tuple)):
            return type(value)(convert(v) for v in value)
        if isinstance(value, dict):
            return {k: convert(v) for k, v in value.items()}
        return value

    inputs = {k: tensor(v, True) for k, v in case.inputs.items()}
    params = {k: tensor(v, True) for k, v in case.params.items()}
    static = {k: convert(v) for k, v in case.static.items()}
    result = torch_fn(inputs, params, static)
    if not isinstance(result, Mapping):
        if len(outputs) != 1:
            raise TypeError(f"torch_fn must return a dict with keys {sorted(outputs)}, got {type(result).__name__}")
        result = {next(iter(outputs)): result}
    result = dict(result)
    result = {k: (v if v is None or isinstance(v, torch.Tensor) else torch.as_tensor(v)) for k, v in result.items()}
    actual_out = {k: _host(v) for k, v in result.items() if v is not None}
    report = compare_arrays(mechanism.name, outputs, actual_out, rtol=rtol, atol=atol, prefix="outputs.")

    leaves = {**inputs, **params}
    differentiable = {k: v for k, v in leaves.items() if v.requires_grad}
    loss = None
    for key, c in cotangents.items():
        out = result.get(key)
        if out is None or not (out.is_floating_point() or out.is_complex()) or not out.requires_grad:
            continue
        if tuple(out.shape) != tuple(c.shape):
            continue  # the output comparison has already failed on the shape
        term = torch.sum(torch.real(torch.conj(torch.from_numpy(to_numpy(c))) * out)) if out.is_complex() \
            else torch.sum(torch.from_numpy(to_numpy(c)) * out)
        loss = term if loss is None else loss + term
    actual_grads: dict[str, Any] = {}
    if differentiable:
        if loss is not None:
            got = torch.autograd.grad(loss, list(differentiable.values()), allow_unused=True)
        else:
            got = [None] * len(differentiable)
        for (key, leaf), g in zip(differentiable.items(), got):
            actual_grads[key] = _host(torch.zeros_like(leaf) if g is None else g)
    report.extend(compare_arrays(mechanism.name, grads, actual_grads, rtol=rtol, atol=atol, prefix="grads."))
    return report


def compare_with_fixture(fixture_path: str | Path, fn: Callable[..., Any] | Mechanism, *,
                         directory: str | None = None, rtol: float | None = None,
                         atol: float | None = None) -> Report:
    """Compare a NumPy implementation (or the oracle itself) with a golden fixture.

    ``fn(inputs, params, static, cotangents)`` receives dicts of NumPy arrays
    from the fixture (``static`` with its scalar entries too) and returns
    either the outputs dict (forward only) or ``(outputs, grads)`` where
    ``grads`` holds the gradient of every input and parameter for the given
    cotangents. A registered :class:`~reference.registry.Mechanism` may be
    passed instead, to check that the oracle still reproduces its goldens.
    Defaults: the tolerances recorded in the fixture's json.
    """
    fixture: Fixture = load_fixture(fixture_path, directory)
    tol = fixture.meta.get("tolerances", {}).get("compare", COMPARE_TOLERANCES[fixture.meta.get("dtype", "float64")])
    rtol = tol["rtol"] if rtol is None else rtol
    atol = tol["atol"] if atol is None else atol
    if isinstance(fn, Mechanism):
        mechanism = fn
        outputs, cache = mechanism.forward(fixture.case())
        grads = mechanism.backward(cache, dict(fixture.cotangents))
        result: Any = (outputs, grads)
    else:
        result = fn(dict(fixture.inputs), dict(fixture.params), dict(fixture.static), dict(fixture.cotangents))
    if isinstance(result, Mapping):
        outputs, grads = result, None
    else:
        outputs, grads = result
    report = compare_arrays(fixture.name, fixture.outputs, dict(outputs), rtol=rtol, atol=atol, prefix="outputs.")
    if grads is not None:
        report.extend(compare_arrays(fixture.name, fixture.grads, dict(grads), rtol=rtol, atol=atol, prefix="grads."))
    report.dtype = fixture.meta.get("dtype", report.dtype)
    return report
