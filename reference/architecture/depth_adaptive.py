"""Depth-Adaptive Transformer: a decoder with an exit classifier after every block.

Elbayad, Gu, Grave, Auli, "Depth-Adaptive Transformer", ICLR 2020, arXiv:1910.10073.
Halting distributions, their losses and oracles: :mod:`reference.architecture.depth_adaptive_halting`;
parameters: :mod:`.depth_adaptive_params`; registered cases: :mod:`reference.architecture.cases.depth_adaptive`.

Axes: B batch, T target positions, S source positions, D width, V vocabulary,
N decoder blocks. Exits are 1-based.

Forward (§2.1, §2.2 of the paper; spec architecture.md §4.3–4.4):

    h^0_t = E[y_{t-1}] + P_t                                                                  (1)
    h^n   = where(exit_t >= n, Block_n(h^{n-1}, s), h^{n-1})     copying: an exited token's   (2)
                                                                  state feeds the upper blocks
    log p_n(. | h^n_t) = log_softmax(h^n_t W_n + b_n)             W_n shared or separate       (3)
    L_dec  = -(1/N_valid) sum_{b,t,n} Omega_{b,t,n} log p_n(y_t | h^n_t)                       (7)
    L_exit = -(1/N_valid) sum_{b,t} sum_n q*_t(n) log q_t(n)       token halting (4), (5)
           = -(1/B) sum_b sum_n q*_b(n) log q_b(n)                 sequence halting (6)
    L      = L_dec + alpha L_exit                                                            (8)

Omega selects the training mode: aligned training is exit_t = N and
Omega_{t,n} = omega_n (uniform by default); mixed training samples exits and sets
Omega = onehot(exit_t) (M samples: tile the batch M times and divide by M).

Backward:

    dlogits^n_t = -(Omega_{t,n} / N_valid) (onehot(y_t) - p_n)       (times dL_dec)
    dW = sum_n (h^n)^T dlogits^n   (shared) — a shared weight's gradient is the sum over its uses
    halting:  dz = (q - q*)/N_valid  (multinomial);  da_k = chi_k Q_{>=k} - q*_k  (geometric)
    blocks, from N down to 1:   g = dh^n (classifier, halting and copies from above)
        dfull = where(run_n, g, 0);   dh^{n-1} += where(run_n, 0, g) + Block_n'(dfull)

Decoding (the paper's use of the exits, §2.3): :func:`confidence_decode` scores a given target prefix with
confidence-threshold exits (teacher forcing); :func:`greedy_decode` generates autoregressively, each new token
leaving at the first block n < N with max_v p_n(v) > threshold_n, its state copied upward for later tokens.

Deviations and choices (the paper leaves them open; spec §4.4, §6 item 7):
* L_exit back-propagates into the decoder states unless ``detach=True`` (attn2d's
  ``detach_before_classifier``). The oracle targets q* are frozen inputs.
* The sequence halting MLP is tanh(s_bar W_1 + b_1) W_2 + b_2 over the mean of the
  *valid* source states (attn2d's SeqDynamicHalter averages over padding too).
* One geometric halting unit is shared by all blocks (the paper's form).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, NamedTuple

from ..backend import array_namespace, one_hot, scatter_add
from ..nn.attention import causal_mask, padding_mask
from ..nn.decoder_layer import DecoderLayerCache, decoder_layer_backward, decoder_layer_forward
from ..nn.softmax import log_softmax_forward, softmax_forward
from ..validate import require_bool, require_finite, require_float, require_index_range, require_int, require_shape
from .depth_adaptive_halting import HALTING_KINDS, HaltingCache, halting_backward, halting_forward

HALTING = (None,) + HALTING_KINDS


@dataclass(frozen=True)
class DepthAdaptiveConfig:
    n_layers: int  # N decoder blocks, each with an exit classifier
    n_heads: int
    shared_classifier: bool = True  # one W for every exit (§2.1 [paper, recalled]), or W_n per block
    halting: str | None = None  # None, "token" (multinomial), "geometric", "sequence" (§2.2)
    alpha: float = 1.0  # weight of L_exit
    detach: bool = False  # stop L_exit's gradient at the decoder states
    activation: str = "gelu"

    def __post_init__(self) -> None:
        for name in ("n_layers", "n_heads"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"DepthAdaptiveConfig.{name} must be a positive integer, got {value!r}")
        if self.halting not in HALTING:
            raise ValueError(f"DepthAdaptiveConfig.halting must be one of {HALTING}, got {self.halting!r}")
        if self.halting == "geometric" and self.n_layers < 2:
            raise ValueError("DepthAdaptiveConfig.halting='geometric' needs n_layers >= 2 (one unit per block n < N)")
        if not math.isfinite(self.alpha) or self.alpha < 0:
            raise ValueError(f"DepthAdaptiveConfig.alpha must be finite and >= 0, got {self.alpha!r}")


class DepthAdaptiveCache(NamedTuple):
    config: DepthAdaptiveConfig
    prev_tokens: Any  # (B, T) int
    blocks: list[DecoderLayerCache]
    run: list[Any]  # N × (B, T, 1) bool: block n computed token t
    states: Any  # (B, T, N, D) h^1..h^N
    p: Any  # (B, T, N, V) exit distributions
    dlogits_unit: Any  # (B, T, N, V) dL_dec/dlogits for dL_dec = 1
    classifier_w: Any  # (N, D, V) exit weights (the shared one repeated N times)
    halting: HaltingCache | None  # what the halting backward needs
    vocab_size: int
    n_positions: int


def _classifier_weights(params: dict[str, Any], config: DepthAdaptiveConfig, xp) -> tuple[Any, Any]:
    """(N, D, V) weights and (N, V) biases, repeating the shared classifier N times."""
    if config.shared_classifier:
        w, b = params["exit.w"], params["exit.b"]
        return xp.stack([w] * config.n_layers), xp.stack([b] * config.n_layers)
    n = range(1, config.n_layers + 1)
    return xp.stack([params[f"exit{i}.w"] for i in n]), xp.stack([params[f"exit{i}.b"] for i in n])


def block_params(params: dict[str, Any], n: int) -> dict[str, Any]:
    prefix = f"block{n}."
    return {k[len(prefix):]: v for k, v in params.items() if k.startswith(prefix)}


def _embed(params: dict[str, Any], prev_tokens: Any) -> Any:
    """h^0 = E[y_{t-1}] + P_t (B, T, D)."""
    xp = array_namespace(params["embed"])
    h = xp.take(params["embed"], xp.reshape(prev_tokens, (-1,)), axis=0)
    return xp.reshape(h, (*prev_tokens.shape, -1)) + params["pos"][:prev_tokens.shape[1], :]  # Eq. (1)


def _block(h, source, params, n, source_valid, config):
    """Block n on every token (the caller copies exited tokens' states): (B, T, D) and its cache."""
    xp = array_namespace(h)
    return decoder_layer_forward(h, source, block_params(params, n), n_heads=config.n_heads,
                                 self_mask=causal_mask(h.shape[1], xp=xp), cross_mask=padding_mask(source_valid),
                                 activation=config.activation)


def run_blocks(source, params, prev_tokens, source_valid, exits, config):
    """h^0 and the copy-aware block stack; returns states (B, T, N, D), block caches and run masks."""
    xp = array_namespace(source)
    h = _embed(params, prev_tokens)  # (B, T, D)
    states, blocks, run = [], [], []
    for n in range(1, config.n_layers + 1):
        full, cache = _block(h, source, params, n, source_valid, config)  # (B, T, D)
        running = (exits >= n)[..., None]  # (B, T, 1)
        h = xp.where(running, full, h)  # copy exited tokens' states upward                   Eq. (2)
        states.append(h)
        blocks.append(cache)
        run.append(running)
    return xp.stack(states, axis=2), blocks, run  # (B, T, N, D)


def _check_inputs(source, params, prev_tokens, source_valid, config):
    if not isinstance(config, DepthAdaptiveConfig):
        raise TypeError(f"config must be a DepthAdaptiveConfig, got {type(config).__name__}")
    require_float("source", source)
    require_finite("source", source)
    require_int("prev_tokens", prev_tokens)
    if prev_tokens.ndim != 2 or 0 in tuple(prev_tokens.shape):
        raise ValueError(f"prev_tokens must have a non-empty shape (batch, seq), got {tuple(prev_tokens.shape)}")
    b = prev_tokens.shape[0]
    require_shape("source", source, ["batch", "src_len", "d_model"], [b, None, params["embed"].shape[1]])
    require_index_range("prev_tokens", prev_tokens, params["embed"].shape[0])
    require_bool("source_valid", source_valid)
    require_shape("source_valid", source_valid, ["batch", "src_len"], [b, source.shape[1]])
    if not bool(array_namespace(source).all(array_namespace(source).any(source_valid, axis=1))):
        raise ValueError("source_valid must mark at least one valid source position in every row")
    if prev_tokens.shape[1] > params["pos"].shape[0]:
        raise ValueError(f"prev_tokens has {prev_tokens.shape[1]} positions, more than the {params['pos'].shape[0]} "
                         f"rows of params['pos']")


def depth_adaptive_forward(source: Any, params: dict[str, Any], *, prev_tokens: Any, targets: Any,
                           target_valid: Any, source_valid: Any, exits: Any, omega: Any,
                           config: DepthAdaptiveConfig, halting_targets: Any | None = None,
                           ) -> tuple[dict[str, Any], DepthAdaptiveCache]:
    """Losses of one batch. Returns ({"loss", "loss_dec"[, "loss_exit"]}, cache).

    source (B, S, D) encoder states; prev_tokens, targets (B, T) ids; target_valid (B, T) and
    source_valid (B, S) bool; exits (B, T) in 1..N; omega (B, T, N) loss weights, each row >= 0 and summing
    to 1; halting_targets: exits (B, T) for token/geometric halting or (B,) for sequence halting.
    """
    _check_inputs(source, params, prev_tokens, source_valid, config)
    xp = array_namespace(source)
    n, (b, t) = config.n_layers, prev_tokens.shape
    vocab = params["embed"].shape[0]
    require_shape("targets", targets, ["batch", "seq"], [b, t])
    require_index_range("targets", targets, vocab)
    require_bool("target_valid", target_valid)
    require_shape("target_valid", target_valid, ["batch", "seq"], [b, t])
    require_shape("exits", exits, ["batch", "seq"], [b, t])
    require_index_range("exits - 1", exits - 1, n)
    require_float("omega", omega)
    require_finite("omega", omega)
    require_shape("omega", omega, ["batch", "seq", "n_layers"], [b, t, n])
    if bool(xp.any(omega < 0)) or bool(xp.any(xp.abs(xp.sum(omega, axis=-1) - 1.0) > 1e-6)):
        raise ValueError("omega rows must be non-negative and sum to 1 (aligned: omega_n; mixed: onehot(exit))")
    states, blocks, run = run_blocks(source, params, prev_tokens, source_valid, exits, config)

    w, bias = _classifier_weights(params, config, xp)  # (N, D, V), (N, V)
    logits = xp.squeeze(xp.matmul(states[..., None, :], w), axis=-2) + bias  # (B, T, N, V)
    log_p, softmax_cache = log_softmax_forward(logits)  # Eq. (3)
    hot = one_hot(targets, vocab, dtype=source.dtype)[:, :, None, :]  # (B, T, 1, V)
    valid = xp.astype(target_valid, source.dtype)  # (B, T)
    count = xp.maximum(xp.sum(valid), xp.asarray(1.0, dtype=source.dtype))
    weight = omega * valid[..., None] / count  # (B, T, N)
    loss_dec = -xp.sum(weight * xp.sum(hot * log_p, axis=-1))  # Eq. (7): aligned / mixed
    dlogits_unit = -weight[..., None] * (hot - softmax_cache.p)  # (B, T, N, V)

    losses = {"loss_dec": loss_dec, "loss": loss_dec}
    halting = None
    if config.halting is not None:
        if halting_targets is None:
            raise ValueError(f"halting={config.halting!r} needs halting_targets")
        require_int("halting_targets", halting_targets)
        want = [b] if config.halting == "sequence" else [b, t]
        require_shape("halting_targets", halting_targets, ["batch"] if len(want) == 1 else ["batch", "seq"], want)
        require_index_range("halting_targets - 1", halting_targets - 1, n)
        loss_exit, halting = halting_forward(config.halting, states, source, source_valid, params, halting_targets,
                                             valid, count)
        losses["loss_exit"] = loss_exit
        losses["loss"] = loss_dec + config.alpha * loss_exit  # Eq. (8)
    cache = DepthAdaptiveCache(config, prev_tokens, blocks, run, states, softmax_cache.p, dlogits_unit, w, halting,
                               vocab, params["pos"].shape[0])
    return losses, cache


def depth_adaptive_backward(dlosses: dict[str, Any], cache: DepthAdaptiveCache) -> tuple[Any, dict[str, Any]]:
    """Gradients of sum_k dlosses[k] * losses[k]; returns dsource and the parameter gradients."""
    xp = array_namespace(cache.states)
    config = cache.config
    d_total = dlosses.get("loss", 0.0)
    d_dec = d_total + dlosses.get("loss_dec", 0.0)
    d_exit = config.alpha * d_total + dlosses.get("loss_exit", 0.0)
    w = cache.classifier_w  # (N, D, V)
    grads: dict[str, Any] = {}
    dlogits = d_dec * cache.dlogits_unit  # (B, T, N, V)
    dstates = xp.squeeze(xp.matmul(dlogits[..., None, :], xp.matrix_transpose(w)), axis=-2)  # (B, T, N, D)
    n, (b, t) = config.n_layers, cache.prev_tokens.shape
    states_by_exit = xp.reshape(xp.permute_dims(cache.states, (2, 0, 1, 3)), (n, b * t, -1))  # (N, B T, D)
    dlogits_by_exit = xp.reshape(xp.permute_dims(dlogits, (2, 0, 1, 3)), (n, b * t, -1))  # (N, B T, V)
    dw = xp.matmul(xp.matrix_transpose(states_by_exit), dlogits_by_exit)  # (N, D, V)
    db = xp.sum(dlogits, axis=(0, 1))  # (N, V)
    if config.shared_classifier:  # one weight, N uses: the gradients add
        grads["exit.w"], grads["exit.b"] = xp.sum(dw, axis=0), xp.sum(db, axis=0)
    else:
        for i in range(config.n_layers):
            grads[f"exit{i + 1}.w"], grads[f"exit{i + 1}.b"] = dw[i, ...], db[i, ...]
    dsource = None
    if cache.halting is not None:
        halting = halting_backward(d_exit, cache.halting, detach=config.detach)
        grads.update(halting.params)
        dstates = dstates if halting.dstates is None else dstates + halting.dstates
        dsource = halting.dsource

    g = dstates[:, :, -1, :]  # (B, T, D)
    for n in range(config.n_layers, 0, -1):
        running = cache.run[n - 1]
        dfull = xp.where(running, g, xp.zeros_like(g))
        dx, ds, block_grads = decoder_layer_backward(dfull, cache.blocks[n - 1])
        grads.update({f"block{n}.{k}": v for k, v in block_grads.items()})
        dsource = ds if dsource is None else dsource + ds
        g = xp.where(running, xp.zeros_like(g), g) + dx
        if n > 1:
            g = g + dstates[:, :, n - 2, :]
    grads["embed"] = scatter_add(xp.reshape(g, (b * t, -1)), xp.reshape(cache.prev_tokens, (-1,)), cache.vocab_size)
    dpos = xp.sum(g, axis=0)  # (T, D)
    grads["pos"] = xp.concat([dpos, xp.zeros((cache.n_positions - t, dpos.shape[1]), dtype=dpos.dtype)], axis=0)
    return dsource, grads


def confidence_decode(source: Any, params: dict[str, Any], *, prev_tokens: Any, source_valid: Any,
                      thresholds: Any, config: DepthAdaptiveConfig) -> tuple[Any, Any]:
    """Confidence-threshold exits on a given prefix (teacher forcing; §2.3, no training of halting).

    Runs the blocks one at a time; after block n < N a still-running token exits when
    max_v p_n(v | h^n_t) > thresholds[n-1]; the rest exit at N. Exited tokens' states are copied upward,
    exactly as the training forward does, so ``depth_adaptive_forward`` with the returned exits reproduces
    the states. Returns exits (B, T) and the predicted tokens (B, T).
    """
    _check_inputs(source, params, prev_tokens, source_valid, config)
    xp = array_namespace(source)
    require_float("thresholds", thresholds)
    require_finite("thresholds", thresholds)
    require_shape("thresholds", thresholds, ["n_layers - 1"], [config.n_layers - 1])
    n_layers, (b, t) = config.n_layers, prev_tokens.shape
    h = _embed(params, prev_tokens)  # (B, T, D)
    exits = xp.full((b, t), n_layers, dtype=xp.int64)
    running = xp.ones((b, t), dtype=xp.bool)
    prediction = xp.zeros((b, t), dtype=xp.int64)
    for n in range(1, n_layers + 1):
        full, _ = _block(h, source, params, n, source_valid, config)
        h = xp.where(running[..., None], full, h)  # Eq. (2)
        suffix = "" if config.shared_classifier else str(n)
        p, _ = softmax_forward(xp.matmul(h, params[f"exit{suffix}.w"]) + params[f"exit{suffix}.b"])  # (B, T, V)
        leave = running if n == n_layers else running & (xp.max(p, axis=-1) > thresholds[n - 1])
        exits = xp.where(leave & (n < n_layers), xp.full_like(exits, n), exits)
        prediction = xp.where(leave, xp.argmax(p, axis=-1), prediction)
        running = running & ~leave
    return exits, prediction


def greedy_decode(source: Any, params: dict[str, Any], *, bos: int, steps: int, source_valid: Any,
                  thresholds: Any, config: DepthAdaptiveConfig) -> tuple[Any, Any]:
    """Greedy autoregressive decoding with confidence-threshold exits (§2.3, the paper's use of the exits).

    Step t feeds [bos, y_1 .. y_{t-1}], runs :func:`confidence_decode` on that prefix and emits the argmax of
    the last position's exit. By causality the earlier positions' states and exits are those of the steps that
    made them (an exited token's copied state is what later tokens attend to). No end-of-sequence stop.
    Returns tokens (B, steps) and exits (B, steps).
    """
    xp = array_namespace(source)
    if isinstance(steps, bool) or not isinstance(steps, int) or not 1 <= steps <= params["pos"].shape[0]:
        raise ValueError(f"steps must be an integer in [1, {params['pos'].shape[0]}] (rows of params['pos']), "
                         f"got {steps!r}")
    vocab = params["embed"].shape[0]
    if isinstance(bos, bool) or not isinstance(bos, int) or not 0 <= bos < vocab:
        raise ValueError(f"bos must be a token id in [0, {vocab}), got {bos!r}")
    prefix = xp.full((source.shape[0], 1), bos, dtype=xp.int64)  # (B, 1)
    for step in range(steps):
        exits, prediction = confidence_decode(source, params, prev_tokens=prefix, source_valid=source_valid,
                                              thresholds=thresholds, config=config)  # (B, step + 1)
        if step + 1 < steps:
            prefix = xp.concat([prefix, prediction[:, -1:]], axis=1)
    return prediction, exits
