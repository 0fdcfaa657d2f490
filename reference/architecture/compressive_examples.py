"""Registered examples of the Compressive Transformer layer, one per compression function.

Sizes are small and pairwise distinct (B=2, T=6, Nm=7, Ncm=5, D=4, F=9, c=3, 2 heads).

The registered function of a case is the one the stop-gradients define (spec §1.8, §5 rule 5):
``y`` from the live inputs, and ``loss_attn`` from the case's *frozen* copies of h, old_mem and
w_q … b_v, so that finite differences see L_attn move with theta_c only. The tests separately
check that the live function differs (the stop-gradients matter) and that torch's ``detach``
gives the oracle's gradients.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..backend import from_numpy
from ..nn.attention import init_attention
from ..nn.feed_forward import init_feed_forward
from ..nn.layer_norm import init_layer_norm
from ..random import dropout_mask, generator, normal, uniform
from ..registry import Case, Mechanism, register
from .compressive import CompressiveConfig, CompressiveState, compressive_layer_backward, compressive_layer_forward
from .compressive_functions import COMPRESSION_PARAMS
from .compressive_loss import RECON_ATTENTION_PARAMS

B, T, N_MEM, N_CMEM, D, F, HEADS, RATE = 2, 6, 7, 5, 4, 9, 2, 3
PAPER = "Compressive Transformers for Long-Range Sequence Modelling (Rae et al., ICLR 2020)"

#: Registered variants: name suffix → (config, with score bias and dropout).
VARIANTS = {
    "": (CompressiveConfig(HEADS, "conv", RATE), True),
    ".conv": (CompressiveConfig(HEADS, "conv", RATE, reduction="mean", scale=1.0), False),
    ".mean": (CompressiveConfig(HEADS, "mean", RATE), False),
    ".max": (CompressiveConfig(HEADS, "max", RATE), False),
    ".dilated": (CompressiveConfig(HEADS, "dilated", RATE, kernel=3, dilation=2), False),
    ".most_used": (CompressiveConfig(HEADS, "most_used", RATE), False),
}


def init_compressive_layer(rng, d_model: int, d_ff: int, config: CompressiveConfig, *, xp, dtype) -> dict[str, Any]:
    """Attention, feed-forward, two layer norms, and theta_c (w_c (K, D, D), b_c (D,)) for the convs."""
    params = {**init_attention(rng, d_model, xp=xp, dtype=dtype), **init_feed_forward(rng, d_model, d_ff, xp=xp,
                                                                                      dtype=dtype)}
    for name in ("ln1", "ln2"):
        ln = init_layer_norm(rng, d_model, xp=xp, dtype=dtype)
        params[f"{name}_gamma"], params[f"{name}_beta"] = ln["gamma"], ln["beta"]
    if COMPRESSION_PARAMS[config.kind]:
        taps = config.rate if config.kind == "conv" else (config.kernel or config.rate)
        params["w_c"] = normal(rng, (taps, d_model, d_model), xp=xp, dtype=dtype, scale=(taps * d_model) ** -0.5)
        params["b_c"] = normal(rng, (d_model,), xp=xp, dtype=dtype, scale=0.1)
    return params


def sample_memory(rng, batch: int, n_mem: int, n_cmem: int, d_model: int, *, xp, dtype, gap: float = 0.0,
                  rate: int = RATE) -> CompressiveState:
    """A random state. gap > 0 redraws until, in every window of ``rate`` memory rows, the values of each
    feature differ pairwise by at least ``gap`` (max pooling then has no ties near the example)."""
    while True:
        mem = rng.standard_normal((batch, n_mem, d_model))
        n = (n_mem // rate) * rate
        win = mem[:, :n].reshape(batch, n // rate, rate, d_model)
        diffs = np.abs(win[:, :, :, None, :] - win[:, :, None, :, :]) + np.eye(rate)[None, None, :, :, None] * 1e9
        if gap <= 0.0 or diffs.min() >= gap:
            break
    cmem = normal(rng, (batch, n_cmem, d_model), xp=xp, dtype=dtype)
    usage = uniform(rng, (batch, n_mem), xp=xp, dtype=dtype)  # continuous: no ties in the most-used selection
    return CompressiveState(from_numpy(mem, xp, dtype), cmem, usage)


def _example(config: CompressiveConfig, noisy: bool):
    def example(seed: int, dtype: Any, xp) -> Case:
        rng = generator(seed)
        h = normal(rng, (B, T, D), xp=xp, dtype=dtype)
        state = sample_memory(rng, B, N_MEM, N_CMEM, D, xp=xp, dtype=dtype, gap=0.1 if config.kind == "max" else 0.0)
        params = init_compressive_layer(rng, D, F, config, xp=xp, dtype=dtype)
        inputs = {"h": h, "mem": state.mem, "cmem": state.cmem}
        static: dict[str, Any] = {"usage": state.usage}
        if noisy:
            # a per-head, per-key score bias (broadcast over queries: its gradient sums them)
            inputs["bias"] = normal(rng, (1, HEADS, 1, N_CMEM + N_MEM + T), xp=xp, dtype=dtype, scale=0.5)
            static["dropout"] = {"attn_probs": dropout_mask(rng, (B, HEADS, T, N_CMEM + N_MEM + T), 0.1, xp=xp,
                                                            dtype=dtype),
                                 "attn": dropout_mask(rng, (B, T, D), 0.1, xp=xp, dtype=dtype),
                                 "ffn_inner": dropout_mask(rng, (B, T, F), 0.1, xp=xp, dtype=dtype),
                                 "ffn": dropout_mask(rng, (B, T, D), 0.1, xp=xp, dtype=dtype)}
        old_mem = xp.concat([state.mem, h], axis=1)[:, :T, :]  # (B, T, D) the rows this segment evicts
        static["frozen"] = {"h": h, "old_mem": old_mem, **{k: params[k] for k in RECON_ATTENTION_PARAMS}}
        return Case(inputs=inputs, params=params, static=static)

    return example


def _forward(config: CompressiveConfig):
    def forward(case: Case):
        state = CompressiveState(case.inputs["mem"], case.inputs["cmem"], case.static["usage"])
        out, cache = compressive_layer_forward(case.inputs["h"], state, case.params, config,
                                               bias=case.inputs.get("bias"), dropout=case.static.get("dropout"),
                                               frozen=case.static["frozen"])
        return {"y": out.y, "loss_attn": out.loss_attn}, cache

    return forward


def _backward(cache, cot):
    dh, dmem, dcmem, grads = compressive_layer_backward(cot["y"], cot["loss_attn"], cache)
    return {"h": dh, "mem": dmem, "cmem": dcmem, **grads}


for _suffix, (_config, _noisy) in VARIANTS.items():
    register(Mechanism(f"architecture.compressive{_suffix}", PAPER, "architecture", _example(_config, _noisy),
                       _forward(_config), _backward))
