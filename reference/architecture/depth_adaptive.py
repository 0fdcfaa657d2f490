"""Depth-Adaptive Transformer: a decoder with an exit classifier after every block.

Elbayad, Gu, Grave, Auli, "Depth-Adaptive Transformer", ICLR 2020, arXiv:1910.10073.
Halting distributions and oracles: :mod:`reference.architecture.depth_adaptive_halting`.

Axes: B batch, T target positions, S source positions, D width, V vocabulary,
N decoder blocks. Exits are 1-based.

Forward (§2.1, §2.2 of the paper; spec architecture.md §4.3–4.4):

    h^0_t = E[y_{t-1}] + P_t
    h^n   = where(exit_t >= n, Block_n(h^{n-1}, s), h^{n-1})     copying: an exited token's
                                                                  state feeds the upper blocks
    log p_n(. | h^n_t) = log_softmax(h^n_t W_n + b_n)             W_n shared or separate
    L_dec  = -(1/N_valid) sum_{b,t,n} Omega_{b,t,n} log p_n(y_t | h^n_t)
    L_exit = -(1/N_valid) sum_{b,t} sum_n q*_t(n) log q_t(n)       token halting
           = -(1/B) sum_b sum_n q*_b(n) log q_b(n)                 sequence halting
    L      = L_dec + alpha L_exit

Omega selects the training mode: aligned training is exit_t = N and
Omega_{t,n} = omega_n (uniform by default); mixed training samples exits and sets
Omega = onehot(exit_t) (M samples: tile the batch M times and divide by M).

Backward:

    dlogits^n_t = -(Omega_{t,n} / N_valid) (onehot(y_t) - p_n)       (times dL_dec)
    dW = sum_n (h^n)^T dlogits^n   (shared) — a shared weight's gradient is the sum over its uses
    halting:  dz = (q - q*)/N_valid  (multinomial);  da_k = chi_k Q_{>=k} - q*_k  (geometric)
    blocks, from N down to 1:   g = dh^n (classifier, halting and copies from above)
        dfull = where(run_n, g, 0);   dh^{n-1} += where(run_n, 0, g) + Block_n'(dfull)

Deviations and choices (the paper leaves them open; spec §4.4, §6 item 7):
* L_exit back-propagates into the decoder states unless ``detach=True`` (attn2d's
  ``detach_before_classifier``). The oracle targets q* are frozen inputs.
* The sequence halting MLP is tanh(s_bar W_1 + b_1) W_2 + b_2 over the mean of the
  *valid* source states (attn2d's SeqDynamicHalter averages over padding too).
* One geometric halting unit is shared by all blocks (the paper's form).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

from ..backend import array_namespace, one_hot, scatter_add
from ..nn.attention import causal_mask, padding_mask
from ..nn.decoder_layer import DecoderLayerCache, decoder_layer_backward, decoder_layer_forward
from ..nn.softmax import log_softmax_forward
from ..validate import require_float, require_index_range, require_shape
from .depth_adaptive_halting import geometric_halting_grad, geometric_log_q

HALTING = (None, "token", "geometric", "sequence")


@dataclass(frozen=True)
class DepthAdaptiveConfig:
    n_layers: int  # N decoder blocks, each with an exit classifier
    n_heads: int
    shared_classifier: bool = True  # one W for every exit, or W_n per block
    halting: str | None = None  # None, "token" (multinomial), "geometric", "sequence"
    alpha: float = 1.0  # weight of L_exit
    detach: bool = False  # stop L_exit's gradient at the decoder states
    activation: str = "gelu"

    def __post_init__(self) -> None:
        if self.halting not in HALTING:
            raise ValueError(f"halting must be one of {HALTING}, got {self.halting!r}")


class DepthAdaptiveCache(NamedTuple):
    config: DepthAdaptiveConfig
    prev_tokens: Any  # (B, T) int
    blocks: list[DecoderLayerCache]
    run: list[Any]  # N × (B, T, 1) bool: block n computed token t
    states: Any  # (B, T, N, D) h^1..h^N
    p: Any  # (B, T, N, V) exit distributions
    dlogits_unit: Any  # (B, T, N, V) dL_dec/dlogits for dL_dec = 1
    classifier_w: Any  # (N, D, V) exit weights (the shared one repeated N times)
    halting: tuple  # what the halting backward needs
    halting_params: dict[str, Any]  # the halt.* parameters
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


def run_blocks(source, params, prev_tokens, source_valid, exits, config):
    """h^0 and the copy-aware block stack; returns states (B, T, N, D), block caches and run masks."""
    xp = array_namespace(source)
    t = prev_tokens.shape[1]
    h = xp.take(params["embed"], xp.reshape(prev_tokens, (-1,)), axis=0)
    h = xp.reshape(h, (*prev_tokens.shape, -1)) + params["pos"][:t, :]  # (B, T, D)
    self_mask, cross_mask = causal_mask(t, xp=xp), padding_mask(source_valid)
    states, blocks, run = [], [], []
    for n in range(1, config.n_layers + 1):
        full, cache = decoder_layer_forward(h, source, block_params(params, n), n_heads=config.n_heads,
                                            self_mask=self_mask, cross_mask=cross_mask,
                                            activation=config.activation)  # (B, T, D)
        running = (exits >= n)[..., None]  # (B, T, 1)
        h = xp.where(running, full, h)  # copy exited tokens' states upward
        states.append(h)
        blocks.append(cache)
        run.append(running)
    return xp.stack(states, axis=2), blocks, run  # (B, T, N, D)


def depth_adaptive_forward(source: Any, params: dict[str, Any], *, prev_tokens: Any, targets: Any,
                           target_valid: Any, source_valid: Any, exits: Any, omega: Any,
                           config: DepthAdaptiveConfig, halting_targets: Any | None = None,
                           ) -> tuple[dict[str, Any], DepthAdaptiveCache]:
    """Losses of one batch. Returns ({"loss", "loss_dec"[, "loss_exit"]}, cache).

    source (B, S, D) encoder states; prev_tokens, targets (B, T) ids; target_valid (B, T) and
    source_valid (B, S) bool; exits (B, T) in 1..N; omega (B, T, N) loss weights;
    halting_targets: exits (B, T) for token/geometric halting or (B,) for sequence halting.
    """
    xp = array_namespace(source)
    n, (b, t) = config.n_layers, prev_tokens.shape
    require_float("source", source)
    require_shape("source", source, ["batch", "src_len", "d_model"], [b, None, params["embed"].shape[1]])
    vocab = params["embed"].shape[0]
    require_index_range("prev_tokens", prev_tokens, vocab)
    require_index_range("targets", targets, vocab)
    require_index_range("exits - 1", exits - 1, n)
    require_shape("omega", omega, ["batch", "seq", "n_layers"], [b, t, n])
    states, blocks, run = run_blocks(source, params, prev_tokens, source_valid, exits, config)

    w, bias = _classifier_weights(params, config, xp)  # (N, D, V), (N, V)
    logits = xp.squeeze(xp.matmul(states[..., None, :], w), axis=-2) + bias  # (B, T, N, V)
    log_p, softmax_cache = log_softmax_forward(logits)
    hot = one_hot(targets, vocab, dtype=source.dtype)[:, :, None, :]  # (B, T, 1, V)
    valid = xp.astype(target_valid, source.dtype)  # (B, T)
    count = xp.maximum(xp.sum(valid), xp.asarray(1.0, dtype=source.dtype))
    weight = omega * valid[..., None] / count  # (B, T, N)
    loss_dec = -xp.sum(weight * xp.sum(hot * log_p, axis=-1))  # Eq. aligned / mixed
    dlogits_unit = -weight[..., None] * (hot - softmax_cache.p)  # (B, T, N, V)

    losses = {"loss_dec": loss_dec}
    halting: tuple = ()
    if config.halting is not None:
        if halting_targets is None:
            raise ValueError(f"halting={config.halting!r} needs halting_targets")
        loss_exit, halting = _halting_forward(source, states, params, halting_targets, valid, count,
                                              source_valid, config)
        losses["loss_exit"] = loss_exit
        losses["loss"] = loss_dec + config.alpha * loss_exit
    else:
        losses["loss"] = loss_dec
    halting_params = {k: v for k, v in params.items() if k.startswith("halt.")}
    cache = DepthAdaptiveCache(config, prev_tokens, blocks, run, states, softmax_cache.p, dlogits_unit, w, halting,
                               halting_params, vocab, params["pos"].shape[0])
    return losses, cache


def _halting_forward(source, states, params, halting_targets, valid, count, source_valid, config):
    """L_exit and what its backward needs, for the three halting forms."""
    xp = array_namespace(source)
    n = config.n_layers
    target = one_hot(halting_targets - 1, n, dtype=source.dtype)  # (B, T, N) or (B, N)
    if config.halting == "token":  # q_t = softmax(h^1_t W_h + b_h)
        z = xp.matmul(states[:, :, 0, :], params["halt.w"]) + params["halt.b"]  # (B, T, N)
        log_q, sm = log_softmax_forward(z)
        loss = -xp.sum(valid[..., None] * target * log_q) / count
        return loss, (valid[..., None] * (sm.p - target) / count,)
    if config.halting == "geometric":  # a^n_t = h^n_t . w_h + b_h, n < N
        a = xp.squeeze(xp.matmul(states[:, :, :-1, :], params["halt.w"]), axis=-1) + params["halt.b"]  # (B, T, N-1)
        loss = -xp.sum(valid[..., None] * target * geometric_log_q(a)) / count
        return loss, (valid[..., None] * geometric_halting_grad(a, target) / count,)
    # sequence: q(.|x) = softmax(MLP(mean of the valid source states))
    keep = xp.astype(source_valid, source.dtype)[..., None]  # (B, S, 1)
    n_src = xp.sum(keep, axis=1)  # (B, 1)
    mean = xp.sum(source * keep, axis=1) / n_src  # (B, D)
    hidden = xp.tanh(xp.matmul(mean, params["halt.w1"]) + params["halt.b1"])  # (B, Dh)
    z = xp.matmul(hidden, params["halt.w2"]) + params["halt.b2"]  # (B, N)
    log_q, sm = log_softmax_forward(z)
    b = source.shape[0]
    loss = -xp.sum(target * log_q) / b
    return loss, ((sm.p - target) / b, mean, hidden, keep / n_src[:, None, :])


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
    dsource_halting, dstates = _halting_backward(d_exit, cache, dstates, grads, xp)

    g = dstates[:, :, -1, :]  # (B, T, D)
    dsource = dsource_halting
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


def _halting_backward(d_exit, cache, dstates, grads, xp):
    """Adds the halting parameters' gradients to ``grads``; returns (dsource or None, dstates)."""
    config = cache.config
    if config.halting is None:
        return None, dstates
    params = cache.halting_params
    states = cache.states
    if config.halting == "token":
        dz = d_exit * cache.halting[0]  # (B, T, N)
        h1 = states[:, :, 0, :]
        grads["halt.w"] = xp.matmul(xp.matrix_transpose(xp.reshape(h1, (-1, h1.shape[-1]))),
                                    xp.reshape(dz, (-1, dz.shape[-1])))  # (D, N)
        grads["halt.b"] = xp.sum(dz, axis=(0, 1))
        if not config.detach:
            dh1 = xp.matmul(dz, xp.matrix_transpose(params["halt.w"]))  # (B, T, D)
            dstates = xp.concat([dstates[:, :, :1, :] + dh1[:, :, None, :], dstates[:, :, 1:, :]], axis=2)
        return None, dstates
    if config.halting == "geometric":
        da = d_exit * cache.halting[0]  # (B, T, N-1)
        hk = states[:, :, :-1, :]  # (B, T, N-1, D)
        grads["halt.w"] = xp.sum(hk * da[..., None], axis=(0, 1, 2))[:, None]  # (D, 1)
        grads["halt.b"] = xp.reshape(xp.sum(da), (1,))
        if not config.detach:
            dhk = da[..., None] * xp.reshape(params["halt.w"], (-1,))  # (B, T, N-1, D)
            dstates = xp.concat([dstates[:, :, :-1, :] + dhk, dstates[:, :, -1:, :]], axis=2)
        return None, dstates
    dz_unit, mean, hidden, weight = cache.halting
    dz = d_exit * dz_unit  # (B, N)
    grads["halt.w2"] = xp.matmul(xp.matrix_transpose(hidden), dz)
    grads["halt.b2"] = xp.sum(dz, axis=0)
    dpre = xp.matmul(dz, xp.matrix_transpose(params["halt.w2"])) * (1.0 - hidden * hidden)  # (B, Dh)
    grads["halt.w1"] = xp.matmul(xp.matrix_transpose(mean), dpre)
    grads["halt.b1"] = xp.sum(dpre, axis=0)
    if config.detach:
        return None, dstates
    dmean = xp.matmul(dpre, xp.matrix_transpose(params["halt.w1"]))  # (B, D)
    return dmean[:, None, :] * weight, dstates  # (B, S, D)
