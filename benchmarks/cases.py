"""Realistic-size cases: batch 8, sequence 512, width 256, 4 heads unless a mechanism needs others.

A case is built in one of three ways, in this order:

1. an explicit builder below (it calls the mechanism's public ``init_*`` / ``sample_*``
   helpers and returns a :class:`~reference.registry.Case` its registered forward accepts);
2. a *size patch*: the registered example reads its sizes from module constants at call
   time (``B, T, D, ...``), so the benchmark sets them for the duration of the run;
3. the registry's own small example (the table then says ``example``).
"""

from __future__ import annotations

import contextlib
import importlib
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import numpy as np

from reference.registry import Case, Mechanism

B, T, D, H, F, V = 8, 512, 256, 4, 1024, 1000
QUICK = dict(B=2, T=16, D=8, H=2, F=12, V=11)


@dataclass(frozen=True)
class Sized:
    """How to build one mechanism's benchmark case and how to describe its size."""

    size: str
    build: Callable[[Mechanism, int, Any, Any], Case] | None = None  # (mechanism, seed, dtype, xp)
    patch: dict[str, dict[str, Any]] | None = None  # module -> {constant: value}
    forward: Callable[[Case], tuple[dict, Any]] | None = None  # when the size needs its own forward
    backward: Callable[[Any, dict], dict] | None = None


@contextlib.contextmanager
def patched(patch: dict[str, dict[str, Any]] | None) -> Iterator[None]:
    """Set module constants for the duration of the block, then restore them."""
    saved = []
    try:
        for module_name, values in (patch or {}).items():
            module = importlib.import_module(module_name)
            for attr, value in values.items():
                old = getattr(module, attr)
                if isinstance(old, dict):  # dicts captured by closures: update them in place, one level down
                    for key, inner in value.items():
                        target = old[key] if isinstance(old.get(key), dict) else old
                        saved.append((target, None, dict(target)))
                        target.update(inner if target is not old else {key: inner})
                else:
                    saved.append((module, attr, old))
                    setattr(module, attr, value)
        yield
    finally:
        for target, attr, old in reversed(saved):
            if attr is None:
                target.clear()
                target.update(old)
            else:
                setattr(target, attr, old)


def _s(quick: bool) -> dict[str, int]:
    return QUICK if quick else dict(B=B, T=T, D=D, H=H, F=F, V=V)


def _nn_patch(quick: bool, module: str, **extra: Any) -> dict[str, dict[str, Any]]:
    s = _s(quick)
    return {f"reference.nn.{module}": {"B": s["B"], "T": s["T"], "D": s["D"], **extra}}


# ---------------------------------------------------------------- explicit builders

def _linear(quick: bool):
    from reference.nn.linear import init_linear
    from reference.random import generator, normal

    def build(m, seed, dtype, xp):
        s, rng = _s(quick), generator(seed)
        return Case(inputs={"x": normal(rng, (s["B"], s["T"], s["D"]), xp=xp, dtype=dtype)},
                    params=init_linear(rng, s["D"], s["D"], xp=xp, dtype=dtype))
    return build


def _attention(quick: bool):
    from reference.nn.attention import init_attention, padding_mask, mha_forward, mha_backward, ATTENTION_PARAMS
    from reference.random import dropout_mask, generator, normal
    s = _s(quick)

    def build(m, seed, dtype, xp):
        rng = generator(seed)
        b, t, d, h = s["B"], s["T"], s["D"], s["H"]
        valid = _padding(b, t)
        return Case(inputs={"x_q": normal(rng, (b, t, d), xp=xp, dtype=dtype),
                            "x_kv": normal(rng, (b, t, d), xp=xp, dtype=dtype),
                            "bias": normal(rng, (1, h, t, t), xp=xp, dtype=dtype, scale=0.5)},
                    params=init_attention(rng, d, xp=xp, dtype=dtype),
                    static={"mask": padding_mask(xp.asarray(valid)),
                            "dropout": dropout_mask(rng, (b, h, t, t), 0.1, xp=xp, dtype=dtype)})

    def forward(case):
        params = {k: case.params[k] for k in ATTENTION_PARAMS}
        y, cache = mha_forward(case.inputs["x_q"], case.inputs["x_kv"], params, n_heads=s["H"],
                               mask=case.static["mask"], bias=case.inputs["bias"],
                               dropout_mask=case.static["dropout"])
        return {"y": y}, cache

    def backward(cache, cot):
        dx_q, dx_kv, grads = mha_backward(cot["y"], cache)
        return {"x_q": dx_q, "x_kv": dx_kv, **grads}
    return build, forward, backward


def _padding(b: int, t: int) -> np.ndarray:
    """(B, T) key validity: every other sequence loses its last eighth to padding."""
    valid = np.ones((b, t), dtype=bool)
    valid[1::2, t - max(1, t // 8):] = False
    return valid


def _encoder(quick: bool):
    from reference.nn.attention import padding_mask
    from reference.nn.encoder_layer import init_encoder_layer, sample_encoder_dropout
    from reference.random import generator, normal

    def build(m, seed, dtype, xp):
        s, rng = _s(quick), generator(seed)
        b, t, d, f, h = s["B"], s["T"], s["D"], s["F"], s["H"]
        return Case(inputs={"x": normal(rng, (b, t, d), xp=xp, dtype=dtype)},
                    params=init_encoder_layer(rng, d, f, xp=xp, dtype=dtype),
                    static={"mask": padding_mask(xp.asarray(_padding(b, t))),
                            "dropout": sample_encoder_dropout(rng, b, t, d, f, h, 0.1, xp=xp, dtype=dtype)})
    return build


def _conv(quick: bool):
    from reference.random import generator, normal

    def build(m, seed, dtype, xp):
        s, rng = _s(quick), generator(seed)
        return Case(inputs={"x": normal(rng, (s["B"], s["T"], s["D"]), xp=xp, dtype=dtype)},
                    params={"w": normal(rng, (s["D"], 7), xp=xp, dtype=dtype),
                            "bias": normal(rng, (s["D"],), xp=xp, dtype=dtype)})
    return build


def lsh_case(seed: int, dtype: Any, xp, *, batch: int, seq: int, d_model: int, n_heads: int, d_head: int,
             n_hashes: int, chunk_len: int) -> tuple[Case, int]:
    """A Reformer LSH-attention case (no hash-margin redraws: nothing is differentiated numerically)."""
    from reference.attention.lsh import lsh_hash, project_queries, sample_rotations
    from reference.attention.lsh_examples import init_lsh
    from reference.random import generator, normal

    rng = generator(seed)
    n_buckets = max(2, 2 * (seq // (2 * chunk_len)))  # about chunk_len tokens per bucket, as the paper
    x = normal(rng, (batch, seq, d_model), xp=xp, dtype=dtype)
    params = init_lsh(rng, d_model, n_heads, d_head, d_head, xp=xp, dtype=dtype)
    q = project_queries(x, params["w_qk"], n_heads)  # (B, H, L, Dk)
    rotations = sample_rotations(rng, batch, n_heads, d_head, n_hashes, n_buckets, xp=xp, dtype=dtype)
    return Case(inputs={"x": x}, params=params,
                static={"rotations": rotations, "buckets": lsh_hash(q, rotations)}), n_buckets


def _lsh(quick: bool, causal: bool, across: bool, dense: bool = False):
    from reference.attention.lsh import lsh_attention_backward, lsh_attention_forward
    from reference.attention.lsh_dense import lsh_dense_backward, lsh_dense_forward
    s = _s(quick)
    chunk = 4 if quick else 64
    cfg = {}

    def build(m, seed, dtype, xp):
        case, cfg["n_buckets"] = lsh_case(seed, dtype, xp, batch=s["B"], seq=s["T"], d_model=s["D"],
                                          n_heads=s["H"], d_head=s["D"] // s["H"], n_hashes=2, chunk_len=chunk)
        return case

    def forward(case):
        if dense:
            y, cache = lsh_dense_forward(case.inputs["x"], case.params, case.static["buckets"], n_heads=s["H"],
                                         n_buckets=cfg["n_buckets"], causal=False)
        else:
            y, cache = lsh_attention_forward(case.inputs["x"], case.params, case.static["buckets"], n_heads=s["H"],
                                             n_buckets=cfg["n_buckets"], chunk_len=chunk, causal=causal,
                                             attend_across_buckets=across)
        return {"y": y}, cache

    def backward(cache, cot):
        dx, grads = (lsh_dense_backward if dense else lsh_attention_backward)(cot["y"], cache)
        return {"x": dx, **grads}
    return build, forward, backward


def _lsra(quick: bool, name: str):

    from reference.attention.lsra import lsra_backward, lsra_forward
    from reference.attention.lsra_examples import CONFIGS, init_lsra, sample_lsra_dropout
    from reference.random import generator, normal
    s = _s(quick)
    base = CONFIGS[name]
    # Lite Transformer: half the width to each branch, kernel 7 (15 for the decoder's causal variants)
    config = base._replace(d_attn=s["D"] // 2, n_attn_heads=s["H"], n_conv_heads=s["H"] * 2,
                                 kernel_size=3 if quick else (15 if base.causal else 7))

    def build(m, seed, dtype, xp):
        rng = generator(seed)
        b, t, d = s["B"], s["T"], s["D"]
        static = {"dropout": sample_lsra_dropout(rng, b, t, d, config, 0.1, xp=xp, dtype=dtype)}
        if not config.causal:
            static["valid"] = xp.asarray(_padding(b, t))
        return Case(inputs={"x": normal(rng, (b, t, d), xp=xp, dtype=dtype)},
                    params=init_lsra(rng, d, config, xp=xp, dtype=dtype), static=static)

    def forward(case):
        y, cache = lsra_forward(case.inputs["x"], case.params, config, valid=case.static.get("valid"),
                                dropout=case.static["dropout"])
        return {"y": y}, cache

    def backward(cache, cot):
        dx, grads = lsra_backward(cot["y"], cache)
        return {"x": dx, **grads}
    return build, forward, backward, config


def sizing(name: str, quick: bool = False) -> Sized:
    """How ``name`` is sized in the benchmark (falls back to the registered example)."""
    s = _s(quick)
    bt = f"B={s['B']} T={s['T']}"
    btd = f"{bt} D={s['D']}"
    simple = {"nn.layer_norm": "layer_norm", "nn.softmax": "softmax", "nn.log_softmax": "softmax",
              "nn.gelu": "gelu", "nn.gelu_tanh": "gelu", "nn.relu": "gelu", "nn.dropout": "dropout"}
    if name in simple:
        return Sized(btd, patch=_nn_patch(quick, simple[name]))
    if name == "nn.linear":
        return Sized(f"{btd} D_out={s['D']}", build=_linear(quick))
    if name == "nn.feed_forward":
        return Sized(f"{btd} F={s['F']}", patch=_nn_patch(quick, "feed_forward", F=s["F"]))
    if name == "nn.embedding":
        return Sized(f"{btd} V={s['V']}", patch=_nn_patch(quick, "embedding", V=s["V"]))
    if name == "nn.cross_entropy":
        return Sized(f"{bt} V={s['V']}", patch={"reference.nn.losses": {"B": s["B"], "T": s["T"], "V": s["V"]}})
    if name == "nn.sigmoid_bce":
        return Sized(f"{bt}", patch={"reference.nn.losses": {"B": s["B"], "T": s["T"]}})
    if name == "nn.attention.causal":
        return Sized(f"{btd} H={s['H']}", patch=_nn_patch(quick, "attention", H=s["H"]))
    if name == "nn.attention":
        build, fwd, bwd = _attention(quick)
        return Sized(f"{btd} H={s['H']} S=T, bias, padding, dropout", build=build, forward=fwd, backward=bwd)
    if name == "nn.encoder_layer":
        return Sized(f"{btd} H={s['H']} F={s['F']}", build=_encoder(quick),
                     patch={"reference.nn.encoder_layer": {"H": s["H"]}})
    if name.startswith("nn.depthwise_conv1d"):
        return Sized(f"{bt} C={s['D']} K=7", build=_conv(quick))
    if name.startswith("attention.lsh"):
        variant = name.split(".")[2] if name.count(".") == 2 else ""
        build, fwd, bwd = _lsh(quick, variant == "causal", variant == "across_buckets", variant == "dense")
        chunk = 4 if quick else 64
        return Sized(f"{btd} H={s['H']} Dk={s['D'] // s['H']} 2 hashes, chunk {chunk}",
                     build=build, forward=fwd, backward=bwd)
    if name.startswith("attention.lsra"):
        build, fwd, bwd, config = _lsra(quick, name)
        return Sized(f"{btd} Da={config.d_attn} Ha={config.n_attn_heads} Hc={config.n_conv_heads} "
                     f"K={config.kernel_size}", build=build, forward=fwd, backward=bwd)
    if name.startswith("architecture.reversible"):
        attention = "lsh" if name.endswith(".lsh") else "full"
        n_layers = 2 if quick else 6
        size = dict(n_layers=n_layers, batch=s["B"], seq=s["T"], d_model=s["D"], d_ff=s["F"], rate=0.1)
        if attention == "lsh":
            size["rate"] = 0.0
        patch = {"reference.architecture.reversible_examples": {"SIZES": {attention: size},
                                                                "MARGIN": -1.0}}
        return Sized(f"{btd} F={s['F']} layers={n_layers} heads=2 (registered config)", patch=patch)
    return Sized("example")
