"""Parameters, explicit random draws and registered examples of the Depth-Adaptive Transformer.

Registered (all with frozen exits and frozen oracle targets, so that finite
differences never cross a discrete decision):

* ``architecture.depth_adaptive``: aligned training, shared classifier, token
  multinomial halting trained on the likelihood oracle (RBF-smoothed);
* ``architecture.depth_adaptive.mixed``: mixed training, sampled exits with state
  copying, one classifier per block;
* ``architecture.depth_adaptive.geometric``: aligned training with the
  geometric-like halting units;
* ``architecture.depth_adaptive.sequence``: aligned training with sequence-level
  halting from the mean encoder state.

``detach=True`` is not a registered example: a stop-gradient is not a property
of the function, so finite differences cannot see it. The tests check it
instead against the undetached gradients (spec §5, the surrogate rule).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..backend import array_namespace, from_numpy
from ..nn.decoder_layer import init_decoder_layer
from ..random import generator, integers, normal
from ..registry import Case, Mechanism, register
from .depth_adaptive import DepthAdaptiveConfig, depth_adaptive_backward, depth_adaptive_forward
from .depth_adaptive_halting import oracle_depths

PAPER = "Depth-Adaptive Transformer (Elbayad et al., ICLR 2020)"


def init_depth_adaptive(rng, config: DepthAdaptiveConfig, *, vocab: int, d_model: int, d_ff: int, max_len: int,
                        d_halt: int = 4, xp, dtype) -> dict[str, Any]:
    """Random parameters: embeddings, N decoder blocks, exit classifiers, halting parameters."""
    params = {"embed": normal(rng, (vocab, d_model), xp=xp, dtype=dtype),
              "pos": normal(rng, (max_len, d_model), xp=xp, dtype=dtype, scale=0.1)}
    for n in range(1, config.n_layers + 1):
        layer = init_decoder_layer(rng, d_model, d_ff, xp=xp, dtype=dtype)
        params.update({f"block{n}.{k}": v for k, v in layer.items()})
    exits = [""] if config.shared_classifier else [str(n) for n in range(1, config.n_layers + 1)]
    for suffix in exits:
        params[f"exit{suffix}.w"] = normal(rng, (d_model, vocab), xp=xp, dtype=dtype, scale=d_model**-0.5)
        params[f"exit{suffix}.b"] = normal(rng, (vocab,), xp=xp, dtype=dtype, scale=0.1)
    n = config.n_layers
    if config.halting == "token":
        params["halt.w"] = normal(rng, (d_model, n), xp=xp, dtype=dtype, scale=d_model**-0.5)
        params["halt.b"] = normal(rng, (n,), xp=xp, dtype=dtype, scale=0.1)
    elif config.halting == "geometric":
        params["halt.w"] = normal(rng, (d_model, 1), xp=xp, dtype=dtype, scale=d_model**-0.5)
        params["halt.b"] = normal(rng, (1,), xp=xp, dtype=dtype, scale=0.1)
    elif config.halting == "sequence":
        params["halt.w1"] = normal(rng, (d_model, d_halt), xp=xp, dtype=dtype, scale=d_model**-0.5)
        params["halt.b1"] = normal(rng, (d_halt,), xp=xp, dtype=dtype, scale=0.1)
        params["halt.w2"] = normal(rng, (d_halt, n), xp=xp, dtype=dtype, scale=d_halt**-0.5)
        params["halt.b2"] = normal(rng, (n,), xp=xp, dtype=dtype, scale=0.1)
    return params


def sample_exits(rng: np.random.Generator, batch: int, seq: int, n_layers: int, *, xp) -> Any:
    """Mixed training's exit sequences, uniform over {1..N} for every token."""
    return integers(rng, n_layers + 1, (batch, seq), xp=xp, low=1)


def aligned_omega(batch: int, seq: int, n_layers: int, *, xp, dtype, omega: Any = None) -> Any:
    """Omega for aligned training: omega_n for every token (uniform 1/N by default)."""
    weights = np.full(n_layers, 1.0 / n_layers) if omega is None else np.asarray(omega, dtype=float)
    return from_numpy(np.broadcast_to(weights, (batch, seq, n_layers)).copy(), xp, dtype)


def exit_scores(p: Any, targets: Any, *, kind: str = "likelihood") -> Any:
    """Per-token, per-exit scores (B, T, N) for the oracles: log p_n(y_t), or 1[argmax p_n = y_t]."""
    xp = array_namespace(p)
    hot = xp.astype(targets[..., None, None] == xp.arange(p.shape[-1]), p.dtype)  # (B, T, 1, V)
    if kind == "likelihood":
        return xp.log(xp.sum(hot * p, axis=-1))
    if kind == "correctness":
        return xp.astype(xp.argmax(p, axis=-1) == targets[..., None], p.dtype)
    raise ValueError(f"kind must be 'likelihood' or 'correctness', got {kind!r}")


#: The configuration each registered variant runs with, by name.
CONFIGS: dict[str, DepthAdaptiveConfig] = {}

_SIZES = dict(batch=2, seq=4, src=3, d_model=4, d_ff=5, vocab=7, max_len=5, n_layers=3, n_heads=2)


def _make_example(config: DepthAdaptiveConfig, *, mixed: bool, oracle: dict[str, Any] | None):
    def example(seed: int, dtype: Any, xp) -> Case:
        z = _SIZES
        rng = generator(seed)
        params = init_depth_adaptive(rng, config, vocab=z["vocab"], d_model=z["d_model"], d_ff=z["d_ff"],
                                     max_len=z["max_len"], xp=xp, dtype=dtype)
        source = normal(rng, (z["batch"], z["src"], z["d_model"]), xp=xp, dtype=dtype)
        tokens = integers(rng, z["vocab"], (z["batch"], z["seq"] + 1), xp=xp)
        target_valid = xp.asarray([[True] * z["seq"], [True] * (z["seq"] - 1) + [False]])
        static = {"prev_tokens": tokens[:, :-1], "targets": tokens[:, 1:], "target_valid": target_valid,
                  "source_valid": xp.asarray([[True, True, False], [True, True, True]])}
        full_depth = xp.full((z["batch"], z["seq"]), z["n_layers"], dtype=xp.int64)
        if mixed:
            static["exits"] = sample_exits(rng, z["batch"], z["seq"], z["n_layers"], xp=xp)
            static["omega"] = xp.astype(static["exits"][..., None] == xp.arange(1, z["n_layers"] + 1), dtype)
        else:
            static["exits"] = full_depth
            static["omega"] = aligned_omega(z["batch"], z["seq"], z["n_layers"], xp=xp, dtype=dtype)
        if oracle is not None:  # frozen targets from the aligned forward of these very parameters
            plain = DepthAdaptiveConfig(config.n_layers, config.n_heads, config.shared_classifier,
                                        activation=config.activation)
            _, cache = depth_adaptive_forward(source, params, config=plain, **{**static, "exits": full_depth})
            scores = exit_scores(cache.p, static["targets"], kind=oracle.get("scores", "likelihood"))
            static["halting_targets"] = oracle_depths(scores, target_valid, kind=oracle["kind"],
                                                      sigma=oracle.get("sigma", 0.0), lam=oracle.get("lam", 0.0))
        return Case(inputs={"source": source}, params=params, static=static)

    return example


def _register(name: str, config: DepthAdaptiveConfig, *, mixed: bool = False, oracle: dict | None = None) -> None:
    def forward(case: Case):
        return depth_adaptive_forward(case.inputs["source"], case.params, config=config, **case.static)

    def backward(cache, cot):
        dsource, grads = depth_adaptive_backward(cot, cache)
        return {"source": dsource, **grads}

    CONFIGS[name] = config
    register(Mechanism(name, PAPER, "architecture", _make_example(config, mixed=mixed, oracle=oracle),
                       forward, backward))


_BASE = dict(n_layers=_SIZES["n_layers"], n_heads=_SIZES["n_heads"], activation="gelu_tanh")
_register("architecture.depth_adaptive", DepthAdaptiveConfig(**_BASE, halting="token", alpha=0.5),
          oracle={"kind": "token", "sigma": 1.0, "lam": 0.05})
_register("architecture.depth_adaptive.mixed", DepthAdaptiveConfig(**_BASE, shared_classifier=False), mixed=True)
_register("architecture.depth_adaptive.geometric", DepthAdaptiveConfig(**_BASE, halting="geometric"),
          oracle={"kind": "token"})
_register("architecture.depth_adaptive.sequence", DepthAdaptiveConfig(**_BASE, halting="sequence"),
          oracle={"kind": "sequence"})
