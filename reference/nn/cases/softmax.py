"""Registered cases of ``nn.softmax`` and ``nn.log_softmax`` over the last axis."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ...config import Config, option
from ...random import generator, normal
from ...registry import Case, Mechanism, register
from ..softmax import log_softmax_backward, log_softmax_forward, softmax_backward, softmax_forward


@dataclass(frozen=True)
class SoftmaxConfig(Config):
    title = "softmax of (batch, seq_len, width) scores over width"
    batch: int = option(2, "batch size B", minimum=1)
    seq_len: int = option(5, "rows T", minimum=1)
    width: int = option(6, "the normalised axis", minimum=1)
    scale: float = option(2.0, "standard deviation of the scores (large values make peaked rows)", minimum=0.0)


def build(seed: int, dtype: Any, xp, config: SoftmaxConfig) -> Case:
    z = normal(generator(seed), (config.batch, config.seq_len, config.width), xp=xp, dtype=dtype, scale=config.scale)
    return Case(inputs={"z": z}, params={})


def forward(case: Case):
    p, cache = softmax_forward(case.inputs["z"])
    return {"p": p}, cache


def forward_log(case: Case):
    log_p, cache = log_softmax_forward(case.inputs["z"])
    return {"log_p": log_p}, cache


EDGES = {"batch_1": {"batch": 1}, "width_1": {"width": 1}, "peaked": {"scale": 20.0},
         "odd_sizes": {"batch": 3, "seq_len": 7, "width": 13}}
REALISTIC = {"batch": 8, "seq_len": 512, "width": 512}
register(Mechanism("nn.softmax", "building block", "nn", build, forward,
                   lambda cache, cot: {"z": softmax_backward(cot["p"], cache)}, config=SoftmaxConfig,
                   edge_configs=EDGES, realistic=REALISTIC))
register(Mechanism("nn.log_softmax", "building block", "nn", build, forward_log,
                   lambda cache, cot: {"z": log_softmax_backward(cot["log_p"], cache)}, config=SoftmaxConfig,
                   edge_configs=EDGES, realistic=REALISTIC))
