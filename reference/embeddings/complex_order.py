"""Position-aware complex word embeddings (Wang, Zhao, Lioma, Li, Zhang, Simonsen, ICLR 2020).

"Encoding word order in complex embeddings", arXiv:1912.12333v2. A word is no
longer a vector but a continuous function of its position: per dimension k,

    f(j, pos)_k = r_{j,k} exp(i (w_{j,k} pos + theta_{j,k}))                Eq. (1)

The amplitude r carries the word's meaning, the phase its position; moving a
word by Delta positions rotates every dimension by w_{j,k} Delta (the paper's
"position-free offset transformation"), and |f| = r stays bounded.

Axes: B batch, T sequence, V vocabulary, D embedding width. Equation numbers
(1)-(4) are this docstring's; (1) is the paper's complex-order embedding.

Paper symbol -> name here:
    r (amplitude)          amplitude       (V, D) real
    w (frequency/period)   frequency       (V, D) per word, (D,) shared by all words, or None
    theta (initial phase)  initial_phase   (V, D) per word, (D,) shared by all words, or None (= 0)
    pos                    positions       (T,) or (B, T), real or integer
    phi = w pos + theta    phi             (B, T, D)

Backward, in the oracle's convention g = dL/dRe f + i dL/dIm f (DESIGN.md;
PyTorch's ``.grad``). With u = exp(i phi), f = r u, per token:

    dL/dr     = Re(conj(u) g)                                               Eq. (2)
    dL/dphi   = Im(conj(f) g) = r Im(conj(u) g)                             Eq. (3)
    dL/dtheta = dL/dphi,   dL/dw = pos dL/dphi                              Eq. (4)

and a per-word table sums its tokens' values (scatter-add over the
vocabulary, like an embedding's gradient); a shared (D,) row sums all tokens.

Variants registered (``embeddings.complex_order.*``, cases and configurations in
:mod:`reference.embeddings.cases.complex_order`):
    (default)            per-word r, w, theta: the paper's Eq. (1).
    .shared_frequency    w shared by all words (one frequency per dimension),
                         the family that contains the Transformer's sinusoidal
                         position encoding (fixed w_k = 10000^(-2k/D)).
    .no_initial_phase    theta = 0, as in the authors' released Transformer
                         and fastText code (their phase table is multiplied by
                         the position and nothing is added).
    .position_free       w = None, phi = theta: a complex embedding that does
                         not see position ("Complex-vanilla" in the paper's
                         tables, as we read them [verify]).

Deviations:
    - Dropout is not part of this module. The authors' code drops the
      amplitude and the phase w*pos separately before the cos/sin (a dropped
      phase becomes a zero angle); pass an explicit mask to ``nn.dropout`` on
      ``amplitude``/``phi`` yourself if you need it.
    - Positions are an explicit argument; the authors' Transformer code counts
      them backwards (T-1 ... 0), ours default to 0 ... T-1.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

from ..backend import array_namespace, scatter_add
from ..random import uniform
from ..validate import require_finite, require_float, require_index_range, require_int, require_shape

PAPER = "Encoding word order in complex embeddings (Wang et al., ICLR 2020, arXiv:1912.12333)"


class ComplexOrderCache(NamedTuple):
    ids: Any  # (B, T) int
    positions: Any  # (B, T, 1) real
    amplitude_rows: Any  # (B, T, D) r gathered per token
    u: Any  # (B, T, D) complex, exp(i phi)
    vocab_size: int
    frequency_shape: tuple[int, ...] | None  # (V, D), (D,) or None
    initial_phase_shape: tuple[int, ...] | None  # (V, D), (D,) or None


def complex_dtype(xp, real_dtype: Any) -> Any:
    """complex128 for float64, complex64 for float32."""
    return xp.complex128 if real_dtype == xp.float64 else xp.complex64


def _rows(table: Any, ids: Any, *, xp) -> Any:
    """Per-token rows of a (V, D) table, or a shared (D,) row broadcast to every token."""
    if table.ndim == 1:
        return table  # (D,) broadcasts against (B, T, D)
    flat = xp.take(table, xp.reshape(ids, (-1,)), axis=0)  # (B*T, D)
    return xp.reshape(flat, (*ids.shape, table.shape[1]))  # (B, T, D)


def complex_order_values(r: Any, w: Any | None, theta: Any | None, pos: Any) -> tuple[Any, Any]:
    """Eq. (1) on gathered rows; returns f = r u and the rotation u = exp(i phi).

    r (B, T, D); w and theta (B, T, D), (D,) or None; pos (B, T, 1). (Not a
    route for the complex-step method: its intermediates are already complex,
    so an imaginary perturbation of w would mix with the genuine imaginary
    part. The tests take the complex step on Re(c f) = r (Re c cos phi - Im c
    sin phi), whose intermediates are real.)
    """
    xp = array_namespace(r)
    phi = xp.zeros_like(r)  # (B, T, D)
    if w is not None:
        phi = phi + w * pos  # phi = w pos + theta
    if theta is not None:
        phi = phi + theta
    u = xp.exp(1j * phi)  # (B, T, D) complex
    return r * u, u  # Eq. (1)


def complex_order_forward(ids: Any, amplitude: Any, frequency: Any | None = None,
                          initial_phase: Any | None = None, *,
                          positions: Any | None = None) -> tuple[Any, ComplexOrderCache]:
    """f(ids, pos) = r exp(i (w pos + theta)); returns (B, T, D) complex and the cache.

    ids (B, T) integers in [0, V); amplitude (V, D) real; frequency and
    initial_phase (V, D) per word, (D,) shared, or None; positions (T,) or
    (B, T), default 0 ... T-1.
    """
    require_float("amplitude", amplitude)
    require_finite("amplitude", amplitude)
    xp = array_namespace(amplitude)
    if amplitude.ndim != 2 or 0 in tuple(amplitude.shape):
        raise ValueError(f"amplitude must have a non-empty shape (vocab, dim), got {tuple(amplitude.shape)}")
    v, d = amplitude.shape
    require_int("ids", ids)
    if ids.ndim != 2 or 0 in tuple(ids.shape):
        raise ValueError(f"ids must have a non-empty shape (batch, seq), got {tuple(ids.shape)}")
    require_index_range("ids", ids, v)
    for name, table in (("frequency", frequency), ("initial_phase", initial_phase)):
        if table is None:
            continue
        require_float(name, table)
        require_finite(name, table)
        if table.ndim == 1:
            require_shape(name, table, ["dim"], [d])
        else:
            require_shape(name, table, ["vocab", "dim"], [v, d])
    b, t = ids.shape
    if positions is None:
        positions = xp.arange(t, dtype=amplitude.dtype)
    require_finite("positions", positions)
    if tuple(positions.shape) not in ((t,), (b, t)):
        raise ValueError(f"positions must have shape (seq,) = ({t},) or (batch, seq) = ({b}, {t}), "
                         f"got {tuple(positions.shape)}")
    pos = xp.broadcast_to(xp.astype(positions, amplitude.dtype), (b, t))[..., None]  # (B, T, 1)

    r = _rows(amplitude, ids, xp=xp)  # (B, T, D)
    w = None if frequency is None else _rows(frequency, ids, xp=xp)  # (B, T, D) or (D,)
    theta = None if initial_phase is None else _rows(initial_phase, ids, xp=xp)  # (B, T, D) or (D,)
    f, u = complex_order_values(r, w, theta, pos)  # (B, T, D) complex          Eq. (1)
    return f, ComplexOrderCache(ids, pos, r, u, v,
                                None if frequency is None else tuple(frequency.shape),
                                None if initial_phase is None else tuple(initial_phase.shape))


def _reduce(per_token: Any, shape: tuple[int, ...], ids: Any, vocab_size: int, *, xp) -> Any:
    """Sum per-token gradients (B, T, D) into a per-word table (V, D) or a shared row (D,)."""
    flat = xp.reshape(per_token, (-1, per_token.shape[-1]))  # (B*T, D)
    if len(shape) == 1:
        return xp.sum(flat, axis=0)  # (D,)
    return scatter_add(flat, xp.reshape(ids, (-1,)), vocab_size)  # (V, D)


def complex_order_backward(df: Any, cache: ComplexOrderCache) -> dict[str, Any]:
    """Gradients of amplitude, frequency and initial_phase from g = df (oracle convention).

    Returns a dict with "amplitude" and, when the forward had them,
    "frequency" and "initial_phase" (real, of their tables' shapes).
    """
    xp = array_namespace(df)
    ids, pos, r, u, v, w_shape, theta_shape = cache
    rotated = xp.conj(u) * df  # (B, T, D) conj(u) g
    dr = xp.real(rotated)  # (B, T, D)                                        Eq. (2)
    dphi = r * xp.imag(rotated)  # (B, T, D)                                   Eq. (3)
    grads = {"amplitude": _reduce(dr, (v, r.shape[-1]), ids, v, xp=xp)}  # (V, D)
    if w_shape is not None:
        grads["frequency"] = _reduce(pos * dphi, w_shape, ids, v, xp=xp)  # Eq. (4)
    if theta_shape is not None:
        grads["initial_phase"] = _reduce(dphi, theta_shape, ids, v, xp=xp)  # Eq. (4)
    return grads


def sample_complex_order(rng, vocab_size: int, dim: int, *, xp, dtype, frequency: str = "word",
                         initial_phase: str = "word") -> dict[str, Any]:
    """Amplitudes in [0.5, 1.5], frequencies in [0.2, 1.2] rad/position, phases in [-pi, pi].

    frequency / initial_phase: "word" (V, D), "shared" (D,) or "none" (omitted).
    """
    params = {"amplitude": uniform(rng, (vocab_size, dim), xp=xp, dtype=dtype, low=0.5, high=1.5)}
    for name, how, low, high in (("frequency", frequency, 0.2, 1.2),
                                 ("initial_phase", initial_phase, -math.pi, math.pi)):
        if how == "word":
            params[name] = uniform(rng, (vocab_size, dim), xp=xp, dtype=dtype, low=low, high=high)
        elif how == "shared":
            params[name] = uniform(rng, (dim,), xp=xp, dtype=dtype, low=low, high=high)
        elif how != "none":
            raise ValueError(f"{name} must be 'word', 'shared' or 'none', got {how!r}")
    return params
