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
from ..nn.attention import ATTENTION_PARAMS, MHACache, causal_mask, init_attention, mha_backward, mha_forward
from ..nn.feed_forward import (
    FFN_PARAMS,
    FeedForwardCache,
    feed_forward_backward,
    feed_forward_forward,
    init_feed_forward,
)
from ..nn.layer_norm import LayerNormCache, init_layer_norm, layer_norm_backward, layer_norm_forward
from ..random import normal, uniform
from ..validate import require_finite, require_float, require_shape
from .compressive_functions import COMPRESSION_PARAMS, COMPRESSIONS, compress_forward, most_used_rows
from .compressive_loss import (
    RECON_ATTENTION_PARAMS,
    REDUCTIONS,
    ReconstructionCache,
    attention_reconstruction_backward,
    attention_reconstruction_forward,
)

EVICTIONS = ("fifo", "algorithm1")
USAGE_RANKINGS = ("mean", "sum")


@dataclass(frozen=True)
class CompressiveConfig:
    """The layer's switches. Validated on construction (a bad value names the field)."""

    n_heads: int
    kind: str = "conv"  # f_c: conv, mean, max, dilated, most_used (§3.2)
    rate: int = 3  # c (§3.2); 3 is the oracle's example size (lucidrains' cmem_ratio defaults to 4, l.170)
    kernel: int | None = None  # dilated conv taps (default c) [U: the paper gives none]
    dilation: int = 2  # dilated conv [U: the paper gives none]
    activation: str = "gelu"
    eps: float = 1e-5
    reduction: str = "sum"  # L_attn: sum of squares, or mean (lucidrains l.281 F.mse_loss)
    scale: float | None = None  # reconstruction scores' scale (None: 1/sqrt(Dh))
    eviction: str = "fifo"  # "fifo": [m; h][:n_s] (lucidrains l.252); "algorithm1": m[:n_s] [paper, recalled]
    usage: str = "mean"  # most-used ranking: average attention (§3.1 per paperswithcode) or "sum"

    def __post_init__(self) -> None:
        for name in ("n_heads", "rate", "dilation"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"CompressiveConfig.{name} must be a positive integer, got {value!r}")
        if self.kernel is not None and (isinstance(self.kernel, bool) or not isinstance(self.kernel, int)
                                        or self.kernel < 1):
            raise ValueError(f"CompressiveConfig.kernel must be None or a positive integer, got {self.kernel!r}")
        for name, allowed in (("kind", COMPRESSIONS), ("reduction", REDUCTIONS), ("eviction", EVICTIONS),
                              ("usage", USAGE_RANKINGS)):
            if getattr(self, name) not in allowed:
                raise ValueError(f"CompressiveConfig.{name} must be one of {allowed}, got {getattr(self, name)!r}")
        if not self.eps > 0:
            raise ValueError(f"CompressiveConfig.eps must be positive, got {self.eps!r}")


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


def init_compressive_layer(rng, d_model: int, d_ff: int, config: CompressiveConfig, *, xp, dtype) -> dict[str, Any]:
    """Attention, feed-forward, two layer norms, and theta_c (w_c (K, D, D), b_c (D,)) for the convs."""
    params = {**init_attention(rng, d_model, xp=xp, dtype=dtype),
              **init_feed_forward(rng, d_model, d_ff, xp=xp, dtype=dtype)}
    for name in ("ln1", "ln2"):
        ln = init_layer_norm(rng, d_model, xp=xp, dtype=dtype)
        params[f"{name}_gamma"], params[f"{name}_beta"] = ln["gamma"], ln["beta"]
    if COMPRESSION_PARAMS[config.kind]:
        taps = config.rate if config.kind == "conv" else (config.kernel or config.rate)
        params["w_c"] = normal(rng, (taps, d_model, d_model), xp=xp, dtype=dtype, scale=(taps * d_model) ** -0.5)
        params["b_c"] = normal(rng, (d_model,), xp=xp, dtype=dtype, scale=0.1)
    return params


def sample_memory(rng, batch: int, n_mem: int, n_cmem: int, d_model: int, *, xp, dtype) -> CompressiveState:
    """A random state: Gaussian memories and a continuous usage in [0, 1) (no ties in the most-used ranking)."""
    return CompressiveState(normal(rng, (batch, n_mem, d_model), xp=xp, dtype=dtype),
                            normal(rng, (batch, n_cmem, d_model), xp=xp, dtype=dtype),
                            uniform(rng, (batch, n_mem), xp=xp, dtype=dtype))


def compressive_layer_forward(h: Any, state: CompressiveState, params: dict[str, Any], config: CompressiveConfig, *,
                              bias: Any | None = None, dropout: dict[str, Any] | None = None,
                              frozen: dict[str, Any] | None = None) -> tuple[CompressiveOutputs, CompressiveCache]:
    """One layer on one segment. h (B, T, D); params: attention, w_1 … b_2, ln1/ln2, and w_c, b_c for convs.

    dropout: optional masks "attn_probs" (B, H, T, S), "attn", "ffn_inner", "ffn".
    frozen: values to read for L_attn's stop-gradient inputs ("h", "old_mem", w_q … b_v) instead of the
    live ones. Equal values give equal outputs; finite-difference checks pass the unperturbed values, so
    that the numbers differentiate the function the stop-gradients define (spec §1.8, §5 rule 5).
    """
    if not isinstance(state, CompressiveState):
        raise TypeError(f"state must be a CompressiveState(mem, cmem, usage), got {type(state).__name__}")
    if not isinstance(config, CompressiveConfig):
        raise TypeError(f"config must be a CompressiveConfig, got {type(config).__name__}")
    mem, cmem, usage = state
    for name, x in (("h", h), ("state.mem", mem), ("state.cmem", cmem), ("state.usage", usage)):
        require_float(name, x)
        require_finite(name, x)
    xp = array_namespace(h)
    require_shape("h", h, ["batch", "seq", "d_model"], [None, None, None])
    b, t, d = h.shape
    if b == 0 or t == 0:
        raise ValueError(f"h must have a non-empty batch and segment, got shape {tuple(h.shape)}")
    require_shape("state.mem", mem, ["batch", "n_mem", "d_model"], [b, None, d])
    require_shape("state.cmem", cmem, ["batch", "n_cmem", "d_model"], [b, None, d])
    require_shape("state.usage", usage, ["batch", "n_mem"], [b, mem.shape[1]])
    if bool(xp.any(usage < 0)):
        raise ValueError("state.usage must be non-negative (attention received), got a negative value")
    n_cm, n_m = cmem.shape[1], mem.shape[1]
    n_old = evicted_rows(t, n_m, config)  # rows f_c compresses
    if n_old % config.rate:
        raise ValueError(f"h must have shape (batch, seq, d_model) with the {n_old} evicted rows divisible by "
                         f"rate={config.rate} (eviction={config.eviction!r}, n_mem={n_m}), got {tuple(h.shape)}")
    dropout = dropout or {}
    z = xp.concat([cmem, mem, h], axis=1)  # (B, S, D)                       Eq. (1): attend over [cm; m; h]
    mask = causal_mask(t, n_cm + n_m + t, xp=xp, offset=n_cm + n_m)  # (T, S)
    a, attention = mha_forward(h, z, {k: params[k] for k in ATTENTION_PARAMS}, n_heads=config.n_heads, mask=mask,
                               bias=bias, dropout_mask=dropout.get("attn_probs"))  # (B, T, D)
    drop_attn = dropout.get("attn")
    a = a if drop_attn is None else a * drop_attn
    a1, ln1 = layer_norm_forward(h + a, params["ln1_gamma"], params["ln1_beta"], eps=config.eps)  # (B, T, D) Eq. (2)
    f, ffn = feed_forward_forward(a1, {k: params[k] for k in FFN_PARAMS}, activation=config.activation,
                                  dropout_mask=dropout.get("ffn_inner"))  # (B, T, D)
    drop_ffn = dropout.get("ffn")
    f = f if drop_ffn is None else f * drop_ffn
    y, ln2 = layer_norm_forward(a1 + f, params["ln2_gamma"], params["ln2_beta"], eps=config.eps)  # (B, T, D) Eq. (2)

    # FIFO update (Alg. 1 lines 6-8): no gradient flows through it.
    fifo = xp.concat([mem, h], axis=1)  # (B, Nm + T, D)
    old_mem, new_mem = fifo[:, :n_old, :], fifo[:, t:, :]  # (B, n_old, D), (B, Nm, D)   Eq. (3)
    theta_c = {k: params[k] for k in COMPRESSION_PARAMS[config.kind]}
    keep = None
    if config.kind == "most_used":
        evicted_usage = xp.concat([usage, xp.zeros((b, t), dtype=usage.dtype)], axis=1)[:, :n_old]  # (B, n_old)
        if config.usage == "mean":  # average attention per segment spent in memory (§3.1)
            evicted_usage = evicted_usage / xp.asarray(usage_counts(n_old, n_m, t), dtype=usage.dtype)
        keep = most_used_rows(evicted_usage, n_old // config.rate)  # (B, C)
    compressed, _ = compress_forward(old_mem, theta_c, kind=config.kind, rate=config.rate, kernel=config.kernel,
                                     dilation=config.dilation, keep=keep)  # (B, C, D)     Eq. (4)
    n_new = compressed.shape[1]
    new_cmem = xp.concat([cmem, compressed], axis=1)[:, n_new:, :]  # (B, Ncm, D)          Eq. (5)
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


def evicted_rows(seq_len: int, n_mem: int, config: CompressiveConfig) -> int:
    """How many rows leave the memory this segment: n_s ("fifo"), or min(n_s, n_m) ("algorithm1")."""
    return seq_len if config.eviction == "fifo" else min(seq_len, n_mem)


def usage_counts(n_old: int, n_mem: int, seq_len: int) -> list[float]:
    """Segments each evicted row's usage sums over: ceil((Nm - j) / T) for memory slot j, 1 for a row of h
    (never in memory; its usage is 0, so any positive count ranks it last)."""
    return [float(-(-(n_mem - j) // seq_len)) if j < n_mem else 1.0 for j in range(n_old)]


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


def compressive_rollout(segments: list[Any], state: CompressiveState, params: dict[str, Any],
                        config: CompressiveConfig) -> tuple[list[CompressiveOutputs], list[CompressiveCache]]:
    """Run consecutive segments, carrying the state explicitly (each segment's state is the last one's output).

    A forward-only rollout (for studying memory over many segments): its gradients are those of the
    single-segment layer, which the registered mechanisms check; nothing differentiates through it.
    """
    outputs, caches = [], []
    for h in segments:
        out, cache = compressive_layer_forward(h, state, params, config)
        outputs.append(out)
        caches.append(cache)
        state = out.state  # stop-gradient: the next segment sees constants
    return outputs, caches
