"""Parameters and explicit random draws of the Depth-Adaptive Transformer (Elbayad et al., ICLR 2020).

The decoder: :mod:`reference.architecture.depth_adaptive`; registered cases:
:mod:`reference.architecture.cases.depth_adaptive`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..backend import from_numpy
from ..nn.decoder_layer import init_decoder_layer
from ..random import integers, normal
from .depth_adaptive import DepthAdaptiveConfig


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
