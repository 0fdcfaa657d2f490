"""Registered case of ``nn.layer_norm`` over the last axis."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ...config import Config, option
from ...random import generator, normal
from ...registry import Case, Mechanism, register
from ..layer_norm import init_layer_norm, layer_norm_backward, layer_norm_forward


@dataclass(frozen=True)
class LayerNormConfig(Config):
    title = "layer normalisation of (batch, seq_len, d_model) over d_model"
    batch: int = option(2, "batch size B", minimum=1)
    seq_len: int = option(5, "sequence length T", minimum=1)
    d_model: int = option(6, "normalised width D (>= 2: one element normalises to 0 whatever its value)", minimum=2)
    eps: float = option(1e-5, "variance floor (BERT's and PyTorch's default)", minimum=1e-12)


def build(seed: int, dtype: Any, xp, config: LayerNormConfig) -> Case:
    rng = generator(seed)
    x = normal(rng, (config.batch, config.seq_len, config.d_model), xp=xp, dtype=dtype)
    return Case(inputs={"x": x}, params=init_layer_norm(rng, config.d_model, xp=xp, dtype=dtype))


def forward(case: Case):
    y, cache = layer_norm_forward(case.inputs["x"], case.params["gamma"], case.params["beta"], eps=case.config.eps)
    return {"y": y}, cache


def backward(cache, cot):
    dx, grads = layer_norm_backward(cot["y"], cache)
    return {"x": dx, **grads}


register(Mechanism("nn.layer_norm", "building block", "nn", build, forward, backward, config=LayerNormConfig,
                   edge_configs={"batch_1": {"batch": 1}, "length_1": {"seq_len": 1}, "width_2": {"d_model": 2},
                                 "large_eps": {"eps": 1.0},
                                 "odd_sizes": {"batch": 3, "seq_len": 7, "d_model": 13}},
                   realistic={"batch": 8, "seq_len": 512, "d_model": 256}))
