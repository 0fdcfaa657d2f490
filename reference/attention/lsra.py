"""Long-Short Range Attention (LSRA): the layer of Lite Transformer.

Wu, Liu, Lin, Lin, Han, "Lite Transformer with Long-Short Range Attention", ICLR 2020, arXiv:2004.11886v1
(the LSRA block and the flattened FFN; section numbers not re-read); authors' code mit-han-lab/lite-transformer
``transformer_multibranch_v2.py`` and ``multibranch.py`` (spec attention.md §1). Branch convolutions:
:mod:`reference.attention.lsra_conv`; registered cases and configurations: :mod:`reference.attention.cases.lsra`.

Axes: B batch, T positions, D model width, Da attention channels, Dc = D - Da convolution channels,
Ha attention heads, Hc kernel heads, K kernel width, F = D (flattened FFN width by default).

Forward (post-norm, spec §1.4; equation numbers are those of docs/mechanisms/attention.lsra.md, the
paper's own numbering was not re-read):

    Xa, Xc = X[..., :Da], X[..., Da:]                              channel split (attention branch first)
    A  = MHA(Xa, Xa; mask)                                         (1) global branch: nn.attention
    Xc <- Xc * valid      (pad_mask_site="branch_input", code)     spec D1
    U  = Xc W_in + b_in;   Z = GLU(U) (if glu) else U              (2a)
    Z  <- Z * valid       (pad_mask_site="pre_conv", default)
    C  = LightConv(Z; theta) or DynamicConv(Z; G)                  (2b) local branch: lsra_conv
    Yc = C W_out + b_out                                           (2c)
    Y  = [A | Yc] * D_res                                          (3) concatenate, no mixing matrix
    H1 = LN1(X + Y)
    H2 = LN2(H1 + FFN_relu(H1) * D_ffn)                            (4) flattened FFN, F = D

Decoder self-attention block (``causal=True``): causal attention mask and causal convolution padding
P = K - 1; ``valid`` may be None. The decoder's encoder-decoder attention is the standard sub-layer
(:mod:`reference.nn.decoder_layer`) and is not part of LSRA.

Backward (reading the forward bottom-up; derivation on docs/mechanisms/attention.lsra.md):

    dS2 = LN2'(dH2);  dH1 = dS2 + FFN'(dS2 * D_ffn)
    dS1 = LN1'(dH1);  dY = dS1 * D_res;  dX = dS1 + [dXa | dXc]
    dA, dYc = dY[..., :Da], dY[..., Da:]
    dXa = MHA'(dA) (query and key/value paths summed)
    dC = dYc W_out^T;  dZ, dtheta|dG = conv'(dC);  dZ *= valid (pre_conv);  dU = GLU'(dZ);  dXc = dU W_in^T
    (branch_input: dXc *= valid)

Paper symbols: the "attention branch" and "convolution branch" of Fig. 3 are A and Yc; the paper's
"flattened" FFN is F = D; LightConv W (H x k) = softmax(theta); DynamicConv's W_Q projection = G (w_gen).

Defaults and what they cite (the paper's text was not re-read, so every default is the authors' code,
mit-han-lab/lite-transformer at the commit of spec §0.3):

* d_attn = D / 2, attention branch first: ``configs/*.yml`` ``encoder-branch-type: [attn:1:d/2:4,
  dynamic|lightweight:default:d/2:4]`` (spec §1.2).
* F = D (flattened FFN): every config sets ``*-ffn-embed-dim`` equal to ``*-embed-dim`` (spec §1.2).
* post-norm, ReLU FFN: ``encoder_normalize_before=False`` in ``transformer_multibranch_v2.py`` (spec §1.2).
* eps = 1e-5: fairseq ``LayerNorm`` (``torch.nn.LayerNorm`` default).
* causal padding P = K - 1, centred P = K // 2: ``transformer_multibranch_v2.py`` l.623, l.810/817 (spec §1.2).

**Deviations** (spec §1.7; each a named option where the code differs):

* pad_mask_site: the paper does not say where padded positions are zeroed. Default "pre_conv" (fairseq's
  ``LightConvEncoderLayer``: after linear/GLU, right before the convolution) keeps padding from leaking
  into valid positions; "branch_input" reproduces Lite Transformer's ``multibranch.py`` (zeroed before
  the input linear, whose bias makes padded rows non-zero again, so they leak through the convolution).
* head_layout: "contiguous" (paper default) or "interleaved" (fairseq ``LightweightConv1d``), see lsra_conv.
* The attention branch scales Q K^T by Dh^-1/2 after the projection bias, like fairseq (identical maths).
* Dropout is explicit masks: "attn_probs" (B, Ha, T, T), "weight" (Hc, K) or (B, T, Hc, K),
  "branch" (B, T, D), "ffn_inner" (B, T, F), "ffn" (B, T, D).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from ..backend import array_namespace
from ..nn.attention import (
    ATTENTION_PARAMS,
    MHACache,
    causal_mask,
    init_attention,
    mha_backward,
    mha_forward,
    padding_mask,
)
from ..nn.feed_forward import (
    FFN_PARAMS,
    FeedForwardCache,
    feed_forward_backward,
    feed_forward_forward,
    init_feed_forward,
)
from ..nn.layer_norm import LayerNormCache, init_layer_norm, layer_norm_backward, layer_norm_forward
from ..nn.linear import LinearCache, init_linear, linear_backward, linear_forward
from ..random import dropout_mask, normal
from ..validate import require_bool, require_finite, require_float, require_params, require_shape
from .lsra_conv import (
    HEAD_LAYOUTS,
    DynamicConvCache,
    GLUCache,
    LightConvCache,
    dynamic_conv_backward,
    dynamic_conv_forward,
    glu_backward,
    glu_forward,
    lightweight_conv_backward,
    lightweight_conv_forward,
)

CONV_TYPES = ("lightweight", "dynamic")
PAD_MASK_SITES = ("pre_conv", "branch_input")
DROPOUT_SITES = ("attn_probs", "weight", "branch", "ffn_inner", "ffn")


class LSRAConfig(NamedTuple):
    d_attn: int  # Da, channels of the attention branch (the first Da channels)
    n_attn_heads: int  # Ha
    n_conv_heads: int  # Hc
    kernel_size: int  # K
    conv: str = "lightweight"  # "lightweight" | "dynamic"
    glu: bool = True
    causal: bool = False  # decoder: causal mask and left padding K - 1; encoder: centred padding
    head_layout: str = "contiguous"  # "contiguous" (paper) | "interleaved" (fairseq LightweightConv1d)
    pad_mask_site: str = "pre_conv"  # "pre_conv" (paper intent, fairseq) | "branch_input" (Lite Transformer code)
    eps: float = 1e-5  # fairseq LayerNorm


class LSRACache(NamedTuple):
    attention: MHACache
    keep: Any | None  # (B, T, 1) 1.0 at valid positions, or None
    linear_in: LinearCache  # x: (B, T, Dc), w: (Dc, 2 Dc) or (Dc, Dc)
    glu: GLUCache | None
    conv: LightConvCache | DynamicConvCache
    linear_out: LinearCache  # x: (B, T, Dc), w: (Dc, Dc)
    drop_branch: Any | None  # (B, T, D)
    ln1: LayerNormCache
    ffn: FeedForwardCache
    drop_ffn: Any | None  # (B, T, D)
    ln2: LayerNormCache
    config: LSRAConfig


def _validate(x: Any, params: dict[str, Any], config: LSRAConfig, valid: Any | None,
              dropout: dict[str, Any] | None) -> None:
    if not isinstance(config, LSRAConfig):
        raise TypeError(f"config must be an LSRAConfig, got {type(config).__name__}")
    require_float("x", x)
    require_shape("x", x, ["batch", "seq", "d_model"], [None, None, None])
    if 0 in x.shape:
        raise ValueError(f"x must be non-empty (batch, seq, d_model all >= 1), got shape {tuple(x.shape)}")
    require_finite("x", x)
    d = x.shape[2]
    if not 0 < config.d_attn < d:
        raise ValueError(f"config.d_attn must lie in (0, d_model={d}), got {config.d_attn}")
    if config.conv not in CONV_TYPES:
        raise ValueError(f"config.conv must be one of {CONV_TYPES}, got {config.conv!r}")
    if config.pad_mask_site not in PAD_MASK_SITES:
        raise ValueError(f"config.pad_mask_site must be one of {PAD_MASK_SITES}, got {config.pad_mask_site!r}")
    if config.head_layout not in HEAD_LAYOUTS:
        raise ValueError(f"config.head_layout must be one of {HEAD_LAYOUTS}, got {config.head_layout!r}")
    if config.kernel_size < 1:
        raise ValueError(f"config.kernel_size must be >= 1, got {config.kernel_size}")
    for field in ("n_attn_heads", "n_conv_heads"):
        if getattr(config, field) < 1:
            raise ValueError(f"config.{field} must be >= 1, got {getattr(config, field)}")
    if config.d_attn % config.n_attn_heads:
        raise ValueError(f"config.d_attn={config.d_attn} must be divisible by config.n_attn_heads={config.n_attn_heads}")
    dc = d - config.d_attn
    if dc % config.n_conv_heads:
        raise ValueError(f"d_model - d_attn = {dc} must be divisible by config.n_conv_heads={config.n_conv_heads}")
    kernel = "theta" if config.conv == "lightweight" else "w_gen"
    require_params(params, [*ATTENTION_PARAMS, "w_in", "b_in", kernel, "w_out", "b_out", *FFN_PARAMS,
                            "ln1_gamma", "ln1_beta", "ln2_gamma", "ln2_beta"])
    require_shape("params['w_in']", params["w_in"], ["d_conv", "d_conv * (2 if glu else 1)"],
                  [dc, dc * (2 if config.glu else 1)])
    if config.conv == "lightweight":
        require_shape("params['theta']", params["theta"], ["kernel_heads", "kernel"],
                      [config.n_conv_heads, config.kernel_size])
    if valid is not None:
        require_bool("valid", valid)
        require_shape("valid", valid, ["batch", "seq"], [x.shape[0], x.shape[1]])
    if dropout is not None:
        if not isinstance(dropout, dict):
            raise TypeError(f"dropout must be a dict of masks keyed by site, got {type(dropout).__name__}")
        unknown = sorted(set(dropout) - set(DROPOUT_SITES))
        if unknown:
            raise ValueError(f"dropout has unknown site(s) {unknown}; known: {DROPOUT_SITES}")
        for site, mask in dropout.items():
            if mask is not None:
                require_float(f"dropout[{site!r}]", mask)
                require_finite(f"dropout[{site!r}]", mask)


def lsra_forward(x: Any, params: dict[str, Any], config: LSRAConfig, *, valid: Any | None = None,
                 dropout: dict[str, Any] | None = None) -> tuple[Any, LSRACache]:
    """One LSRA layer: x (B, T, D) -> (B, T, D). valid: (B, T) bool (True = real token) or None."""
    _validate(x, params, config, valid, dropout)
    xp = array_namespace(x)
    dropout = dropout or {}
    t, da = x.shape[1], config.d_attn
    xa, xc = x[..., :da], x[..., da:]  # (B, T, Da), (B, T, Dc)

    # (1) Global branch: multi-head self-attention on the first Da channels.
    mask = None if valid is None else padding_mask(valid)  # (B, 1, 1, T)
    if config.causal:
        causal = causal_mask(t, xp=xp)[None, None, :, :]  # (1, 1, T, T)
        mask = causal if mask is None else xp.logical_and(mask, causal)
    a, attention = mha_forward(xa, xa, {k: params[k] for k in ATTENTION_PARAMS}, n_heads=config.n_attn_heads,
                               mask=mask, dropout_mask=dropout.get("attn_probs"))  # (B, T, Da)  Eq. (1)

    # (2) Local branch: linear, GLU, head-shared convolution, linear.
    keep = None if valid is None else xp.astype(valid, x.dtype)[:, :, None]  # (B, T, 1)
    if keep is not None and config.pad_mask_site == "branch_input":
        xc = xc * keep  # spec D1: zeroed before linear_in (the code's placement)
    u, linear_in = linear_forward(xc, params["w_in"], params["b_in"])  # (B, T, 2Dc) or (B, T, Dc)  Eq. (2a)
    glu = None
    z = u
    if config.glu:
        z, glu = glu_forward(u)  # (B, T, Dc)  Eq. (2a)
    if keep is not None and config.pad_mask_site == "pre_conv":
        z = z * keep  # padded positions read as zeros by the convolution
    padding = "causal" if config.causal else "centred"
    if config.conv == "lightweight":
        c, conv = lightweight_conv_forward(z, params["theta"], padding=padding, weight_dropout=dropout.get("weight"),
                                           layout=config.head_layout)  # (B, T, Dc)  Eq. (2b)
    else:
        c, conv = dynamic_conv_forward(z, params["w_gen"], n_heads=config.n_conv_heads, kernel_size=config.kernel_size,
                                       padding=padding, weight_dropout=dropout.get("weight"),
                                       layout=config.head_layout)  # (B, T, Dc)  Eq. (2b)
    yc, linear_out = linear_forward(c, params["w_out"], params["b_out"])  # (B, T, Dc)  Eq. (2c)

    # (3) Concatenate the branches, residual, LN1; (4) flattened FFN, residual, LN2.
    y = xp.concat([a, yc], axis=-1)  # (B, T, D)  Eq. (3)
    drop_branch = dropout.get("branch")
    if drop_branch is not None:
        y = y * drop_branch
    h1, ln1 = layer_norm_forward(x + y, params["ln1_gamma"], params["ln1_beta"], eps=config.eps)  # (B, T, D)  Eq. (3)
    f, ffn = feed_forward_forward(h1, {k: params[k] for k in FFN_PARAMS}, activation="relu",
                                  dropout_mask=dropout.get("ffn_inner"))  # (B, T, D)
    drop_ffn = dropout.get("ffn")
    if drop_ffn is not None:
        f = f * drop_ffn
    h2, ln2 = layer_norm_forward(h1 + f, params["ln2_gamma"], params["ln2_beta"], eps=config.eps)  # (B, T, D)  Eq. (4)
    return h2, LSRACache(attention, keep, linear_in, glu, conv, linear_out, drop_branch, ln1, ffn, drop_ffn, ln2,
                         config)


def lsra_backward(dh2: Any, cache: LSRACache) -> tuple[Any, dict[str, Any]]:
    """Returns dx (B, T, D) and a gradient for every parameter used by the forward."""
    xp = array_namespace(dh2)
    config = cache.config
    ds2, grads_ln2 = layer_norm_backward(dh2, cache.ln2)  # d(H1 + f)
    df = ds2 if cache.drop_ffn is None else ds2 * cache.drop_ffn
    dh1_ffn, grads_ffn = feed_forward_backward(df, cache.ffn)  # (B, T, D)
    ds1, grads_ln1 = layer_norm_backward(ds2 + dh1_ffn, cache.ln1)  # d(X + Y)
    dy = ds1 if cache.drop_branch is None else ds1 * cache.drop_branch
    da, dyc = dy[..., :config.d_attn], dy[..., config.d_attn:]  # (B, T, Da), (B, T, Dc)

    dxa_q, dxa_kv, grads_attn = mha_backward(da, cache.attention)  # (B, T, Da) each

    dc, grads_out = linear_backward(dyc, cache.linear_out)  # (B, T, Dc)
    if config.conv == "lightweight":
        dz, dkernel = lightweight_conv_backward(dc, cache.conv)  # (B, T, Dc), (Hc, K)
    else:
        dz, dkernel = dynamic_conv_backward(dc, cache.conv)  # (B, T, Dc), (Dc, Hc K)
    if cache.keep is not None and config.pad_mask_site == "pre_conv":
        dz = dz * cache.keep
    du = dz if cache.glu is None else glu_backward(dz, cache.glu)  # (B, T, 2Dc) or (B, T, Dc)
    dxc, grads_in = linear_backward(du, cache.linear_in)  # (B, T, Dc)
    if cache.keep is not None and config.pad_mask_site == "branch_input":
        dxc = dxc * cache.keep

    dx = ds1 + xp.concat([dxa_q + dxa_kv, dxc], axis=-1)  # (B, T, D) residual + both branches
    kernel = "theta" if config.conv == "lightweight" else "w_gen"
    grads = {**grads_attn, "w_in": grads_in["w"], "b_in": grads_in["b"], kernel: dkernel,
             "w_out": grads_out["w"], "b_out": grads_out["b"], **grads_ffn,
             "ln1_gamma": grads_ln1["gamma"], "ln1_beta": grads_ln1["beta"],
             "ln2_gamma": grads_ln2["gamma"], "ln2_beta": grads_ln2["beta"]}
    return dx, grads


def init_lsra(rng: np.random.Generator, d_model: int, config: LSRAConfig, *, xp, dtype,
              d_ff: int | None = None) -> dict[str, Any]:
    """Parameters of one LSRA layer; the FFN is flattened (d_ff = d_model) unless told otherwise."""
    da, dc = config.d_attn, d_model - config.d_attn
    params = dict(init_attention(rng, da, xp=xp, dtype=dtype))
    lin_in = init_linear(rng, dc, 2 * dc if config.glu else dc, xp=xp, dtype=dtype)
    params["w_in"], params["b_in"] = lin_in["w"], lin_in["b"]
    if config.conv == "lightweight":
        params["theta"] = normal(rng, (config.n_conv_heads, config.kernel_size), xp=xp, dtype=dtype)
    else:
        params["w_gen"] = normal(rng, (dc, config.n_conv_heads * config.kernel_size), xp=xp, dtype=dtype,
                                 scale=dc ** -0.5)
    lin_out = init_linear(rng, dc, dc, xp=xp, dtype=dtype)
    params["w_out"], params["b_out"] = lin_out["w"], lin_out["b"]
    params.update(init_feed_forward(rng, d_model, d_ff or d_model, xp=xp, dtype=dtype))
    for name in ("ln1", "ln2"):
        ln = init_layer_norm(rng, d_model, xp=xp, dtype=dtype)
        params[f"{name}_gamma"], params[f"{name}_beta"] = ln["gamma"], ln["beta"]
    return params


def sample_lsra_dropout(rng: np.random.Generator, batch: int, seq: int, d_model: int, config: LSRAConfig,
                        rate: float, *, xp, dtype, d_ff: int | None = None) -> dict[str, Any]:
    """Explicit masks for every dropout site of the layer (weight dropout on the normalised kernel)."""
    hc, k = config.n_conv_heads, config.kernel_size
    weight_shape = (hc, k) if config.conv == "lightweight" else (batch, seq, hc, k)
    return {"attn_probs": dropout_mask(rng, (batch, config.n_attn_heads, seq, seq), rate, xp=xp, dtype=dtype),
            "weight": dropout_mask(rng, weight_shape, rate, xp=xp, dtype=dtype),
            "branch": dropout_mask(rng, (batch, seq, d_model), rate, xp=xp, dtype=dtype),
            "ffn_inner": dropout_mask(rng, (batch, seq, d_ff or d_model), rate, xp=xp, dtype=dtype),
            "ffn": dropout_mask(rng, (batch, seq, d_model), rate, xp=xp, dtype=dtype)}
