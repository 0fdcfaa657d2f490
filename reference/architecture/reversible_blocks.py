"""The two residual functions of a Reformer layer: F (attention) and G (chunked feed-forward).

Kitaev, Kaiser, Levskaya, "Reformer: The Efficient Transformer", ICLR 2020, arXiv:2001.04451v2, §3
("Reversible Transformer", "Chunking"); spec architecture.md §2.2, §2.6. Used by
:mod:`reference.architecture.reversible`.

Axes: B batch, T positions, D width, F inner width, H heads, R hash rounds.

    F(x) = drop_o( Attention( LN_a(x) ) )                   full (nn.attention's mha) or LSH attention
    G(x) = drop_f( FFN( LN_f(x) ) ),  FFN applied to n_chunks slices of the sequence independently:
           FFN(x)[:, s_k:e_k] = FFN(x[:, s_k:e_k])          same numbers, 1/n_chunks of the hidden memory

Chunking (Reformer §3, "Chunking"): one chunk exists at a time. The forward keeps no chunk's hidden
activations (only G's output); the backward recomputes each chunk's FFN and runs its VJP at once
(:func:`chunked_feed_forward_vjp`), so the (B, T, F) hidden arrays never exist in full: the peak of the
FFN part is about 3 B (T / n_chunks) F values. The reversible backward takes G's output for the
reconstruction from the same per-chunk pass (:func:`g_vjp`).

Backward: the building blocks' VJPs in reverse order; chunked FFN: the per-chunk VJPs, dx concatenated
along the sequence, parameter gradients summed over chunks (the weights are shared by every chunk).

Per-layer randomness is data (``LayerTape``): dropout keep-masks and, for LSH, the buckets (or the
rotations they are hashed from in the forward pass). A recomputation replays the same tape.

Deviations: the FFN's hidden dropout sits after the activation (nn.feed_forward); HF and trax put it
before the activation (spec §2.2, §2.10).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

from ..attention.lsh import LSH_PARAMS, lsh_attention_backward, lsh_attention_forward, lsh_hash, project_queries
from ..backend import array_namespace
from ..nn.attention import ATTENTION_PARAMS, causal_mask, mha_backward, mha_forward
from ..nn.dropout import dropout_backward, dropout_forward
from ..nn.feed_forward import FFN_PARAMS, feed_forward_backward, feed_forward_forward
from ..nn.layer_norm import layer_norm_backward, layer_norm_forward

ATTENTIONS = ("full", "lsh")


@dataclass(frozen=True)
class ReversibleConfig:
    n_heads: int
    attention: str = "full"  # "full" (nn.attention mha) or "lsh" (attention.lsh)
    causal: bool = False
    n_ff_chunks: int = 1  # feed-forward chunks along the sequence
    activation: str = "gelu"
    n_buckets: int = 4  # LSH only
    chunk_len: int = 4  # LSH only
    ln_eps: float = 1e-5
    exact_bits: int | None = None  # fixed-point fractional bits of the residual streams; None = float

    def __post_init__(self) -> None:
        if isinstance(self.n_heads, bool) or not isinstance(self.n_heads, int) or self.n_heads < 1:
            raise ValueError(f"n_heads must be an integer >= 1, got {self.n_heads!r}")
        if self.attention not in ATTENTIONS:
            raise ValueError(f"attention must be one of {ATTENTIONS}, got {self.attention!r}")
        if self.n_ff_chunks < 1:
            raise ValueError(f"n_ff_chunks must be >= 1, got {self.n_ff_chunks}")
        if self.exact_bits is not None and not 0 < self.exact_bits <= 52:
            raise ValueError(f"exact_bits must lie in [1, 52], got {self.exact_bits}")

    def attention_params(self) -> tuple[str, ...]:
        return ATTENTION_PARAMS if self.attention == "full" else LSH_PARAMS

    def layer_params(self) -> tuple[str, ...]:
        return ("ln_a.gamma", "ln_a.beta", *self.attention_params(), "ln_f.gamma", "ln_f.beta", *FFN_PARAMS)


class LayerTape(NamedTuple):
    """One layer's replayable randomness; every field may be None (no dropout / not LSH)."""

    attn_probs: Any = None  # (B, H, T, T) keep-mask on attention probabilities (full attention only)
    attn_out: Any = None  # (B, T, D) keep-mask on F's output
    ff_hidden: Any = None  # (B, T, F) keep-mask on the FFN's hidden activations
    ff_out: Any = None  # (B, T, D) keep-mask on G's output
    buckets: Any = None  # (B, H, R, T) int LSH buckets (hashed from ``rotations`` when None)
    rotations: Any = None  # (B, H, Dk, R, nb/2) LSH rotations


class FCache(NamedTuple):
    ln: Any  # LayerNormCache, xhat (B, T, D)
    attention: Any  # MHACache or LSHCache
    attn_out: Any  # (B, T, D) or None
    kind: str


class ChunkedFFCache(NamedTuple):
    x: Any  # (B, T, D) the FFN's input; each chunk's hidden activations are recomputed in the backward
    params: dict  # w_1 (D, F), b_1 (F,), w_2 (F, D), b_2 (D,)
    bounds: list  # [(start, end)] sequence slices
    activation: str
    dropout_mask: Any  # (B, T, F) keep-mask on the hidden activations, or None


class GCache(NamedTuple):
    ln: Any  # LayerNormCache, xhat (B, T, D)
    ff: ChunkedFFCache
    ff_out: Any  # (B, T, D) or None


def f_forward(x: Any, p: dict[str, Any], tape: LayerTape, config: ReversibleConfig) -> tuple[Any, FCache, LayerTape]:
    """F(x) = dropout(attention(LN_a(x))). Returns the tape with LSH buckets filled in (hashed when absent)."""
    xp = array_namespace(x)
    h, ln = layer_norm_forward(x, p["ln_a.gamma"], p["ln_a.beta"], eps=config.ln_eps)  # (B, T, D)
    if config.attention == "full":
        mask = causal_mask(x.shape[1], xp=xp) if config.causal else None  # (T, T)
        a, att = mha_forward(h, h, {k: p[k] for k in ATTENTION_PARAMS}, n_heads=config.n_heads, mask=mask,
                             dropout_mask=tape.attn_probs)  # (B, T, D)
    else:
        if tape.buckets is None:
            if tape.rotations is None:
                raise ValueError("an LSH layer needs tape.buckets (B, H, R, T) or tape.rotations (B, H, Dk, R, nb/2)")
            tape = tape._replace(buckets=lsh_hash(project_queries(h, p["w_qk"], config.n_heads), tape.rotations))
        a, att = lsh_attention_forward(h, {k: p[k] for k in LSH_PARAMS}, tape.buckets, n_heads=config.n_heads,
                                       n_buckets=config.n_buckets, chunk_len=config.chunk_len, causal=config.causal)
    out, _ = dropout_forward(a, tape.attn_out)
    return out, FCache(ln, att, tape.attn_out, config.attention), tape


def f_backward(dout: Any, cache: FCache) -> tuple[Any, dict[str, Any]]:
    da = dropout_backward(dout, cache.attn_out)
    if cache.kind == "full":
        dh_q, dh_kv, grads = mha_backward(da, cache.attention)
        dh = dh_q + dh_kv
    else:
        dh, grads = lsh_attention_backward(da, cache.attention)
    dx, g_ln = layer_norm_backward(dh, cache.ln)
    return dx, {"ln_a.gamma": g_ln["gamma"], "ln_a.beta": g_ln["beta"], **grads}


def chunk_bounds(length: int, n_chunks: int) -> list[tuple[int, int]]:
    """n_chunks contiguous slices of range(length), sizes differing by at most one."""
    if n_chunks > length:
        raise ValueError(f"n_ff_chunks must be <= seq={length}, got {n_chunks}")
    edges = [k * length // n_chunks for k in range(n_chunks + 1)]
    return list(zip(edges[:-1], edges[1:]))


def _chunk_mask(mask: Any, s: int, e: int) -> Any:
    return None if mask is None else mask[:, s:e, ...]


def chunked_feed_forward_forward(x: Any, params: dict[str, Any], *, n_chunks: int, activation: str = "gelu",
                                 dropout_mask: Any | None = None) -> tuple[Any, ChunkedFFCache]:
    """The FFN applied to n_chunks slices of the sequence axis (axis 1), one at a time. (B, T, D) -> (B, T, D).

    Each chunk's cache is dropped as soon as its output exists: the cache keeps x, not the hidden activations."""
    xp = array_namespace(x)
    bounds = chunk_bounds(x.shape[1], n_chunks)
    outs = [feed_forward_forward(x[:, s:e, ...], params, activation=activation,
                                 dropout_mask=_chunk_mask(dropout_mask, s, e))[0] for s, e in bounds]  # (B, e-s, D)
    return xp.concat(outs, axis=1), ChunkedFFCache(x, params, bounds, activation, dropout_mask)  # (B, T, D)


def chunked_feed_forward_vjp(dy: Any, cache: ChunkedFFCache) -> tuple[Any, Any, dict[str, Any]]:
    """Per chunk: recompute the FFN, then its VJP at once. Returns y (B, T, D), dx (B, T, D), summed grads."""
    xp = array_namespace(dy)
    ys, dxs, total = [], [], {}
    for s, e in cache.bounds:
        y, c = feed_forward_forward(cache.x[:, s:e, ...], cache.params, activation=cache.activation,
                                    dropout_mask=_chunk_mask(cache.dropout_mask, s, e))  # (B, e-s, D)
        dx, grads = feed_forward_backward(dy[:, s:e, ...], c)  # c is dropped here
        ys.append(y)
        dxs.append(dx)
        total = {k: total[k] + g if k in total else g for k, g in grads.items()}  # shared weights: sum over chunks
    return xp.concat(ys, axis=1), xp.concat(dxs, axis=1), total  # (B, T, D), (B, T, D)




def g_forward(x: Any, p: dict[str, Any], tape: LayerTape, config: ReversibleConfig) -> tuple[Any, GCache]:
    """G(x) = dropout(chunked FFN(LN_f(x)))."""
    h, ln = layer_norm_forward(x, p["ln_f.gamma"], p["ln_f.beta"], eps=config.ln_eps)  # (B, T, D)
    a, ff = chunked_feed_forward_forward(h, {k: p[k] for k in FFN_PARAMS}, n_chunks=config.n_ff_chunks,
                                         activation=config.activation, dropout_mask=tape.ff_hidden)
    out, _ = dropout_forward(a, tape.ff_out)
    return out, GCache(ln, ff, tape.ff_out)


def _g_rest(dout: Any, cache: GCache) -> tuple[Any, Any, dict[str, Any]]:
    """The chunked FFN's output a (recomputed) and G's VJP from LN_f's output on."""
    da = dropout_backward(dout, cache.ff_out)
    a, dh, grads = chunked_feed_forward_vjp(da, cache.ff)
    dx, g_ln = layer_norm_backward(dh, cache.ln)
    return a, dx, {"ln_f.gamma": g_ln["gamma"], "ln_f.beta": g_ln["beta"], **grads}


def g_backward(dout: Any, cache: GCache) -> tuple[Any, dict[str, Any]]:
    _, dx, grads = _g_rest(dout, cache)
    return dx, grads


def g_vjp(x: Any, dout: Any, p: dict[str, Any], tape: LayerTape, config: ReversibleConfig) -> tuple[Any, Any, dict]:
    """G(x) and its VJP in one per-chunk pass (the reversible backward): returns G(x), dx, grads."""
    h, ln = layer_norm_forward(x, p["ln_f.gamma"], p["ln_f.beta"], eps=config.ln_eps)  # (B, T, D)
    ff = ChunkedFFCache(h, {k: p[k] for k in FFN_PARAMS}, chunk_bounds(x.shape[1], config.n_ff_chunks),
                        config.activation, tape.ff_hidden)
    a, dx, grads = _g_rest(dout, GCache(ln, ff, tape.ff_out))
    out, _ = dropout_forward(a, tape.ff_out)
    return out, dx, grads
