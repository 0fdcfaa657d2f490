"""Registered cases of Lite Transformer's LSRA layer (encoder and decoder, LightConv and DynamicConv).

Defaults are small and pairwise distinct where they are axes: B=2, T=9, D=22 (Da=12 attention channels
in Ha=3 heads of Dh=4, Dc=10 convolution channels in Hc=5 kernel heads), K=7 (encoder) or 15 > T
(decoder: taps beyond the sequence read only padding). The FFN is flattened (F = D) unless ``d_ff`` is set.
The last batch row ends with ``n_padded`` padded positions (none: no padding mask at all).

Registered names:

* ``attention.lsra``: encoder, LightConv + GLU, padding, every dropout site (the paper's layer);
* ``attention.lsra.dynamic``: encoder, DynamicConv + GLU (the WMT configuration);
* ``attention.lsra.causal``: decoder self-attention block, LightConv without GLU (the IWSLT configuration);
* ``attention.lsra.causal_dynamic``: decoder block with DynamicConv + GLU;
* ``attention.lsra.interleaved``: the interleaved channel-to-head map of fairseq's ``LightweightConv1d``;
* ``attention.lsra.branch_input``: Lite Transformer's padding zeroing before the input linear (spec D1).

ReLU margin: the FFN's first bias is re-centred per hidden unit (see :func:`centre_relu_bias`) so that no
pre-activation lies within ``RELU_MARGIN`` of the kink at any configuration; finite differences never
straddle it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ...backend import from_numpy, to_numpy
from ...config import Config, option
from ...random import generator, normal
from ...registry import Case, Mechanism, register
from ..lsra import CONV_TYPES, PAD_MASK_SITES, LSRAConfig, init_lsra, lsra_backward, lsra_forward, sample_lsra_dropout
from ..lsra_conv import HEAD_LAYOUTS

PAPER = "Lite Transformer with Long-Short Range Attention (Wu, Liu, Lin, Lin, Han, ICLR 2020)"
RELU_MARGIN = 0.05


@dataclass(frozen=True)
class LSRACaseConfig(Config):
    title = "one LSRA layer on (batch, seq_len, d_model) inputs"
    batch: int = option(2, "batch size B", minimum=1)
    seq_len: int = option(9, "sequence length T", minimum=1)
    d_model: int = option(22, "model width D = d_attn + d_conv", minimum=2)
    d_attn: int = option(12, "attention-branch channels Da (the first Da channels)", minimum=1)
    n_attn_heads: int = option(3, "attention heads Ha (divides d_attn)", minimum=1)
    n_conv_heads: int = option(5, "kernel heads Hc (divides d_model - d_attn)", minimum=1)
    kernel_size: int = option(7, "convolution kernel width K", minimum=1)
    conv: str = option("lightweight", "local branch: LightConv or DynamicConv", choices=CONV_TYPES)
    glu: bool = option(True, "GLU after the branch's input linear")
    causal: bool = option(False, "decoder block: causal mask and left padding K - 1")
    head_layout: str = option("contiguous", "channel-to-kernel-head map", choices=HEAD_LAYOUTS)
    pad_mask_site: str = option("pre_conv", "where padded positions are zeroed", choices=PAD_MASK_SITES)
    n_padded: int = option(2, "padded positions at the end of the last batch row (0: no padding mask)", minimum=0)
    dropout_rate: float = option(0.1, "rate of every explicit dropout mask (0: no masks)", minimum=0.0, maximum=0.9)
    d_ff: int = option(0, "FFN hidden width F (0: flattened, F = d_model)", minimum=0)

    def validate(self) -> None:
        if self.d_attn >= self.d_model:
            raise ValueError(f"LSRACaseConfig.d_attn={self.d_attn} must be < d_model={self.d_model} "
                             "(both branches need channels)")
        if self.d_attn % self.n_attn_heads:
            raise ValueError(f"LSRACaseConfig.d_attn={self.d_attn} must be divisible by n_attn_heads={self.n_attn_heads}")
        if (self.d_model - self.d_attn) % self.n_conv_heads:
            raise ValueError(f"LSRACaseConfig: d_model - d_attn = {self.d_model - self.d_attn} must be divisible by "
                             f"n_conv_heads={self.n_conv_heads}")
        if self.n_padded > self.seq_len:
            raise ValueError(f"LSRACaseConfig.n_padded={self.n_padded} must be <= seq_len={self.seq_len}")

    def layer(self) -> LSRAConfig:
        """The layer's hyperparameters (the record :func:`~reference.attention.lsra.lsra_forward` takes)."""
        return LSRAConfig(self.d_attn, self.n_attn_heads, self.n_conv_heads, self.kernel_size, conv=self.conv,
                          glu=self.glu, causal=self.causal, head_layout=self.head_layout,
                          pad_mask_site=self.pad_mask_site)


VARIANTS = {
    "attention.lsra": {},
    "attention.lsra.dynamic": {"conv": "dynamic"},
    "attention.lsra.causal": {"causal": True, "glu": False, "kernel_size": 15, "n_padded": 0},
    "attention.lsra.causal_dynamic": {"causal": True, "conv": "dynamic", "kernel_size": 15, "n_padded": 0},
    "attention.lsra.interleaved": {"head_layout": "interleaved"},
    "attention.lsra.branch_input": {"conv": "dynamic", "pad_mask_site": "branch_input"},
}

EDGE_CONFIGS = {
    "batch_1": {"batch": 1},
    "length_1": {"seq_len": 1, "n_padded": 0},
    "fully_padded_row": {"n_padded": 9},
    "kernel_1": {"kernel_size": 1},
    "kernel_longer_than_sequence": {"seq_len": 4, "kernel_size": 11, "n_padded": 1},
    "even_kernel": {"kernel_size": 4},
    "one_head_each": {"n_attn_heads": 1, "n_conv_heads": 1},
    "no_dropout": {"dropout_rate": 0.0},
    "wide_ffn": {"d_ff": 17},
    "padded": {"n_padded": 3},
    "odd_sizes": {"batch": 3, "seq_len": 13, "d_model": 25, "d_attn": 10, "n_attn_heads": 5, "n_conv_heads": 3,
                  "kernel_size": 5, "n_padded": 4},
}

#: Each variant's edge configurations: all of them for the main variant, the ones that reach its own code paths
#: for the others (they share the rest).
VARIANT_EDGES = {
    "attention.lsra": tuple(label for label in EDGE_CONFIGS if label != "padded"),
    "attention.lsra.dynamic": ("batch_1", "length_1", "fully_padded_row", "kernel_longer_than_sequence", "no_dropout",
                               "odd_sizes"),
    "attention.lsra.causal": ("length_1", "padded", "kernel_1", "no_dropout", "odd_sizes"),
    "attention.lsra.causal_dynamic": ("length_1", "padded", "odd_sizes"),
    "attention.lsra.interleaved": ("odd_sizes",),
    "attention.lsra.branch_input": ("fully_padded_row", "odd_sizes"),
}

#: WMT embed496-like layer at a realistic length (spec §1.2: d_a = d_c = D/2, 4 + 4 heads, K = 7 in layer 2).
REALISTIC = {"batch": 8, "seq_len": 128, "d_model": 496, "d_attn": 248, "n_attn_heads": 4, "n_conv_heads": 4,
             "kernel_size": 7, "n_padded": 16}


def centre_relu_bias(pre: np.ndarray, margin: float) -> np.ndarray:
    """Per column of ``pre`` (R, F) (pre-activations without bias), a bias that puts 0 in the middle of a gap
    of width >= 2 margin between the column's values, the gap nearest the median; all active if none."""
    bias = np.empty(pre.shape[1])
    for f in range(pre.shape[1]):
        s = np.sort(pre[:, f])
        gaps = np.flatnonzero(np.diff(s) >= 2 * margin)
        if gaps.size:
            best = gaps[np.argmin(np.abs(gaps + 0.5 - (s.size - 1) / 2))]
            bias[f] = -(s[best] + s[best + 1]) / 2
        else:
            bias[f] = margin - s[0]
    return bias


def _valid(config: LSRACaseConfig, xp) -> Any | None:
    if config.n_padded == 0:
        return None
    rows = [[True] * config.seq_len] * (config.batch - 1)
    rows.append([True] * (config.seq_len - config.n_padded) + [False] * config.n_padded)
    return xp.asarray(rows)  # (B, T)


def build(seed: int, dtype: Any, xp, config: LSRACaseConfig) -> Case:
    rng = generator(seed)
    b, t, d, layer = config.batch, config.seq_len, config.d_model, config.layer()
    d_ff = config.d_ff or None
    x = normal(rng, (b, t, d), xp=xp, dtype=dtype)
    params = init_lsra(rng, d, layer, xp=xp, dtype=dtype, d_ff=d_ff)
    static: dict[str, Any] = {}
    if config.dropout_rate > 0:
        static["dropout"] = sample_lsra_dropout(rng, b, t, d, layer, config.dropout_rate, xp=xp, dtype=dtype,
                                                d_ff=d_ff)
    valid = _valid(config, xp)
    if valid is not None:
        static["valid"] = valid
    _, cache = lsra_forward(x, params, layer, valid=valid, dropout=static.get("dropout"))
    h1 = to_numpy(cache.ffn.inner.x).reshape(b * t, d)  # (B T, D) the FFN's input
    pre = h1 @ to_numpy(params["w_1"])  # (B T, F)
    params["b_1"] = from_numpy(centre_relu_bias(pre, RELU_MARGIN), xp, dtype)  # ReLU margin
    return Case(inputs={"x": x}, params=params, static=static)


def forward(case: Case):
    y, cache = lsra_forward(case.inputs["x"], case.params, case.config.layer(), valid=case.static.get("valid"),
                            dropout=case.static.get("dropout"))
    return {"y": y}, cache


def backward(cache, cot):
    dx, grads = lsra_backward(cot["y"], cache)
    return {"x": dx, **grads}


def intermediates(cache) -> dict[str, Any]:
    """In forward order: attention probabilities (B, Ha, T, T), the convolution's output (B, T, Dc), H1 (B, T, D)."""
    return {"attention_probs": cache.attention.attention.softmax.p, "conv_out": cache.linear_out.x,
            "h1": cache.ffn.inner.x}


for _name, _defaults in VARIANTS.items():
    register(Mechanism(_name, PAPER, "attention", build, forward, backward, config=LSRACaseConfig,
                       defaults=_defaults, edge_configs={k: EDGE_CONFIGS[k] for k in VARIANT_EDGES[_name]},
                       realistic=REALISTIC,
                       intermediates=intermediates))
