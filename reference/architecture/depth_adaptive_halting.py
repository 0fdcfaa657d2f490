"""Halting distributions, oracle depth targets and exit rules of the Depth-Adaptive Transformer.

Elbayad, Gu, Grave, Auli, "Depth-Adaptive Transformer", ICLR 2020, arXiv:1910.10073.
The decoder that uses these lives in :mod:`reference.architecture.depth_adaptive`.

Exits (depths) are 1-based, as in the paper: a token with exit n is emitted by
the classifier after block n of N.

Halting distributions over exits {1..N}:

* multinomial (token: from block 1's state; sequence: from the mean encoder state)::

      q = softmax(z),   L_exit = -sum_n q*(n) log q(n),   dL/dz = q sum_n q*(n) - q*

* geometric-like (a discrete hazard), one halting unit per block n < N::

      chi_n = sigmoid(a_n)
      log q(n) = log sigmoid(a_n) + sum_{k<n} log sigmoid(-a_k)      (n < N)
      log q(N) = sum_{k<N} log sigmoid(-a_k)
      dL/da_k = chi_k Q_{>=k} - q*(k),   Q_{>=k} = sum_{n>=k} q*(n)

  With a Dirac target at n*, this is a sum of binary cross-entropies: label 0
  ("continue") for k < n*, label 1 ("halt") at k = n* < N, nothing above.

Oracle targets (Dirac distributions, computed once from the aligned forward and
then frozen; ties go to the smallest depth):

* token:    n*_t = argmax_n ( sum_t' kappa(t, t') LL_t'^n - lambda n ),
            kappa(t, t') = exp(-|t - t'|^2 / sigma) over valid t' (sigma = 0: identity)
* sequence: n*   = argmax_n ( sum_t LL_t^n - lambda n )

LL is the log-likelihood of the reference token ("likelihood-based") or the 0/1
correctness of the argmax ("correctness-based").
"""

from __future__ import annotations

from typing import Any, NamedTuple

from ..backend import array_namespace, one_hot
from ..nn.softmax import log_softmax_forward

__all__ = ["log_sigmoid", "geometric_log_q", "geometric_halting_grad", "oracle_depths", "first_exit", "exit_scores",
           "HALTING_KINDS", "HaltingCache", "HaltingGrads", "halting_forward", "halting_backward"]

HALTING_KINDS = ("token", "geometric", "sequence")


class HaltingCache(NamedTuple):
    """What the halting backward needs; the same fields for every kind (unused ones are None)."""

    kind: str  # "token", "geometric" or "sequence"
    dz_unit: Any  # dL_exit/dz for dL_exit = 1: (B, T, N) token, (B, T, N-1) geometric, (B, N) sequence
    features: Any  # what z reads: h^1 (B, T, D) token, h^1..h^{N-1} (B, T, N-1, D) geometric, mean (B, D) sequence
    hidden: Any | None  # (B, Dh) tanh layer of the sequence MLP, else None
    source_weight: Any | None  # (B, S, 1) 1 / n_valid on valid source rows (sequence), else None
    params: dict[str, Any]  # the halt.* parameters


class HaltingGrads(NamedTuple):
    params: dict[str, Any]  # gradients of the halt.* parameters
    dstates: Any | None  # (B, T, N, D) to add to the decoder states' gradient, or None (detach / sequence)
    dsource: Any | None  # (B, S, D) to add to the source's gradient, or None


def log_sigmoid(a: Any) -> Any:
    """log sigmoid(a) = -softplus(-a), stable for any sign (no -inf for large |a|)."""
    xp = array_namespace(a)
    return xp.minimum(a, xp.zeros_like(a)) - xp.log1p(xp.exp(-xp.abs(a)))


def geometric_log_q(a: Any) -> Any:
    """Halting logits a (..., N-1) → log q (..., N) of the geometric-like exit distribution."""
    xp = array_namespace(a)
    log_continue = xp.cumulative_sum(log_sigmoid(-a), axis=-1)  # (..., N-1): sum_{k<=n} log(1 - chi_k)
    before = xp.concat([xp.zeros_like(a[..., :1]), log_continue[..., :-1]], axis=-1)  # sum_{k<n}
    return xp.concat([log_sigmoid(a) + before, log_continue[..., -1:]], axis=-1)  # (..., N)


def geometric_halting_grad(a: Any, target: Any) -> Any:
    """d(-sum_n q*(n) log q(n)) / da for halting logits a (..., N-1) and target q* (..., N)."""
    xp = array_namespace(a)
    chi = 1.0 / (1.0 + xp.exp(-a))
    # Q_{>=k}: reverse cumulative sum of q* over n, kept for k = 1..N-1.
    total = xp.sum(target, axis=-1, keepdims=True)
    at_or_above = total - xp.cumulative_sum(target, axis=-1) + target  # (..., N)
    return chi * at_or_above[..., :-1] - target[..., :-1]


def oracle_depths(scores: Any, valid: Any, *, kind: str, sigma: float = 0.0, lam: float = 0.0) -> Any:
    """Oracle exits from per-token scores (B, T, N) (log-likelihoods or 0/1 correctness).

    kind "token" returns (B, T) exits, "sequence" (B,) exits, 1-based; padded
    tokens (valid False) are excluded from every sum and get exit N.
    """
    xp = array_namespace(scores, valid)
    b, t, n = scores.shape
    weight = xp.astype(valid, scores.dtype)  # (B, T)
    masked = scores * weight[..., None]  # (B, T, N)
    depth_cost = lam * xp.arange(1, n + 1, dtype=scores.dtype)  # (N,)
    if kind == "sequence":
        return xp.argmax(xp.sum(masked, axis=1) - depth_cost, axis=-1) + 1  # (B,)
    if kind != "token":
        raise ValueError(f"kind must be 'token' or 'sequence', got {kind!r}")
    if sigma > 0:
        pos = xp.astype(xp.arange(t), scores.dtype)
        kernel = xp.exp(-((pos[:, None] - pos[None, :]) ** 2) / sigma)  # (T, T')
        smoothed = xp.matmul(kernel, masked)  # (B, T, N): sum over valid t'
    else:
        smoothed = masked
    exits = xp.argmax(smoothed - depth_cost, axis=-1) + 1  # (B, T)
    return xp.where(valid, exits, xp.full_like(exits, n))


def first_exit(signal: Any, thresholds: Any) -> Any:
    """Exit at the first block n < N whose signal exceeds thresholds[n-1], else N.

    signal (..., N) (a confidence max_v p_n, or a halting probability chi_n),
    thresholds (N-1,). Strict inequality, as the paper writes it.
    """
    xp = array_namespace(signal, thresholds)
    n = signal.shape[-1]
    exceed = xp.astype(signal[..., :-1] > thresholds, xp.int32)  # (..., N-1)
    fired = xp.any(exceed > 0, axis=-1)
    return xp.where(fired, xp.argmax(exceed, axis=-1) + 1, xp.full(fired.shape, n, dtype=xp.int64))


def exit_scores(p: Any, targets: Any, *, kind: str = "likelihood") -> Any:
    """Per-token, per-exit scores (B, T, N) for the oracles: log p_n(y_t), or 1[argmax p_n = y_t]."""
    xp = array_namespace(p)
    hot = xp.astype(targets[..., None, None] == xp.arange(p.shape[-1]), p.dtype)  # (B, T, 1, V)
    if kind == "likelihood":
        return xp.log(xp.sum(hot * p, axis=-1))
    if kind == "correctness":
        return xp.astype(xp.argmax(p, axis=-1) == targets[..., None], p.dtype)
    raise ValueError(f"kind must be 'likelihood' or 'correctness', got {kind!r}")


def halting_forward(kind: str, states: Any, source: Any, source_valid: Any, params: dict[str, Any],
                    halting_targets: Any, valid: Any, count: Any) -> tuple[Any, HaltingCache]:
    """L_exit (Eq. 4-6) and its cache. states (B, T, N, D) h^1..h^N; valid (B, T) float; count () = N_valid."""
    xp = array_namespace(states)
    n = states.shape[2]
    target = one_hot(halting_targets - 1, n, dtype=states.dtype)  # (B, T, N) or (B, N)
    halt = {k: v for k, v in params.items() if k.startswith("halt.")}
    if kind == "token":  # q_t = softmax(h^1_t W_h + b_h)
        h1 = states[:, :, 0, :]  # (B, T, D)
        log_q, sm = log_softmax_forward(xp.matmul(h1, halt["halt.w"]) + halt["halt.b"])  # (B, T, N)
        loss = -xp.sum(valid[..., None] * target * log_q) / count  # Eq. (4)
        return loss, HaltingCache(kind, valid[..., None] * (sm.p - target) / count, h1, None, None, halt)
    if kind == "geometric":  # a^n_t = h^n_t . w_h + b_h, n < N
        hk = states[:, :, :-1, :]  # (B, T, N-1, D)
        a = xp.squeeze(xp.matmul(hk, halt["halt.w"]), axis=-1) + halt["halt.b"]  # (B, T, N-1)
        loss = -xp.sum(valid[..., None] * target * geometric_log_q(a)) / count  # Eq. (5)
        dz = valid[..., None] * geometric_halting_grad(a, target) / count
        return loss, HaltingCache(kind, dz, hk, None, None, halt)
    if kind != "sequence":
        raise ValueError(f"halting must be one of {HALTING_KINDS}, got {kind!r}")
    keep = xp.astype(source_valid, source.dtype)[..., None]  # (B, S, 1)
    n_src = xp.sum(keep, axis=1)  # (B, 1)
    mean = xp.sum(source * keep, axis=1) / n_src  # (B, D) mean of the valid source states
    hidden = xp.tanh(xp.matmul(mean, halt["halt.w1"]) + halt["halt.b1"])  # (B, Dh)
    log_q, sm = log_softmax_forward(xp.matmul(hidden, halt["halt.w2"]) + halt["halt.b2"])  # (B, N)
    b = source.shape[0]
    loss = -xp.sum(target * log_q) / b  # Eq. (6)
    return loss, HaltingCache(kind, (sm.p - target) / b, mean, hidden, keep / n_src[:, None, :], halt)


def halting_backward(d_exit: Any, cache: HaltingCache, *, detach: bool = False) -> HaltingGrads:
    """Pure: the halt.* gradients and the contributions to dstates / dsource (None where nothing flows)."""
    xp = array_namespace(cache.dz_unit)
    p = cache.params
    dz = d_exit * cache.dz_unit
    if cache.kind == "token":
        h1 = cache.features  # (B, T, D)
        grads = {"halt.w": xp.matmul(xp.matrix_transpose(xp.reshape(h1, (-1, h1.shape[-1]))),
                                     xp.reshape(dz, (-1, dz.shape[-1]))),  # (D, N)
                 "halt.b": xp.sum(dz, axis=(0, 1))}
        if detach:
            return HaltingGrads(grads, None, None)  # not gradient-checked: a stop-gradient (test_depth_adaptive.py::test_detach_stops_the_halting_gradient_at_the_states_only)
        dh1 = xp.matmul(dz, xp.matrix_transpose(p["halt.w"]))[:, :, None, :]  # (B, T, 1, D)
        n = dz.shape[-1]
        zeros = xp.zeros((*dh1.shape[:2], n - 1, dh1.shape[-1]), dtype=dh1.dtype)
        return HaltingGrads(grads, xp.concat([dh1, zeros], axis=2), None)  # (B, T, N, D)
    if cache.kind == "geometric":
        hk = cache.features  # (B, T, N-1, D)
        grads = {"halt.w": xp.sum(hk * dz[..., None], axis=(0, 1, 2))[:, None],  # (D, 1)
                 "halt.b": xp.reshape(xp.sum(dz), (1,))}
        if detach:
            return HaltingGrads(grads, None, None)  # not gradient-checked: a stop-gradient (test_depth_adaptive.py::test_detach_stops_the_halting_gradient_at_the_states_only)
        dhk = dz[..., None] * xp.reshape(p["halt.w"], (-1,))  # (B, T, N-1, D)
        return HaltingGrads(grads, xp.concat([dhk, xp.zeros_like(dhk[:, :, :1, :])], axis=2), None)
    mean, hidden = cache.features, cache.hidden
    dpre = xp.matmul(dz, xp.matrix_transpose(p["halt.w2"])) * (1.0 - hidden * hidden)  # (B, Dh)
    grads = {"halt.w2": xp.matmul(xp.matrix_transpose(hidden), dz), "halt.b2": xp.sum(dz, axis=0),
             "halt.w1": xp.matmul(xp.matrix_transpose(mean), dpre), "halt.b1": xp.sum(dpre, axis=0)}
    if detach:
        return HaltingGrads(grads, None, None)  # not gradient-checked: a stop-gradient (test_depth_adaptive.py::test_detach_stops_the_halting_gradient_at_the_states_only)
    dmean = xp.matmul(dpre, xp.matrix_transpose(p["halt.w1"]))  # (B, D)
    return HaltingGrads(grads, None, dmean[:, None, :] * cache.source_weight)  # (B, S, D)
