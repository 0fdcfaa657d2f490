"""Registered cases of ``nn.cross_entropy`` (with an ignored target) and ``nn.sigmoid_bce`` (weighted)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ...config import Config, option
from ...random import generator, normal, uniform
from ...registry import Case, Mechanism, register
from ..losses import (
    IGNORE_INDEX,
    cross_entropy_backward,
    cross_entropy_forward,
    sigmoid_bce_backward,
    sigmoid_bce_forward,
)


@dataclass(frozen=True)
class CrossEntropyConfig(Config):
    title = "mean cross-entropy of (batch, seq_len, vocab) logits against (batch, seq_len) targets"
    batch: int = option(2, "batch size B", minimum=1)
    seq_len: int = option(5, "positions T", minimum=1)
    vocab: int = option(11, "classes V", minimum=1)
    n_ignored: int = option(1, f"targets set to the ignore index {IGNORE_INDEX} (the first positions of row 0)",
                            minimum=0)

    def validate(self) -> None:
        if self.n_ignored >= self.batch * self.seq_len:
            raise ValueError(f"CrossEntropyConfig.n_ignored ({self.n_ignored}) must leave a target: "
                             f"< batch * seq_len ({self.batch * self.seq_len})")


@dataclass(frozen=True)
class SigmoidBCEConfig(Config):
    title = "weighted mean binary cross-entropy of (batch, seq_len) logits against soft targets"
    batch: int = option(2, "batch size B", minimum=1)
    seq_len: int = option(5, "positions T", minimum=1)
    weighted: bool = option(True, "per-position weights (a padding-like 0/1 pattern plus 0.5)")


def build_ce(seed: int, dtype: Any, xp, config: CrossEntropyConfig) -> Case:
    rng = generator(seed)
    b, t = config.batch, config.seq_len
    targets = rng.integers(0, config.vocab, (b, t))
    targets.reshape(-1)[:config.n_ignored] = IGNORE_INDEX
    return Case(inputs={"logits": normal(rng, (b, t, config.vocab), xp=xp, dtype=dtype, scale=2.0)}, params={},
                static={"targets": xp.asarray(targets)})


def forward_ce(case: Case):
    loss, cache = cross_entropy_forward(case.inputs["logits"], case.static["targets"])
    return {"loss": loss}, cache


def build_bce(seed: int, dtype: Any, xp, config: SigmoidBCEConfig) -> Case:
    rng = generator(seed)
    b, t = config.batch, config.seq_len
    weights = xp.asarray(rng.integers(0, 2, (b, t)), dtype=dtype) + 0.5  # a padding-like 0/1 weight, + 0.5
    static = {"targets": uniform(rng, (b, t), xp=xp, dtype=dtype)}
    if config.weighted:
        static["weights"] = weights
    return Case(inputs={"logits": normal(rng, (b, t), xp=xp, dtype=dtype, scale=3.0)}, params={}, static=static)


def forward_bce(case: Case):
    loss, cache = sigmoid_bce_forward(case.inputs["logits"], case.static["targets"], case.static.get("weights"))
    return {"loss": loss}, cache


register(Mechanism("nn.cross_entropy", "building block", "nn", build_ce, forward_ce,
                   lambda cache, cot: {"logits": cross_entropy_backward(cot["loss"], cache)},
                   config=CrossEntropyConfig,
                   edge_configs={"batch_1": {"batch": 1}, "one_target": {"batch": 1, "seq_len": 1, "n_ignored": 0},
                                 "one_class": {"vocab": 1}, "all_but_one_ignored": {"n_ignored": 9},
                                 "odd_sizes": {"batch": 3, "seq_len": 7, "vocab": 13, "n_ignored": 4}},
                   realistic={"batch": 8, "seq_len": 512, "vocab": 30000, "n_ignored": 0}))
register(Mechanism("nn.sigmoid_bce", "building block", "nn", build_bce, forward_bce,
                   lambda cache, cot: {"logits": sigmoid_bce_backward(cot["loss"], cache)}, config=SigmoidBCEConfig,
                   edge_configs={"batch_1": {"batch": 1}, "one_position": {"batch": 1, "seq_len": 1},
                                 "unweighted": {"weighted": False}, "odd_sizes": {"batch": 3, "seq_len": 13}},
                   realistic={"batch": 8, "seq_len": 512}))
