"""Registered case of ``nn.linear``: ``y = x @ w + b`` at a configuration."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ...config import Config, option
from ...random import generator, normal
from ...registry import Case, Mechanism, register
from ..linear import init_linear, linear_backward, linear_forward


@dataclass(frozen=True)
class LinearConfig(Config):
    title = "a linear map on (batch, seq_len, d_in) inputs"
    batch: int = option(2, "batch size B", minimum=1)
    seq_len: int = option(3, "sequence length T (a second leading axis)", minimum=1)
    d_in: int = option(5, "input width I", minimum=1)
    d_out: int = option(7, "output width O", minimum=1)
    bias: bool = option(True, "add a bias b (O,)")


EDGE_CONFIGS = {
    "batch_1": {"batch": 1},
    "length_1": {"seq_len": 1},
    "no_bias": {"bias": False},
    "width_1": {"d_in": 1, "d_out": 1},
    "odd_sizes": {"batch": 3, "seq_len": 11, "d_in": 13, "d_out": 17},
}


def build(seed: int, dtype: Any, xp, config: LinearConfig) -> Case:
    rng = generator(seed)
    x = normal(rng, (config.batch, config.seq_len, config.d_in), xp=xp, dtype=dtype)
    return Case(inputs={"x": x}, params=init_linear(rng, config.d_in, config.d_out, xp=xp, dtype=dtype,
                                                    bias=config.bias))


def forward(case: Case):
    y, cache = linear_forward(case.inputs["x"], case.params["w"], case.params.get("b"))
    return {"y": y}, cache


def backward(cache, cot):
    dx, grads = linear_backward(cot["y"], cache)
    return {"x": dx, **grads}


register(Mechanism("nn.linear", "building block", "nn", build, forward, backward, config=LinearConfig,
                   edge_configs=EDGE_CONFIGS))
