"""Registered cases of the Depth-Adaptive Transformer, all with frozen exits and frozen oracle targets, so that
finite differences never cross a discrete decision (no margin is needed):

* ``architecture.depth_adaptive``: aligned training, shared classifier, token multinomial halting trained on
  the likelihood oracle (RBF-smoothed);
* ``.mixed``: mixed training, sampled exits with state copying, one classifier per block;
* ``.geometric``: aligned training with the geometric-like halting units;
* ``.sequence``: aligned training with sequence-level halting from the mean encoder state.

``detach=True`` is not a registered case: a stop-gradient is not a property of the function, so finite
differences cannot see it. The tests check it against the undetached gradients (spec §5, the surrogate rule).
Greedy decoding (:func:`~reference.architecture.depth_adaptive.greedy_decode`) has no gradient to check; the
tests compare it with an independent torch decoder.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ...config import Config, option
from ...random import generator, integers, normal
from ...registry import Case, Mechanism, register
from ..depth_adaptive import DepthAdaptiveConfig, depth_adaptive_backward, depth_adaptive_forward
from ..depth_adaptive_halting import exit_scores, oracle_depths
from ..depth_adaptive_params import aligned_omega, init_depth_adaptive, sample_exits

PAPER = "Depth-Adaptive Transformer (Elbayad et al., ICLR 2020)"


@dataclass(frozen=True)
class DepthAdaptiveCaseConfig(Config):
    title = "a Depth-Adaptive decoder on one batch (B, T) over encoder states (B, S, D)"
    batch: int = option(2, "batch size B", minimum=1)
    seq_len: int = option(5, "target length T", minimum=1)
    src_len: int = option(6, "source length S", minimum=1)
    d_model: int = option(12, "width D (divisible by n_heads)", minimum=1)
    d_ff: int = option(9, "feed-forward width F", minimum=1)
    vocab: int = option(11, "vocabulary V", minimum=2)
    max_len: int = option(7, "position table rows (>= seq_len)", minimum=1)
    n_layers: int = option(4, "decoder blocks N, each with an exit", minimum=1)
    n_heads: int = option(3, "attention heads", minimum=1)
    d_halt: int = option(8, "hidden width of the sequence halting MLP", minimum=1)
    training: str = option("aligned", "aligned (every exit, omega = 1/N) or mixed (sampled exits, one-hot omega)",
                           choices=("aligned", "mixed"))
    shared_classifier: bool = option(True, "one exit classifier for every block")
    halting: str = option("none", "halting distribution", choices=("none", "token", "geometric", "sequence"))
    alpha: float = option(1.0, "weight of L_exit", minimum=0.0)
    oracle_scores: str = option("likelihood", "oracle depth scores", choices=("likelihood", "correctness"))
    sigma: float = option(0.0, "RBF smoothing of the token oracle (0: none)", minimum=0.0)
    lam: float = option(0.0, "depth cost lambda of the oracle", minimum=0.0)
    padded: int = option(1, "padded target positions at the end of the last row", minimum=0)

    def validate(self) -> None:
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model={self.d_model} must be divisible by n_heads={self.n_heads}")
        if self.seq_len > self.max_len:
            raise ValueError(f"seq_len={self.seq_len} must be at most max_len={self.max_len}")
        if self.padded > self.seq_len:
            raise ValueError(f"padded={self.padded} must be at most seq_len={self.seq_len}")
        self.model()  # its own rules (geometric halting needs n_layers >= 2)

    def model(self) -> DepthAdaptiveConfig:
        return DepthAdaptiveConfig(self.n_layers, self.n_heads, self.shared_classifier,
                                   halting=None if self.halting == "none" else self.halting, alpha=self.alpha,
                                   activation="gelu_tanh")


def build(seed: int, dtype: Any, xp, config: DepthAdaptiveCaseConfig) -> Case:
    c, model = config, config.model()
    rng = generator(seed)
    params = init_depth_adaptive(rng, model, vocab=c.vocab, d_model=c.d_model, d_ff=c.d_ff, max_len=c.max_len,
                                 d_halt=c.d_halt, xp=xp, dtype=dtype)
    source = normal(rng, (c.batch, c.src_len, c.d_model), xp=xp, dtype=dtype)
    tokens = integers(rng, c.vocab, (c.batch, c.seq_len + 1), xp=xp)
    target_valid = np.ones((c.batch, c.seq_len), dtype=bool)
    target_valid[-1, c.seq_len - c.padded:] = False
    source_valid = np.ones((c.batch, c.src_len), dtype=bool)
    source_valid[0, -1] = c.src_len == 1  # the first row's last source position is padding (when S > 1)
    static = {"prev_tokens": tokens[:, :-1], "targets": tokens[:, 1:], "target_valid": xp.asarray(target_valid),
              "source_valid": xp.asarray(source_valid)}
    full_depth = xp.full((c.batch, c.seq_len), c.n_layers, dtype=xp.int64)
    if c.training == "mixed":
        static["exits"] = sample_exits(rng, c.batch, c.seq_len, c.n_layers, xp=xp)
        static["omega"] = xp.astype(static["exits"][..., None] == xp.arange(1, c.n_layers + 1), dtype)
    else:
        static["exits"] = full_depth
        static["omega"] = aligned_omega(c.batch, c.seq_len, c.n_layers, xp=xp, dtype=dtype)
    if model.halting is not None:  # frozen targets from the aligned forward of these very parameters
        plain = DepthAdaptiveConfig(c.n_layers, c.n_heads, c.shared_classifier, activation=model.activation)
        omega = aligned_omega(c.batch, c.seq_len, c.n_layers, xp=xp, dtype=dtype)
        _, cache = depth_adaptive_forward(source, params, config=plain,
                                          **{**static, "exits": full_depth, "omega": omega})
        scores = exit_scores(cache.p, static["targets"], kind=c.oracle_scores)
        kind = "sequence" if model.halting == "sequence" else "token"
        static["halting_targets"] = oracle_depths(scores, static["target_valid"], kind=kind, sigma=c.sigma,
                                                  lam=c.lam)
    return Case(inputs={"source": source}, params=params, static=static)


def forward(case: Case):
    return depth_adaptive_forward(case.inputs["source"], case.params, config=case.config.model(), **case.static)


def backward(cache, cot):
    dsource, grads = depth_adaptive_backward(cot, cache)
    return {"source": dsource, **grads}


def intermediates(cache) -> dict[str, Any]:
    """Per block n = 1..N in forward order: its self-attention probabilities, then its output state h^n."""
    out: dict[str, Any] = {}
    for n, block in enumerate(cache.blocks, start=1):
        out[f"block{n}.self_attention_probs"] = block.self_attention.attention.softmax.p
        out[f"hidden{n}"] = cache.states[:, :, n - 1, :]
    out["exit_probs"] = cache.p
    return out


EDGE_CONFIGS = {
    "depth_2": {"n_layers": 2},
    "batch_1": {"batch": 1},
    "length_1": {"seq_len": 1, "padded": 0},
    "one_source_token": {"src_len": 1},
    "fully_padded_row": {"padded": 5},
    "odd_sizes": {"batch": 3, "seq_len": 3, "src_len": 5, "d_model": 15, "n_heads": 5, "d_ff": 7, "vocab": 13},
}
DEPTH_1 = {"depth_1": {"n_layers": 1}}  # not for geometric halting (one unit per block n < N)
#: The base variant runs every edge and a deep stack; the others, which share its blocks and copying, the
#: edges their halting head changes (depth, length 1, a fully padded row), to keep the suite's time.
DEEP = {"deep_stack": {"n_layers": 8, "batch": 1, "seq_len": 2, "padded": 0}}
HEAD_EDGES = ("depth_1", "depth_2", "length_1", "fully_padded_row")
REALISTIC = {"batch": 8, "seq_len": 64, "src_len": 64, "d_model": 512, "d_ff": 2048, "vocab": 8000, "max_len": 128,
             "n_layers": 6, "n_heads": 8}

VARIANTS = {
    "": {"halting": "token", "alpha": 0.5, "sigma": 1.0, "lam": 0.05},
    ".mixed": {"training": "mixed", "shared_classifier": False},
    ".geometric": {"halting": "geometric"},
    ".sequence": {"halting": "sequence"},
}

for _suffix, _defaults in VARIANTS.items():
    register(Mechanism(f"architecture.depth_adaptive{_suffix}", PAPER, "architecture", build, forward, backward,
                       config=DepthAdaptiveCaseConfig, defaults=_defaults,
                       edge_configs={**EDGE_CONFIGS, **DEPTH_1, **DEEP} if _suffix == "" else
                       {k: v for k, v in {**EDGE_CONFIGS, **({} if _suffix == ".geometric" else DEPTH_1)}.items()
                        if k in HEAD_EDGES},
                       realistic=REALISTIC, intermediates=intermediates))
