"""Registered cases of the reversible stack: full attention (with every dropout mask) and LSH attention.

Both backward passes are the reversible ones (reconstruction + recomputation + replayed tape), checked
against finite differences of the forward. Parameters are named ``l{n}.{name}`` for layer n.

architecture.reversible      N=3 layers, B=3, T=5, D=4, H=2, F=7, 2 FFN chunks, dropout 0.1 everywhere
architecture.reversible.stored  the same stack and sizes with ordinary backprop (stored_forward/backward)
architecture.reversible.lsh  N=2 layers, B=5, T=8, D=6, H=2 (d_k=d_v=3), R=4 rounds, 4 buckets, chunk 4,
                             3 FFN chunks; buckets hashed once from rotations whose every hash clears
                             ``hash_margin`` (layer by layer: each layer's input depends on the layers below)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ...attention.cases.lsh import sample_rotations_with_margin
from ...attention.lsh import project_queries
from ...backend import array_namespace
from ...config import Config, option
from ...nn.gelu import ACTIVATIONS
from ...nn.layer_norm import layer_norm_forward
from ...random import generator, normal
from ...registry import Case, Mechanism, register
from ..reversible import (
    init_reversible_layers,
    reversible_backward,
    reversible_forward,
    reversible_intermediates,
    sample_reversible_tapes,
    stored_backward,
    stored_forward,
)
from ..reversible_blocks import ATTENTIONS, ReversibleConfig

PAPER = "Reformer: The Efficient Transformer (Kitaev, Kaiser, Levskaya, ICLR 2020)"


@dataclass(frozen=True)
class ReversibleStackConfig(Config):
    title = "a stack of reversible Reformer layers on (batch, seq_len, d_model) inputs"
    n_layers: int = option(3, "layers N", minimum=1)
    batch: int = option(3, "batch size B", minimum=1)
    seq_len: int = option(5, "sequence length T", minimum=1)
    d_model: int = option(4, "width D (a multiple of n_heads)", minimum=1)
    d_ff: int = option(7, "feed-forward inner width F", minimum=1)
    n_heads: int = option(2, "heads H", minimum=1)
    n_ff_chunks: int = option(2, "feed-forward chunks along the sequence (<= seq_len)", minimum=1)
    dropout: float = option(0.1, "dropout rate of every mask on the tape (0: no masks)", minimum=0.0, maximum=0.9)
    causal: bool = option(False, "mask later positions in the attention")
    # FastGelu (the tanh form) as in trax's ReformerLM; it is also far cheaper than the portable erf series.
    activation: str = option("gelu_tanh", "feed-forward activation", choices=ACTIVATIONS)
    attention: str = option("full", "F's attention: full (nn.attention) or lsh (attention.lsh)", choices=ATTENTIONS)
    n_hashes: int = option(4, "LSH hash rounds R", minimum=1)
    n_buckets: int = option(4, "LSH buckets (even)", minimum=2)
    chunk_len: int = option(4, "LSH chunk length (divides seq_len)", minimum=1)
    hash_margin: float = option(0.05, "LSH: least gap of every hash (0: no guarantee)", minimum=0.0)

    def validate(self) -> None:
        if self.d_model % self.n_heads:
            raise ValueError(f"ReversibleStackConfig.d_model={self.d_model} must be a multiple of n_heads={self.n_heads}")
        if self.n_ff_chunks > self.seq_len:
            raise ValueError(f"ReversibleStackConfig.n_ff_chunks must be <= seq_len={self.seq_len}, "
                             f"got {self.n_ff_chunks}")
        if self.attention == "lsh" and (self.seq_len % self.chunk_len or self.n_buckets % 2):
            raise ValueError(f"ReversibleStackConfig: LSH needs chunk_len dividing seq_len={self.seq_len} and even "
                             f"n_buckets, got chunk_len={self.chunk_len}, n_buckets={self.n_buckets}")

    def runtime(self) -> ReversibleConfig:
        """The stack's own configuration (what reversible_forward takes)."""
        return ReversibleConfig(n_heads=self.n_heads, attention=self.attention, causal=self.causal,
                                n_ff_chunks=self.n_ff_chunks, activation=self.activation, n_buckets=self.n_buckets,
                                chunk_len=self.chunk_len)


FULL_EDGES = {
    "depth_1": {"n_layers": 1},
    "deep_stack": {"n_layers": 8, "batch": 2, "seq_len": 3, "d_ff": 5, "n_ff_chunks": 3},
    "batch_1": {"batch": 1},
    "causal": {"causal": True},
    "one_ff_chunk": {"n_ff_chunks": 1},
    "one_position_per_ff_chunk": {"n_ff_chunks": 5},
    "no_dropout_erf_gelu": {"dropout": 0.0, "activation": "gelu"},
}
LSH_DEFAULTS = {"attention": "lsh", "n_layers": 2, "batch": 5, "seq_len": 8, "d_model": 6, "n_ff_chunks": 3}
# float32: the fast check's relative step (eps32^(1/3) ~ 5e-3) moves the second layer's queries, which
# depend on every first-layer weight, by more than the 0.05 hash margin (measured: the margin check
# fires). Half that step stays inside it. A larger margin instead draws rotations whose float64
# function has large high derivatives at l0.w_v (Richardson's h^4 term then reads 1e-6 relative;
# it converges to the backward as h shrinks), so the margin stays and the float32 step is halved.
LSH_TOLERANCES = {"float32": {"h": 2.5e-3}}
LSH_EDGES = {
    "depth_1": {"n_layers": 1},
    "causal": {"causal": True},
    "batch_1_one_round": {"batch": 1, "n_hashes": 1},
    "one_chunk": {"chunk_len": 8, "n_hashes": 2},
    "one_ff_chunk": {"n_ff_chunks": 1},
}
REALISTIC = {"n_layers": 12, "batch": 2, "seq_len": 512, "d_model": 256, "d_ff": 1024, "n_heads": 4,
             "n_ff_chunks": 4, "dropout": 0.0}
LSH_REALISTIC = {**REALISTIC, "seq_len": 1024, "chunk_len": 64, "n_buckets": 16, "hash_margin": 0.0}


def flatten_params(layers: list[dict[str, Any]]) -> dict[str, Any]:
    return {f"l{n}.{k}": v for n, p in enumerate(layers) for k, v in p.items()}


def unflatten_params(flat: dict[str, Any], n_layers: int) -> list[dict[str, Any]]:
    return [{k.split(".", 1)[1]: v for k, v in flat.items() if k.split(".", 1)[0] == f"l{n}"} for n in range(n_layers)]


def _lsh_queries(x2: Any, p: dict[str, Any], config: ReversibleConfig) -> Any:
    """The LSH queries of a layer whose attention input is x2: LN_a(x2) W_qk in heads."""
    h, _ = layer_norm_forward(x2, p["ln_a.gamma"], p["ln_a.beta"], eps=config.ln_eps)
    return project_queries(h, p["w_qk"], config.n_heads)  # (B, H, T, d_k)


def build(seed: int, dtype: Any, xp, config: ReversibleStackConfig) -> Case:
    rng = generator(seed)
    rt = config.runtime()
    x = normal(rng, (config.batch, config.seq_len, config.d_model), xp=xp, dtype=dtype)
    layers = init_reversible_layers(rng, config.n_layers, config.d_model, config.d_ff, rt, xp=xp, dtype=dtype)
    tapes = sample_reversible_tapes(rng, config.n_layers, config.batch, config.seq_len, config.d_model, config.d_ff,
                                    rt, rate=config.dropout, n_hashes=config.n_hashes, xp=xp, dtype=dtype)
    if config.attention == "lsh" and config.hash_margin > 0:
        for n in range(config.n_layers):  # layer n's input is fixed by the layers below it
            _, stored = stored_forward(x, layers[:n + 1], tapes[:n + 1], rt)
            q = _lsh_queries(stored.inputs[n][1], layers[n], rt)
            rotations = sample_rotations_with_margin(rng, q, config.n_hashes, config.n_buckets,
                                                     margin=config.hash_margin)
            tapes[n] = tapes[n]._replace(rotations=rotations)
    _, cache = reversible_forward(x, layers, tapes, rt)  # fills in the buckets
    return Case(inputs={"x": x}, params=flatten_params(layers), static={"tapes": cache.tapes})


def forward(case: Case):
    layers = unflatten_params(case.params, case.config.n_layers)
    (y1, y2), cache = reversible_forward(case.inputs["x"], layers, case.static["tapes"], case.config.runtime())
    return {"y1": y1, "y2": y2}, cache


def backward(cache, cot):
    dx, grads = reversible_backward(cot["y1"], cot["y2"], cache)
    return {"x": dx, **flatten_params(grads)}


def stored_forward_case(case: Case):
    """The same stack with ordinary backprop (the baseline the reversible backward must equal)."""
    layers = unflatten_params(case.params, case.config.n_layers)
    (y1, y2), cache = stored_forward(case.inputs["x"], layers, case.static["tapes"], case.config.runtime())
    return {"y1": y1, "y2": y2}, cache


def stored_backward_case(cache, cot):
    dx, grads = stored_backward(cot["y1"], cot["y2"], cache)
    return {"x": dx, **flatten_params(grads)}


def margin_check(case: Case) -> None:
    """Re-hash from the rotations at the perturbed point: the buckets must not move."""
    layers = unflatten_params(case.params, case.config.n_layers)
    fresh = [t._replace(buckets=None) for t in case.static["tapes"]]
    _, cache = reversible_forward(case.inputs["x"], layers, fresh, case.config.runtime())
    for n, (new, old) in enumerate(zip(cache.tapes, case.static["tapes"])):
        if not bool(array_namespace(new.buckets).all(new.buckets == old.buckets)):
            raise ValueError(f"a finite-difference step moved an LSH bucket in layer {n}; raise hash_margin")


register(Mechanism("architecture.reversible", PAPER, "architecture", build, forward, backward,
                   config=ReversibleStackConfig, edge_configs=FULL_EDGES, realistic=REALISTIC,
                   intermediates=reversible_intermediates))
register(Mechanism("architecture.reversible.stored", PAPER, "architecture", build, stored_forward_case,
                   stored_backward_case, config=ReversibleStackConfig,
                   edge_configs={k: FULL_EDGES[k] for k in ("depth_1", "causal", "one_ff_chunk")}))
register(Mechanism("architecture.reversible.lsh", PAPER, "architecture", build, forward, backward,
                   margin_check=margin_check, config=ReversibleStackConfig, defaults=LSH_DEFAULTS,
                   tolerances=LSH_TOLERANCES,
                   edge_configs=LSH_EDGES, realistic=LSH_REALISTIC, intermediates=reversible_intermediates))
