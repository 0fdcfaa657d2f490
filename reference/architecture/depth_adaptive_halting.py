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

from typing import Any

from ..backend import array_namespace

__all__ = ["log_sigmoid", "geometric_log_q", "geometric_halting_grad", "oracle_depths", "first_exit"]


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


def confidence_decode(source: Any, params: dict[str, Any], *, prev_tokens: Any, source_valid: Any,
                      thresholds: Any, config: Any) -> tuple[Any, Any]:
    """Confidence-threshold exits at inference (§2.3 of the paper, no training of halting).

    Runs the blocks one at a time; after block n < N a still-running token exits
    when max_v p_n(v | h^n_t) > thresholds[n-1]; the rest exit at N. Exited
    tokens' states are copied upward, exactly as the training forward does, so
    ``depth_adaptive_forward`` with the returned exits reproduces the states.
    Returns exits (B, T) and the predicted tokens (B, T).
    """
    from ..nn.attention import causal_mask, padding_mask
    from ..nn.decoder_layer import decoder_layer_forward
    from ..nn.softmax import softmax_forward
    from .depth_adaptive import block_params

    xp = array_namespace(source)
    n_layers, (b, t) = config.n_layers, prev_tokens.shape
    h = xp.reshape(xp.take(params["embed"], xp.reshape(prev_tokens, (-1,)), axis=0), (b, t, -1))
    h = h + params["pos"][:t, :]  # (B, T, D)
    self_mask, cross_mask = causal_mask(t, xp=xp), padding_mask(source_valid)
    exits = xp.full((b, t), n_layers, dtype=xp.int64)
    running = xp.ones((b, t), dtype=xp.bool)
    prediction = xp.zeros((b, t), dtype=xp.int64)
    for n in range(1, n_layers + 1):
        full, _ = decoder_layer_forward(h, source, block_params(params, n), n_heads=config.n_heads,
                                        self_mask=self_mask, cross_mask=cross_mask, activation=config.activation)
        h = xp.where(running[..., None], full, h)
        suffix = "" if config.shared_classifier else str(n)
        p, _ = softmax_forward(xp.matmul(h, params[f"exit{suffix}.w"]) + params[f"exit{suffix}.b"])  # (B, T, V)
        leave = running if n == n_layers else running & (xp.max(p, axis=-1) > thresholds[n - 1])
        exits = xp.where(leave & (n < n_layers), xp.full_like(exits, n), exits)
        prediction = xp.where(leave, xp.argmax(p, axis=-1), prediction)
        running = running & ~leave
    return exits, prediction
