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
# # Compressive Transformer: memories filling and compressing, segment by segment
#
# Docs page: [`docs/mechanisms/architecture.compressive.md`](../docs/mechanisms/architecture.compressive.md) (the equations and the derived backward).
#
# Rae et al. (ICLR 2020, arXiv:1911.05507). Each layer keeps a FIFO memory of its past inputs and a second
# FIFO of *compressed* memories: when a segment of $n_s$ rows arrives, the oldest $n_s$ memories are evicted,
# compressed at rate $c$ into $n_s/c$ rows by $f_c$, and pushed into the compressed memory. The layer attends
# over $[cm; m; h]$. This notebook runs the oracle's layer over consecutive segments with the state carried
# explicitly, shows where each segment's rows live over time, and trains the convolutional $f_c$ with the
# attention-reconstruction loss, which touches nothing else.

# %%
import matplotlib.pyplot as plt
import numpy as np

from gradients.check import check_mechanism
from reference.architecture.compressive import (CompressiveConfig, compressive_layer_backward,
                                                compressive_layer_forward, compressive_segments_forward, init_state)
from reference.architecture.compressive import init_compressive_layer
from reference.backend import namespace, to_numpy
from reference.registry import get

xp = namespace("numpy")
rng = np.random.default_rng(0)
B, N_S, N_MEM, N_CMEM, D, RATE = 1, 4, 8, 4, 8, 2

# %% [markdown]
# ## Filling the memories
# Zero initial state (the paper's choice: zeros that are attended to). Each segment's rows are stored in the
# memory as they are (the layer's input), then leave it after $n_m / n_s = 2$ segments, compressed two rows into
# one by mean pooling, and stay in the compressed memory for $n_{cm} / (n_s / c) = 2$ more segments.
# The temporal range is $n_m + c\, n_{cm} = 16$ past rows, for an attention over only $n_m + n_{cm} = 12$ slots.

# %%
config = CompressiveConfig(n_heads=2, kind="mean", rate=RATE)
params = init_compressive_layer(rng, D, 16, config, xp=xp, dtype=xp.float64)
segments = [xp.asarray(rng.standard_normal((B, N_S, D))) for _ in range(7)]
outputs, _ = compressive_segments_forward(segments, init_state(B, N_MEM, N_CMEM, D, xp=xp, dtype=xp.float64),
                                          params, config)


def source(row, candidates):
    """Which segment a stored row came from (-1: the zero initial state)."""
    for k, rows in enumerate(candidates):
        if np.any(np.all(np.isclose(rows, row, atol=1e-12), axis=-1)):
            return k
    return -1


raw = [to_numpy(s)[0] for s in segments]
pooled = [r.reshape(N_S // RATE, RATE, D).mean(axis=1) for r in raw]
grid = np.array([[source(r, pooled) for r in to_numpy(out.state.cmem)[0]]
                 + [source(r, raw) for r in to_numpy(out.state.mem)[0]] for out in outputs])
print("after segment k: source segment of each slot, [compressed memory | memory]")
for k, row in enumerate(grid):
    print(k, row[:N_CMEM], "|", row[N_CMEM:])

# %%
fig, ax = plt.subplots(figsize=(7, 3))
ax.imshow(grid, cmap="viridis", aspect="auto")
ax.axvline(N_CMEM - 0.5, color="w", lw=2)
ax.set_xlabel("slot (compressed memory | memory), oldest first")
ax.set_ylabel("after segment")
ax.set_title("which segment each slot holds (dark: zero initial state)")
for (i, j), v in np.ndenumerate(grid):
    ax.text(j, i, str(v), ha="center", va="center", color="w" if v < 3 else "k", fontsize=8)
plt.tight_layout()

# %% [markdown]
# ## Training the compression with the attention-reconstruction loss
# $L_\text{attn} = \lVert A(h, \mathrm{old}) - A(h, f_c(\mathrm{old}))\rVert^2$ with $h$, the old memories and the
# attention weights under stop-gradient: the backward returns a gradient for $\theta_c = (W_c, b_c)$ only. A few
# steps of gradient descent on $\theta_c$, with the main network frozen, drive the loss down; the gradients the
# backward returns for the main parameters from $L_\text{attn}$ are exact zeros.

# %%
conv = CompressiveConfig(n_heads=2, kind="conv", rate=RATE)
params = init_compressive_layer(rng, D, 16, conv, xp=xp, dtype=xp.float64)
state = init_state(B, N_MEM, N_CMEM, D, xp=xp, dtype=xp.float64)
for h in segments[:3]:  # fill the memory so that the evicted rows are real
    state = compressive_layer_forward(h, state, params, conv)[0].state
h = segments[3]
losses = []
for step in range(60):
    out, cache = compressive_layer_forward(h, state, params, conv)
    losses.append(float(out.loss_attn))
    _, _, _, grads = compressive_layer_backward(xp.zeros_like(out.y), xp.asarray(1.0), cache)
    params = {**params, "w_c": params["w_c"] - 0.003 * grads["w_c"], "b_c": params["b_c"] - 0.003 * grads["b_c"]}
leak = max(float(np.abs(to_numpy(grads[k])).max()) for k in ("w_q", "w_k", "w_v", "w_o", "w_1", "w_2"))
print(f"L_attn: {losses[0]:.4f} -> {losses[-1]:.4f}; largest main-network gradient from L_attn: {leak}")

mean_loss = float(compressive_layer_forward(h, state, params, CompressiveConfig(2, "mean", RATE))[0].loss_attn)
print(f"mean pooling on the same memories: L_attn = {mean_loss:.4f} (no parameters to train)")

# %%
fig, ax = plt.subplots(figsize=(5, 3))
ax.plot(losses, label="conv, trained")
ax.axhline(mean_loss, color="gray", ls="--", label="mean pooling")
ax.set_xlabel("gradient step on theta_c")
ax.set_ylabel("L_attn")
ax.set_yscale("log")
ax.legend()
plt.tight_layout()

# %% [markdown]
# ## The backward against finite differences
# Random-direction check of the registered example (conv compression, score bias, dropout). The registered
# function reads frozen copies of the stop-gradient inputs, so finite differences see exactly what the
# stop-gradients define.

# %%
report = check_mechanism(get("architecture.compressive"), backend="numpy", mode="fast")
print(f"{len(report.results)} tensors, passed: {report.passed}, "
      f"largest abs error {max(r.max_abs_error for r in report.results):.1e}")
