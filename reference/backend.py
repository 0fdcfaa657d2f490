"""Array namespaces and the few operations the array API standard lacks.

Mechanism code never imports NumPy. It takes its namespace from its inputs::

    xp = array_namespace(x)

and uses only functions of the Python array API standard, so that the same
code runs on NumPy (the default), CuPy, PyTorch (through array-api-compat),
and array-api-strict (the strict stand-in that proves, on a CPU, that CuPy will
work).

Choosing a backend
------------------
``namespace(name)`` returns the namespace for ``"numpy"``, ``"array_api_strict"``,
``"torch"`` or ``"cupy"``. Without a name it reads the ``ORACLE_BACKEND``
environment variable, and falls back to NumPy. The command lines take
``--backend``.

Devices (torch)
---------------
Mechanism code creates arrays with ``xp.zeros(...)`` and the like without a
``device=`` argument (one device is all NumPy and CuPy have). So on torch the
device is the process's default: ``namespace("torch", device=...)`` (or
``$ORACLE_DEVICE``; default ``"cuda"`` where CUDA is available, else ``"cpu"``)
calls ``torch.set_default_device`` and ``from_numpy`` places arrays there.
``device_of(xp)`` says which device that is.

Helpers the standard lacks
--------------------------
Each helper below has a NumPy implementation, a CuPy implementation, a torch
implementation, and a portable implementation written in the standard alone
(used for array-api-strict and any other namespace). The portable one is the
definition; the others are faster routes to the same numbers.

* ``scatter_add(values, index, size)``: the backward of a gather/embedding.
* ``erf(x)``: the error function (exact GELU).

Host transfers
--------------
``to_numpy`` and ``from_numpy`` move arrays between a backend and the host.
Random draws are always made on the host with ``numpy.random.Generator`` and
moved with ``from_numpy`` (DESIGN.md: randomness is data).
"""

from __future__ import annotations

import importlib
import math
import os
from types import ModuleType
from typing import Any

import numpy as np
from array_api_compat import (
    array_namespace,
    is_array_api_strict_namespace,
    is_cupy_namespace,
    is_numpy_namespace,
    is_torch_namespace,
)

__all__ = [
    "BACKENDS",
    "MASKED_SCORE",
    "array_namespace",
    "DTYPES",
    "namespace",
    "device_of",
    "dtype_of",
    "from_numpy",
    "to_numpy",
    "scatter_add",
    "erf",
    "one_hot",
    "sum_to_shape",
]

BACKENDS = ("numpy", "array_api_strict", "torch", "cupy")

#: Dtype names the oracle knows; bfloat16 and float16 exist only on torch (and CuPy has float16).
DTYPES = ("float32", "float64", "complex64", "complex128", "bfloat16", "float16")

_TORCH_DEVICE: str | None = None

#: The additive score given to masked attention entries. Finite on purpose:
#: finite differences must never see ``inf - inf``; ``exp(-1e9 - max)`` is an
#: exact zero in float32 and float64 alike.
MASKED_SCORE = -1e9


def namespace(name: str | None = None, device: str | None = None) -> ModuleType:
    """Return the array namespace called ``name`` (or ``$ORACLE_BACKEND``, or NumPy).

    ``device`` applies to torch only (see the module docstring); other backends refuse one.
    """
    name = name or os.environ.get("ORACLE_BACKEND", "numpy")
    if name not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {name!r}")
    if device is not None and name != "torch":
        raise ValueError(f"device={device!r} applies to the torch backend only, got backend {name!r}")
    if name == "numpy":
        return importlib.import_module("array_api_compat.numpy")
    if name == "torch":
        return _torch_namespace(device)
    if name == "cupy":
        try:
            importlib.import_module("cupy")
        except ImportError as err:  # pragma: no cover - depends on the machine
            raise ImportError("backend 'cupy' needs CuPy: pip install '.[gpu]'") from err
        return importlib.import_module("array_api_compat.cupy")
    return importlib.import_module("array_api_strict")


def _torch_namespace(device: str | None) -> ModuleType:
    global _TORCH_DEVICE
    try:
        import torch
    except ImportError as err:  # pragma: no cover - depends on the machine
        raise ImportError("backend 'torch' needs PyTorch: pip install torch") from err
    device = device or os.environ.get("ORACLE_DEVICE") or ("cuda" if torch.cuda.is_available() else "cpu")
    try:
        torch.empty(0, device=device)
    except (RuntimeError, AssertionError) as err:
        raise ValueError(f"torch device {device!r} is not usable here: {err}") from err
    if device != (_TORCH_DEVICE or "cpu"):
        torch.set_default_device(device)  # costs a little on every torch call, so never done for the CPU default
    _TORCH_DEVICE = device
    return importlib.import_module("array_api_compat.torch")


def device_of(xp: ModuleType) -> str:
    """The device arrays of ``xp`` are made on: the torch default device, else ``"cpu"`` (``"cuda"`` for CuPy)."""
    if is_torch_namespace(xp):
        return _TORCH_DEVICE or "cpu"
    return "cuda" if is_cupy_namespace(xp) else "cpu"


def dtype_of(xp: ModuleType, name: str) -> Any:
    """The dtype object ``xp.float64`` etc. for a dtype name (bfloat16 on torch only)."""
    if name not in DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, got {name!r}")
    dtype = getattr(xp, name, None)
    if dtype is None:
        raise ValueError(f"dtype {name!r} does not exist on backend {getattr(xp, '__name__', xp)!r}")
    return dtype


def from_numpy(a: Any, xp: ModuleType, dtype: Any = None) -> Any:
    """Move a host (NumPy) array onto the backend ``xp`` (on torch: onto its default device)."""
    a = np.asarray(a)
    if is_torch_namespace(xp):
        import torch

        # torch.from_numpy shares memory; copy so that the host array and the tensor stay independent.
        t = torch.from_numpy(np.array(a, copy=True)).to(device_of(xp))
        return t if dtype is None else t.to(dtype)
    if dtype is not None:
        return xp.asarray(a, dtype=dtype)
    return xp.asarray(a)


def to_numpy(x: Any) -> np.ndarray:
    """Copy any backend's array to a NumPy array on the host."""
    if isinstance(x, np.ndarray):
        return x
    if hasattr(x, "get") and type(x).__module__.startswith("cupy"):
        return x.get()
    if type(x).__module__.startswith("torch"):
        x = x.detach().cpu()
        # NumPy has no bfloat16: widen it (exactly) to float32 on the host.
        return (x.float() if str(x.dtype) == "torch.bfloat16" else x).numpy()
    if type(x).__module__.startswith("array_api_strict"):
        # array-api-strict wraps a NumPy array; DLPack cannot carry bool, so ask the wrapper.
        return np.asarray(x._array)
    try:
        return np.from_dlpack(x)
    except (TypeError, AttributeError, RuntimeError, BufferError):
        return np.asarray(x)


def scatter_add(values: Any, index: Any, size: int) -> Any:
    """``out[index[n]] += values[n]`` for ``n`` in order; ``out`` has ``size`` rows.

    values: (N, *rest) floating; index: (N,) integer in [0, size). Repeated
    indices accumulate. Returns (size, *rest).
    """
    xp = array_namespace(values, index)
    rest = tuple(values.shape[1:])
    if is_numpy_namespace(xp):
        # np.add.at on flat element indices: the same additions in the same order as
        # np.add.at(out, index, values) (so bit-identical), about 5x faster for row scatters.
        width = math.prod(rest)
        flat_index = (np.asarray(index)[:, None] * width + np.arange(width)).reshape(-1)  # (N R,)
        out = np.zeros(size * width, dtype=values.dtype)
        np.add.at(out, flat_index, np.asarray(values).reshape(-1))
        return xp.asarray(out.reshape((size, *rest)))
    if is_cupy_namespace(xp):  # pragma: no cover - needs a GPU
        import cupy
        import cupyx

        out = cupy.zeros((size, *rest), dtype=values.dtype)
        cupyx.scatter_add(out, index, values)
        return out
    if is_torch_namespace(xp):
        out = xp.zeros((size, *rest), dtype=values.dtype)
        return out.index_add_(0, index, values)
    # Portable: a one-hot matrix turns the scatter into a matmul. (size, N) @ (N, R)
    flat = xp.reshape(values, (values.shape[0], -1))  # (N, R)
    hot = one_hot(index, size, dtype=values.dtype)  # (N, size)
    out = xp.matmul(xp.matrix_transpose(hot), flat)  # (size, R)
    return xp.reshape(out, (size, *rest))


def one_hot(index: Any, size: int, *, dtype: Any) -> Any:
    """(…,) integers → (…, size) with a one at each index."""
    xp = array_namespace(index)
    classes = xp.arange(size, dtype=index.dtype)
    return xp.astype(index[..., None] == classes, dtype)


# Number of terms of the positive series for erf; enough for |x| <= 6 in float64.
_ERF_TERMS = 140
_ERF_CLIP = 6.0


def erf(x: Any) -> Any:
    """The error function, elementwise, on any backend.

    The portable route sums the everywhere-positive series (Abramowitz and
    Stegun 7.1.6)::

        erf(x) = 2/sqrt(pi) * exp(-x^2) * sum_n 2^n x^(2n+1) / (1*3*...*(2n+1))

    which has no cancellation, and clips at |x| = 6 where erf is 1 to within
    2e-17. Its relative error against scipy is at most 2e-15 on [-7, 7] (tested).
    """
    xp = array_namespace(x)
    if is_numpy_namespace(xp):
        import scipy.special

        return xp.asarray(scipy.special.erf(np.asarray(x)))
    if is_cupy_namespace(xp):  # pragma: no cover - needs a GPU
        import cupyx.scipy.special

        return cupyx.scipy.special.erf(x)
    if is_torch_namespace(xp):
        import torch

        return torch.special.erf(x)
    return _erf_series(x, xp=xp)


def _erf_series(x: Any, *, xp: ModuleType) -> Any:
    a = xp.clip(xp.abs(x), 0.0, _ERF_CLIP)
    a2 = a * a
    term = a  # n = 0 term: x
    total = a
    for n in range(1, _ERF_TERMS):
        term = term * (2.0 * a2) / (2 * n + 1)
        total = total + term
    value = (2.0 / math.sqrt(math.pi)) * xp.exp(-a2) * total
    return xp.sign(x) * value


def sum_to_shape(x: Any, shape: tuple[int, ...]) -> Any:
    """Sum ``x`` down to ``shape``, undoing NumPy broadcasting (the backward of a broadcast)."""
    xp = array_namespace(x)
    shape = tuple(shape)
    lead = x.ndim - len(shape)
    if lead:
        x = xp.sum(x, axis=tuple(range(lead)))
    axes = tuple(i for i, n in enumerate(shape) if n == 1 and x.shape[i] != 1)
    if axes:
        x = xp.sum(x, axis=axes, keepdims=True)
    return x


def is_strict(xp: ModuleType) -> bool:
    """True for array-api-strict (used by tests to assert the namespace was kept)."""
    return is_array_api_strict_namespace(xp)
