"""The attention-reconstruction loss of the Compressive Transformer (Algorithm 2), with its stop-gradients.

Rae et al., ICLR 2020, arXiv:1911.05507v1, §3.2 and Algorithm 2 (spec architecture.md §1.6).

Axes: B batch, T = n_s queries (the current segment), N = n_s old memories, C = N / c
compressed rows, H heads, Dh head width, D = H Dh.

For one layer, with h its input for this segment and M the memories it evicts:

    Q = sg(h) sg(W_Q) + sg(b_Q)                                   (B, H, T, Dh)
    A(h, X) = concat_heads softmax(Q K_X^T / sqrt(Dh)) V_X,  K_X = X sg(W_K) + sg(b_K),  V_X = X sg(W_V) + sg(b_V)
    L_attn = || A(h, sg(M)) - A(h, f_c(sg(M))) ||^2                 (sum of squares; "mean" divides by B T D)

sg is stop-gradient: the target A(h, M), the queries, the old memories and the attention
weights are constants. Only the compression parameters theta_c receive a gradient.

Backward (per head; R = O - O_target):

    dO = 2 R dL (/ (B T D) for "mean");  dV_c = P^T dO;  dP = dO V_c^T
    dS = P (dP - rowsum(dP P));  dK_c = dS^T Q / sqrt(Dh)
    dC = dK_c W_K^T + dV_c W_V^T   (heads merged);   dtheta_c = f_c'(dC)
    dQ, dW_Q, dW_K, dW_V, dh and dM are discarded (stop-gradient): they are exact zeros.

Paper symbol → name: h → ``h``, old_mem → ``old_mem``, Q/K/V → ``w_q``/``w_k``/``w_v``.
**Deviations** (spec §1.6, [verify] item 1):
* The paper writes ||·||_2; the unsquared norm has no gradient at 0, so the squared norm is used
  (``reduction="sum"``; ``"mean"`` is the MSE of the public code).
* The 1/sqrt(Dh) scale of the main attention is used (``scale=None``); pass ``scale=1.0`` for the
  paper's written sigma((hQ)(mK))(mV). No output projection W_O, no positional terms, no mask, no dropout.
* The layer's projection biases are used with the weights (they are part of its content attention).
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

from ..backend import array_namespace
from ..nn.attention import SDPACache, merge_heads, sdpa_backward, sdpa_forward, split_heads
from ..nn.linear import LinearCache, linear_backward, linear_forward
from .compressive_functions import CompressionCache, compress_backward, compress_forward

REDUCTIONS = ("sum", "mean")
#: The stop-gradient attention parameters the loss reads.
RECON_ATTENTION_PARAMS = ("w_q", "b_q", "w_k", "b_k", "w_v", "b_v")


class ReconstructionCache(NamedTuple):
    compression: CompressionCache
    k_proj: LinearCache  # x: (B, C, D) compressed rows
    v_proj: LinearCache
    attention: SDPACache  # p: (B, H, T, C)
    residual: Any  # (B, H, T, Dh) O - O_target
    n_heads: int
    reduction: str


def attention_reconstruction_forward(h: Any, old_mem: Any, attn: dict[str, Any], compression: dict[str, Any], *,
                                     n_heads: int, kind: str, rate: int, kernel: int | None = None,
                                     dilation: int = 2, keep: Any | None = None, scale: float | None = None,
                                     reduction: str = "sum") -> tuple[Any, ReconstructionCache]:
    """L_attn for one layer. h (B, T, D), old_mem (B, N, D); attn: w_q … b_v; compression: w_c, b_c or {}."""
    xp = array_namespace(h, old_mem)
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
    q, _ = linear_forward(h, attn["w_q"], attn["b_q"])  # (B, T, D)
    q = split_heads(q, n_heads)  # (B, H, T, Dh)
    k_m, _ = linear_forward(old_mem, attn["w_k"], attn["b_k"])  # (B, N, D)
    v_m, _ = linear_forward(old_mem, attn["w_v"], attn["b_v"])  # (B, N, D)
    target, _ = sdpa_forward(q, split_heads(k_m, n_heads), split_heads(v_m, n_heads), scale=scale)  # (B, H, T, Dh)
    c, c_cache = compress_forward(old_mem, compression, kind=kind, rate=rate, kernel=kernel, dilation=dilation,
                                  keep=keep)  # (B, C, D)
    k_c, k_cache = linear_forward(c, attn["w_k"], attn["b_k"])  # (B, C, D)
    v_c, v_cache = linear_forward(c, attn["w_v"], attn["b_v"])  # (B, C, D)
    out, a_cache = sdpa_forward(q, split_heads(k_c, n_heads), split_heads(v_c, n_heads), scale=scale)  # (B, H, T, Dh)
    residual = out - target  # (B, H, T, Dh)
    loss = xp.sum(residual * residual)  # ()                                      Eq. (6)
    if reduction == "mean":
        loss = loss / math.prod(residual.shape)  # (array.size is a method on torch tensors)
    return loss, ReconstructionCache(c_cache, k_cache, v_cache, a_cache, residual, n_heads, reduction)


def attention_reconstruction_backward(dloss: Any, cache: ReconstructionCache) -> dict[str, Any]:
    """Gradients of theta_c only (w_c, b_c, or none for pooling and most-used)."""
    residual = cache.residual
    dout = 2.0 * dloss * residual  # (B, H, T, Dh)
    if cache.reduction == "mean":
        dout = dout / math.prod(residual.shape)
    _, dk, dv, _ = sdpa_backward(dout, cache.attention)  # dQ discarded: stop-gradient
    dc_k, _ = linear_backward(merge_heads(dk), cache.k_proj)  # (B, C, D); dW_K discarded
    dc_v, _ = linear_backward(merge_heads(dv), cache.v_proj)  # (B, C, D); dW_V discarded
    _, grads = compress_backward(dc_k + dc_v, cache.compression)  # d old_mem discarded
    return grads
