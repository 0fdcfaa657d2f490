"""Reversible residual layers (Reformer / RevNet): a backward pass that keeps no activations.

Kitaev, Kaiser, Levskaya, "Reformer: The Efficient Transformer", ICLR 2020, arXiv:2001.04451v2, §3;
Gomez, Ren, Urtasun, Grosse, "The Reversible Residual Network", NeurIPS 2017, arXiv:1707.04585, Alg. 1;
bit-exact fixed point after MacKay, Vicol, Ba, Grosse, NeurIPS 2018, arXiv:1810.10999. Spec:
architecture.md §2. F and G (attention, chunked feed-forward): :mod:`reference.architecture.reversible_blocks`;
registered cases: :mod:`reference.architecture.cases.reversible`.

Axes: B batch, T positions, D width. Layers n = 1..N; the stream is duplicated: X1 = X2 = X.

Forward (Reformer Eq. in §3, "Y1 = X1 + Attention(X2), Y2 = X2 + FeedForward(Y1)"):

    Y1 = X1 + F_n(X2)                                                      (1)
    Y2 = X2 + G_n(Y1)                                                      (2)

Reversible backward of one layer (RevNet Alg. 1), given Y1, Y2, dY1, dY2 and the layer's tape:

    recompute G_n(Y1) and (dY1^G, dtheta_G) = VJP_G(Y1; dY2) chunk by chunk;  X2 = Y2 - G_n(Y1)   invert (2)
    dY1' = dY1 + dY1^G
    recompute F_n(X2);  (dX2^F, dtheta_F) = VJP_F(X2; dY1');  X1 = Y1 - F_n(X2)      invert (1)
    dX1 = dY1',  dX2 = dY2 + dX2^F
    after layer 1:  dX = dX1 + dX2          (the two streams are copies of X)

Only (Y1, Y2) of the last layer are kept; each layer's internals live only while its VJP runs.

Exact mode (``exact_bits = f``): the streams are int64 fixed point, x_int = round(x 2^f), and
    Y1 = X1 + round(F(X2 2^-f) 2^f),  Y2 = X2 + round(G(Y1 2^-f) 2^f)
so that X2 = Y2 - round(G(...) 2^f) and X1 = Y1 - round(F(...) 2^f) are exact integer subtractions:
reconstruction is bit for bit at any depth. Gradients treat the rounding as the identity
(straight-through); they equal the stored-activation gradients of the same quantised network exactly.

Paper symbols: X1, X2, Y1, Y2 as in §3; F = attention layer, G = feed-forward layer.

Deviations:
* The output is the pair (Y1, Y2); Reformer follows it with LayerNorm over [Y1; Y2] (2D wide), which is
  an ordinary layer outside the reversible part and is left to the caller.
* The reconstructed inputs carry float rounding (measured in the docs) unless exact mode is used.
"""

from __future__ import annotations

from typing import Any, Mapping, NamedTuple

import numpy as np

from ..attention.lsh import init_lsh, sample_rotations
from ..backend import array_namespace
from ..nn.attention import init_attention
from ..nn.feed_forward import init_feed_forward
from ..nn.layer_norm import init_layer_norm
from ..random import dropout_mask
from ..validate import require_finite, require_float, require_shape
from .reversible_blocks import (
    FCache,
    GCache,
    LayerTape,
    ReversibleConfig,
    f_backward,
    f_forward,
    g_backward,
    g_forward,
    g_vjp,
)


class ReversibleCache(NamedTuple):
    y1: Any  # (B, T, D) last layer's Y1 (int64 in exact mode): the only activation kept
    y2: Any  # (B, T, D) last layer's Y2
    layers: list  # N parameter dicts
    tapes: list  # N LayerTape, LSH buckets filled in
    config: ReversibleConfig


class StoredCache(NamedTuple):
    inputs: list  # N (X1, X2) per layer, (B, T, D) each (int64 in exact mode)
    f: list  # N FCache
    g: list  # N GCache
    config: ReversibleConfig


def quantise(v: Any, bits: int | None) -> Any:
    """round(v 2^bits) as int64 (round half to even); identity in float mode."""
    if bits is None:
        return v
    xp = array_namespace(v)
    return xp.astype(xp.round(v * 2.0 ** bits), xp.int64)


def dequantise(v: Any, bits: int | None, dtype: Any = None) -> Any:
    """v 2^-bits as a float array; identity in float mode."""
    if bits is None:
        return v
    xp = array_namespace(v)
    return xp.astype(v, dtype if dtype is not None else xp.float64) * 2.0 ** -bits


def _validate(x: Any, layers: list, tapes: list, config: ReversibleConfig) -> None:
    if not isinstance(config, ReversibleConfig):
        raise TypeError(f"config must be a ReversibleConfig, got {type(config).__name__}")
    require_float("x", x)
    require_finite("x", x)
    require_shape("x", x, ["batch", "seq", "d_model"], [None, None, None])
    if 0 in x.shape:
        raise ValueError(f"x must hold at least one example, position and feature, got shape {x.shape}")
    if x.shape[2] % config.n_heads:
        raise ValueError(f"x's d_model={x.shape[2]} must be a multiple of config.n_heads={config.n_heads}")
    if not isinstance(layers, (list, tuple)) or not layers:
        size = f" of length {len(layers)}" if isinstance(layers, (list, tuple)) else ""
        raise TypeError(f"layers must be a non-empty list of parameter dicts, got {type(layers).__name__}{size}")
    if not isinstance(tapes, (list, tuple)) or len(tapes) != len(layers):
        raise ValueError(f"tapes must be a list of one LayerTape per layer ({len(layers)}), got {type(tapes).__name__}"
                         f" of length {len(tapes) if isinstance(tapes, (list, tuple)) else '?'}")
    for n, (p, tape) in enumerate(zip(layers, tapes)):
        if not isinstance(p, Mapping):
            raise TypeError(f"layers[{n}] must be a dict of parameters, got {type(p).__name__}")
        if not isinstance(tape, LayerTape):
            raise TypeError(f"tapes[{n}] must be a LayerTape, got {type(tape).__name__}")
        missing = [k for k in config.layer_params() if k not in p]
        if missing:
            raise ValueError(f"layers[{n}] is missing {missing}")
        for k in config.layer_params():
            require_float(f"layers[{n}][{k!r}]", p[k])
            require_finite(f"layers[{n}][{k!r}]", p[k])


def _layer(x1: Any, x2: Any, p: dict, tape: LayerTape, config: ReversibleConfig, dtype: Any):
    """Eq. (1)-(2) for one layer; returns Y1, Y2, F's and G's caches and the tape with buckets."""
    bits = config.exact_bits
    f_out, f_cache, tape = f_forward(dequantise(x2, bits, dtype), p, tape, config)
    y1 = x1 + quantise(f_out, bits)  # Eq. (1)
    g_out, g_cache = g_forward(dequantise(y1, bits, dtype), p, tape, config)
    y2 = x2 + quantise(g_out, bits)  # Eq. (2)
    return y1, y2, f_cache, g_cache, tape


def reversible_forward(x: Any, layers: list, tapes: list, config: ReversibleConfig) -> tuple[tuple[Any, Any], ReversibleCache]:
    """The reversible stack on x (B, T, D): returns (Y1, Y2) of the last layer (float) and a cache
    holding only those two arrays, the parameters and the tapes."""
    _validate(x, layers, tapes, config)
    bits = config.exact_bits
    x1 = x2 = quantise(x, bits)  # the duplicated stream
    done = []
    for p, tape in zip(layers, tapes):
        x1, x2, _, _, tape = _layer(x1, x2, p, tape, config, x.dtype)  # internals dropped at once
        done.append(tape)
    out = (dequantise(x1, bits, x.dtype), dequantise(x2, bits, x.dtype))
    return out, ReversibleCache(x1, x2, list(layers), done, config)


def reversible_backward(dy1: Any, dy2: Any, cache: ReversibleCache) -> tuple[Any, list[dict[str, Any]]]:
    """RevNet Alg. 1 over the stack: reconstruct, recompute, VJP, layer by layer from the top.
    Returns dx (B, T, D) and one gradient dict per layer."""
    y1, y2, layers, tapes, config = cache
    bits, dtype = config.exact_bits, dy1.dtype
    grads: list[dict[str, Any]] = []
    for p, tape in zip(reversed(layers), reversed(tapes)):
        g_out, dy1_g, grads_g = g_vjp(dequantise(y1, bits, dtype), dy2, p, tape, config)  # G(Y1) and its VJP
        x2 = y2 - quantise(g_out, bits)  # invert Eq. (2)
        dy1 = dy1 + dy1_g  # total cotangent of Y1
        f_out, f_cache, _ = f_forward(dequantise(x2, bits, dtype), p, tape, config)  # recompute F(X2)
        dx2_f, grads_f = f_backward(dy1, f_cache)
        x1 = y1 - quantise(f_out, bits)  # invert Eq. (1)
        y1, y2, dy1, dy2 = x1, x2, dy1, dy2 + dx2_f
        grads.append({**grads_f, **grads_g})
    return dy1 + dy2, grads[::-1]  # the two copies of X


def reversible_inverse(y1: Any, y2: Any, layers: list, tapes: list, config: ReversibleConfig) -> list[tuple[Any, Any]]:
    """Reconstruct every layer's inputs from the last outputs (streams as stored: int64 in exact mode).
    Returns [(X1, X2) of layer 1, ..., of layer N]; tapes must hold the forward's buckets."""
    bits = config.exact_bits
    dtype = y1.dtype if bits is None else None
    states = []
    for p, tape in zip(reversed(layers), reversed(tapes)):
        g_out, _ = g_forward(dequantise(y1, bits, dtype), p, tape, config)
        x2 = y2 - quantise(g_out, bits)
        f_out, _, _ = f_forward(dequantise(x2, bits, dtype), p, tape, config)
        x1 = y1 - quantise(f_out, bits)
        states.append((x1, x2))
        y1, y2 = x1, x2
    return states[::-1]


def stored_forward(x: Any, layers: list, tapes: list, config: ReversibleConfig) -> tuple[tuple[Any, Any], StoredCache]:
    """The same stack with ordinary backprop: every layer's inputs and internals are kept."""
    _validate(x, layers, tapes, config)
    bits = config.exact_bits
    x1 = x2 = quantise(x, bits)
    inputs, fs, gs = [], [], []
    for p, tape in zip(layers, tapes):
        inputs.append((x1, x2))
        x1, x2, f_cache, g_cache, _ = _layer(x1, x2, p, tape, config, x.dtype)
        fs.append(f_cache)
        gs.append(g_cache)
    return (dequantise(x1, bits, x.dtype), dequantise(x2, bits, x.dtype)), StoredCache(inputs, fs, gs, config)


def stored_backward(dy1: Any, dy2: Any, cache: StoredCache) -> tuple[Any, list[dict[str, Any]]]:
    """Backprop through the stored caches (the same VJPs, no reconstruction)."""
    grads: list[dict[str, Any]] = []
    for f_cache, g_cache in zip(reversed(cache.f), reversed(cache.g)):
        dy1_g, grads_g = g_backward(dy2, g_cache)
        dy1 = dy1 + dy1_g
        dx2_f, grads_f = f_backward(dy1, f_cache)
        dy2 = dy2 + dx2_f
        grads.append({**grads_f, **grads_g})
    return dy1 + dy2, grads[::-1]


def reversible_intermediates(cache: ReversibleCache) -> dict[str, Any]:
    """Each layer's hidden states (Y1, Y2) in forward order, rebuilt from the last layer by the inverse."""
    bits, dtype = cache.config.exact_bits, None
    states = reversible_inverse(cache.y1, cache.y2, cache.layers, cache.tapes, cache.config)[1:]
    states.append((cache.y1, cache.y2))
    out: dict[str, Any] = {}
    for n, (y1, y2) in enumerate(states):
        dtype = y1.dtype if bits is None else None
        out[f"l{n}.y1"], out[f"l{n}.y2"] = dequantise(y1, bits, dtype), dequantise(y2, bits, dtype)
    return out


def init_reversible_layers(rng: np.random.Generator, n_layers: int, d_model: int, d_ff: int,
                           config: ReversibleConfig, *, xp, dtype) -> list[dict[str, Any]]:
    """N parameter dicts with the names of ``config.layer_params()``."""
    layers = []
    for _ in range(n_layers):
        ln_a, ln_f = (init_layer_norm(rng, d_model, xp=xp, dtype=dtype) for _ in range(2))
        if config.attention == "full":
            att = init_attention(rng, d_model, xp=xp, dtype=dtype)
        else:
            d_head = d_model // config.n_heads
            att = init_lsh(rng, d_model, config.n_heads, d_head, d_head, xp=xp, dtype=dtype)
        layers.append({"ln_a.gamma": ln_a["gamma"], "ln_a.beta": ln_a["beta"], **att,
                       "ln_f.gamma": ln_f["gamma"], "ln_f.beta": ln_f["beta"],
                       **init_feed_forward(rng, d_model, d_ff, xp=xp, dtype=dtype)})
    return layers


def sample_reversible_tapes(rng: np.random.Generator, n_layers: int, batch: int, seq: int, d_model: int, d_ff: int,
                            config: ReversibleConfig, *, rate: float = 0.0, n_hashes: int = 2, xp,
                            dtype) -> list[LayerTape]:
    """Per-layer dropout keep-masks (None when rate = 0) and, for LSH, rotations."""
    def mask(shape):
        return dropout_mask(rng, shape, rate, xp=xp, dtype=dtype) if rate > 0 else None

    tapes = []
    for _ in range(n_layers):
        probs = mask((batch, config.n_heads, seq, seq)) if config.attention == "full" else None
        rotations = None
        if config.attention == "lsh":
            rotations = sample_rotations(rng, batch, config.n_heads, d_model // config.n_heads, n_hashes,
                                         config.n_buckets, xp=xp, dtype=dtype)
        tapes.append(LayerTape(probs, mask((batch, seq, d_model)), mask((batch, seq, d_ff)),
                               mask((batch, seq, d_model)), None, rotations))
    return tapes


__all__ = ["ReversibleConfig", "LayerTape", "ReversibleCache", "StoredCache", "FCache", "GCache", "quantise",
           "dequantise", "reversible_forward", "reversible_backward", "reversible_inverse", "stored_forward",
           "stored_backward", "reversible_intermediates", "init_reversible_layers", "sample_reversible_tapes"]
