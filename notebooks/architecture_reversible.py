# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Reversible layers (Reformer): a backward pass that keeps no activations
#
# Docs page: [`docs/mechanisms/architecture.reversible.md`](../docs/mechanisms/architecture.reversible.md) (the equations and the derived backward).
#
# Code: [`reference/architecture/reversible.py`](../reference/architecture/reversible.py) (the stack, its
# inverse and backward) and [`reference/architecture/reversible_blocks.py`](../reference/architecture/reversible_blocks.py)
# ($F$ = attention, $G$ = chunked feed-forward). The other half of Reformer is
# [LSH attention](../docs/mechanisms/attention.lsh.md).
#
# **What it is for.** Backpropagation normally stores every layer's activations, so memory grows with depth.
# Reformer (Kitaev et al., ICLR 2020, §3) makes the memory of training independent of the number of layers.
#
# **The equations.** Each residual block becomes a RevNet coupling of two streams,
# $$Y_1 = X_1 + F(X_2),\qquad Y_2 = X_2 + G(Y_1),$$
# which can be run backwards: $X_2 = Y_2 - G(Y_1)$, $X_1 = Y_1 - F(X_2)$. The backward pass walks down the stack
# recomputing each layer's inputs from its outputs, then applies the layer's VJP:
# $\bar Y_1 \mathrel{+}= \big(\partial G/\partial Y_1\big)^{\!\top} \bar Y_2$, $\bar X_2 = \bar Y_2 + \big(\partial F/\partial X_2\big)^{\!\top} \bar Y_1$,
# $\bar X_1 = \bar Y_1$.
#
# **The intuition.** A coupling only ever *adds* a function of the other stream, and addition can be undone, so
# nothing needs to be remembered except the top. The price is one extra forward per layer, and in floating point
# "undone" means "undone up to rounding". This notebook checks that the reversible gradients equal ordinary
# backprop, measures how float reconstruction drifts with depth, shows the bit-exact fixed-point mode, compares
# peak memory, and checks the backward against finite differences.

# %%
import tracemalloc

import matplotlib.pyplot as plt
import numpy as np

from reference.architecture.reversible import (
    init_reversible_layers,
    reversible_backward,
    reversible_forward,
    reversible_inverse,
    sample_reversible_tapes,
    stored_backward,
    stored_forward,
)
from reference.architecture.reversible_blocks import ReversibleConfig
from reference.backend import namespace

xp = namespace("numpy")


def stack(config, n_layers, batch=2, seq=16, d_model=8, d_ff=32, rate=0.1, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((batch, seq, d_model))
    layers = init_reversible_layers(rng, n_layers, d_model, d_ff, config, xp=xp, dtype=np.float64)
    tapes = sample_reversible_tapes(rng, n_layers, batch, seq, d_model, d_ff, config, rate=rate, xp=xp,
                                    dtype=np.float64)
    return x, layers, tapes


# %% [markdown]
# ## 1. Same gradients as ordinary backprop
# Dropout masks (and LSH buckets) are recorded per layer in a tape and replayed by the recomputation.

# %%
config = ReversibleConfig(n_heads=2, n_ff_chunks=4, activation="gelu_tanh")
x, layers, tapes = stack(config, 6)
(y1, y2), cache = reversible_forward(x, layers, tapes, config)
_, stored = stored_forward(x, layers, tapes, config)
cot = np.random.default_rng(5)
dy1, dy2 = cot.standard_normal(y1.shape), cot.standard_normal(y2.shape)  # random cotangents, never all ones
dx, grads = reversible_backward(dy1, dy2, cache)
dx_s, grads_s = stored_backward(dy1, dy2, stored)
print("max |dx reversible - dx stored|:", float(np.abs(dx - dx_s).max()))
print("max over weights:", max(float(np.abs(g[k] - gs[k]).max()) for g, gs in zip(grads, grads_s) for k in g))

# %% [markdown]
# ## 2. Reconstruction error versus depth
# Float addition is not invertible, so $Y - F(X)$ only approximately returns $X$, and the error made at
# one layer feeds the layers below. In exact mode the streams are int64 fixed point and F, G's outputs are
# rounded to the same grid, so subtraction undoes addition exactly.

# %%
depths = [1, 2, 4, 8, 16, 32, 64]
errors = {}
for bits in (None, 32):
    cfg = ReversibleConfig(n_heads=2, n_ff_chunks=2, activation="gelu_tanh", exact_bits=bits)
    x64, layers64, tapes64 = stack(cfg, 64, seed=1)
    _, ref = stored_forward(x64, layers64, tapes64, cfg)
    errors[bits] = []
    for n in depths:
        _, c = reversible_forward(x64, layers64[:n], tapes64[:n], cfg)
        rebuilt = reversible_inverse(c.y1, c.y2, layers64[:n], c.tapes, cfg)
        errors[bits].append(max(float(np.abs(a - b).max()) for pair, r in zip(rebuilt, ref.inputs)
                                for a, b in zip(pair, r)))
fig, ax = plt.subplots(figsize=(5, 3.2))
ax.loglog(depths, errors[None], "o-", label="float64")
ax.set_xlabel("depth")
ax.set_ylabel("max |reconstructed - stored| input")
ax.set_title("reconstruction drift")
ax.legend()
plt.show()
print("float64:", ["%.1e" % e for e in errors[None]])
print("exact mode (integer units):", errors[32])

# %% [markdown]
# ## 3. Peak memory versus depth
# tracemalloc's peak over forward + backward. The stored backward keeps every layer's activations; the
# reversible one keeps one layer's at a time (it still grows by the parameter gradients).

# %%
def peak_mib(forward, backward, n_layers):
    cfg = ReversibleConfig(n_heads=2, activation="gelu_tanh")
    xm, lm, tm = stack(cfg, n_layers, seq=64, d_model=16, d_ff=64, rate=0.0)
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    (a, b), c = forward(xm, lm, tm, cfg)
    backward(np.ones_like(a), np.ones_like(b), c)
    peak = tracemalloc.get_traced_memory()[1] - base
    tracemalloc.stop()
    return peak / 2 ** 20


ns = [2, 4, 8, 16]
rev = [peak_mib(reversible_forward, reversible_backward, n) for n in ns]
sto = [peak_mib(stored_forward, stored_backward, n) for n in ns]
fig, ax = plt.subplots(figsize=(5, 3.2))
ax.plot(ns, rev, "o-", label="reversible")
ax.plot(ns, sto, "s-", label="stored activations")
ax.set_xlabel("depth")
ax.set_ylabel("peak MiB (tracemalloc)")
ax.set_title("peak memory of forward + backward")
ax.legend()
plt.show()
print("reversible:", ["%.2f" % v for v in rev], " stored:", ["%.2f" % v for v in sto])

# %% [markdown]
# ## 4. The backward, checked against finite differences
# Section 1 compares two hand-written backwards with each other; this compares the reversible one with numbers.
# The registered example (dropout tapes replayed) in float64 along random directions: a pass means the
# recomputed inputs and the VJPs of $F$ and $G$ give the true gradient of the forward, to about $10^{-8}$ relative.

# %%
from gradients.check import check_mechanism
from reference.registry import get

report = check_mechanism(get("architecture.reversible"), backend="numpy", mode="fast")
print(report.table().splitlines()[-1])
assert report.passed
