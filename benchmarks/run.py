"""Benchmark one mechanism: the oracle on NumPy (or CuPy) beside PyTorch eager autograd."""

from __future__ import annotations

import math
import traceback
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from reference.backend import from_numpy, namespace, to_numpy
from reference.registry import Mechanism

from . import measure
from .cases import patched, sizing

#: Dense building blocks: target oracle/torch <= 1.0; every other mechanism <= 1.5.
DENSE_TARGET, OTHER_TARGET = 1.0, 1.5


@dataclass
class Row:
    name: str
    dtype: str
    size: str
    target: float
    oracle_s: float = math.nan
    torch_s: float = math.nan
    torch_kind: str = "-"
    oracle_traced: float = math.nan  # bytes, tracemalloc
    oracle_rss: float = math.nan  # bytes, peak RSS increase
    torch_rss: float = math.nan
    error: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ratio(self) -> float:
        return self.oracle_s / self.torch_s if self.torch_s > 0 else math.nan

    def verdict(self) -> str:
        if self.error:
            return "error"
        if math.isnan(self.ratio):
            return "no torch run"
        if self.ratio <= self.target:
            return "met"
        return f"missed by {100 * (self.ratio / self.target - 1):.0f}%"

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ratio": self.ratio, "verdict": self.verdict()}


def is_dense(name: str) -> bool:
    return name.startswith("nn.")


def _cotangents(outputs: dict[str, Any], seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed + 1)
    cot = {}
    for key, value in outputs.items():
        v = to_numpy(value)
        if np.issubdtype(v.dtype, np.complexfloating):
            cot[key] = (rng.standard_normal(v.shape) + 1j * rng.standard_normal(v.shape)).astype(v.dtype)
        elif np.issubdtype(v.dtype, np.floating):
            cot[key] = rng.standard_normal(v.shape).astype(v.dtype)
    return cot


def _sync(backend: str):
    if backend == "cupy":  # pragma: no cover - needs a GPU
        import cupy

        return lambda: cupy.cuda.Device().synchronize()
    return lambda: None


def bench(mechanism: Mechanism, *, dtype: str, repeats: int, quick: bool, backend: str = "numpy",
          with_torch: bool = True, with_memory: bool = True, seed: int = 0) -> Row:
    """Time and measure one mechanism in one dtype."""
    sized = sizing(mechanism.name, quick)
    row = Row(mechanism.name, dtype, sized.size, DENSE_TARGET if is_dense(mechanism.name) else OTHER_TARGET)
    forward = sized.forward or mechanism.forward
    backward = sized.backward or mechanism.backward
    try:
        with patched(sized.patch):
            np_xp = namespace("numpy")
            np_dtype = getattr(np, dtype)
            case = (sized.build or (lambda m, s, d, x: m.example(s, d, x)))(mechanism, seed, np_dtype, np_xp)
            outputs, _ = forward(case)
            cot_np = _cotangents(outputs, seed)
            del outputs
            if backend != "numpy":
                xp = namespace(backend)
                from .torch_eq import torch_case  # noqa: F401  (keeps the import error surface in one place)

                case = _to_backend(case, xp)
            cot = {k: from_numpy(v, namespace(backend)) for k, v in cot_np.items()}
            sync = _sync(backend)

            def oracle() -> None:
                _, cache = forward(case)
                backward(cache, cot)

            row.oracle_s = measure.median_time(oracle, repeats, sync, min_seconds=0.0 if quick else 0.25)
            if with_memory and backend == "numpy":
                row.oracle_traced = measure.traced_peak(oracle)
                row.oracle_rss = measure.rss_peak(oracle)
            if with_torch:
                row.torch_kind, row.torch_s, row.torch_rss = _bench_torch(
                    mechanism.name, forward, case if backend == "numpy" else _to_numpy_case(case), cot_np,
                    repeats, backend, with_memory, quick)
    except Exception as err:  # one failing mechanism must not stop the table
        row.error = f"{type(err).__name__}: {err}".splitlines()[0][:200]
        row.extra["traceback"] = traceback.format_exc()
    return row


def _bench_torch(name, forward, case, cot_np, repeats, backend, with_memory, quick):
    import torch

    from .torch_eq import torch_runner

    device = "cuda" if backend == "cupy" else "cpu"
    if device == "cuda" and not torch.cuda.is_available():  # pragma: no cover
        return "-", math.nan, math.nan
    n_heads = _heads_of(name, quick)
    try:
        kind, run = torch_runner(name, forward, case, cot_np, n_heads=n_heads, device=device)
        sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
        seconds = measure.median_time(run, repeats, sync, min_seconds=0.0 if quick else 0.25)
        rss = measure.rss_peak(run) if with_memory and device == "cpu" else math.nan
        return kind, seconds, rss
    except Exception as err:
        return f"failed ({type(err).__name__}: {str(err).splitlines()[0][:80]})", math.nan, math.nan


def _heads_of(name: str, quick: bool) -> int:
    from . import cases

    return cases.QUICK["H"] if quick else cases.H


def _map(value: Any, fn) -> Any:
    if isinstance(value, np.ndarray):
        return fn(value)
    if isinstance(value, dict):
        return {k: _map(v, fn) for k, v in value.items()}
    if isinstance(value, tuple) and hasattr(value, "_fields"):
        return type(value)(*(_map(v, fn) for v in value))
    if isinstance(value, (list, tuple)):
        return type(value)(_map(v, fn) for v in value)
    return value


def _to_backend(case, xp):  # pragma: no cover - needs a GPU
    from reference.registry import Case

    conv = lambda a: from_numpy(a, xp)  # noqa: E731
    return Case(_map(case.inputs, conv), _map(case.params, conv), _map(case.static, conv))


def _to_numpy_case(case):  # pragma: no cover - needs a GPU
    from reference.registry import Case

    def back(value):
        if type(value).__module__.startswith("cupy"):
            return to_numpy(value)
        if isinstance(value, dict):
            return {k: back(v) for k, v in value.items()}
        if isinstance(value, tuple) and hasattr(value, "_fields"):
            return type(value)(*(back(v) for v in value))
        if isinstance(value, (list, tuple)):
            return type(value)(back(v) for v in value)
        return value

    return Case(back(case.inputs), back(case.params), back(case.static))
