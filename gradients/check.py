"""Check a backward pass against finite differences, and say exactly what is wrong.

The check reduces any function to a scalar with a random cotangent ``c`` (never
all ones: a wrong softmax backward passes an all-ones cotangent)::

    L(x) = sum_k Re <c_k, F_k(x)>

so that the analytic gradient of ``L`` is what the backward returns when fed
``c``. Two modes:

* ``full``: every element of every tensor, by Richardson-extrapolated central
  differences (4 evaluations an element). The report names the worst element.
* ``fast``: one random direction ``v`` per tensor, comparing ``Re <grad, v>``
  with a central-difference directional derivative (2 evaluations a tensor;
  the dot-product VJP test). A wrong gradient of any one tensor has, almost
  surely, a nonzero component along that tensor's own direction.

An element passes when ``|a - n| <= atol * scale + rtol * max(|a|, |n|) + floor``,
where ``scale`` is the largest numeric gradient magnitude of the tensor and
``a``/``n`` are analytic and numeric values. The floor is the rounding noise of
the finite difference itself: the larger of the table's ``floor * max(1, |L|)``
and ``ROUNDING_SAFETY * k * noise(L) / h``, where ``h`` is the step, ``k`` the
method's noise gain (1 central, 3 Richardson) and ``noise(L)`` the rounding
error of one evaluation of ``L``, measured at the unperturbed point against the
same evaluation in the other precision (docs/gradient-checker.md). The reported
relative error divides by ``max(|a|, |n|)``, but never by less than
``REL_FLOOR`` times the largest gradient of the whole check, so that a gradient
that is zero by structure (a key bias under a softmax) reads as its noise
relative to the mechanism's scale rather than as noise over noise.

Entry points:

* :func:`check_gradients` takes any ``fn(arrays) -> outputs`` and
  ``grad_fn(arrays, cotangents) -> grads``: user code, not only ours.
* :func:`check_forward_backward` adapts a ``forward(**arrays) -> (out, cache)``
  and ``backward(dout, cache) -> grads`` pair.
* :func:`check_mechanism` runs a registered mechanism's example.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Mapping

import numpy as np

from reference.backend import array_namespace, dtype_of, from_numpy, namespace, to_numpy
from reference.random import random_cotangents
from reference.registry import Mechanism
from reference.tolerances import TOLERANCES

from .numerical import NOISE_GAIN, default_step, directional_derivative, numerical_gradient

__all__ = ["TOLERANCES", "TensorResult", "Report", "check_gradients", "check_forward_backward", "check_mechanism",
           "random_cotangents"]

#: The rounding noise of L is measured at one point; at the perturbed points it is of the same size but not the
#: same number. Measured over every registered mechanism in float32 (docs/gradient-checker.md): |L32 - L64| at
#: 6 points along a direction of each of up to 6 tensors (steps -2h..2h) was at most 2.3 times the noise measured
#: at the unperturbed point (median 0.34).
ROUNDING_SAFETY = 4.0

#: Relative errors are measured against max(|element|, REL_FLOOR * largest gradient of the whole check).
REL_FLOOR = 1e-3


@dataclass
class TensorResult:
    """The verdict on one tensor's gradient."""

    mechanism: str
    tensor: str
    shape: tuple[int, ...]
    max_abs_error: float
    max_rel_error: float
    worst: str  # the worst element's index, or "direction k" in fast mode
    analytic: float | complex | None
    numeric: float | complex | None
    passed: bool
    note: str = ""

    def describe(self) -> str:
        """One sentence for failure messages: which tensor, which element, both numbers."""
        if self.note:
            return f"{self.mechanism}: {self.tensor}: {self.note}"
        return (f"{self.mechanism}: gradient of {self.tensor}{list(self.shape)} at {self.worst}: "
                f"analytic {self.analytic!r}, numeric {self.numeric!r} "
                f"(abs error {self.max_abs_error:.3g}, rel error {self.max_rel_error:.3g})")


@dataclass
class Report:
    """All tensors checked in one run, with a printable table."""

    results: list[TensorResult] = field(default_factory=list)
    mode: str = "full"
    backend: str = "numpy"
    dtype: str = "float64"
    #: Forward evaluations the check cost (finite differences, the noise measurement, the backward's forward).
    evaluations: int = 0

    @property
    def passed(self) -> bool:
        return all(r.passed for r in self.results)

    @property
    def failures(self) -> list[TensorResult]:
        return [r for r in self.results if not r.passed]

    def extend(self, other: "Report") -> None:
        self.results.extend(other.results)
        self.evaluations += other.evaluations

    def table(self) -> str:
        header = ("mechanism", "tensor", "shape", "max abs err", "max rel err", "worst element", "verdict")
        rows = [header] + [
            (r.mechanism, r.tensor, "x".join(map(str, r.shape)) or "scalar", f"{r.max_abs_error:.2e}",
             f"{r.max_rel_error:.2e}", r.worst, "ok" if r.passed else "FAIL" + (f" ({r.note})" if r.note else ""))
            for r in self.results
        ]
        widths = [max(len(str(row[i])) for row in rows) for i in range(len(header))]
        lines = ["  ".join(str(v).ljust(w) for v, w in zip(row, widths)).rstrip() for row in rows]
        lines.insert(1, "  ".join("-" * w for w in widths))
        n_fail = len(self.failures)
        lines.append(f"\n{len(self.results)} tensors checked ({self.mode} mode, {self.backend}, {self.dtype}): "
                     f"{len(self.results) - n_fail} passed, {n_fail} failed; {self.evaluations} forward evaluations")
        return "\n".join(lines)

    def to_json(self) -> str:
        def plain(value: Any) -> Any:
            if isinstance(value, complex):
                return {"real": value.real, "imag": value.imag}
            return value

        rows = [{k: plain(v) for k, v in asdict(r).items()} for r in self.results]
        return json.dumps({"mode": self.mode, "backend": self.backend, "dtype": self.dtype,
                           "passed": self.passed, "evaluations": self.evaluations, "results": rows}, indent=2)

    def __str__(self) -> str:
        return self.table()


def _dtype_name(x: Any) -> str:
    name = str(x.dtype).split(".")[-1]
    return {"complex64": "float32", "complex128": "float64"}.get(name, name)


def _is_floating(x: Any) -> bool:
    xp = array_namespace(x)
    return bool(xp.isdtype(x.dtype, ("real floating", "complex floating")))


def _as_dict(outputs: Any) -> dict[str, Any]:
    return dict(outputs) if isinstance(outputs, Mapping) else {"out": outputs}


def _pairing(outputs: Mapping[str, Any], cotangents: Mapping[str, Any]) -> float:
    """L = sum_k Re <c_k, F_k>, summed on the host in the widest precision."""
    total = 0.0
    for name, c in cotangents.items():
        out = to_numpy(outputs[name]).astype(np.complex128 if np.iscomplexobj(to_numpy(c)) else np.float64)
        total += float(np.real(np.vdot(to_numpy(c).astype(out.dtype), out)))
    return total


def _magnitude(outputs: Mapping[str, Any], cotangents: Mapping[str, Any]) -> float:
    """S = sum_k sum_i |c_ki| |F_ki|: the size of the terms L sums (rounding error scales with it, not with |L|)."""
    return float(sum(np.sum(np.abs(to_numpy(c)).astype(np.float64) * np.abs(to_numpy(outputs[name])))
                     for name, c in cotangents.items()))


def _eps(dtype: str) -> float:
    return {"float64": 2.0 ** -52, "float32": 2.0 ** -23, "float16": 2.0 ** -10, "bfloat16": 2.0 ** -7}[dtype]


def _cast(arrays: Mapping[str, Any], dtype: str) -> dict[str, Any]:
    """The same arrays in another precision (complex arrays keep being complex)."""
    cast = {}
    for k, x in arrays.items():
        xp = array_namespace(x)
        host = to_numpy(x)
        name = ({"float64": "complex128", "float32": "complex64"}[dtype] if np.iscomplexobj(host) else dtype)
        cast[k] = from_numpy(host.astype(name), xp, dtype_of(xp, name))
    return cast


@dataclass
class _Measured:
    """One tensor's analytic and numeric values, judged once the whole check's scale is known."""

    tensor: str
    shape: tuple[int, ...]
    analytic: np.ndarray | None = None
    numeric: np.ndarray | None = None
    labels: list[str] = field(default_factory=list)
    #: The rounding floor of each numeric value (noise(L) over its step, times the method's gain).
    floor: np.ndarray | None = None
    #: Set when the gradient is missing or malformed; then no values were measured.
    problem: str = ""


def check_gradients(fn: Callable[[dict[str, Any]], Any],
                    grad_fn: Callable[[dict[str, Any], Any], Mapping[str, Any]],
                    arrays: Mapping[str, Any], *, cotangents: Mapping[str, Any] | None = None,
                    mode: str = "full", name: str = "function", seed: int = 0, method: str | None = None,
                    n_directions: int = 1, rtol: float | None = None, atol: float | None = None,
                    floor: float | None = None, check: Callable[[dict[str, Any]], None] | None = None,
                    max_elements: int | None = None, h: float | None = None) -> Report:
    """Check ``grad_fn`` against finite differences of ``fn`` at ``arrays``.

    fn: ``arrays -> outputs`` (an array or a dict of arrays).
    grad_fn: ``(arrays, cotangents) -> grads``; cotangents has the structure of
    the outputs (a dict, or one array when fn returns one array); grads is a
    dict with a gradient for every name of ``arrays`` (same shape).
    method: ``"richardson"`` (default in full mode) or ``"central"`` (default in
    fast mode); h: the relative step (default: :func:`gradients.numerical.default_step`).
    n_directions: random directions per tensor in fast mode.
    check: optional ``arrays -> None`` called at every perturbed point (raise if
    a discrete decision changed). max_elements: in full mode, check at most this
    many elements per tensor (evenly spaced, always including the first and last).
    ``fn`` is also called once at the same point in the other precision (float32
    for a float64 check, float64 for a lower one) to measure the rounding noise of L.
    """
    if mode not in ("full", "fast"):
        raise ValueError(f"mode must be 'full' or 'fast', got {mode!r}")
    method = method or ("richardson" if mode == "full" else "central")
    arrays = dict(arrays)
    if not arrays:
        raise ValueError("arrays must name at least one array to differentiate")
    first = next(iter(arrays.values()))
    dtype = _dtype_name(first)
    tol = dict(TOLERANCES.get(dtype, TOLERANCES["float32"]))
    tol.update({k: v for k, v in {"rtol": rtol, "atol": atol, "floor": floor}.items() if v is not None})
    calls = [0]

    def evaluate(point: dict[str, Any]) -> dict[str, Any]:
        calls[0] += 1
        return _as_dict(fn(point))

    raw = fn(arrays)
    calls[0] += 1
    single = not isinstance(raw, Mapping)
    outputs = _as_dict(raw)
    cot = dict(cotangents) if cotangents is not None else random_cotangents(outputs, seed)
    grads = dict(grad_fn(arrays, cot["out"] if single else cot))
    calls[0] += 1  # the forward inside grad_fn
    noise = _loss_noise(evaluate, arrays, outputs, cot, dtype)

    def loss_at(tensor: str) -> Callable[[Any], float]:
        def loss(value: Any) -> float:
            point = {**arrays, tensor: value}
            if check is not None:
                check(point)
            return _pairing(evaluate(point), cot)

        return loss

    loss_scale = max(1.0, abs(_pairing(outputs, cot)))
    report = Report(mode=mode, backend=_backend_name(first), dtype=dtype)
    step = default_step(first.dtype, method) if h is None else h
    measured = []
    for tensor, x in arrays.items():
        shape = tuple(x.shape)
        problem = _structure_problem(tensor, x, grads)
        if problem:
            measured.append(_Measured(tensor, shape, problem=problem))
            continue
        analytic = to_numpy(grads[tensor])
        host = to_numpy(x)
        if mode == "full":
            indices = _element_indices(shape, max_elements)
            numeric = numerical_gradient(loss_at(tensor), x, method=method, indices=indices, h=step)
            picked = tuple(np.array(indices).T) if indices else ()
            a, n = analytic[picked], numeric[picked]
            steps = step * np.maximum(1.0, np.abs(host[picked])) if indices else np.zeros(0)
            labels = [str(i) for i in indices]
        else:
            rng = np.random.default_rng(seed + 104729)
            directions = []
            for _ in range(n_directions):
                v = rng.standard_normal(shape)
                if np.iscomplexobj(analytic):
                    v = v + 1j * rng.standard_normal(shape)
                directions.append(v / max(np.linalg.norm(v), 1e-300))
            a = np.array([np.real(np.vdot(analytic, v)) for v in directions])
            n = np.array([directional_derivative(loss_at(tensor), x, v, method=method, h=step) for v in directions])
            steps = np.full(n_directions, step * max(1.0, float(np.max(np.abs(host))) if host.size else 1.0))
            labels = [f"direction {k}" for k in range(n_directions)]
        rounding = ROUNDING_SAFETY * NOISE_GAIN[method] * noise / np.maximum(steps, 1e-300)
        measured.append(_Measured(tensor, shape, a, n, labels, rounding))
    overall = max([float(np.max(np.abs(m.numeric))) for m in measured if m.numeric is not None and m.numeric.size]
                  or [0.0])
    for m in measured:
        if m.problem:
            report.results.append(TensorResult(name, m.tensor, m.shape, math.inf, math.inf, "-", None, None, False,
                                               m.problem))
        else:
            report.results.append(_judge(name, m, tol, loss_scale, overall))
    report.evaluations = calls[0]
    return report


def _loss_noise(evaluate: Callable[[dict[str, Any]], dict[str, Any]], arrays: dict[str, Any],
                outputs: dict[str, Any], cot: dict[str, Any], dtype: str) -> float:
    """The rounding error of one evaluation of L in ``dtype``, measured at ``arrays``.

    Below float64: |L(x) - L64(x)| with the same arrays widened to float64, but
    never less than eps * S. In float64: the error the same point shows in
    float32, scaled by eps64 / eps32 (to first order rounding errors are linear in
    eps, so the computation's error growth is the same in both precisions).
    """
    magnitude = _magnitude(outputs, cot)
    loss = _pairing(outputs, cot)
    other = "float32" if dtype == "float64" else "float64"
    other_loss = _pairing(evaluate(_cast(arrays, other)), cot)
    if dtype == "float64":
        return max(abs(other_loss - loss) * _eps("float64") / _eps("float32"), _eps(dtype) * magnitude)
    return max(abs(other_loss - loss), _eps(dtype) * magnitude)


def _element_indices(shape: tuple[int, ...], max_elements: int | None) -> list[tuple[int, ...]]:
    every = list(np.ndindex(*shape))
    if max_elements is None or len(every) <= max_elements:
        return every
    picks = np.unique(np.linspace(0, len(every) - 1, max_elements).round().astype(int))
    return [every[i] for i in picks]


def _backend_name(x: Any) -> str:
    module = type(x).__module__.split(".")[0]
    return {"numpy": "numpy", "cupy": "cupy", "array_api_strict": "array_api_strict", "torch": "torch"}.get(module, module)


def _structure_problem(tensor: str, x: Any, grads: Mapping[str, Any]) -> str:
    """A gradient must exist and keep its input's shape, dtype and namespace."""
    if tensor not in grads:
        return f"backward returned no gradient for {tensor!r} (it returned {sorted(grads)})"
    g = grads[tensor]
    try:
        same_namespace = array_namespace(g) is array_namespace(x)
    except TypeError:
        same_namespace = False
    if not same_namespace:
        return f"gradient of {tensor!r} is a {type(g).__name__}, not an array of the input's namespace"
    if tuple(g.shape) != tuple(x.shape):
        return f"gradient of {tensor!r} has shape {tuple(g.shape)}, input has {tuple(x.shape)}"
    if g.dtype != x.dtype:
        return f"gradient of {tensor!r} has dtype {g.dtype}, input has {x.dtype}"
    return ""


def _judge(name: str, m: _Measured, tol: dict[str, float], loss_scale: float, overall: float) -> TensorResult:
    a, n = m.analytic, m.numeric
    if a.size == 0:
        return TensorResult(name, m.tensor, m.shape, 0.0, 0.0, "-", None, None, True)
    err = np.abs(a - n)
    big = np.maximum(np.abs(a), np.abs(n))
    scale = float(np.max(np.abs(n)))
    noise = np.maximum(tol["floor"] * loss_scale, m.floor)
    allowed = tol["atol"] * scale + tol["rtol"] * big + noise
    # Relative error against the element's own size, but never against less than a thousandth of the largest
    # gradient anywhere in the check (nor less than the finite-difference noise): a gradient that is exactly
    # zero by structure (a key bias under softmax) has no meaningful relative error of its own.
    rel = err / np.maximum(big, np.maximum(REL_FLOOR * overall, noise))
    badness = err / allowed
    finite = np.isfinite(a) & np.isfinite(n)
    worst = int(np.argmax(np.where(finite, badness, np.inf)))
    passed = bool(np.all(finite) and np.all(err <= allowed))
    note = "" if np.all(finite) else "non-finite gradient"

    def scalar(v: Any) -> float | complex:
        return complex(v) if np.iscomplexobj(v) else float(v)

    return TensorResult(name, m.tensor, m.shape, float(np.max(err)), float(np.max(rel)), m.labels[worst],
                        scalar(a[worst]), scalar(n[worst]), passed, note)


def check_forward_backward(forward: Callable[..., tuple[Any, Any]], backward: Callable[[Any, Any], Any],
                           arrays: Mapping[str, Any], *, static: Mapping[str, Any] | None = None,
                           grad_names: list[str] | None = None, **kwargs: Any) -> Report:
    """Check a cs231n-style pair: ``out, cache = forward(**arrays, **static)``, ``grads = backward(dout, cache)``.

    ``backward`` may return a dict keyed by argument name, or a tuple of
    gradients in the order of ``grad_names`` (default: the order of ``arrays``).
    """
    static = dict(static or {})
    names = grad_names or list(arrays)

    def fn(point: dict[str, Any]) -> Any:
        return forward(**point, **static)[0]

    def grad_fn(point: dict[str, Any], cot: Any) -> dict[str, Any]:
        _, cache = forward(**point, **static)
        grads = backward(cot, cache)
        return dict(grads) if isinstance(grads, Mapping) else dict(zip(names, grads))

    return check_gradients(fn, grad_fn, arrays, **kwargs)


def check_mechanism(mechanism: Mechanism, *, backend: str = "numpy", dtype: str = "float64", mode: str = "full",
                    seed: int = 0, method: str | None = None, max_elements: int | None = None,
                    config: Any = None, device: str | None = None) -> Report:
    """Check a registered mechanism's backward on its seeded case at ``config`` (a dict of fields or a Config).

    ``device`` applies to the torch backend (default: cuda where present).
    """
    xp = namespace(backend, device) if device is not None else namespace(backend)
    case = mechanism.example(seed, dtype_of(xp, dtype), xp, config)
    tol = mechanism.tolerances.get(dtype, {})

    def fn(arrays: dict[str, Any]) -> dict[str, Any]:
        return mechanism.run(case.replace(arrays))

    def grad_fn(arrays: dict[str, Any], cot: dict[str, Any]) -> dict[str, Any]:
        _, cache = mechanism.forward(case.replace(arrays))
        return mechanism.backward(cache, cot)

    def margins_hold(arrays: dict[str, Any]) -> None:
        mechanism.margin_check(case.replace(arrays))

    check = margins_hold if mechanism.margin_check is not None else None

    report = check_gradients(fn, grad_fn, case.differentiable, mode=mode, name=mechanism.name, seed=seed,
                             method=method, check=check, max_elements=max_elements, **tol)
    report.backend = backend
    return report
