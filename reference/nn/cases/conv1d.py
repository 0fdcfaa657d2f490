"""Registered cases of ``nn.depthwise_conv1d.causal`` and ``nn.depthwise_conv1d.centred``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ...config import Config, option
from ...random import generator, normal
from ...registry import Case, Mechanism, register
from ..conv1d import PADDINGS, depthwise_conv1d_backward, depthwise_conv1d_forward


@dataclass(frozen=True)
class DepthwiseConvConfig(Config):
    title = "a depthwise 1-D convolution of (batch, seq_len, channels) with (channels, kernel_size) weights"
    batch: int = option(2, "batch size B", minimum=1)
    seq_len: int = option(5, "sequence length T", minimum=1)
    channels: int = option(3, "channels C", minimum=1)
    kernel_size: int = option(4, "kernel width K (even K exercises the uneven centred padding)", minimum=1)
    bias: bool = option(True, "a per-channel bias")


def build(seed: int, dtype: Any, xp, config: DepthwiseConvConfig) -> Case:
    rng = generator(seed)
    c = config.channels
    params = {"w": normal(rng, (c, config.kernel_size), xp=xp, dtype=dtype)}
    if config.bias:
        params["bias"] = normal(rng, (c,), xp=xp, dtype=dtype)
    return Case(inputs={"x": normal(rng, (config.batch, config.seq_len, c), xp=xp, dtype=dtype)}, params=params)


def _registered(padding: str) -> Mechanism:
    def forward(case: Case):
        y, cache = depthwise_conv1d_forward(case.inputs["x"], case.params["w"], case.params.get("bias"),
                                            padding=padding)
        return {"y": y}, cache

    def backward(cache, cot):
        dx, grads = depthwise_conv1d_backward(cot["y"], cache)
        return {"x": dx, **grads}

    return Mechanism(f"nn.depthwise_conv1d.{padding}", "building block", "nn", build, forward, backward,
                     config=DepthwiseConvConfig,
                     edge_configs={"batch_1": {"batch": 1}, "length_1": {"seq_len": 1},
                                   "kernel_1": {"kernel_size": 1}, "odd_kernel": {"kernel_size": 3},
                                   "kernel_longer_than_sequence": {"seq_len": 3, "kernel_size": 7},
                                   "no_bias": {"bias": False},
                                   "odd_sizes": {"batch": 3, "seq_len": 11, "channels": 7, "kernel_size": 5}},
                     realistic={"batch": 8, "seq_len": 512, "channels": 256, "kernel_size": 7})


for _padding in PADDINGS:
    register(_registered(_padding))
