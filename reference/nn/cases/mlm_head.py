"""Registered case of ``nn.mlm_head``: BERT's transform LN(act(h W + b)), then tied output logits."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ...config import Config, option
from ...random import generator, normal
from ...registry import Case, Mechanism, register
from ..mlm_head import MLM_HEAD_PARAMS, init_mlm_head, mlm_head_backward, mlm_head_forward


@dataclass(frozen=True)
class MLMHeadConfig(Config):
    title = "a masked-LM head on (batch, seq_len, hidden) states with a tied (vocab, width) table"
    batch: int = option(2, "batch size B", minimum=1)
    seq_len: int = option(5, "positions T", minimum=1)
    hidden: int = option(6, "encoder width H", minimum=1)
    width: int = option(3, "embedding width E (>= 2 for the LayerNorm)", minimum=2)
    vocab: int = option(7, "vocabulary V", minimum=1)
    activation: str = option("gelu", "transform activation", choices=("gelu", "gelu_tanh"))


def build(seed: int, dtype: Any, xp, config: MLMHeadConfig) -> Case:
    rng = generator(seed)
    h = normal(rng, (config.batch, config.seq_len, config.hidden), xp=xp, dtype=dtype)
    return Case(inputs={"h": h},
                params={**init_mlm_head(rng, config.hidden, config.width, config.vocab, xp=xp, dtype=dtype),
                        "table": normal(rng, (config.vocab, config.width), xp=xp, dtype=dtype)})


def forward(case: Case):
    params = {k: case.params[k] for k in MLM_HEAD_PARAMS}
    logits, cache = mlm_head_forward(case.inputs["h"], params, case.params["table"], activation=case.config.activation)
    return {"logits": logits}, cache


def backward(cache, cot):
    dh, grads, dtable = mlm_head_backward(cot["logits"], cache)
    return {"h": dh, **grads, "table": dtable}


register(Mechanism("nn.mlm_head", "BERT (Devlin et al., 2019)", "nn", build, forward, backward, config=MLMHeadConfig,
                   edge_configs={"batch_1": {"batch": 1}, "length_1": {"seq_len": 1},
                                 "tanh_gelu": {"activation": "gelu_tanh"},
                                 "odd_sizes": {"batch": 3, "seq_len": 7, "hidden": 11, "width": 5, "vocab": 13}}))
