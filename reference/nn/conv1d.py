"""Depthwise 1-D convolution over the sequence axis, with causal or centred padding.

Axes: B batch, T positions, C channels, K kernel width.

Forward (cross-correlation, as PyTorch's conv1d and fairseq's convolutions):

    xpad = pad(x, left=P_l, right=K-1-P_l)       causal: P_l = K-1;  centred: P_l = (K-1)//2
    y[b, t, c] = sum_k w[c, k] xpad[b, t+k, c] + bias[c]

Backward:

    dw[c, k]   = sum_{b,t} dy[b, t, c] xpad[b, t+k, c]
    dxpad[b, t+k, c] += dy[b, t, c] w[c, k]      then crop the padding
    dbias[c]   = sum_{b,t} dy[b, t, c]

Centred padding with an even K puts the extra tap on the right (fairseq's
``padding_l = K // 2`` for odd K is the same). The loops below run over the
K kernel taps, never over positions.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from ..backend import array_namespace
from ..validate import require_finite, require_float, require_shape

PADDINGS = ("causal", "centred")


class DepthwiseConvCache(NamedTuple):
    x_padded: Any  # (B, T + K - 1, C)
    w: Any  # (C, K)
    left: int
    has_bias: bool


def left_padding(kernel_size: int, padding: str) -> int:
    if padding not in PADDINGS:
        raise ValueError(f"padding must be one of {PADDINGS}, got {padding!r}")
    return kernel_size - 1 if padding == "causal" else (kernel_size - 1) // 2


def pad_sequence(x: Any, left: int, right: int) -> Any:
    """Zero-pad axis 1 of (B, T, C)."""
    xp = array_namespace(x)
    b, _, c = x.shape
    parts = [xp.zeros((b, left, c), dtype=x.dtype), x, xp.zeros((b, right, c), dtype=x.dtype)]
    return xp.concat(parts, axis=1)  # (B, T + left + right, C)


def depthwise_conv1d_forward(x: Any, w: Any, bias: Any | None = None, *,
                             padding: str = "causal") -> tuple[Any, DepthwiseConvCache]:
    """x (B, T, C), w (C, K), bias (C,) or None."""
    xp = array_namespace(x, w)
    require_float("x", x)
    require_shape("x", x, ["batch", "seq", "channels"], [None, None, None])
    require_shape("w", w, ["channels", "kernel"], [x.shape[2], None])
    require_finite("x", x)
    require_finite("w", w)
    t, k = x.shape[1], w.shape[1]
    left = left_padding(k, padding)
    x_padded = pad_sequence(x, left, k - 1 - left)  # (B, T + K - 1, C)
    y = xp.zeros_like(x)
    for tap in range(k):
        y = y + x_padded[:, tap:tap + t, :] * w[:, tap]  # (B, T, C)
    if bias is not None:
        require_shape("bias", bias, ["channels"], [x.shape[2]])
        y = y + bias
    return y, DepthwiseConvCache(x_padded, w, left, bias is not None)


def depthwise_conv1d_backward(dy: Any, cache: DepthwiseConvCache) -> tuple[Any, dict[str, Any]]:
    xp = array_namespace(dy)
    x_padded, w, left, has_bias = cache
    t, k = dy.shape[1], w.shape[1]
    dw_taps = []
    dx_padded = xp.zeros_like(x_padded)
    for tap in range(k):
        dw_taps.append(xp.sum(dy * x_padded[:, tap:tap + t, :], axis=(0, 1)))  # (C,)
        # dy[:, t] * w[:, tap] lands on padded position t + tap.
        dx_padded = dx_padded + pad_sequence(dy * w[:, tap], tap, k - 1 - tap)  # (B, T + K - 1, C)
    grads = {"w": xp.stack(dw_taps, axis=1)}  # (C, K)
    if has_bias:
        grads["bias"] = xp.sum(dy, axis=(0, 1))
    return dx_padded[:, left:left + t, :], grads
