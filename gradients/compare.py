"""Compare another implementation with the oracle: PyTorch, JAX, a NumPy callable, or fixture files.

The report (:class:`ComparisonReport`, a :class:`~gradients.check.Report`) has
one row per tensor, named as in the fixtures: ``outputs.y`` for a forward
output, ``grads.w`` for a gradient, ``intermediates.p`` for a named
intermediate. In each row ``analytic`` is the other implementation's value and
``numeric`` the oracle's (so ``describe()`` prints both numbers of the worst
element).

At the oracle's dtype (float64) an element passes when::

    |actual - expected| <= rtol * |expected| + atol * max(1, scale)

where ``scale`` is the largest ``|expected|`` of the tensor (the gradient
checker's rule: ``atol`` is relative to the tensor's size). Integer and
boolean tensors (bucket ids, decisions) must be equal exactly. In low
precision (``dtype="float32"``, ``"bfloat16"``, ``"float16"``) a tensor passes
under the error budget of :mod:`gradients.budget` instead.

Gradients are those of ``L = sum_k Re(sum(conj(c_k) * F_k))`` with the oracle's
random cotangents ``c_k`` (:func:`reference.random.random_cotangents`), so a
complex gradient is ``dL/dRe(z) + i dL/dIm(z)``: exactly what PyTorch leaves in
``.grad`` for a real ``L`` (JAX's convention is converted, see
:mod:`gradients.compare_jax`).

The report cannot mislead: a leaf that no gradient reaches (a graph cut by
``nn.Parameter(...)``, ``.detach()``, ``torch.no_grad``) is reported as
"no gradient reached", never as a zero gradient; missing and unexpected
outputs, shapes and dtypes are named.

Entry points:

* :func:`compare_torch`: a PyTorch function at the user's configuration, with
  the user's own weights, inputs and static arrays if given, differentiated by
  autograd; :func:`sweep_torch` over the mechanism's edge configurations.
* ``gradients.compare_jax.compare_jax`` and ``sweep_jax``: the same for JAX, by ``jax.vjp`` (their own
  module, which builds on this one).
* :func:`user_case`: the case the comparisons run (the oracle's seeded case at
  a configuration, with the user's arrays in place of the sampled ones).
* :func:`compare_arrays`: two dicts of arrays.
* :func:`compare_with_fixture`: a NumPy callable (or the oracle itself) against
  a golden fixture written by ``python -m reference export``.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import numpy as np

from reference.backend import namespace, to_numpy
from reference.config import Config
from reference.fixtures import Fixture, load_fixture
from reference.random import random_cotangents
from reference.registry import Case, Mechanism, get
from reference.tolerances import COMPARE_TOLERANCES

from .budget import LOW_DTYPES, Budget, BudgetResult, judge_budget, torch_dtype
from .check import Report, TensorResult

__all__ = ["COMPARE_TOLERANCES", "Budget", "ComparisonResult", "ComparisonReport", "compare_arrays", "compare_torch",
           "sweep_torch", "compare_with_fixture", "user_case", "NO_GRADIENT_FIX"]

#: The fix printed with every "no gradient reached" row.
NO_GRADIENT_FIX = ("usual cause: the function computed with a copy of the leaf, not the leaf (a weight "
                   "wrapped in nn.Parameter(...), loaded with .data or copy_, .detach(), torch.no_grad(), "
                   ".numpy()); fix: run the module on the given tensors with "
                   "torch.func.functional_call(module, {name: params[...]}, args)")


class ComparisonResult(TensorResult):
    """A :class:`TensorResult` whose message says "oracle" and "other" instead of "numeric" and "analytic"."""

    def describe(self) -> str:
        if self.note:
            return f"{self.mechanism}: {self.tensor}: {self.note}"
        return (f"{self.mechanism}: {self.tensor}{list(self.shape)} at {self.worst}: "
                f"other {self.analytic!r}, oracle {self.numeric!r} "
                f"(abs error {self.max_abs_error:.3g}, rel error {self.max_rel_error:.3g})")


@dataclass
class ComparisonReport(Report):
    """A comparison's rows, what it applied (conventions, budget) and where a mismatch starts."""

    #: Sentences the reader needs: conventions applied, skipped configurations, intermediates not given.
    notes: list[str] = field(default_factory=list)
    device: str = "cpu"
    #: The first intermediate, in forward order, that disagrees (``intermediates.NAME``), if any.
    first_disagreement: str | None = None

    def extend(self, other: "Report") -> None:
        self.results.extend(other.results)
        for note in getattr(other, "notes", []):
            if note not in self.notes:
                self.notes.append(note)
        if self.first_disagreement is None:
            self.first_disagreement = getattr(other, "first_disagreement", None)

    def table(self) -> str:
        budgeted = any(isinstance(r, BudgetResult) for r in self.results)
        if budgeted:
            header = ("mechanism", "tensor", "shape", "other err", "yardstick err", "ratio", "allowed", "verdict")
        else:
            header = ("mechanism", "tensor", "shape", "max abs err", "max rel err", "worst element", "verdict")
        rows = [header]
        for r in self.results:
            verdict = "ok" if r.passed else "FAIL" + (f" ({r.note})" if r.note else "")
            shape = "x".join(map(str, r.shape)) or "scalar"
            if budgeted and isinstance(r, BudgetResult):
                rows.append((r.mechanism, r.tensor, shape, f"{r.max_abs_error:.2e}", f"{r.yardstick_error:.2e}",
                             f"{r.ratio:.2f}", f"{r.allowed:.2e}", verdict))
            elif budgeted:
                rows.append((r.mechanism, r.tensor, shape, "-", "-", "-", "-", verdict))
            else:
                rows.append((r.mechanism, r.tensor, shape, f"{r.max_abs_error:.2e}", f"{r.max_rel_error:.2e}",
                             r.worst, verdict))
        widths = [max(len(str(row[i])) for row in rows) for i in range(len(header))]
        lines = ["  ".join(str(v).ljust(w) for v, w in zip(row, widths)).rstrip() for row in rows]
        lines.insert(1, "  ".join("-" * w for w in widths))
        n_fail = len(self.failures)
        what = "budget against the float64 oracle" if budgeted else "compared with the float64 oracle"
        lines.append(f"\n{len(self.results)} tensors, other side {self.dtype} on {self.device}, {what}: "
                     f"{len(self.results) - n_fail} passed, {n_fail} failed")
        if self.first_disagreement:
            lines.append(f"first intermediate that disagrees (forward order): {self.first_disagreement}")
        lines.extend(f"note: {n}" for n in self.notes)
        return "\n".join(lines)


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


def _fail(name: str, tensor: str, shape: tuple[int, ...], note: str) -> ComparisonResult:
    return ComparisonResult(name, tensor, shape, math.inf, math.inf, "-", None, None, False, note)


def _compare_one(name: str, tensor: str, expected: Any, actual: Any, rtol: float, atol: float) -> ComparisonResult:
    e, a = to_numpy(expected), np.asarray(to_numpy(actual))
    shape = tuple(e.shape)
    if tuple(a.shape) != shape:
        return _fail(name, tensor, shape, f"shape {tuple(a.shape)}, the oracle's is {shape}")
    if e.size == 0:
        return ComparisonResult(name, tensor, shape, 0.0, 0.0, "-", None, None, True)
    labels = list(np.ndindex(*shape)) or [()]
    if e.dtype.kind in "biu":  # discrete results must agree exactly
        if a.dtype.kind not in "biuf" or not np.all(np.isfinite(a.astype(np.float64))):
            return _fail(name, tensor, shape, f"dtype {a.dtype}, the oracle's is {e.dtype}")
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
                   rtol: float | None = None, atol: float | None = None, prefix: str = "",
                   unexpected: bool = False) -> ComparisonReport:
    """Compare ``actual`` with the oracle's ``expected``, tensor by tensor.

    Every name of ``expected`` must be in ``actual`` with the same shape; a
    missing one is a failing row. Extra names in ``actual`` are ignored, or, with
    ``unexpected=True``, each is a failing row that lists the oracle's names.
    Defaults: :data:`COMPARE_TOLERANCES` for the dtype of ``expected``.
    ``prefix`` is prepended to tensor names in the report (``"outputs."``, ``"grads."``).
    """
    dtype = _dtype_key(expected)
    tol = COMPARE_TOLERANCES[dtype]
    rtol = tol["rtol"] if rtol is None else rtol
    atol = tol["atol"] if atol is None else atol
    report = ComparisonReport(mode="compare", backend="numpy", dtype=dtype)
    for tensor, value in expected.items():
        label = prefix + tensor
        if tensor not in actual or actual[tensor] is None:
            report.results.append(_fail(name, label, tuple(to_numpy(value).shape),
                                        f"missing from the other implementation (it gave {sorted(actual)})"))
            continue
        report.results.append(_compare_one(name, label, value, actual[tensor], rtol, atol))
    if unexpected:
        for tensor in actual:
            if tensor not in expected:
                report.results.append(_fail(name, prefix + tensor, tuple(np.shape(to_numpy(actual[tensor]))),
                                            f"unexpected: the oracle has no {prefix}{tensor} "
                                            f"(it has {sorted(expected)})"))
    return report


# ---------------------------------------------------------------------------------------------- the user's case

def _host64(value: Any) -> np.ndarray:
    """Any array (NumPy, torch, JAX, CuPy) on the host, floating data widened to 64 bits."""
    if type(value).__module__.startswith("torch"):
        import torch

        t = value.detach().resolve_conj().resolve_neg()
        if t.is_complex():
            t = t.to(torch.complex128)
        elif t.is_floating_point():
            t = t.to(torch.float64)
        return t.cpu().numpy()
    return np.asarray(to_numpy(value))


def _is_array(value: Any) -> bool:
    return hasattr(value, "shape") and hasattr(value, "dtype") and not isinstance(value, np.generic)


_KINDS = {"b": "b", "i": "iu", "u": "iu", "f": "fiu", "c": "cfiu"}


def _substitute(label: str, sampled: Any, given: Any, where: str) -> Any:
    """``given`` in place of ``sampled``, after checking its structure, shape and kind; errors name the tensor."""
    if _is_array(sampled):
        if not _is_array(given):
            raise TypeError(f"{label} must be an array of shape {tuple(sampled.shape)}, got {type(given).__name__}")
        host = _host64(given)
        want = np.asarray(to_numpy(sampled))
        if tuple(host.shape) != tuple(want.shape):
            raise ValueError(f"{label} has shape {tuple(host.shape)}; {where} needs {tuple(want.shape)}")
        if host.dtype.kind not in _KINDS.get(want.dtype.kind, want.dtype.kind):
            raise ValueError(f"{label} has dtype {host.dtype}; {where} needs {want.dtype}")
        return host.astype(want.dtype)
    if isinstance(sampled, Mapping):
        if not isinstance(given, Mapping):
            raise TypeError(f"{label} must be a dict with keys {sorted(sampled)}, got {type(given).__name__}")
        unknown = sorted(set(given) - set(sampled))
        if unknown:
            raise ValueError(f"{label} has no entry {', '.join(unknown)}; its entries are {sorted(sampled)}")
        return {k: _substitute(f"{label}.{k}", v, given[k], where) if k in given else v for k, v in sampled.items()}
    if isinstance(sampled, (list, tuple)):
        if not isinstance(given, (list, tuple)) or len(given) != len(sampled):
            raise ValueError(f"{label} must be a sequence of {len(sampled)} entries, got "
                             f"{len(given) if isinstance(given, (list, tuple)) else type(given).__name__}")
        return type(sampled)(_substitute(f"{label}.{i}", s, g, where) for i, (s, g) in enumerate(zip(sampled, given)))
    if given != sampled:
        raise ValueError(f"{label} is a setting of the configuration ({sampled!r}); change it through config=, "
                         f"got {given!r}")
    return sampled


def user_case(mechanism_or_name: Mechanism | str, *, seed: int = 0, config: Config | Mapping[str, Any] | None = None,
              params: Mapping[str, Any] | None = None, inputs: Mapping[str, Any] | None = None,
              static: Mapping[str, Any] | None = None) -> Case:
    """The oracle's float64 case at ``config``, with the user's arrays in place of the sampled ones.

    ``params``, ``inputs`` and ``static`` may name any subset of the case's
    entries (torch, JAX, CuPy or NumPy arrays; a nested static dict or list may
    be given in part). Each must have the shape the configuration gives it, or
    the error names the tensor and both shapes; an unknown name lists the known ones.
    """
    mechanism = get(mechanism_or_name) if isinstance(mechanism_or_name, str) else mechanism_or_name
    xp = namespace("numpy")
    case = mechanism.example(seed, xp.float64, xp, config)
    where = f"{mechanism.name} at {case.config!r}" if case.config is not None else f"{mechanism.name}'s example"
    groups = {}
    for group, given in (("inputs", inputs), ("params", params), ("static", static)):
        sampled = getattr(case, group)
        groups[group] = sampled if not given else _substitute(group, sampled, dict(given), where)
    return dataclasses.replace(case, **groups)


# ------------------------------------------------------------------------------------------ the oracle's side

@dataclass
class _Side:
    """One side's outputs, gradients and intermediates, as host arrays keyed without prefix."""

    outputs: dict[str, Any]
    cotangents: dict[str, Any]
    grads: dict[str, Any]
    intermediates: dict[str, Any] | None


def _map_arrays(value: Any, fn: Callable[[Any], Any]) -> Any:
    if _is_array(value):
        return fn(value)
    if isinstance(value, (list, tuple)):
        return type(value)(_map_arrays(v, fn) for v in value)
    if isinstance(value, Mapping):
        return {k: _map_arrays(v, fn) for k, v in value.items()}
    return value


def _map_case(case: Case, fn: Callable[[Any], Any]) -> Case:
    return dataclasses.replace(case, inputs=_map_arrays(case.inputs, fn), params=_map_arrays(case.params, fn),
                               static=_map_arrays(case.static, fn))


def _to_torch(a: Any, dtype: str, device: str) -> Any:
    """A host array as a torch tensor on ``device``; floating data in ``dtype``, integers and booleans as they are."""
    import torch

    host = np.asarray(to_numpy(a))
    t = torch.from_numpy(np.array(host, copy=True)).to(device)
    if host.dtype.kind in "fc":
        t = t.to(torch_dtype(dtype, host.dtype.kind == "c"))
    return t


def _round(a: Any, dtype: str) -> Any:
    """Floating data rounded to ``dtype`` and widened back to 64 bits (the values the other side receives)."""
    host = np.asarray(to_numpy(a))
    if host.dtype.kind not in "fc":
        return host
    return _host64(_to_torch(host, dtype, "cpu"))


def _oracle_side(mechanism: Mechanism, case: Case, seed: int, dtype: str, intermediates: bool) -> _Side:
    """Forward, the seeded cotangents (rounded to ``dtype``), backward, and the named intermediates.

    :func:`reference.registry.oracle_run` without the rounding: in low precision the
    cotangents the other side receives are rounded, so the reference uses them too.
    """
    outputs, cache = mechanism.forward(case)
    cotangents = random_cotangents(outputs, seed)
    if dtype != "float64":
        cotangents = {k: _round(c, dtype) for k, c in cotangents.items()}
    grads = mechanism.backward(cache, cotangents)
    named = mechanism.intermediates(cache) if intermediates and mechanism.intermediates is not None else None
    host = lambda d: None if d is None else {k: _host64(v) for k, v in d.items()}  # noqa: E731
    return _Side(host(outputs), host(cotangents), host(grads), host(named))


def _yardstick_side(mechanism: Mechanism, case: Case, cotangents: Mapping[str, Any], dtype: str, device: str,
                    intermediates: bool) -> _Side:
    """The oracle's own algorithm on torch tensors in ``dtype`` on ``device`` (array-api-compat's torch namespace).

    Runs under ``torch.device(device)`` so that arrays the mechanism code makes
    itself (a causal mask's ``xp.arange``) land on that device; torch's default
    device is restored afterwards.
    """
    import torch

    with torch.device(device):
        low = _map_case(case, lambda a: _to_torch(a, dtype, device))
        try:
            outputs, cache = mechanism.forward(low)
        except ValueError as err:
            raise ValueError(f"the yardstick (the oracle's algorithm in {dtype}) cannot run {mechanism.name} at "
                             f"this configuration: {err}. In float16 the oracle's finite mask score "
                             f"(reference.backend.MASKED_SCORE = -1e9) overflows to -inf; compare a masked "
                             f"mechanism in bfloat16 or float32") from err
        grads = mechanism.backward(cache, {k: _to_torch(c, dtype, device) for k, c in cotangents.items()})
        named = mechanism.intermediates(cache) if intermediates and mechanism.intermediates is not None else None
    host = lambda d: None if d is None else {k: _host64(v) for k, v in d.items()}  # noqa: E731
    return _Side(host(outputs), dict(cotangents), host(grads), host(named))


@dataclass
class _Plan:
    """What both sides of one comparison need: the case, the reference, the yardstick."""

    mechanism: Mechanism
    case: Case  # float64 host arrays (rounded to dtype in low precision)
    reference: _Side
    yardstick: _Side | None
    dtype: str
    device: str
    intermediates: bool


def _mechanism(mechanism_or_name: Mechanism | str) -> Mechanism:
    return get(mechanism_or_name) if isinstance(mechanism_or_name, str) else mechanism_or_name


def _plan(mechanism: Mechanism, *, config: Any, seed: int, params: Any, inputs: Any, static: Any, dtype: str,
          device: str, intermediates: bool) -> _Plan:
    if dtype not in ("float64",) + LOW_DTYPES:
        raise ValueError(f"dtype is the other side's: float64 (compared with tolerances) or one of "
                         f"{', '.join(LOW_DTYPES)} (compared under an error budget), got {dtype!r}")
    case = user_case(mechanism, seed=seed, config=config, params=params, inputs=inputs, static=static)
    if dtype != "float64":
        case = _map_case(case, lambda a: _round(a, dtype))
    reference = _oracle_side(mechanism, case, seed, dtype, intermediates)
    yardstick = None
    if dtype != "float64":
        yardstick = _yardstick_side(mechanism, case, reference.cotangents, dtype, device, intermediates)
    return _Plan(mechanism, case, reference, yardstick, dtype, device, intermediates)


# ----------------------------------------------------------------------------------------------------- judging

def _real_dtype_name(dtype: Any) -> str:
    name = str(dtype).split(".")[-1]
    return {"complex64": "float32", "complex128": "float64"}.get(name, name)


@dataclass
class _Other:
    """The other side's results: host arrays (64-bit) and their original dtype names; ``None`` for no gradient."""

    outputs: dict[str, Any]
    grads: dict[str, Any]
    intermediates: dict[str, Any] | None
    dtypes: dict[str, str]
    #: The cause and fix printed where no gradient reached a leaf (the framework's own words: torch, JAX).
    no_gradient_note: str = NO_GRADIENT_FIX


def _one(plan: _Plan, name: str, label: str, expected: Any, actual: Any, got_dtype: str | None, yard: Any,
         rtol: float, atol: float, budget: Budget) -> TensorResult:
    shape = tuple(np.shape(expected))
    actual = np.asarray(actual)
    if tuple(actual.shape) != shape:
        return _fail(name, label, shape, f"shape {tuple(actual.shape)}, the oracle's is {shape}")
    if np.asarray(expected).dtype.kind in "fc" and got_dtype is not None and got_dtype != plan.dtype:
        hint = ("pass dtype='float64' to compare in float64" if got_dtype == "float64"
                else f"pass dtype={got_dtype!r} for a budgeted comparison" if got_dtype in LOW_DTYPES else "")
        return _fail(name, label, shape, f"dtype {got_dtype}, the comparison runs at {plan.dtype}"
                     + (f" ({hint})" if hint else ""))
    if plan.yardstick is None:
        return _compare_one(name, label, expected, actual, rtol, atol)
    wide = np.complex128 if np.asarray(expected).dtype.kind == "c" else None
    cast = (lambda a: np.asarray(a).astype(wide)) if wide else np.asarray
    return judge_budget(name, label, cast(expected), cast(yard), cast(actual), plan.dtype, budget)


def _judge(plan: _Plan, other: _Other, *, rtol: float | None, atol: float | None,
           budget: Budget | None, notes: Iterable[str] = ()) -> ComparisonReport:
    """Every row: intermediates in forward order, outputs, gradients; missing and unexpected ones named."""
    name = plan.mechanism.name
    tol = COMPARE_TOLERANCES["float64"]
    rtol = tol["rtol"] if rtol is None else rtol
    atol = tol["atol"] if atol is None else atol
    budget = budget or Budget()
    ref, yard = plan.reference, plan.yardstick
    report = ComparisonReport(mode="budget" if yard else "compare", backend="torch", dtype=plan.dtype,
                              device=plan.device, notes=list(notes))

    def row(group: str, key: str, expected: Any, actual: Any, yard_group: dict[str, Any] | None) -> TensorResult:
        label = f"{group}.{key}"
        return _one(plan, name, label, expected, actual, other.dtypes.get(label),
                    None if yard_group is None else yard_group[key], rtol, atol, budget)

    if plan.intermediates:
        if ref.intermediates is None:
            report.notes.append(f"{name} exposes no named intermediates yet; none were compared")
        elif other.intermediates is None:
            report.results.append(_fail(name, "intermediates", (), "intermediates=True, but the function returned "
                                        "no 'intermediates' entry (a dict {name: tensor}); the oracle's, in "
                                        f"forward order: {list(ref.intermediates)}"))
        else:
            given = [k for k in ref.intermediates if k in other.intermediates]
            for key in ref.intermediates:
                if key in other.intermediates:
                    result = row("intermediates", key, ref.intermediates[key], other.intermediates[key],
                                 None if yard is None else yard.intermediates)
                    report.results.append(result)
                    if not result.passed and report.first_disagreement is None:
                        report.first_disagreement = result.tensor
            for key in other.intermediates:
                if key not in ref.intermediates:
                    report.results.append(_fail(name, f"intermediates.{key}", (), "unexpected: the oracle has no "
                                                f"such intermediate (its, in forward order: {list(ref.intermediates)})"))
            skipped = [k for k in ref.intermediates if k not in given]
            if skipped:
                report.notes.append(f"intermediates not given by the other side (not compared): {skipped}")

    for key, expected in ref.outputs.items():
        if key not in other.outputs:
            report.results.append(_fail(name, f"outputs.{key}", tuple(np.shape(expected)),
                                        f"missing from the other implementation (it gave {sorted(other.outputs)})"))
        else:
            report.results.append(row("outputs", key, expected, other.outputs[key],
                                      None if yard is None else yard.outputs))
    for key, value in other.outputs.items():
        if key not in ref.outputs:
            report.results.append(_fail(name, f"outputs.{key}", tuple(np.shape(value)),
                                        f"unexpected output: the oracle's are {sorted(ref.outputs)}"))

    for key, expected in ref.grads.items():
        label = f"grads.{key}"
        if key not in other.grads:
            report.results.append(_fail(name, label, tuple(np.shape(expected)),
                                        f"missing: the other side gave no gradient for {key}"))
            continue
        actual = other.grads[key]
        leaf = f"{'params' if key in plan.case.params else 'inputs'}.{key}"
        oracle_zero = not np.any(np.asarray(expected))
        if actual is None:
            if oracle_zero:
                report.results.append(ComparisonResult(name, label, tuple(np.shape(expected)), 0.0, 0.0, "-", None,
                                                       None, True, "no gradient reached it; the oracle's is zero too"))
            else:
                report.results.append(_fail(name, label, tuple(np.shape(expected)),
                                            f"no gradient reached {leaf}: {other.no_gradient_note}"))
            continue
        result = row("grads", key, expected, actual, None if yard is None else yard.grads)
        if not result.passed and not oracle_zero and np.shape(actual) == np.shape(expected) \
                and not np.any(np.asarray(actual)):
            result.note = (f"the other side's gradient is exactly zero everywhere while the oracle's is not: "
                           f"no gradient reached {leaf}; {other.no_gradient_note}")
        report.results.append(result)
    for key in other.grads:
        if key not in ref.grads:
            report.results.append(_fail(name, f"grads.{key}", (), f"unexpected gradient: the oracle differentiates "
                                        f"{sorted(ref.grads)}"))
    return report


def _call(fn: Callable[..., Any], case: Case, inputs: Any, params: Any, static: Any) -> Any:
    """``fn(inputs, params, static)``; also the configuration when ``fn`` has a ``config`` parameter
    or a fourth required positional one."""
    try:
        parameters = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return fn(inputs, params, static)
    if "config" in parameters:
        return fn(inputs, params, static, config=case.config)
    required = [p for p in parameters.values()
                if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.default is p.empty]
    if len(required) >= 4:
        return fn(inputs, params, static, case.config)
    return fn(inputs, params, static)


def _split(result: Any, oracle_outputs: Mapping[str, Any], what: str) -> tuple[dict[str, Any], Any]:
    """The function's result as (outputs dict, intermediates or None); one bare tensor names the only output."""
    if not isinstance(result, Mapping):
        if len(oracle_outputs) != 1:
            raise TypeError(f"{what} must return a dict with keys {sorted(oracle_outputs)}, got {type(result).__name__}")
        return {next(iter(oracle_outputs)): result}, None
    result = dict(result)
    named = result.pop("intermediates", None)
    if named is not None and not isinstance(named, Mapping):
        raise TypeError(f"{what}'s 'intermediates' entry must be a dict {{name: tensor}}, got {type(named).__name__}")
    return result, None if named is None else dict(named)


# ------------------------------------------------------------------------------------------------------ PyTorch

def compare_torch(mechanism_or_name: Mechanism | str,
                  fn: Callable[[dict[str, Any], dict[str, Any], dict[str, Any]], Any], *,
                  config: Config | Mapping[str, Any] | None = None, seed: int = 0,
                  params: Mapping[str, Any] | None = None, inputs: Mapping[str, Any] | None = None,
                  static: Mapping[str, Any] | None = None, dtype: str = "float64", device: str = "cpu",
                  rtol: float | None = None, atol: float | None = None, intermediates: bool = False,
                  budget: Budget | None = None) -> ComparisonReport:
    """Run ``fn`` at the user's configuration and compare its outputs and autograd gradients with the oracle.

    ``fn(inputs, params, static)`` (or ``fn(inputs, params, static, config)``,
    which also receives the validated configuration: what a sweep's function
    reads its sizes and switches from) receives dicts of torch tensors on
    ``device``: inputs and params are leaves with ``requires_grad=True`` in
    ``dtype``; static arrays (masks, ids, rotations, trees) become tensors, also
    inside lists, tuples and dicts, floating ones in ``dtype``; other values
    are passed as they are. It returns a dict of output tensors keyed like the
    oracle's outputs (or one tensor when the oracle has one output), and, with
    ``intermediates=True``, an extra entry ``"intermediates": {name: tensor}``
    holding any of the mechanism's named intermediates
    (``mechanism.intermediates``); they are compared in the oracle's forward
    order and the report names the first that disagrees.

    config: the configuration's fields (a dict or the mechanism's Config);
    params / inputs / static: the user's own arrays in place of the sampled
    ones (:func:`user_case`). dtype: the other side's, ``"float64"``
    (tolerances ``rtol``/``atol``, default :data:`COMPARE_TOLERANCES`) or
    ``"float32"``, ``"bfloat16"``, ``"float16"`` (the error budget of
    :mod:`gradients.budget`; ``budget`` changes its factors).
    The loss ``sum_k Re(sum(conj(c_k) * out_k))`` with the oracle's cotangents is
    backpropagated by autograd; a leaf that receives no gradient is reported as
    "no gradient reached", never as zero.
    """
    import torch

    mechanism = _mechanism(mechanism_or_name)
    plan = _plan(mechanism, config=config, seed=seed, params=params, inputs=inputs, static=static, dtype=dtype,
                 device=device, intermediates=intermediates)

    def leaf(a: Any) -> Any:
        t = _to_torch(a, dtype, device)
        return t.requires_grad_(True) if (t.is_floating_point() or t.is_complex()) else t

    leaves_in = {k: leaf(v) for k, v in plan.case.inputs.items()}
    leaves_params = {k: leaf(v) for k, v in plan.case.params.items()}
    static_t = _map_arrays(plan.case.static, lambda a: _to_torch(a, dtype, device))
    outputs, named = _split(_call(fn, plan.case, leaves_in, leaves_params, static_t), plan.reference.outputs,
                            "the torch function")
    outputs = {k: (v if isinstance(v, torch.Tensor) else torch.as_tensor(v)) for k, v in outputs.items()
               if v is not None}

    loss, carried = None, []
    for key, c in plan.reference.cotangents.items():
        out = outputs.get(key)
        if out is None or not (out.is_floating_point() or out.is_complex()) or tuple(out.shape) != tuple(c.shape):
            continue  # the output's own row reports it missing or misshapen
        if not out.requires_grad:
            continue
        carried.append(key)
        ct = _to_torch(c, dtype, out.device).to(out.dtype)
        term = torch.sum(torch.real(torch.conj(ct) * out)) if out.is_complex() else torch.sum(ct * out)
        loss = term if loss is None else loss + term
    leaves = {**leaves_in, **leaves_params}
    differentiable = {k: v for k, v in leaves.items() if v.requires_grad}
    got = (torch.autograd.grad(loss, list(differentiable.values()), allow_unused=True) if loss is not None
           else [None] * len(differentiable))
    grads = {k: None if g is None else g for k, g in zip(differentiable, got)}
    note = NO_GRADIENT_FIX
    if loss is None and plan.reference.cotangents:
        note = ("no output the oracle differentiates carried autograd's graph (computed under torch.no_grad(), "
                "detached, or missing); " + NO_GRADIENT_FIX)
    dtypes = {f"outputs.{k}": _real_dtype_name(v.dtype) for k, v in outputs.items()}
    dtypes.update({f"intermediates.{k}": _real_dtype_name(v.dtype) for k, v in (named or {}).items()
                   if hasattr(v, "dtype")})
    other = _Other({k: _host64(v) for k, v in outputs.items()},
                   {k: None if g is None else _host64(g) for k, g in grads.items()},
                   None if named is None else {k: _host64(v) for k, v in named.items()}, dtypes, note)
    return _judge(plan, other, rtol=rtol, atol=atol, budget=budget)


# ------------------------------------------------------------------------------------------------------- sweeps

def _sweep_configs(mechanism: Mechanism, configs: Any, base: Mapping[str, Any] | None) -> dict[str, dict[str, Any]]:
    if configs is None:
        configs = {"default": {}, **{k: dict(v) for k, v in mechanism.edge_configs.items()}}
    elif not isinstance(configs, Mapping):
        configs = {", ".join(f"{k}={v}" for k, v in c.items()) or "default": dict(c) for c in configs}
    return {label: {**dict(base or {}), **dict(overrides)} for label, overrides in configs.items()}


def sweep(compare: Callable[..., ComparisonReport], mechanism_or_name: Mechanism | str, fn: Callable[..., Any], *,
          configs: Any = None, seeds: Iterable[int] = (0, 1, 2), config: Mapping[str, Any] | None = None,
          **options: Any) -> ComparisonReport:
    """Run ``compare`` (compare_torch or compare_jax) at every configuration and seed; one report.

    Rows are labelled ``name[label]``; for each configuration and tensor the
    report keeps the worst seed (a failure before a pass), named in the worst
    element's column (``seed 1: (0, 3)``). A configuration that is invalid on
    top of ``config`` is skipped with a note.
    """
    for key in ("params", "inputs", "static"):
        if key in options:
            raise TypeError(f"a sweep runs the oracle's sampled arrays at each configuration (their shapes differ); "
                            f"pass your own {key} to a single comparison instead")
    mechanism = _mechanism(mechanism_or_name)
    seeds = tuple(seeds)
    report = ComparisonReport(mode="sweep", dtype=options.get("dtype", "float64"), device=options.get("device", "cpu"))
    for label, overrides in _sweep_configs(mechanism, configs, config).items():
        try:
            mechanism.make_config(overrides)
        except ValueError as err:
            report.notes.append(f"skipped {mechanism.name}[{label}]: {err}")
            continue
        worst: dict[str, TensorResult] = {}
        for seed in seeds:
            one = compare(mechanism, fn, config=overrides, seed=seed, **options)
            for r in one.results:
                r.mechanism = f"{mechanism.name}[{label}]"
                r.worst = f"seed {seed}: {r.worst}"
                old = worst.get(r.tensor)
                score = lambda x: (not x.passed, getattr(x, "ratio", x.max_rel_error))  # noqa: E731
                if old is None or score(r) > score(old):
                    worst[r.tensor] = r
            for note in one.notes:
                if note not in report.notes:
                    report.notes.append(note)
            if report.first_disagreement is None and one.first_disagreement:
                report.first_disagreement = f"{mechanism.name}[{label}] seed {seed}: {one.first_disagreement}"
        report.results.extend(worst.values())
    report.notes.append(f"seeds {list(seeds)}; each row is the worst seed of its configuration")
    return report


def sweep_torch(mechanism_or_name: Mechanism | str, fn: Callable[..., Any], configs: Any = None,
                seeds: Iterable[int] = (0, 1, 2), **options: Any) -> ComparisonReport:
    """:func:`compare_torch` at the default and every edge configuration (``mechanism.edge_configs``) by default.

    configs: ``{label: {field: value}}`` or a list of field dicts; ``config``
    (in ``options``) is applied under each, e.g. your model's fixed widths.
    Other options are :func:`compare_torch`'s (dtype, device, intermediates, ...).
    """
    return sweep(compare_torch, mechanism_or_name, fn, configs=configs, seeds=seeds, **options)


# ---------------------------------------------------------------------------------------------------- fixtures

def compare_with_fixture(fixture_path: str | Path, fn: Callable[..., Any] | Mechanism, *,
                         directory: str | None = None, rtol: float | None = None,
                         atol: float | None = None) -> ComparisonReport:
    """Compare a NumPy implementation (or the oracle itself) with a golden fixture.

    ``fn(inputs, params, static, cotangents)`` receives dicts of NumPy arrays
    from the fixture (``static`` with its scalar entries too) and returns
    either the outputs dict (forward only) or ``(outputs, grads)`` where
    ``grads`` holds the gradient of every input and parameter for the given
    cotangents. Missing and unexpected names are failing rows. A registered
    :class:`~reference.registry.Mechanism` may be passed instead, to check
    that the oracle still reproduces its goldens. Defaults: the tolerances
    recorded in the fixture's json.
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
    report = compare_arrays(fixture.name, fixture.outputs, dict(outputs), rtol=rtol, atol=atol, prefix="outputs.",
                            unexpected=True)
    if grads is not None:
        report.extend(compare_arrays(fixture.name, fixture.grads, dict(grads), rtol=rtol, atol=atol,
                                     prefix="grads.", unexpected=True))
    report.dtype = fixture.meta.get("dtype", report.dtype)
    return report
