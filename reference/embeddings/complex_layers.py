"""Complex-valued layers the complex-order paper pairs with its embedding (Wang et al., ICLR 2020, arXiv:1912.12333v2).

Every gradient here is in the oracle's convention (DESIGN.md): for a real loss
L of a complex array z, ``g_z = dL/dRe z + i dL/dIm z`` (PyTorch's ``.grad``).
Two rules generate every backward below:

* holomorphic map y = h(z) (linear maps, products):   g_z = conj(h'(z)) g_y
  so for y = z W + b:   g_z = g_y conj(W)^T,   g_W = conj(z)^T g_y,   g_b = sum g_y;
* split map y = a(Re z) + i b(Im z) (layer norm, ReLU applied to the parts):
  g_z = a'(Re z)^T Re g_y + i b'(Im z)^T Im g_y.

Axes: B batch, H heads, T query positions, S key positions, D width, Dh = D / H.

Complex attention (two ways to make a score real; equation labels A1/A2 are ours):

    S = Q K^T                  (bilinear, no conjugate)     "modulus":   A = |S| / sqrt(Dh)   [authors' code]
    S = Q K^H = Q conj(K)^T    (Hermitian product)          "hermitian": A = Re(S) / sqrt(Dh)
    P = softmax_rows(where(mask, A, MASKED_SCORE));   O = P V   (P real, V complex)

Backward (g_A after the softmax backward, zeroed where masked, divided by sqrt(Dh)):

    modulus:    g_S = g_A S / |S|;   g_Q = g_S conj(K);    g_K = g_S^T conj(Q)
    hermitian:  g_S = g_A (real);    g_Q = g_S K;          g_K = g_S^H Q
    and from O = P V:  g_P = Re(g_O V^H),  g_V = P^T g_O.

What we confirmed in the authors' code (github.com/iclr-complex-order/complex-order,
mirrored as FreedomIntelligence/complex-order): ``attention_complex.py`` forms the
real and imaginary parts of the bilinear product Q K^T and takes its modulus,
scaled by 1/sqrt(d_k), before the softmax; the probabilities multiply the real
and imaginary parts of V separately; layer norm (one module, shared gamma and
beta) and the ReLU feed-forward are applied to real and imaginary parts
separately.

Deviations:
    - The authors' linear maps are real: one ``nn.Linear`` (weight A, bias b)
      applied to both parts, i.e. W = A + 0i with bias b + ib. We implement the
      general complex map W = A + iB with a complex bias (the spec's form); the
      authors' map is the special case B = 0, Im b = Re b.
    - No dropout (it would be an explicit mask per part).
    - |S| is not differentiable where S = 0; the registered examples keep
      every |S| away from zero (checked).
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

from ..backend import MASKED_SCORE, array_namespace
from ..nn.attention import ATTENTION_PARAMS, merge_heads, split_heads
from ..nn.gelu import ActivationCache, activation_backward, activation_forward
from ..nn.layer_norm import LayerNormCache, layer_norm_backward, layer_norm_forward
from ..nn.softmax import SoftmaxCache, softmax_backward, softmax_forward
from ..validate import require_bool, require_float, require_shape

SCORES = ("modulus", "hermitian")


def parts_to_complex(re: Any, im: Any) -> Any:
    """re + i im for real arrays of one shape."""
    return re + 1j * im


# ----------------------------------------------------------------------------- complex linear map
class ComplexLinearCache(NamedTuple):
    z: Any  # (..., I) complex
    w: Any  # (I, O) complex
    has_bias: bool


def complex_linear_forward(z: Any, w: Any, b: Any | None = None) -> tuple[Any, ComplexLinearCache]:
    """y = z W + b with W = A + iB, i.e. (A z_R - B z_I) + i (A z_I + B z_R) in row form."""
    xp = array_namespace(z, w)
    require_float("z", z, allow_complex=True)
    require_float("w", w, allow_complex=True)
    if w.ndim != 2:
        raise ValueError(f"w must have shape (d_in, d_out), got {tuple(w.shape)}")
    require_shape("z", z, ["...", "d_in"], [None, w.shape[0]])
    y = xp.matmul(z, w)  # (..., O)
    if b is not None:
        require_shape("b", b, ["d_out"], [w.shape[1]])
        y = y + b
    return y, ComplexLinearCache(z, w, b is not None)


def complex_linear_backward(dy: Any, cache: ComplexLinearCache) -> tuple[Any, dict[str, Any]]:
    """g_z = g_y conj(W)^T, g_W = conj(z)^T g_y, g_b = sum g_y."""
    xp = array_namespace(dy)
    z, w, has_bias = cache
    dz = xp.matmul(dy, xp.conj(xp.matrix_transpose(w)))  # (..., I)
    z2 = xp.reshape(z, (-1, w.shape[0]))  # (N, I)
    dy2 = xp.reshape(dy, (-1, w.shape[1]))  # (N, O)
    grads = {"w": xp.matmul(xp.conj(xp.matrix_transpose(z2)), dy2)}  # (I, O)
    if has_bias:
        grads["b"] = xp.sum(dy2, axis=0)  # (O,)
    return dz, grads


# ----------------------------------------------------------------------------- split (part-wise) maps
class SplitLayerNormCache(NamedTuple):
    re: LayerNormCache  # caches of the real and imaginary parts' layer norms
    im: LayerNormCache


def split_layer_norm_forward(z: Any, gamma: Any, beta: Any, *, eps: float = 1e-5) -> tuple[Any, SplitLayerNormCache]:
    """LN(Re z) + i LN(Im z), one gamma and beta shared by both parts (authors' code)."""
    xp = array_namespace(z)
    y_re, c_re = layer_norm_forward(xp.real(z), gamma, beta, eps=eps)  # (..., D)
    y_im, c_im = layer_norm_forward(xp.imag(z), gamma, beta, eps=eps)  # (..., D)
    return parts_to_complex(y_re, y_im), SplitLayerNormCache(c_re, c_im)


def split_layer_norm_backward(dy: Any, cache: SplitLayerNormCache) -> tuple[Any, dict[str, Any]]:
    """Each part's layer-norm backward; the shared gamma and beta sum both parts' gradients."""
    xp = array_namespace(dy)
    dre, g_re = layer_norm_backward(xp.real(dy), cache.re)
    dim, g_im = layer_norm_backward(xp.imag(dy), cache.im)
    return parts_to_complex(dre, dim), {"gamma": g_re["gamma"] + g_im["gamma"], "beta": g_re["beta"] + g_im["beta"]}


def split_activation_forward(z: Any, kind: str = "relu") -> tuple[Any, tuple[ActivationCache, ActivationCache]]:
    """act(Re z) + i act(Im z) ("CReLU" for kind="relu", the authors' choice)."""
    xp = array_namespace(z)
    y_re, c_re = activation_forward(xp.real(z), kind)
    y_im, c_im = activation_forward(xp.imag(z), kind)
    return parts_to_complex(y_re, y_im), (c_re, c_im)


def split_activation_backward(dy: Any, cache: tuple[ActivationCache, ActivationCache]) -> Any:
    xp = array_namespace(dy)
    return parts_to_complex(activation_backward(xp.real(dy), cache[0]), activation_backward(xp.imag(dy), cache[1]))


# ----------------------------------------------------------------------------- complex attention
class ComplexAttentionCache(NamedTuple):
    q_lin: ComplexLinearCache  # projections of x: (B, T, D) -> (B, T, D)
    k_lin: ComplexLinearCache
    v_lin: ComplexLinearCache
    o_lin: ComplexLinearCache
    q: Any  # (B, H, T, Dh) complex
    k: Any  # (B, H, S, Dh) complex
    v: Any  # (B, H, S, Dh) complex
    s: Any  # (B, H, T, S) complex products before they are made real
    softmax: SoftmaxCache  # p: (B, H, T, S) real
    mask: Any | None  # (B, 1, 1, S) bool, True = may attend
    score: str
    scale: float


def complex_attention_forward(x: Any, params: dict[str, Any], *, n_heads: int, key_valid: Any | None = None,
                              score: str = "modulus") -> tuple[Any, ComplexAttentionCache]:
    """Complex multi-head self-attention; x (B, T, D) complex, key_valid (B, T) bool or None."""
    xp = array_namespace(x)
    require_float("x", x, allow_complex=True)
    if score not in SCORES:
        raise ValueError(f"score must be one of {SCORES}, got {score!r}")
    require_shape("x", x, ["batch", "seq", "d_model"], [None, None, None])
    b, t, d = x.shape
    if d % n_heads:
        raise ValueError(f"d_model={d} must be divisible by n_heads={n_heads}")
    mask = None
    if key_valid is not None:
        require_bool("key_valid", key_valid)
        require_shape("key_valid", key_valid, ["batch", "seq"], [b, t])
        mask = key_valid[:, None, None, :]  # (B, 1, 1, S)
    qx, q_lin = complex_linear_forward(x, params["w_q"], params["b_q"])  # (B, T, D)
    kx, k_lin = complex_linear_forward(x, params["w_k"], params["b_k"])  # (B, S, D)
    vx, v_lin = complex_linear_forward(x, params["w_v"], params["b_v"])  # (B, S, D)
    q, k, v = split_heads(qx, n_heads), split_heads(kx, n_heads), split_heads(vx, n_heads)  # (B, H, T, Dh)
    scale = 1.0 / math.sqrt(d // n_heads)
    kt = xp.matrix_transpose(k)  # (B, H, Dh, S)
    if score == "modulus":
        s = xp.matmul(q, kt)  # (B, H, T, S) bilinear Q K^T                     Eq. (A1)
        a = xp.abs(s) * scale
    else:
        s = xp.matmul(q, xp.conj(kt))  # (B, H, T, S) Hermitian Q K^H          Eq. (A2)
        a = xp.real(s) * scale
    if mask is not None:
        a = xp.where(mask, a, xp.asarray(MASKED_SCORE, dtype=a.dtype))
    p, sm = softmax_forward(a)  # (B, H, T, S)
    o = xp.matmul(xp.astype(p, x.dtype), v)  # (B, H, T, Dh)
    y, o_lin = complex_linear_forward(merge_heads(o), params["w_o"], params["b_o"])  # (B, T, D)
    return y, ComplexAttentionCache(q_lin, k_lin, v_lin, o_lin, q, k, v, s, sm, mask, score, scale)


def complex_attention_backward(dy: Any, cache: ComplexAttentionCache) -> tuple[Any, dict[str, Any]]:
    """Returns g_x (B, T, D) and gradients of w_q, b_q, ..., w_o, b_o (all complex)."""
    xp = array_namespace(dy)
    c = cache
    n_heads = c.q.shape[1]
    do_merged, g_o = complex_linear_backward(dy, c.o_lin)  # (B, T, D)
    do = split_heads(do_merged, n_heads)  # (B, H, T, Dh)
    p = c.softmax.p  # (B, H, T, S)
    # O = P V, P real:  g_P = Re(g_O V^H),  g_V = P^T g_O
    dp = xp.real(xp.matmul(do, xp.conj(xp.matrix_transpose(c.v))))  # (B, H, T, S)
    dv = xp.matmul(xp.astype(xp.matrix_transpose(p), dy.dtype), do)  # (B, H, S, Dh)
    da = softmax_backward(dp, c.softmax)  # (B, H, T, S)
    if c.mask is not None:
        da = xp.where(c.mask, da, xp.zeros_like(da))  # a masked score is a constant
    da = da * c.scale
    if c.score == "modulus":
        ds = xp.astype(da / xp.abs(c.s), c.s.dtype) * c.s  # g_S = g_A S / |S|
        dq = xp.matmul(ds, xp.conj(c.k))  # (B, H, T, Dh)  g_S conj(K)
        dk = xp.matmul(xp.matrix_transpose(ds), xp.conj(c.q))  # (B, H, S, Dh)  g_S^T conj(Q)
    else:
        ds = xp.astype(da, c.s.dtype)  # g_S = g_A, real
        dq = xp.matmul(ds, c.k)  # (B, H, T, Dh)  g_S K
        dk = xp.matmul(xp.conj(xp.matrix_transpose(ds)), c.q)  # (B, H, S, Dh)  g_S^H Q
    grads = {"w_o": g_o["w"], "b_o": g_o["b"]}
    dx = None
    for name, d_heads, lin in (("q", dq, c.q_lin), ("k", dk, c.k_lin), ("v", dv, c.v_lin)):
        d_in, g = complex_linear_backward(merge_heads(d_heads), lin)  # (B, T, D)
        grads[f"w_{name}"], grads[f"b_{name}"] = g["w"], g["b"]
        dx = d_in if dx is None else dx + d_in
    return dx, {k: grads[k] for k in ATTENTION_PARAMS}
