"""Registered case of ``nn.dropout`` with an explicit keep mask."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ...config import Config, option
from ...random import dropout_mask, generator, normal
from ...registry import Case, Mechanism, register
from ..dropout import dropout_backward, dropout_forward


@dataclass(frozen=True)
class DropoutConfig(Config):
    title = "inverted dropout with an explicit mask on (batch, seq_len, d_model)"
    batch: int = option(2, "batch size B", minimum=1)
    seq_len: int = option(5, "sequence length T", minimum=1)
    d_model: int = option(6, "width D", minimum=1)
    rate: float = option(0.3, "drop probability of the sampled mask", minimum=0.0, maximum=0.9)


def build(seed: int, dtype: Any, xp, config: DropoutConfig) -> Case:
    rng = generator(seed)
    shape = (config.batch, config.seq_len, config.d_model)
    return Case(inputs={"x": normal(rng, shape, xp=xp, dtype=dtype)}, params={},
                static={"mask": dropout_mask(rng, shape, config.rate, xp=xp, dtype=dtype)})


def forward(case: Case):
    y, mask = dropout_forward(case.inputs["x"], case.static["mask"])
    return {"y": y}, mask


register(Mechanism("nn.dropout", "building block", "nn", build, forward,
                   lambda mask, cot: {"x": dropout_backward(cot["y"], mask)}, config=DropoutConfig,
                   edge_configs={"batch_1": {"batch": 1}, "length_1": {"seq_len": 1}, "rate_0": {"rate": 0.0},
                                 "odd_sizes": {"batch": 3, "seq_len": 7, "d_model": 11, "rate": 0.5}}))
