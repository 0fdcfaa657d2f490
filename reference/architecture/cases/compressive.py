"""Registered cases of the Compressive Transformer layer, one per compression function.

The registered function of a case is the one the stop-gradients define (spec §1.8, §5 rule 5):
``y`` from the live inputs, and ``loss_attn`` from the case's *frozen* copies of h, old_mem and
w_q … b_v, so that finite differences see L_attn move with theta_c only. The tests separately
check that the live function differs (the stop-gradients matter) and that torch's ``detach``
gives the oracle's gradients.

No margin is needed: the discrete choices (max pooling's argmax, most-used's ranking) act only on
the frozen old memories and the static usage, which finite differences never move.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ...config import Config, option
from ...random import dropout_mask, generator, normal
from ...registry import Case, Mechanism, register
from ..compressive import (
    EVICTIONS,
    USAGE_RANKINGS,
    CompressiveConfig,
    CompressiveState,
    compressive_layer_backward,
    compressive_layer_forward,
    evicted_rows,
    init_compressive_layer,
    sample_memory,
)
from ..compressive_functions import COMPRESSIONS
from ..compressive_loss import RECON_ATTENTION_PARAMS, REDUCTIONS

PAPER = "Compressive Transformers for Long-Range Sequence Modelling (Rae et al., ICLR 2020)"


@dataclass(frozen=True)
class CompressiveCaseConfig(Config):
    title = "one Compressive Transformer layer on one segment, with its memory state"
    batch: int = option(4, "batch size B", minimum=1)
    seq_len: int = option(6, "segment length T = n_s", minimum=1)
    n_mem: int = option(9, "memory slots Nm = n_m", minimum=0)
    n_cmem: int = option(7, "compressed memory slots Ncm = n_cm", minimum=0)
    d_model: int = option(10, "width D (divisible by n_heads)", minimum=1)
    d_ff: int = option(11, "feed-forward width F", minimum=1)
    n_heads: int = option(2, "attention heads H", minimum=1)
    kind: str = option("conv", "compression function f_c (§3.2)", choices=COMPRESSIONS)
    rate: int = option(3, "compression rate c (divides the evicted rows)", minimum=1)
    kernel: int = option(0, "dilated conv taps K (0: the rate)", minimum=0)
    dilation: int = option(2, "dilated conv dilation", minimum=1)
    reduction: str = option("sum", "L_attn: sum of squares, or mean (lucidrains' F.mse_loss)", choices=REDUCTIONS)
    recon_scale: str = option("head", "reconstruction score scale: 1/sqrt(Dh) ('head') or 1 ('one')",
                              choices=("head", "one"))
    eviction: str = option("fifo", "fifo: [m; h][:n_s] leave; algorithm1: m[:n_s] leave", choices=EVICTIONS)
    usage: str = option("mean", "most-used ranking: average or summed attention", choices=USAGE_RANKINGS)
    score_bias: bool = option(False, "an additive per-head, per-key score bias input (1, H, 1, S)")
    dropout: float = option(0.0, "dropout rate of the explicit masks (0: none)", minimum=0.0, maximum=0.5)

    def validate(self) -> None:
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model={self.d_model} must be divisible by n_heads={self.n_heads}")
        n_old = evicted_rows(self.seq_len, self.n_mem, self.layer())
        if n_old == 0 or n_old % self.rate:
            raise ValueError(f"the {n_old} evicted rows (seq_len={self.seq_len}, n_mem={self.n_mem}, "
                             f"eviction={self.eviction!r}) must be a positive multiple of rate={self.rate}")

    def layer(self) -> CompressiveConfig:
        """The mechanism's own configuration record."""
        return CompressiveConfig(self.n_heads, self.kind, self.rate, kernel=self.kernel or None,
                                 dilation=self.dilation, reduction=self.reduction,
                                 scale=1.0 if self.recon_scale == "one" else None, eviction=self.eviction,
                                 usage=self.usage)


def build(seed: int, dtype: Any, xp, config: CompressiveCaseConfig) -> Case:
    c = config
    layer = c.layer()
    rng = generator(seed)
    h = normal(rng, (c.batch, c.seq_len, c.d_model), xp=xp, dtype=dtype)
    state = sample_memory(rng, c.batch, c.n_mem, c.n_cmem, c.d_model, xp=xp, dtype=dtype)
    params = init_compressive_layer(rng, c.d_model, c.d_ff, layer, xp=xp, dtype=dtype)
    inputs = {"h": h, "mem": state.mem, "cmem": state.cmem}
    static: dict[str, Any] = {"usage": state.usage}
    n_keys = c.n_cmem + c.n_mem + c.seq_len
    if c.score_bias:  # a per-head, per-key score bias (broadcast over queries: its gradient sums them)
        inputs["bias"] = normal(rng, (1, c.n_heads, 1, n_keys), xp=xp, dtype=dtype, scale=0.5)
    if c.dropout > 0:
        static["dropout"] = {
            "attn_probs": dropout_mask(rng, (c.batch, c.n_heads, c.seq_len, n_keys), c.dropout, xp=xp, dtype=dtype),
            "attn": dropout_mask(rng, (c.batch, c.seq_len, c.d_model), c.dropout, xp=xp, dtype=dtype),
            "ffn_inner": dropout_mask(rng, (c.batch, c.seq_len, c.d_ff), c.dropout, xp=xp, dtype=dtype),
            "ffn": dropout_mask(rng, (c.batch, c.seq_len, c.d_model), c.dropout, xp=xp, dtype=dtype)}
    n_old = evicted_rows(c.seq_len, c.n_mem, layer)
    old_mem = xp.concat([state.mem, h], axis=1)[:, :n_old, :]  # (B, n_old, D) the rows this segment evicts
    static["frozen"] = {"h": h, "old_mem": old_mem, **{k: params[k] for k in RECON_ATTENTION_PARAMS}}
    return Case(inputs=inputs, params=params, static=static)


def forward(case: Case):
    state = CompressiveState(case.inputs["mem"], case.inputs["cmem"], case.static["usage"])
    out, cache = compressive_layer_forward(case.inputs["h"], state, case.params, case.config.layer(),
                                           bias=case.inputs.get("bias"), dropout=case.static.get("dropout"),
                                           frozen=case.static["frozen"])
    return {"y": out.y, "loss_attn": out.loss_attn}, cache


def backward(cache, cot):
    dh, dmem, dcmem, grads = compressive_layer_backward(cot["y"], cot["loss_attn"], cache)
    return {"h": dh, "mem": dmem, "cmem": dcmem, **grads}


def intermediates(cache) -> dict[str, Any]:
    """The main attention's probabilities, then the reconstruction attention's over f_c(old_mem)."""
    return {"attention_probs": cache.attention.attention.softmax.p,
            "reconstruction_probs": cache.reconstruction.attention.softmax.p}


EDGE_CONFIGS = {
    "batch_1": {"batch": 1},
    "one_head": {"n_heads": 1},
    "memory_shorter_than_segment": {"n_mem": 4},  # fifo: two rows of h are evicted with the memory
    "algorithm1_short_memory": {"n_mem": 3, "eviction": "algorithm1"},  # only m leaves; h's oldest rows drop
    "no_compressed_memory": {"n_cmem": 0},
    "one_compressed_row": {"rate": 6},  # C = 1: the whole segment compresses to one row
    "rate_1": {"rate": 1},
    "odd_sizes": {"batch": 3, "seq_len": 9, "n_mem": 11, "n_cmem": 13, "d_model": 15, "n_heads": 5, "d_ff": 7},
}
#: Each variant's own extra edges.
KIND_EDGES = {
    "dilated": {"wide_kernel": {"kernel": 4, "dilation": 3}, "dense_dilation": {"kernel": 2, "dilation": 1}},
    "most_used": {"summed_usage": {"usage": "sum"}, "usage_algorithm1": {"n_mem": 3, "eviction": "algorithm1"}},
}
REALISTIC = {"batch": 2, "seq_len": 512, "n_mem": 512, "n_cmem": 256, "d_model": 256, "n_heads": 8, "d_ff": 1024,
             "rate": 4}

#: Registered variants: name suffix → defaults.
VARIANTS = {
    "": {"kind": "conv", "score_bias": True, "dropout": 0.1},
    ".conv": {"kind": "conv", "reduction": "mean", "recon_scale": "one"},
    ".mean": {"kind": "mean"},
    ".max": {"kind": "max"},
    ".dilated": {"kind": "dilated", "kernel": 4, "dilation": 2},
    ".most_used": {"kind": "most_used"},
}

for _suffix, _defaults in VARIANTS.items():
    register(Mechanism(f"architecture.compressive{_suffix}", PAPER, "architecture", build, forward, backward,
                       config=CompressiveCaseConfig, defaults=_defaults,
                       edge_configs={**EDGE_CONFIGS, **KIND_EDGES.get(_defaults["kind"], {})},
                       realistic=REALISTIC, intermediates=intermediates))
