"""The short-range branch of Lite Transformer's LSRA: GLU, lightweight and dynamic convolution.

Wu, Liu, Lin, Lin, Han, "Lite Transformer with Long-Short Range Attention", ICLR 2020,
arXiv:2004.11886v1 (the LSRA block); the convolutions are those of Wu, Fan, Baevski, Dauphin, Auli,
"Pay Less Attention with Lightweight and Dynamic Convolutions", ICLR 2019, arXiv:1901.10430v2
(section and equation numbers are not cited: the PDFs were not re-read for this file).
Spec attention.md §1.4 step 2 and §1.6. The block that uses these is :mod:`reference.attention.lsra`.

Axes: B batch, T positions, C channels of the conv branch (d_c), H kernel heads (H_c),
R = C / H channels per head, K kernel width, P left padding (causal K-1, centred K//2 for odd K).

Forward:

    GLU:        z = a * sigmoid(g),  [a | g] = u split in halves on the last axis
    LightConv:  Ws[h, :] = softmax_k(theta[h, :])                              LightConv, one kernel per head
                Wt = Ws * D_w                                                  weight dropout (explicit mask)
                W[c, :] = Wt[h(c), :]                                          head shared by R channels
                out[b, t, c] = sum_k W[c, k] zpad[b, t + k, c]                 zpad = z padded (P, K-1-P)
    DynamicConv: lam[b, t] = z[b, t] G   reshaped (H, K), index h K + k        DynamicConv, kernel from the input
                Ws[b, t, h, :] = softmax_k(lam[b, t, h, :]),  Wt = Ws * D_w
                out[b, t, c] = sum_k Wt[b, t, h(c), k] zpad[b, t + k, c]

Channel-to-head map h(c): "contiguous" h(c) = c // R (the LightConv paper's ceil(cH/d), and fairseq's
TBC and CUDA modules, spec §0.1); "interleaved" h(c) = c mod H (fairseq's illustrative
``LightweightConv1d``, spec §1.7 D5), a named option.

Backward (spec §1.6; derivation on docs/mechanisms/attention.lsra.md):

    dW[c, k]    = sum_{b,t} dout[b, t, c] zpad[b, t + k, c]          (nn.conv1d for LightConv)
    dzpad[b, t + k, c] += dout[b, t, c] W[c, k],   crop the padding  (transpose correlation)
    dWt[h, k]   = sum_{c: h(c) = h} dW[c, k]                         the kernel is shared: sum over its R channels
    dWs         = dWt * D_w
    dtheta[h,k] = Ws[h,k] (dWs[h,k] - sum_k' Ws[h,k'] dWs[h,k'])     softmax over taps; sum_k dtheta[h, k] = 0
    DynamicConv: dlam the same per (b, t, h);  dG = z^T dlam;  dz += dlam G^T   (second path into z)
    GLU:        da = dz sigmoid(g),  dg = dz a sigmoid(g) (1 - sigmoid(g))

**Deviations** (none from the papers; choices where they are silent):

* Taps that land on zero padding keep their softmax mass (no renormalisation near the ends), as in the
  papers and fairseq's default (spec §1.7 D2).
* Weight dropout drops the normalised kernel ``Ws`` once per head (LightConv, fairseq's CUDA/unfolded
  path) or once per (b, t, head) (DynamicConv); fairseq's CPU ``_forward_expanded`` path drops band-matrix
  entries instead (D4), which is not reproduced.
* Even K with centred padding puts the extra tap on the right (``nn.conv1d``'s rule); the released
  configurations use odd K.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from ..backend import array_namespace
from ..nn.conv1d import (
    DepthwiseConvCache,
    depthwise_conv1d_backward,
    depthwise_conv1d_forward,
    left_padding,
    pad_sequence,
)
from ..nn.linear import LinearCache, linear_backward, linear_forward
from ..nn.losses import sigmoid
from ..nn.softmax import SoftmaxCache, softmax_backward, softmax_forward
from ..validate import require_finite, require_float, require_shape

HEAD_LAYOUTS = ("contiguous", "interleaved")


class GLUCache(NamedTuple):
    a: Any  # (..., C)
    gate: Any  # (..., C) sigmoid of the second half


class LightConvCache(NamedTuple):
    softmax: SoftmaxCache  # p: (H, K)
    weight_dropout: Any | None  # (H, K) or None
    conv: DepthwiseConvCache  # x_padded (B, T + K - 1, C), w (C, K)
    layout: str


class DynamicConvCache(NamedTuple):
    generator: LinearCache  # x: z (B, T, C), w: G (C, H K)
    softmax: SoftmaxCache  # p: (B, T, H, K)
    weight_dropout: Any | None  # (B, T, H, K) or None
    w_channels: Any  # (B, T, C, K) kernel per channel after dropout
    z_padded: Any  # (B, T + K - 1, C)
    left: int
    layout: str


def glu_forward(u: Any) -> tuple[Any, GLUCache]:
    """Gated linear unit on the last axis: u (..., 2C) -> a * sigmoid(g) (..., C)."""
    require_float("u", u)
    require_finite("u", u)
    if u.shape[-1] % 2:
        raise ValueError(f"u must have an even last axis (..., 2 C), got {tuple(u.shape)}")
    half = u.shape[-1] // 2
    a, gate = u[..., :half], sigmoid(u[..., half:])  # (..., C)
    return a * gate, GLUCache(a, gate)


def glu_backward(dz: Any, cache: GLUCache) -> Any:
    xp = array_namespace(dz)
    a, gate = cache
    return xp.concat([dz * gate, dz * a * gate * (1.0 - gate)], axis=-1)  # (..., 2C)


def expand_heads(w: Any, channels: int, layout: str) -> Any:
    """Per-head kernels (..., H, K) -> per-channel kernels (..., C, K) under the channel-to-head map."""
    xp = array_namespace(w)
    *lead, h, k = w.shape
    r = channels // h
    if layout == "contiguous":  # channel c = h R + r
        wide = xp.broadcast_to(w[..., :, None, :], (*lead, h, r, k))  # (..., H, R, K)
    else:  # interleaved: channel c = r H + h
        wide = xp.broadcast_to(w[..., None, :, :], (*lead, r, h, k))  # (..., R, H, K)
    return xp.reshape(wide, (*lead, channels, k))  # (..., C, K)


def reduce_heads(dw: Any, n_heads: int, layout: str) -> Any:
    """Backward of :func:`expand_heads`: sum the per-channel gradients of each head's R channels."""
    xp = array_namespace(dw)
    *lead, c, k = dw.shape
    r = c // n_heads
    if layout == "contiguous":
        return xp.sum(xp.reshape(dw, (*lead, n_heads, r, k)), axis=-2)  # (..., H, K)
    return xp.sum(xp.reshape(dw, (*lead, r, n_heads, k)), axis=-3)  # (..., H, K)


def _check_layout(layout: str, channels: int, n_heads: int) -> None:
    if layout not in HEAD_LAYOUTS:
        raise ValueError(f"layout must be one of {HEAD_LAYOUTS}, got {layout!r}")
    if n_heads < 1 or channels % n_heads:
        raise ValueError(f"channels={channels} must be divisible by the number of kernel heads {n_heads}")


def lightweight_conv_forward(z: Any, theta: Any, *, padding: str, weight_dropout: Any | None = None,
                             layout: str = "contiguous") -> tuple[Any, LightConvCache]:
    """LightConv (arXiv:1901.10430): z (B, T, C), raw kernel theta (H, K) -> (B, T, C)."""
    require_float("z", z)
    require_shape("z", z, ["batch", "seq", "channels"], [None, None, None])
    require_finite("z", z)
    require_float("theta", theta)
    require_shape("theta", theta, ["kernel_heads", "kernel"], [None, None])
    require_finite("theta", theta)
    _check_layout(layout, z.shape[2], theta.shape[0])
    ws, softmax = softmax_forward(theta, axis=-1)  # (H, K) each row sums to 1  Eq. (2b) LightConv
    wt = ws
    if weight_dropout is not None:
        require_shape("weight_dropout", weight_dropout, ["kernel_heads", "kernel"], list(theta.shape))
        wt = ws * weight_dropout  # (H, K)
    w = expand_heads(wt, z.shape[2], layout)  # (C, K)
    out, conv = depthwise_conv1d_forward(z, w, padding=padding)  # (B, T, C)
    return out, LightConvCache(softmax, weight_dropout, conv, layout)


def lightweight_conv_backward(dout: Any, cache: LightConvCache) -> tuple[Any, Any]:
    """Returns dz (B, T, C) and dtheta (H, K)."""
    dz, grads = depthwise_conv1d_backward(dout, cache.conv)  # dz (B, T, C), grads["w"] (C, K)
    n_heads = cache.softmax.p.shape[0]
    dwt = reduce_heads(grads["w"], n_heads, cache.layout)  # (H, K) summed over each head's channels
    dws = dwt if cache.weight_dropout is None else dwt * cache.weight_dropout
    return dz, softmax_backward(dws, cache.softmax)  # (H, K)


def dynamic_conv_forward(z: Any, w_gen: Any, *, n_heads: int, kernel_size: int, padding: str,
                         weight_dropout: Any | None = None, layout: str = "contiguous") -> tuple[Any, DynamicConvCache]:
    """DynamicConv (arXiv:1901.10430): kernels predicted from z (B, T, C) by w_gen (C, H K)."""
    xp = array_namespace(z, w_gen)
    require_float("z", z)
    require_shape("z", z, ["batch", "seq", "channels"], [None, None, None])
    require_finite("z", z)
    b, t, c = z.shape
    k = kernel_size
    require_float("w_gen", w_gen)
    require_shape("w_gen", w_gen, ["channels", "kernel_heads * kernel"], [c, n_heads * k])
    require_finite("w_gen", w_gen)
    _check_layout(layout, c, n_heads)
    lam, generator = linear_forward(z, w_gen)  # (B, T, H K), no bias
    ws, softmax = softmax_forward(xp.reshape(lam, (b, t, n_heads, k)), axis=-1)  # (B, T, H, K)  Eq. (2b) DynamicConv
    wt = ws
    if weight_dropout is not None:
        require_shape("weight_dropout", weight_dropout, ["batch", "seq", "kernel_heads", "kernel"], [b, t, n_heads, k])
        wt = ws * weight_dropout
    w = expand_heads(wt, c, layout)  # (B, T, C, K)
    left = left_padding(k, padding)
    z_padded = pad_sequence(z, left, k - 1 - left)  # (B, T + K - 1, C)
    out = xp.zeros_like(z)
    for tap in range(k):
        out = out + w[..., tap] * z_padded[:, tap:tap + t, :]  # (B, T, C)
    return out, DynamicConvCache(generator, softmax, weight_dropout, w, z_padded, left, layout)


def dynamic_conv_backward(dout: Any, cache: DynamicConvCache) -> tuple[Any, Any]:
    """Returns dz (B, T, C) (convolution input and kernel generator paths summed) and dw_gen (C, H K)."""
    xp = array_namespace(dout)
    w, z_padded, left = cache.w_channels, cache.z_padded, cache.left
    b, t, c, k = w.shape
    dz_padded = xp.zeros_like(z_padded)
    dw_taps = []
    for tap in range(k):
        dw_taps.append(dout * z_padded[:, tap:tap + t, :])  # (B, T, C)
        dz_padded = dz_padded + pad_sequence(dout * w[..., tap], tap, k - 1 - tap)  # (B, T + K - 1, C)
    dz = dz_padded[:, left:left + t, :]  # (B, T, C) crop the padding
    n_heads = cache.softmax.p.shape[2]
    dwt = reduce_heads(xp.stack(dw_taps, axis=-1), n_heads, cache.layout)  # (B, T, H, K)
    dws = dwt if cache.weight_dropout is None else dwt * cache.weight_dropout
    dlam = xp.reshape(softmax_backward(dws, cache.softmax), (b, t, n_heads * k))  # (B, T, H K)
    dz_gen, grads = linear_backward(dlam, cache.generator)  # (B, T, C), (C, H K)
    return dz + dz_gen, grads["w"]
