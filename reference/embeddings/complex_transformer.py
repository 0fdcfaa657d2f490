"""The complex-order embedding inside a complex-valued Transformer layer, with real logits and a real loss.

Wang et al., "Encoding word order in complex embeddings", ICLR 2020, arXiv:1912.12333v2
(the complex-valued Transformer of its experiments). The model, per token (equation
labels are this module's and ``complex_layers``'):

    z0 = r exp(i (w pos + theta))                        (B, T, D) complex     Eq. (1)
    a  = ComplexAttention(z0)                             see complex_layers    Eq. (A1)/(A2)
    z1 = LN(Re(z0 + a)) + i LN(Im(z0 + a))                post-LN, shared gamma1, beta1
    h  = act(Re(z1 W1 + b1)) + i act(Im(z1 W1 + b1))      W1 (D, F) complex, act = ReLU (authors)
    z2 = LN(Re(z1 + h W2 + b2)) + i LN(Im(...))           W2 (F, D) complex, gamma2, beta2
    logits = [Re z2, Im z2] W_out + b_out                 W_out (2D, C) real   Eq. (5)
    L = mean over real tokens of -log softmax(logits)[target]

Backward: the real head gives g_{Re z2} and g_{Im z2}, i.e. g_{z2} = g_{Re} + i g_{Im}
in the oracle convention; every complex map then follows the two rules of
``complex_layers`` (holomorphic: multiply by the conjugate derivative; split:
each part's own backward); the residual adds gradients; the embedding's
backward (``complex_order``) turns g_{z0} into gradients of r, w and theta.

Axes: B batch, T sequence, D width, H heads, F feed-forward width, V vocabulary,
C output classes.

The authors' classifier concatenates real and imaginary parts of the last
position and applies one real linear layer; we do the same per token (an LM- or
tagging-style head), so every position gets a target and padding positions are
ignored (``targets == IGNORE_INDEX``) and masked as keys.

Deviations: those of ``complex_layers`` (complex rather than real weights, no
dropout) and ``complex_order`` (positions default to 0 ... T-1); post-LN
residuals as in the authors' language-modelling code (``complex_mem_transformer.py``),
not the text-classification ``encoder_complex.py``, whose attention sublayer
has no residual path.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np

from ..backend import array_namespace
from ..nn.layer_norm import init_layer_norm
from ..nn.linear import LinearCache, init_linear, linear_backward, linear_forward
from ..nn.losses import CrossEntropyCache, cross_entropy_backward, cross_entropy_forward
from .complex_layers import (
    ATTENTION_PARAMS,
    ComplexAttentionCache,
    ComplexLinearCache,
    SplitLayerNormCache,
    complex_attention_backward,
    complex_attention_forward,
    complex_linear_backward,
    complex_linear_forward,
    parts_to_complex,
    split_activation_backward,
    split_activation_forward,
    split_layer_norm_backward,
    split_layer_norm_forward,
)
from .complex_order import (
    ComplexOrderCache,
    complex_dtype,
    complex_order_backward,
    complex_order_forward,
    sample_complex_order,
)

EMBEDDING_PARAMS = ("amplitude", "frequency", "initial_phase")
LAYER_PARAMS = ATTENTION_PARAMS + ("ln1_gamma", "ln1_beta", "w_1", "b_1", "w_2", "b_2", "ln2_gamma", "ln2_beta")
HEAD_PARAMS = ("w_out", "b_out")


class ComplexLayerCache(NamedTuple):
    attention: ComplexAttentionCache
    ln1: SplitLayerNormCache
    ffn_in: ComplexLinearCache  # z1 (B, T, D) -> (B, T, F)
    act: tuple  # activation caches of the real and imaginary parts; x: (B, T, F)
    ffn_out: ComplexLinearCache  # h (B, T, F) -> (B, T, D)
    ln2: SplitLayerNormCache


class ComplexTransformerCache(NamedTuple):
    embedding: ComplexOrderCache
    layer: ComplexLayerCache
    head: LinearCache  # [Re z2, Im z2] (B, T, 2D) -> logits (B, T, C)
    loss: CrossEntropyCache
    d_model: int


def complex_encoder_layer_forward(z: Any, params: dict[str, Any], *, n_heads: int, key_valid: Any | None = None,
                                  score: str = "modulus", activation: str = "relu") -> tuple[Any, ComplexLayerCache]:
    """One post-LN complex encoder layer; z (B, T, D) complex -> (B, T, D) complex."""
    a, att = complex_attention_forward(z, params, n_heads=n_heads, key_valid=key_valid, score=score)  # (B, T, D)
    z1, ln1 = split_layer_norm_forward(z + a, params["ln1_gamma"], params["ln1_beta"])  # (B, T, D)
    h_pre, ffn_in = complex_linear_forward(z1, params["w_1"], params["b_1"])  # (B, T, F)
    h, act = split_activation_forward(h_pre, activation)  # (B, T, F)
    y, ffn_out = complex_linear_forward(h, params["w_2"], params["b_2"])  # (B, T, D)
    z2, ln2 = split_layer_norm_forward(z1 + y, params["ln2_gamma"], params["ln2_beta"])  # (B, T, D)
    return z2, ComplexLayerCache(att, ln1, ffn_in, act, ffn_out, ln2)


def complex_encoder_layer_backward(dz2: Any, cache: ComplexLayerCache) -> tuple[Any, dict[str, Any]]:
    """g_z (B, T, D) and every layer parameter's gradient (complex weights, real LN parameters)."""
    grads: dict[str, Any] = {}
    dsum2, g = split_layer_norm_backward(dz2, cache.ln2)  # through z2 = LN(z1 + y)
    grads["ln2_gamma"], grads["ln2_beta"] = g["gamma"], g["beta"]
    dh, g = complex_linear_backward(dsum2, cache.ffn_out)  # (B, T, F)
    grads["w_2"], grads["b_2"] = g["w"], g["b"]
    dh_pre = split_activation_backward(dh, cache.act)  # (B, T, F)
    dz1_ffn, g = complex_linear_backward(dh_pre, cache.ffn_in)  # (B, T, D)
    grads["w_1"], grads["b_1"] = g["w"], g["b"]
    dz1 = dsum2 + dz1_ffn  # residual z1 + y
    dsum1, g = split_layer_norm_backward(dz1, cache.ln1)  # through z1 = LN(z + a)
    grads["ln1_gamma"], grads["ln1_beta"] = g["gamma"], g["beta"]
    dz_att, g_att = complex_attention_backward(dsum1, cache.attention)  # (B, T, D)
    grads.update(g_att)
    return dsum1 + dz_att, {k: grads[k] for k in LAYER_PARAMS}  # residual z + a


def complex_order_transformer_forward(ids: Any, targets: Any, params: dict[str, Any], *, n_heads: int,
                                      key_valid: Any | None = None, positions: Any | None = None,
                                      score: str = "modulus",
                                      activation: str = "relu") -> tuple[tuple[Any, Any], ComplexTransformerCache]:
    """Returns (logits (B, T, C), loss ()) and the cache. ``params`` holds the names of
    EMBEDDING_PARAMS (frequency/initial_phase optional), LAYER_PARAMS and HEAD_PARAMS."""
    xp = array_namespace(params["amplitude"])
    z0, emb = complex_order_forward(ids, params["amplitude"], params.get("frequency"), params.get("initial_phase"),
                                    positions=positions)  # (B, T, D)             Eq. (1)
    z2, layer = complex_encoder_layer_forward(z0, params, n_heads=n_heads, key_valid=key_valid, score=score,
                                              activation=activation)  # (B, T, D)
    features = xp.concat([xp.real(z2), xp.imag(z2)], axis=-1)  # (B, T, 2D)
    logits, head = linear_forward(features, params["w_out"], params["b_out"])  # (B, T, C)   Eq. (5)
    loss, ce = cross_entropy_forward(logits, targets)  # ()
    return (logits, loss), ComplexTransformerCache(emb, layer, head, ce, z2.shape[-1])


def complex_order_transformer_backward(dlogits: Any | None, dloss: Any | None,
                                       cache: ComplexTransformerCache) -> dict[str, Any]:
    """Gradients of every parameter from cotangents of the logits and/or the loss."""
    dl = None if dlogits is None else dlogits
    if dloss is not None:
        d_ce = cross_entropy_backward(dloss, cache.loss)  # (B, T, C)
        dl = d_ce if dl is None else dl + d_ce
    dfeat, g_head = linear_backward(dl, cache.head)  # (B, T, 2D)
    d = cache.d_model
    dz2 = parts_to_complex(dfeat[..., :d], dfeat[..., d:])  # g = dL/dRe z2 + i dL/dIm z2
    dz0, grads = complex_encoder_layer_backward(dz2, cache.layer)  # (B, T, D)
    grads.update(complex_order_backward(dz0, cache.embedding))
    grads["w_out"], grads["b_out"] = g_head["w"], g_head["b"]
    return grads


def sample_complex_weight(rng: np.random.Generator, shape: tuple[int, ...], *, xp, dtype, scale: float) -> Any:
    """(A + iB) with A, B ~ N(0, scale^2 / 2), so that E|W|^2 = scale^2; on the complex dtype matching ``dtype``."""
    host = (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)) * (scale / np.sqrt(2.0))
    return xp.asarray(host, dtype=complex_dtype(xp, dtype))


def init_complex_transformer(rng, vocab: int, d_model: int, d_ff: int, n_classes: int, *, xp, dtype) -> dict[str, Any]:
    params = sample_complex_order(rng, vocab, d_model, xp=xp, dtype=dtype)
    for name, (d_in, d_out) in (("q", (d_model, d_model)), ("k", (d_model, d_model)), ("v", (d_model, d_model)),
                                ("o", (d_model, d_model)), ("1", (d_model, d_ff)), ("2", (d_ff, d_model))):
        params[f"w_{name}"] = sample_complex_weight(rng, (d_in, d_out), xp=xp, dtype=dtype, scale=d_in**-0.5)
        params[f"b_{name}"] = sample_complex_weight(rng, (d_out,), xp=xp, dtype=dtype, scale=0.1)
    for ln in ("ln1", "ln2"):
        p = init_layer_norm(rng, d_model, xp=xp, dtype=dtype)
        params[f"{ln}_gamma"], params[f"{ln}_beta"] = p["gamma"], p["beta"]
    head = init_linear(rng, 2 * d_model, n_classes, xp=xp, dtype=dtype)
    params["w_out"], params["b_out"] = head["w"], head["b"]
    return params
