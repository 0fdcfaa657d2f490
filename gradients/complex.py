"""Wirtinger calculus and the gradient conventions of PyTorch, JAX and this oracle.

The convention
--------------
For a *real* loss L of a complex array z = x + i y, the oracle returns

    g = dL/dx + i dL/dy                                   (the oracle, DESIGN.md)

which is PyTorch's ``z.grad`` (PyTorch, "Autograd for Complex Numbers",
https://pytorch.org/docs/stable/notes/autograd.html#autograd-for-complex-numbers).
A step ``z <- z - lr * g`` is steepest descent, exactly as for real tensors.

JAX's ``jax.grad`` of a real function of a complex input returns the complex
conjugate,

    g_jax = dL/dx - i dL/dy = conj(g)

(JAX FAQ / Autodiff Cookbook, "Complex numbers and differentiation",
https://jax.readthedocs.io/en/latest/notebooks/autodiff_cookbook.html#complex-numbers-and-differentiation).
So converting between the two is one conjugation, in either direction:
:func:`from_jax` and :func:`to_jax` are the same map, named for the reader.

Wirtinger derivatives
---------------------
With d/dz = (d/dx - i d/dy) / 2 and d/dconj(z) = (d/dx + i d/dy) / 2, a real L has
dL/dconj(z) = conj(dL/dz), and

    g (oracle, PyTorch) = 2 dL/dconj(z),        g_jax = 2 dL/dz.

Chain rules in the oracle convention, for y = h(z) feeding a real loss:

* h holomorphic (linear maps, products, exp):   g_z = conj(h'(z)) g_y,
  so y = z W gives g_z = g_y conj(W)^T and g_W = conj(z)^T g_y;
* h = conj:                                    g_z = conj(g_y);
* h applied to real and imaginary parts apart: g_z = a'(x) Re g_y + i b'(y) Im g_y;
* a real function s = Re(z) or s = |z|:        g_z = g_s, or g_z = g_s z / |z|.

Worked example: L = |z|^2 = x^2 + y^2 at z = 1 + 2i
-----------------------------------------------------
    dL/dx = 2x = 2,  dL/dy = 2y = 4
    Wirtinger:  dL/dz = conj(z) = 1 - 2i,   dL/dconj(z) = z = 1 + 2i
    oracle / PyTorch:  g     = 2 + 4i = 2 z
    JAX:               g_jax = 2 - 4i = 2 conj(z)

A test that forgets the conjugation when comparing JAX with the oracle sees
2 - 4i against 2 + 4i and fails (``oracle_tests/test_complex_order.py`` shows it).
For a real-valued input both conventions coincide (the imaginary part is zero).

:func:`gradients.compare_jax.compare_jax` applies :func:`from_jax` to every complex
gradient ``jax.vjp`` returns and says so in its report's notes; by hand,
``from_jax(jax.grad(loss)(z))`` is what PyTorch leaves in ``z.grad``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from reference.backend import array_namespace

__all__ = ["from_jax", "to_jax", "from_parts", "to_parts", "wirtinger", "from_wirtinger", "holomorphic_vjp",
           "numerical_wirtinger"]


def _conj(g: Any) -> Any:
    try:
        xp = array_namespace(g)
    except TypeError:
        return np.conj(g)
    return xp.conj(g)


def from_jax(g_jax: Any) -> Any:
    """A ``jax.grad`` result (dL/dx - i dL/dy) in the oracle's convention (dL/dx + i dL/dy)."""
    return _conj(g_jax)


def to_jax(g: Any) -> Any:
    """An oracle gradient in JAX's convention (the conjugate)."""
    return _conj(g)


def from_parts(d_re: Any, d_im: Any) -> Any:
    """g = dL/dx + i dL/dy from the two real partial derivatives."""
    return d_re + 1j * d_im


def to_parts(g: Any) -> tuple[Any, Any]:
    """(dL/dx, dL/dy) from an oracle gradient."""
    try:
        xp = array_namespace(g)
        return xp.real(g), xp.imag(g)
    except TypeError:
        return np.real(g), np.imag(g)


def wirtinger(g: Any) -> tuple[Any, Any]:
    """(dL/dz, dL/dconj(z)) of a real loss from its oracle gradient: (conj(g) / 2, g / 2)."""
    return _conj(g) / 2, g / 2


def from_wirtinger(dl_dconj_z: Any) -> Any:
    """The oracle gradient 2 dL/dconj(z) of a real loss."""
    return 2 * dl_dconj_z


def holomorphic_vjp(g_y: Any, derivative: Any) -> Any:
    """g_z = conj(h'(z)) g_y for an elementwise holomorphic y = h(z)."""
    return _conj(derivative) * g_y


def numerical_wirtinger(f: Any, z: complex, *, h: float = 1e-6) -> tuple[complex, complex]:
    """(df/dz, df/dconj(z)) of a scalar function f: C -> C at z by central differences.

    Useful to teach and to test: f holomorphic gives df/dconj(z) = 0; f = |z|^2
    gives (conj(z), z).
    """
    dfx = (f(z + h) - f(z - h)) / (2 * h)
    dfy = (f(z + 1j * h) - f(z - 1j * h)) / (2 * h)
    return (dfx - 1j * dfy) / 2, (dfx + 1j * dfy) / 2
