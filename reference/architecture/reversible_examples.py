"""Registered examples of the reversible stack: full attention (with every dropout mask) and LSH attention.

Both backward passes are the reversible ones (reconstruction + recomputation + replayed tape), checked
against finite differences of the forward. Parameters are named ``l{n}.{name}`` for layer n.

architecture.reversible      N=3 layers, B=3, T=5, D=4, H=2, F=7, 2 FFN chunks, dropout 0.1 everywhere
architecture.reversible.lsh  N=2 layers, B=3, T=8, D=4, H=2 (Dk=Dv=2), R=2 rounds, 4 buckets, chunk 4,
                             3 FFN chunks; buckets hashed once from rotations (margin-checked)
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..attention.lsh import sample_rotations
from ..attention.lsh_examples import init_lsh
from ..backend import array_namespace
from ..random import dropout_mask, generator, normal
from ..registry import Case, Mechanism, register
from ..nn.attention import init_attention
from ..nn.feed_forward import init_feed_forward
from ..nn.layer_norm import init_layer_norm
from .reversible import reversible_backward, reversible_forward, stored_forward
from .reversible_blocks import LayerTape, ReversibleConfig, lsh_margin

PAPER = "Reformer: The Efficient Transformer (Kitaev, Kaiser, Levskaya, ICLR 2020)"
MARGIN = 0.01


def init_reversible_layers(rng: np.random.Generator, n_layers: int, d_model: int, d_ff: int,
                           config: ReversibleConfig, *, xp, dtype) -> list[dict[str, Any]]:
    """N parameter dicts with the names of ``config.layer_params()``."""
    layers = []
    for _ in range(n_layers):
        ln_a, ln_f = (init_layer_norm(rng, d_model, xp=xp, dtype=dtype) for _ in range(2))
        if config.attention == "full":
            att = init_attention(rng, d_model, xp=xp, dtype=dtype)
        else:
            dh = d_model // config.n_heads
            att = init_lsh(rng, d_model, config.n_heads, dh, dh, xp=xp, dtype=dtype)
        layers.append({"ln_a.gamma": ln_a["gamma"], "ln_a.beta": ln_a["beta"], **att,
                       "ln_f.gamma": ln_f["gamma"], "ln_f.beta": ln_f["beta"],
                       **init_feed_forward(rng, d_model, d_ff, xp=xp, dtype=dtype)})
    return layers


def sample_reversible_tapes(rng: np.random.Generator, n_layers: int, batch: int, seq: int, d_model: int, d_ff: int,
                            config: ReversibleConfig, *, rate: float = 0.0, n_hashes: int = 2, xp, dtype) -> list[LayerTape]:
    """Per-layer dropout keep-masks (None when rate = 0) and, for LSH, rotations."""
    tapes = []
    for _ in range(n_layers):
        def mask(shape):
            return dropout_mask(rng, shape, rate, xp=xp, dtype=dtype) if rate > 0 else None
        probs = mask((batch, config.n_heads, seq, seq)) if config.attention == "full" else None
        rotations = None
        if config.attention == "lsh":
            rotations = sample_rotations(rng, batch, config.n_heads, d_model // config.n_heads, n_hashes,
                                         config.n_buckets, xp=xp, dtype=dtype)
        tapes.append(LayerTape(probs, mask((batch, seq, d_model)), mask((batch, seq, d_ff)),
                               mask((batch, seq, d_model)), None, rotations))
    return tapes


def flatten_params(layers: list[dict[str, Any]]) -> dict[str, Any]:
    return {f"l{n}.{k}": v for n, p in enumerate(layers) for k, v in p.items()}


def unflatten_params(flat: dict[str, Any], n_layers: int) -> list[dict[str, Any]]:
    return [{k.split(".", 1)[1]: v for k, v in flat.items() if k.split(".", 1)[0] == f"l{n}"} for n in range(n_layers)]


# FastGelu (the tanh form) as in trax's ReformerLM; it is also far cheaper than the portable erf series.
FULL = ReversibleConfig(n_heads=2, attention="full", n_ff_chunks=2, activation="gelu_tanh")
LSH = ReversibleConfig(n_heads=2, attention="lsh", n_ff_chunks=3, n_buckets=4, chunk_len=4, activation="gelu_tanh")
SIZES = {"full": dict(n_layers=3, batch=3, seq=5, d_model=4, d_ff=7, rate=0.1),
         "lsh": dict(n_layers=2, batch=3, seq=8, d_model=4, d_ff=7, rate=0.1)}


def _example(config: ReversibleConfig):
    s = SIZES[config.attention]

    def example(seed: int, dtype: Any, xp) -> Case:
        rng = generator(seed)
        x = normal(rng, (s["batch"], s["seq"], s["d_model"]), xp=xp, dtype=dtype)
        layers = init_reversible_layers(rng, s["n_layers"], s["d_model"], s["d_ff"], config, xp=xp, dtype=dtype)
        for _ in range(500):  # LSH: redraw until every hash is MARGIN away from a tie
            tapes = sample_reversible_tapes(rng, s["n_layers"], s["batch"], s["seq"], s["d_model"], s["d_ff"],
                                            config, rate=s["rate"], xp=xp, dtype=dtype)
            _, stored = stored_forward(x, layers, tapes, config)
            if config.attention == "full" or min(lsh_margin(x2, p, t, config) for (_, x2), p, t
                                                 in zip(stored.inputs, layers, tapes)) >= MARGIN:
                break
        else:
            raise RuntimeError("no LSH rotations with a safe hash margin")
        _, cache = reversible_forward(x, layers, tapes, config)  # fills in the buckets
        return Case(inputs={"x": x}, params=flatten_params(layers),
                    static={"tapes": cache.tapes, "n_layers": s["n_layers"]})

    return example


def _forward(config: ReversibleConfig):
    def forward(case: Case):
        layers = unflatten_params(case.params, case.static["n_layers"])
        (y1, y2), cache = reversible_forward(case.inputs["x"], layers, case.static["tapes"], config)
        return {"y1": y1, "y2": y2}, cache

    return forward


def _backward(cache, cot):
    dx, grads = reversible_backward(cot["y1"], cot["y2"], cache)
    return {"x": dx, **flatten_params(grads)}


def _margin_check(case: Case, _tol: float) -> None:
    """Re-hash from the rotations at the perturbed point: the buckets must not move."""
    layers = unflatten_params(case.params, case.static["n_layers"])
    fresh = [t._replace(buckets=None) for t in case.static["tapes"]]
    _, cache = reversible_forward(case.inputs["x"], layers, fresh, LSH)
    for n, (new, old) in enumerate(zip(cache.tapes, case.static["tapes"])):
        if not bool(array_namespace(new.buckets).all(new.buckets == old.buckets)):
            raise ValueError(f"a finite-difference step moved an LSH bucket in layer {n}; enlarge MARGIN")


register(Mechanism("architecture.reversible", PAPER, "architecture", _example(FULL), _forward(FULL), _backward))
register(Mechanism("architecture.reversible.lsh", PAPER, "architecture", _example(LSH), _forward(LSH), _backward,
                   margin_check=_margin_check))
