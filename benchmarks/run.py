"""Benchmark one mechanism: the oracle on NumPy (or CuPy) beside its peer and torch(oracle).

Three sides, timed in turns (:func:`benchmarks.measure.interleaved`) on the same case, in CPU time
of the process with one thread (:func:`benchmarks.measure.cpu_clock`: the machine is shared), in
wall time with more:

* ``oracle``: the registered forward and backward;
* ``peer``: what a user would run instead (:mod:`benchmarks.peers`; ``torch.nn.functional`` for the
  building blocks, :mod:`benchmarks.torch_eq`), at the same configuration and thread count;
* ``torch(oracle)``: the oracle's own forward on torch tensors, differentiated by autograd (the
  hand-written backward against a tape on identical arithmetic).

Targets: a mechanism with a peer at most 1.0 times the peer; a building block (``nn.*``) at most
1.5 times torch's fused kernels; a mechanism without a peer at most 1.5 times torch(oracle).
"""

from __future__ import annotations

import math
import time
import traceback
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from reference.backend import from_numpy, namespace, to_numpy
from reference.registry import Mechanism

from . import THREADS, measure
from .cases import benchmark_case

#: Targets: oracle / real peer; building blocks / torch's fused kernels; oracle / torch(oracle) without a peer.
PEER_TARGET, BLOCK_TARGET, ORACLE_TARGET = 1.0, 1.5, 1.5
#: Above this many seconds per oracle run, a mechanism with a real peer skips the torch(oracle) column.
HEAVY_SECONDS = 1.0


@dataclass
class Row:
    name: str
    dtype: str
    size: str
    threads: int = THREADS
    oracle_s: float = math.nan
    peer_s: float = math.nan
    peer_kind: str = "-"
    torch_oracle_s: float = math.nan
    error: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def target(self) -> float:
        if is_block(self.name):
            return BLOCK_TARGET
        return PEER_TARGET if self.has_peer else ORACLE_TARGET

    @property
    def has_peer(self) -> bool:
        return not math.isnan(self.peer_s)

    @property
    def ratio(self) -> float:
        """oracle / peer where there is a peer, else oracle / torch(oracle)."""
        base = self.peer_s if self.has_peer else self.torch_oracle_s
        return self.oracle_s / base if base > 0 else math.nan

    @property
    def ratio_torch_oracle(self) -> float:
        return self.oracle_s / self.torch_oracle_s if self.torch_oracle_s > 0 else math.nan

    def verdict(self) -> str:
        if self.error:
            return "error"
        if math.isnan(self.ratio):
            return "no torch run"
        if self.ratio <= self.target:
            return "met"
        return f"missed by {100 * (self.ratio / self.target - 1):.0f}%"

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "target": self.target, "ratio": self.ratio,
                "ratio_torch_oracle": self.ratio_torch_oracle, "verdict": self.verdict()}


def is_block(name: str) -> bool:
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


def _peer_runner(mechanism: Mechanism, case, cot_np, dtype: str):
    """(kind, run) of the mechanism's peer, or None."""
    from .peers import peer_for
    from .torch_eq import IDIOMATIC, torch_runner

    if mechanism.name in IDIOMATIC:
        return torch_runner(mechanism.name, mechanism.forward, case, cot_np, idiomatic=True)
    peer = peer_for(mechanism.name)
    return None if peer is None else peer(case, dtype)


def bench(mechanism: Mechanism, *, dtype: str, repeats: int, quick: bool, backend: str = "numpy",
          with_torch: bool = True, with_torch_oracle: bool = True, seed: int = 0,
          batch: int | None = None) -> Row:
    """Time one mechanism in one dtype: oracle, peer and torch(oracle) in turns."""
    row = Row(mechanism.name, dtype, "-")
    try:
        np_dtype = getattr(np, dtype)
        case, row.size = benchmark_case(mechanism, seed, np_dtype, namespace("numpy"), quick=quick, batch=batch)
        outputs, _ = mechanism.forward(case)
        cot_np = _cotangents(outputs, seed)
        del outputs
        runs = {}
        if with_torch:
            from .peers import NoPeer

            try:
                peer = _peer_runner(mechanism, case, cot_np, dtype)
            except NoPeer as why:
                peer, row.peer_kind = None, f"none: {why}"
            except Exception as err:  # a peer that fails at this configuration: said in the table
                peer, row.peer_kind = None, f"failed ({type(err).__name__}: {str(err).splitlines()[0][:80]})"
            if peer is not None:
                row.peer_kind, runs["peer"] = peer
            if with_torch_oracle and backend == "numpy":
                from .torch_eq import torch_runner

                _, runs["torch_oracle"] = torch_runner(mechanism.name, mechanism.forward, case, cot_np,
                                                       idiomatic=False)
        if backend != "numpy":  # pragma: no cover - needs a GPU
            case = _to_backend(case, namespace(backend))
        cot = {k: from_numpy(v, namespace(backend)) for k, v in cot_np.items()}
        forward, backward = mechanism.forward, mechanism.backward

        def oracle() -> None:
            _, cache = forward(case)
            backward(cache, cot)

        start = time.perf_counter()
        oracle()  # also warms the caches before the timed rounds
        if time.perf_counter() - start > HEAVY_SECONDS and "peer" in runs and not is_block(mechanism.name):
            runs.pop("torch_oracle", None)  # a real peer is the comparison that counts; keeps the full run short
        clock = measure.cpu_clock if THREADS == 1 and backend == "numpy" else time.perf_counter
        times = measure.interleaved({"oracle": oracle, **runs}, repeats, _sync(backend),
                                    min_seconds=0.0 if quick else 0.25, clock=clock)
        row.oracle_s = times["oracle"]
        row.peer_s = times.get("peer", math.nan)
        row.torch_oracle_s = times.get("torch_oracle", math.nan)
    except Exception as err:  # one failing mechanism must not stop the table
        row.error = f"{type(err).__name__}: {err}".splitlines()[0][:200]
        row.extra["traceback"] = traceback.format_exc()
    return row


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
    import dataclasses

    conv = lambda a: from_numpy(a, xp)  # noqa: E731
    return dataclasses.replace(case, inputs=_map(case.inputs, conv), params=_map(case.params, conv),
                               static=_map(case.static, conv))


def row_from_dict(d: dict[str, Any]) -> Row:
    """A Row back from results.json (derived fields dropped)."""
    names = {f.name for f in Row.__dataclass_fields__.values()}
    return Row(**{k: (math.nan if v is None else v) if k.endswith("_s") else v for k, v in d.items() if k in names})
