"""Registered cases of the activations ``nn.gelu`` (exact), ``nn.gelu_tanh`` and ``nn.relu``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ...config import Config, option
from ...random import generator
from ...registry import Case, Mechanism, register
from ..gelu import ACTIVATIONS, activation_backward, activation_forward


@dataclass(frozen=True)
class ActivationConfig(Config):
    title = "an elementwise activation on (batch, seq_len, d_model)"
    batch: int = option(2, "batch size B", minimum=1)
    seq_len: int = option(5, "sequence length T", minimum=1)
    d_model: int = option(6, "width D", minimum=1)
    margin: float = option(0.1, "every |x| >= margin, so ReLU's kink lies outside each finite-difference step "
                           "(the checker's largest step is 2e-3)", minimum=0.01)


def build(seed: int, dtype: Any, xp, config: ActivationConfig) -> Case:
    rng = generator(seed)
    x = rng.standard_normal((config.batch, config.seq_len, config.d_model))
    x = x + config.margin * (x >= 0) - config.margin * (x < 0)  # |x| >= margin
    return Case(inputs={"x": xp.asarray(x, dtype=dtype)}, params={})


def _registered(kind: str) -> Mechanism:
    def forward(case: Case):
        y, cache = activation_forward(case.inputs["x"], kind)
        return {"y": y}, cache

    return Mechanism(f"nn.{kind}", "building block", "nn", build, forward,
                     lambda cache, cot: {"x": activation_backward(cot["y"], cache)}, config=ActivationConfig,
                     edge_configs={"batch_1": {"batch": 1}, "one_element": {"batch": 1, "seq_len": 1, "d_model": 1},
                                   "odd_sizes": {"batch": 3, "seq_len": 7, "d_model": 13}},
                     realistic={"batch": 8, "seq_len": 512, "d_model": 1024})


for _kind in ACTIVATIONS:
    register(_registered(_kind))
