"""Registered cases of the complex-order embedding (Wang et al., ICLR 2020) and of the complex Transformer layer
built on it: configurations, case builders, margins and edge configurations.

The transformer variants have ReLU inputs (real and imaginary parts of z1 W1 + b1) and, for the modulus score,
|S| in a denominator: the builder redraws the weights until every ReLU input clears ``RELU_MARGIN`` and every
|S| clears ``SCORE_MARGIN``, and the checker's ``margin_check`` asserts no ReLU input changes sign under a step.
Where no draw clears the margins (large sizes put some of the B T F ReLU inputs near zero), the builder raises
one ValueError saying so.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ...backend import array_namespace
from ...config import Config, option
from ...nn.losses import IGNORE_INDEX
from ...random import generator
from ...registry import Case, Mechanism, register
from ..complex_layers import SCORES, complex_attention_forward, complex_linear_forward, split_layer_norm_forward
from ..complex_order import PAPER, complex_order_backward, complex_order_forward, sample_complex_order
from ..complex_transformer import (
    ComplexTransformerCache,
    complex_order_transformer_backward,
    complex_order_transformer_forward,
    init_complex_transformer,
)

#: Smallest |ReLU input| (each part) a case accepts: ten times what a finite-difference step moves it.
RELU_MARGIN = 5e-3
#: Smallest |S| for the modulus score: |S| curves like 1/|S| near zero (costs accuracy, not correctness).
SCORE_MARGIN = 0.1
#: Weight draws tried before the builder gives up on the margins.
DRAWS = 500


@dataclass(frozen=True)
class ComplexOrderConfig(Config):
    title = "the complex-order embedding f(j, pos) = r exp(i (w pos + theta)) of ids (B, T)"
    batch: int = option(2, "batch size B", minimum=1)
    seq_len: int = option(5, "sequence length T", minimum=1)
    dim: int = option(3, "embedding width D", minimum=1)
    vocab: int = option(7, "vocabulary V", minimum=1)
    used_words: int = option(5, "ids are drawn from the first used_words words (the rest get zero gradient)",
                             minimum=1)
    position_step: float = option(1.5, "positions are 0, step, 2 step, ... (non-integer steps are allowed; 1: the "
                                               "forward's default positions, none passed)")
    frequency: str = option("word", "w: per word (V, D), shared (D,) or none", choices=("word", "shared", "none"))
    initial_phase: str = option("word", "theta: per word (V, D), shared (D,) or none (= 0)",
                                choices=("word", "shared", "none"))

    def validate(self) -> None:
        if self.used_words > self.vocab:
            raise ValueError(f"used_words={self.used_words} must be at most vocab={self.vocab}")


def build(seed: int, dtype: Any, xp, config: ComplexOrderConfig) -> Case:
    c = config
    rng = generator(seed)
    ids = xp.asarray(rng.integers(0, c.used_words, (c.batch, c.seq_len)), dtype=xp.int64)
    params = sample_complex_order(rng, c.vocab, c.dim, xp=xp, dtype=dtype, frequency=c.frequency,
                                  initial_phase=c.initial_phase)
    static = {"ids": ids}
    if c.position_step != 1.0:  # step 1: the forward's own default positions 0, 1, ..., T-1
        static["positions"] = xp.arange(c.seq_len, dtype=dtype) * c.position_step
    return Case(inputs={}, params=params, static=static)


def forward(case: Case):
    f, cache = complex_order_forward(case.static["ids"], case.params["amplitude"], case.params.get("frequency"),
                                     case.params.get("initial_phase"), positions=case.static.get("positions"))
    return {"embedding": f}, cache


def backward(cache, cot: dict[str, Any]) -> dict[str, Any]:
    return complex_order_backward(cot["embedding"], cache)


EMBEDDING_EDGES = {
    "batch_1": {"batch": 1},
    "length_1": {"seq_len": 1},
    "one_word": {"vocab": 1, "used_words": 1},  # every token the same word: the scatter-add sums them all
    "integer_steps": {"position_step": 1.0},
    "odd_sizes": {"batch": 3, "seq_len": 11, "dim": 13, "vocab": 17, "used_words": 9},
}
EMBEDDING_REALISTIC = {"batch": 8, "seq_len": 512, "dim": 256, "vocab": 30000, "used_words": 30000}
EMBEDDING_VARIANTS = {"": {}, ".shared_frequency": {"frequency": "shared"},
                      ".no_initial_phase": {"initial_phase": "none"}, ".position_free": {"frequency": "none"}}

for _suffix, _defaults in EMBEDDING_VARIANTS.items():
    register(Mechanism("embeddings.complex_order" + _suffix, PAPER, "embeddings", build, forward, backward,
                       config=ComplexOrderConfig, defaults=_defaults, edge_configs=EMBEDDING_EDGES,
                       realistic=EMBEDDING_REALISTIC))


@dataclass(frozen=True)
class ComplexTransformerConfig(Config):
    title = "the complex-order embedding in one complex post-LN encoder layer with a real head and loss"
    batch: int = option(4, "batch size B", minimum=1)
    seq_len: int = option(5, "sequence length T", minimum=1)
    n_heads: int = option(2, "attention heads H", minimum=1)
    d_model: int = option(6, "width D (divisible by n_heads)", minimum=1)
    d_ff: int = option(7, "feed-forward width F", minimum=1)
    vocab: int = option(9, "vocabulary V", minimum=1)
    used_words: int = option(7, "ids are drawn from the first used_words words", minimum=1)
    n_classes: int = option(8, "output classes C", minimum=1)
    padded: int = option(2, "padded positions at the end of the last sequence (masked keys, ignored targets)",
                         minimum=0)
    score: str = option("modulus", "score: |Q K^T| (authors' attention_complex.py) or Re(Q K^H)", choices=SCORES)

    def validate(self) -> None:
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model={self.d_model} must be divisible by n_heads={self.n_heads}")
        if self.used_words > self.vocab:
            raise ValueError(f"used_words={self.used_words} must be at most vocab={self.vocab}")
        if self.padded >= self.seq_len:
            raise ValueError(f"padded={self.padded} must be below seq_len={self.seq_len} (a row needs a real key)")


def _run(case: Case):
    s, c = case.static, case.config
    return complex_order_transformer_forward(s["ids"], s["targets"], case.params, n_heads=c.n_heads,
                                             key_valid=s["key_valid"], positions=s["positions"], score=c.score)


def _relu_inputs(case: Case) -> tuple[Any, Any]:
    """The ReLU inputs z1 W1 + b1 (B, T, F), real and imaginary parts (the same calls as the forward)."""
    p, s, c = case.params, case.static, case.config
    xp = array_namespace(p["amplitude"])
    z0, _ = complex_order_forward(s["ids"], p["amplitude"], p.get("frequency"), p.get("initial_phase"),
                                  positions=s["positions"])  # (B, T, D)
    a, _ = complex_attention_forward(z0, p, n_heads=c.n_heads, key_valid=s["key_valid"], score=c.score)
    z1, _ = split_layer_norm_forward(z0 + a, p["ln1_gamma"], p["ln1_beta"])  # (B, T, D)
    h_pre, _ = complex_linear_forward(z1, p["w_1"], p["b_1"])  # (B, T, F)
    return xp.real(h_pre), xp.imag(h_pre)


def transformer_build(seed: int, dtype: Any, xp, config: ComplexTransformerConfig) -> Case:
    c = config
    rng = generator(seed)
    key_valid = np.ones((c.batch, c.seq_len), dtype=bool)
    key_valid[-1, c.seq_len - c.padded:] = False
    ids = rng.integers(0, c.used_words, (c.batch, c.seq_len))
    targets = np.where(key_valid, rng.integers(0, c.n_classes, (c.batch, c.seq_len)), IGNORE_INDEX)
    static = {"ids": xp.asarray(ids, dtype=xp.int64), "targets": xp.asarray(targets, dtype=xp.int64),
              "key_valid": xp.asarray(key_valid), "positions": xp.arange(c.seq_len, dtype=dtype)}
    for _ in range(DRAWS):  # redraw weights until every ReLU input and |S| clears its margin
        params = init_complex_transformer(rng, c.vocab, c.d_model, c.d_ff, c.n_classes, xp=xp, dtype=dtype)
        case = Case(inputs={}, params=params, static=static, config=c)
        _, cache = _run(case)
        pre = cache.layer.act[0].x, cache.layer.act[1].x  # (B, T, F) real and imaginary parts
        smallest = min(float(xp.min(xp.abs(part))) for part in pre)
        score_ok = c.score != "modulus" or float(xp.min(xp.abs(cache.layer.attention.s))) > SCORE_MARGIN
        if smallest > RELU_MARGIN and score_ok:
            return Case(inputs={}, params=params, static={**static, "active_re": pre[0] > 0, "active_im": pre[1] > 0})
    raise ValueError(f"no weight draw in {DRAWS} kept all {2 * c.batch * c.seq_len * c.d_ff} ReLU inputs at least "
                     f"{RELU_MARGIN} from zero{' and |S| above ' + str(SCORE_MARGIN) if c.score == 'modulus' else ''}"
                     f" at this configuration; the finite-difference check needs them: use smaller batch, seq_len "
                     f"or d_ff")


def transformer_forward(case: Case):
    (logits, loss), cache = _run(case)
    return {"logits": logits, "loss": loss}, cache


def transformer_backward(cache: ComplexTransformerCache, cot: dict[str, Any]) -> dict[str, Any]:
    return complex_order_transformer_backward(cot.get("logits"), cot.get("loss"), cache)


def margin_check(case: Case) -> None:
    xp = array_namespace(case.params["amplitude"])
    for part, x in zip(("re", "im"), _relu_inputs(case)):
        if bool(xp.any((x > 0) != case.static[f"active_{part}"])):
            raise ValueError(f"a ReLU input ({part} part) changed sign under the finite-difference step")


def transformer_intermediates(cache: ComplexTransformerCache) -> dict[str, Any]:
    """In forward order: the attention probabilities, the ReLU inputs (real, imaginary), the logits' features."""
    return {"attention_probs": cache.layer.attention.softmax.p, "relu_input_re": cache.layer.act[0].x,
            "relu_input_im": cache.layer.act[1].x, "head_features": cache.head.x}


TRANSFORMER_EDGES = {
    "batch_1": {"batch": 1, "padded": 1},
    "length_1": {"seq_len": 1, "padded": 0},
    "one_head": {"n_heads": 1},
    "no_padding": {"padded": 0},
    "odd_sizes": {"batch": 3, "seq_len": 3, "n_heads": 3, "d_model": 9, "d_ff": 5, "vocab": 11, "n_classes": 7,
                  "padded": 1},
}

for _score in SCORES:
    register(Mechanism("embeddings.complex_order.transformer" + ("" if _score == "modulus" else "." + _score), PAPER,
                       "embeddings", transformer_build, transformer_forward, transformer_backward,
                       margin_check=margin_check, config=ComplexTransformerConfig, defaults={"score": _score},
                       edge_configs=TRANSFORMER_EDGES, intermediates=transformer_intermediates))
