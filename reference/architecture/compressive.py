"""Compressive Transformer layer: attention over [compressed memory; memory; segment] and the FIFO update.

Rae, Potapenko, Jayakumar, Hillier, Lillicrap, "Compressive Transformers for Long-Range
Sequence Modelling", ICLR 2020, arXiv:1911.05507v1, §3 and Algorithm 1 (spec architecture.md §1.4).
Compression functions: :mod:`.compressive_functions`; the attention-reconstruction loss
(Algorithm 2): :mod:`.compressive_loss`; registered examples: :mod:`.compressive_examples`.

Axes: B batch, T = n_s segment length, Nm memory slots, Ncm compressed slots,
S = Ncm + Nm + T keys, D width, F feed-forward width, H heads, C = T / c new compressed rows.

Forward for one layer and one segment (post-LN), state (m, cm) carried between calls:

    Z = [cm; m; h]                                               (B, S, D)   Alg. 1 line 3
    a = MHA(h, Z) with mask k <= Ncm + Nm + q, score bias B       (B, T, D)   every memory is visible
    a1 = LN_1(h + a);   y = LN_2(a1 + FFN(a1))                   (B, T, D)
    E = [m; h];  old_mem = E[:T];  m' = E[T:]                   FIFO: the oldest T rows leave
    cm' = [cm; f_c(old_mem)][C:]                                 the oldest C compressed rows leave
    L_attn = || A(h, old_mem) - A(h, f_c(old_mem)) ||^2           Alg. 2, stop-gradient inputs
    usage' = [usage + u_m; u_h][T:]                              u = attention received, mean over heads, queries

m' and cm' are returned under stop-gradient (no cotangent flows back through them), so the
language-model loss never reaches theta_c and L_attn never reaches the main network.

Backward:
    y path as the encoder layer: LN_2', FFN', LN_1', then MHA' gives dh (query side) and dZ (key/value side),
    dZ splits into dcm, dm, dh;  dtheta_c comes from L_attn alone (:mod:`.compressive_loss`).

Paper symbol → name: h^{(i)} → ``h``; m^{(i)}, cm^{(i)} → ``state.mem``, ``state.cmem``; c → ``rate``;
n_s, n_m, n_cm → T, Nm, Ncm.
**Deviations** (spec §1.4, §1.10):
* Positional terms are an explicit additive score bias ``bias`` (B, H, T, S) (default none) instead of
  Transformer-XL's relative encodings; the reconstruction loss is content-only in the paper anyway.
* The initial state is zeros that are attended to (the paper); public code starts empty.
* most-used: usage is the attention a slot received summed over the segments it spent in memory
  (mean over heads and queries each segment); the kept rows stay in temporal order [U].
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

from ..backend import array_namespace
from ..nn.attention import ATTENTION_PARAMS, MHACache, causal_mask, mha_backward, mha_forward
from ..nn.feed_forward import FFN_PARAMS, FeedForwardCache, feed_forward_backward, feed_forward_forward
from ..nn.layer_norm import LayerNormCache, layer_norm_backward, layer_norm_forward
from ..validate import require_float, require_shape
from .compressive_functions import COMPRESSION_PARAMS, COMPRESSIONS, compress_forward, most_used_rows
from .compressive_loss import (RECON_ATTENTION_PARAMS, REDUCTIONS, ReconstructionCache,
                               attention_reconstruction_backward, attention_reconstruction_forward)


@dataclass(frozen=True)
class CompressiveConfig:
    n_heads: int
    kind: str = "conv"  # f_c: conv, mean, max, dilated, most_used
    rate: int = 3  # c
    kernel: int | None = None  # dilated conv taps (default c)
    dilation: int = 2  # dilated conv
    activation: str = "gelu"
    eps: float = 1e-5
    reduction: str = "sum"  # L_attn: sum of squares, or mean
    scale: float | None = None  # reconstruction scores' scale (None: 1/sqrt(Dh))

    def __post_init__(self) -> None:
        if self.kind not in COMPRESSIONS:
            raise ValueError(f"kind must be one of {COMPRESSIONS}, got {self.kind!r}")
        if self.reduction not in REDUCTIONS:
            raise ValueError(f"reduction must be one of {REDUCTIONS}, got {self.reduction!r}")


class CompressiveState(NamedTuple):
    mem: Any  # (B, Nm, D) oldest first
    cmem: Any  # (B, Ncm, D) oldest first
    usage: Any  # (B, Nm) attention each memory slot has received (most-used compression)


class CompressiveOutputs(NamedTuple):
    y: Any  # (B, T, D) the layer's output
    loss_attn: Any  # () attention-reconstruction loss
    state: CompressiveState  # the next segment's state (stop-gradient)
    old_mem: Any  # (B, T, D) the evicted rows
    compressed: Any  # (B, C, D) f_c(old_mem)


class CompressiveCache(NamedTuple):
    attention: MHACache
    drop_attn: Any | None  # (B, T, D)
    ln1: LayerNormCache
    ffn: FeedForwardCache
    drop_ffn: Any | None  # (B, T, D)
    ln2: LayerNormCache
    reconstruction: ReconstructionCache
    sizes: tuple[int, int, int]  # (Ncm, Nm, T)


def init_state(batch: int, n_mem: int, n_cmem: int, d_model: int, *, xp, dtype) -> CompressiveState:
    """The paper's initial state: zero memories (attended to) and zero usage."""
    return CompressiveState(xp.zeros((batch, n_mem, d_model), dtype=dtype),
                            xp.zeros((batch, n_cmem, d_model), dtype=dtype), xp.zeros((batch, n_mem), dtype=dtype))


def compressive_layer_forward(h: Any, state: CompressiveState, params: dict[str, Any], config: CompressiveConfig, *,
                              bias: Any | None = None, dropout: dict[str, Any] | None = None,
                              frozen: dict[str, Any] | None = None) -> tuple[CompressiveOutputs, CompressiveCache]:
    """One layer on one segment. h (B, T, D); params: attention, w_1 … b_2, ln1/ln2, and w_c, b_c for convs.

    dropout: optional masks "attn_probs" (B, H, T, S), "attn", "ffn_inner", "ffn".
    frozen: values to read for L_attn's stop-gradient inputs ("h", "old_mem", w_q … b_v) instead of the
    live ones. Equal values give equal outputs; finite-difference checks pass the unperturbed values, so
    that the numbers differentiate the function the stop-gradients define (spec §1.8, §5 rule 5).
    """
    xp = array_namespace(h)
    mem, cmem, usage = state
    require_float("h", h)
    require_shape("h", h, ["batch", "seq", "d_model"], [None, None, None])
    b, t, d = h.shape
    require_shape("state.mem", mem, ["batch", "n_mem", "d_model"], [b, None, d])
    require_shape("state.cmem", cmem, ["batch", "n_cmem", "d_model"], [b, None, d])
    require_shape("state.usage", usage, ["batch", "n_mem"], [b, mem.shape[1]])
    n_cm, n_m = cmem.shape[1], mem.shape[1]
    if t % config.rate:
        raise ValueError(f"h must have shape (batch, seq, d_model) with seq divisible by rate={config.rate}, "
                         f"got {tuple(h.shape)}")
    dropout = dropout or {}
    z = xp.concat([cmem, mem, h], axis=1)  # (B, S, D)  Alg. 1: attend over [cm; m; h]
    mask = causal_mask(t, n_cm + n_m + t, xp=xp, offset=n_cm + n_m)  # (T, S)
    a, attention = mha_forward(h, z, {k: params[k] for k in ATTENTION_PARAMS}, n_heads=config.n_heads, mask=mask,
                               bias=bias, dropout_mask=dropout.get("attn_probs"))  # (B, T, D)
    drop_attn = dropout.get("attn")
    a = a if drop_attn is None else a * drop_attn
    a1, ln1 = layer_norm_forward(h + a, params["ln1_gamma"], params["ln1_beta"], eps=config.eps)  # (B, T, D)
    f, ffn = feed_forward_forward(a1, {k: params[k] for k in FFN_PARAMS}, activation=config.activation,
                                  dropout_mask=dropout.get("ffn_inner"))  # (B, T, D)
    drop_ffn = dropout.get("ffn")
    f = f if drop_ffn is None else f * drop_ffn
    y, ln2 = layer_norm_forward(a1 + f, params["ln2_gamma"], params["ln2_beta"], eps=config.eps)  # (B, T, D)

    # FIFO update (Alg. 1 lines 6-8): no gradient flows through it.
    fifo = xp.concat([mem, h], axis=1)  # (B, Nm + T, D)
    old_mem, new_mem = fifo[:, :t, :], fifo[:, t:, :]  # (B, T, D), (B, Nm, D)
    theta_c = {k: params[k] for k in COMPRESSION_PARAMS[config.kind]}
    keep = None
    if config.kind == "most_used":
        evicted_usage = xp.concat([usage, xp.zeros((b, t), dtype=usage.dtype)], axis=1)[:, :t]  # (B, T)
        keep = most_used_rows(evicted_usage, t // config.rate)  # (B, C)
    compressed, _ = compress_forward(old_mem, theta_c, kind=config.kind, rate=config.rate, kernel=config.kernel,
                                     dilation=config.dilation, keep=keep)  # (B, C, D)
    n_new = compressed.shape[1]
    new_cmem = xp.concat([cmem, compressed], axis=1)[:, n_new:, :]  # (B, Ncm, D)
    received = xp.mean(attention.attention.softmax.p, axis=(1, 2))  # (B, S) mean over heads and queries
    new_usage = xp.concat([usage + received[:, n_cm:n_cm + n_m], received[:, n_cm + n_m:]], axis=1)[:, t:]  # (B, Nm)

    # Attention-reconstruction loss (Alg. 2) on stop-gradient inputs.
    sg = frozen if frozen is not None else {"h": h, "old_mem": old_mem, **{k: params[k] for k in RECON_ATTENTION_PARAMS}}
    loss, reconstruction = attention_reconstruction_forward(
        sg["h"], sg["old_mem"], {k: sg[k] for k in RECON_ATTENTION_PARAMS}, theta_c, n_heads=config.n_heads,
        kind=config.kind, rate=config.rate, kernel=config.kernel, dilation=config.dilation, keep=keep,
        scale=config.scale, reduction=config.reduction)
    outputs = CompressiveOutputs(y, loss, CompressiveState(new_mem, new_cmem, new_usage), old_mem, compressed)
    return outputs, CompressiveCache(attention, drop_attn, ln1, ffn, drop_ffn, ln2, reconstruction, (n_cm, n_m, t))


def compressive_layer_backward(dy: Any, dloss: Any, cache: CompressiveCache) -> tuple[Any, Any, Any, dict[str, Any]]:
    """Returns dh, dmem, dcmem (from y only) and grads: main parameters from y, theta_c from L_attn only."""
    dsum2, ln2 = layer_norm_backward(dy, cache.ln2)  # d(a1 + f)
    df = dsum2 if cache.drop_ffn is None else dsum2 * cache.drop_ffn
    da1_ffn, grads_ffn = feed_forward_backward(df, cache.ffn)
    dsum1, ln1 = layer_norm_backward(dsum2 + da1_ffn, cache.ln1)  # d(h + a)
    da = dsum1 if cache.drop_attn is None else dsum1 * cache.drop_attn
    dh_q, dz, grads_attn = mha_backward(da, cache.attention)  # (B, T, D), (B, S, D)
    n_cm, n_m, _ = cache.sizes
    dcmem, dmem, dh_kv = dz[:, :n_cm, :], dz[:, n_cm:n_cm + n_m, :], dz[:, n_cm + n_m:, :]  # split [cm; m; h]
    grads = {**grads_attn, **grads_ffn, "ln1_gamma": ln1["gamma"], "ln1_beta": ln1["beta"],
             "ln2_gamma": ln2["gamma"], "ln2_beta": ln2["beta"],
             **attention_reconstruction_backward(dloss, cache.reconstruction)}  # theta_c: L_attn only
    return dsum1 + dh_q + dh_kv, dmem, dcmem, grads


def compressive_segments_forward(segments: list[Any], state: CompressiveState, params: dict[str, Any],
                                 config: CompressiveConfig) -> tuple[list[CompressiveOutputs], list[CompressiveCache]]:
    """Run consecutive segments, carrying the state explicitly (each segment's state is the last one's output)."""
    outputs, caches = [], []
    for h in segments:
        out, cache = compressive_layer_forward(h, state, params, config)
        outputs.append(out)
        caches.append(cache)
        state = out.state  # stop-gradient: the next segment sees constants
    return outputs, caches
