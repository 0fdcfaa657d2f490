"""Host-side random draws, moved onto a backend.

All randomness in the oracle is data (DESIGN.md): it is drawn here, on the
host, from an explicit ``numpy.random.Generator``, and passed to forward
functions as arguments. Mechanism modules build their ``sample_*`` helpers
from these few functions.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any, Mapping, Sequence

import numpy as np

from .backend import array_namespace, from_numpy, to_numpy

__all__ = ["generator", "normal", "uniform", "integers", "dropout_mask", "random_cotangents"]


def generator(seed: int | np.random.Generator) -> np.random.Generator:
    """A Generator from a seed (a Generator passes through)."""
    if isinstance(seed, np.random.Generator):
        return seed
    return np.random.default_rng(seed)


def normal(rng: np.random.Generator, shape: Sequence[int], *, xp: ModuleType, dtype: Any, scale: float = 1.0) -> Any:
    """Gaussian draws N(0, scale^2) of ``shape`` on ``xp``."""
    return from_numpy(scale * rng.standard_normal(tuple(shape)), xp, dtype)


def uniform(rng: np.random.Generator, shape: Sequence[int], *, xp: ModuleType, dtype: Any, low: float = 0.0, high: float = 1.0) -> Any:
    return from_numpy(rng.uniform(low, high, tuple(shape)), xp, dtype)


def integers(rng: np.random.Generator, high: int, shape: Sequence[int], *, xp: ModuleType, low: int = 0) -> Any:
    """Integers in [low, high) as int64 on ``xp``."""
    return from_numpy(rng.integers(low, high, tuple(shape)), xp, xp.int64)


def dropout_mask(rng: np.random.Generator, shape: Sequence[int], rate: float, *, xp: ModuleType, dtype: Any) -> Any:
    """Inverted-dropout mask: 0 with probability ``rate``, else 1/(1-rate)."""
    if not 0.0 <= rate < 1.0:
        raise ValueError(f"rate must lie in [0, 1), got {rate}")
    keep = rng.uniform(size=tuple(shape)) >= rate
    return from_numpy(keep / (1.0 - rate), xp, dtype)


def random_cotangents(outputs: Mapping[str, Any], seed: int = 0) -> dict[str, Any]:
    """Gaussian cotangents for every floating output (complex for complex outputs), seeded by ``seed``.

    The gradient checker, the fixture exporter and the comparisons all draw the same cotangents, so
    a fixture's ``grads.*`` are reproducible from its seed.
    """
    rng = np.random.default_rng(seed + 7919)
    cot = {}
    for name, out in outputs.items():
        xp = array_namespace(out)
        if not xp.isdtype(out.dtype, ("real floating", "complex floating")):
            continue
        host = rng.standard_normal(tuple(out.shape))
        if np.iscomplexobj(to_numpy(out)):
            host = host + 1j * rng.standard_normal(tuple(out.shape))
        cot[name] = xp.asarray(host, dtype=out.dtype)
    return cot
